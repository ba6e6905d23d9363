"""Tables, figures and the shared reader of the pipeline's results.

``write_tables(metrics_csv, out_dir, published=None)`` and ``write_figures(metrics_csv,
out_dir)`` are what ``uadflows report`` calls; both return the files they wrote.
"""

from uadflows.report.figures import figures_for_run, write_figures
from uadflows.report.runs import ReportError, load_metrics
from uadflows.report.tables import write_tables

__all__ = ["write_tables", "write_figures", "figures_for_run", "load_metrics", "ReportError"]
