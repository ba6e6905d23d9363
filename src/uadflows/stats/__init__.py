"""Results with their uncertainty (docs/statistics.md).

- records.py: per-image records of a run (records.csv + records.npz), the bootstrap's input;
- bootstrap.py: stratified bootstrap over test images, percentile intervals, every metric;
- curves.py: the metrics from weighted counts, many resamples at once;
- compare.py: paired bootstrap, Holm, Wilcoxon, Friedman + Nemenyi;
- seeds.py: mean, std and t interval over seeds.
"""

from uadflows.stats.bootstrap import (
    IMAGE,
    PIXEL,
    intervals,
    percentile_interval,
    point_estimates,
    replicates,
    resample_counts,
)
from uadflows.stats.compare import (
    bootstrap_p,
    friedman_nemenyi,
    holm,
    not_worse_than_best,
    paired_bootstrap,
    wilcoxon_pairs,
)
from uadflows.stats.records import (
    PixelRecorder,
    Records,
    RecordsError,
    bin_edges,
    load_records,
    records_from_maps,
    save_records,
)
from uadflows.stats.seeds import seed_summary

__all__ = [
    "IMAGE", "PIXEL", "PixelRecorder", "Records", "RecordsError", "bin_edges", "bootstrap_p",
    "friedman_nemenyi", "holm", "intervals", "load_records", "not_worse_than_best",
    "paired_bootstrap", "percentile_interval", "point_estimates", "records_from_maps",
    "replicates", "resample_counts", "save_records", "seed_summary", "wilcoxon_pairs",
]
