"""CS-Flow in the method registry: ``create("csflow", backbone="cs_effnet_b5")``.

Files: ``config`` (typed recipe), ``coupling`` (cross-scale subnets, coupling, flow),
``anomaly_map`` (the official image score, our pixel map), ``model`` (CSFlow).
See docs/methods/csflow.md. Exports are imported on first use (torch-free import).
"""

from __future__ import annotations

from uadflows.methods import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "CSFlow": "model", "CSFlowConfig": "config", "csflow_anomaly_maps": "anomaly_map",
    **dict.fromkeys(("CrossConvolutions", "CrossScaleCoupling", "CrossScaleFlow"), "coupling"),
})


def create_csflow(backbone="cs_effnet_b5", **kwargs):
    """``methods.create("csflow", ...)``, kept for callers that import the factory."""
    from uadflows.methods import create

    return create("csflow", backbone=backbone, **kwargs)


__all__ = [
    "CSFlow", "CSFlowConfig", "CrossConvolutions", "CrossScaleCoupling", "CrossScaleFlow",
    "create_csflow", "csflow_anomaly_maps",
]
