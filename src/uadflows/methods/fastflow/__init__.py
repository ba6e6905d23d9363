"""FastFlow in the registry: ``create("fastflow", backbone="resnet18")``.

Files: ``config.py`` (FastFlowConfig, the per-backbone recipe), ``model.py`` (FastFlow,
its flows and subnets), ``lean.py`` (LeanAllInOneBlock), ``anomaly_map.py`` (map and
score). See docs/methods/fastflow.md.
"""

from __future__ import annotations

from uadflows.methods.fastflow.anomaly_map import fastflow_anomaly_maps
from uadflows.methods.fastflow.config import FastFlowConfig
from uadflows.methods.fastflow.lean import LeanAllInOneBlock
from uadflows.methods.fastflow.model import FastFlow, _subnet, build_flow, parameter_counts


def create_fastflow(backbone="resnet18", **kwargs) -> FastFlow:
    """``methods.create("fastflow", ...)``, kept for callers that import the factory."""
    from uadflows.methods import create

    return create("fastflow", backbone=backbone, **kwargs)


__all__ = ["FastFlow", "FastFlowConfig", "LeanAllInOneBlock", "_subnet", "build_flow", "create_fastflow",
           "fastflow_anomaly_maps", "parameter_counts"]
