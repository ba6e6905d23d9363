"""Tables, figures and the shared reader of the pipeline's results.

``write_tables(metrics_csv, out_dir, published=None)`` and ``write_figures(metrics_csv,
out_dir)`` are what ``uadflows report`` calls; both return the files they wrote.

Names are imported from their module on first use: the mlflow job reads results through
runs.py and needs neither matplotlib (figures.py) nor the statistics behind the tables.
"""

from importlib import import_module

_WHERE = {"write_tables": "tables", "write_figures": "figures", "figures_for_run": "labels",
          "load_metrics": "runs", "ReportError": "runs"}

__all__ = ["write_tables", "write_figures", "figures_for_run", "load_metrics", "ReportError"]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
