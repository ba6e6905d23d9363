"""FastFlow in the registry: ``create("fastflow", backbone="resnet18")``.

Files: ``config.py`` (FastFlowConfig, the per-backbone recipe), ``model.py`` (FastFlow,
its flows and subnets), ``lean.py`` (LeanAllInOneBlock), ``anomaly_map.py`` (map and
score). See docs/methods/fastflow.md. Exports are imported on first use (torch-free import).
"""

from __future__ import annotations

from uadflows.methods import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "FastFlow": "model", "_subnet": "model", "build_flow": "model", "parameter_counts": "model",
    "FastFlowConfig": "config", "LeanAllInOneBlock": "lean", "fastflow_anomaly_maps": "anomaly_map",
})


def create_fastflow(backbone="resnet18", **kwargs):
    """``methods.create("fastflow", ...)``, kept for callers that import the factory."""
    from uadflows.methods import create

    return create("fastflow", backbone=backbone, **kwargs)


__all__ = ["FastFlow", "FastFlowConfig", "LeanAllInOneBlock", "_subnet", "build_flow", "create_fastflow",
           "fastflow_anomaly_maps", "parameter_counts"]
