"""CS-Flow in the method registry: ``create("csflow", backbone="cs_effnet_b5")``.

Files: ``config`` (typed recipe), ``coupling`` (cross-scale subnets, coupling, flow),
``anomaly_map`` (the official image score, our pixel map), ``model`` (CSFlow).
See docs/methods/csflow.md.
"""

from __future__ import annotations

from uadflows.methods.csflow.anomaly_map import csflow_anomaly_maps
from uadflows.methods.csflow.config import CSFlowConfig
from uadflows.methods.csflow.coupling import CrossConvolutions, CrossScaleCoupling, CrossScaleFlow
from uadflows.methods.csflow.model import CSFlow


def create_csflow(backbone="cs_effnet_b5", **kwargs) -> CSFlow:
    """``methods.create("csflow", ...)``, kept for callers that import the factory."""
    from uadflows.methods import create

    return create("csflow", backbone=backbone, **kwargs)


__all__ = [
    "CSFlow", "CSFlowConfig", "CrossConvolutions", "CrossScaleCoupling", "CrossScaleFlow",
    "create_csflow", "csflow_anomaly_maps",
]
