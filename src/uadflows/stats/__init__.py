"""Results with their uncertainty (docs/statistics.md).

- records.py: per-image records of a run (records.csv + records.npz), the bootstrap's input;
- bootstrap.py: stratified bootstrap over test images, percentile intervals, every metric;
- curves.py: the metrics from weighted counts, many resamples at once;
- compare.py: paired bootstrap, Holm, Wilcoxon, Friedman + Nemenyi;
- seeds.py: mean, std and t interval over seeds.

Names are imported from their module on first use: the evaluate job needs records and the
bootstrap, not compare.py's pandas and scipy.stats (about a second of its start-up).
"""

from uadflows.lazy import lazy_exports

_MODULES = {
    "bootstrap": ("IMAGE", "PIXEL", "intervals", "percentile_interval", "point_estimates",
                  "replicates", "resample_counts"),
    "compare": ("bootstrap_p", "friedman_nemenyi", "holm", "not_worse_than_best",
                "paired_bootstrap", "wilcoxon_pairs"),
    "records": ("PixelRecorder", "Records", "RecordsError", "bin_edges", "load_records",
                "records_from_maps", "save_records"),
    "seeds": ("seed_summary",),
}
__all__ = sorted(name for names in _MODULES.values() for name in names)
__getattr__, __dir__ = lazy_exports(__name__, {name: module for module, names in _MODULES.items()
                                               for name in names})
