"""Tables, figures and the shared reader of the pipeline's results.

``write_tables(metrics_csv, out_dir, published=None)`` and ``write_figures(metrics_csv,
out_dir)`` are what ``uadflows report`` calls; both return the files they wrote.

Names are imported from their module on first use: the mlflow job reads results through
runs.py and needs neither matplotlib (figures.py) nor the statistics behind the tables.
"""

from uadflows.lazy import lazy_exports

__all__ = ["write_tables", "write_figures", "figures_for_run", "load_metrics", "ReportError"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "write_tables": "tables", "write_figures": "figures", "figures_for_run": "labels",
    "load_metrics": "runs", "ReportError": "runs"})
