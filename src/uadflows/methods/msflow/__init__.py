"""MSFlow in the method registry: ``create("msflow", backbone="wide_resnet50_2")``.

Files: ``config`` (typed recipe), ``parallel`` (per-scale conditional flows and the
positional encoding), ``fusion`` (the cross-scale fusion flow), ``anomaly_map`` (the
"add" map and "mul" score), ``schedule`` (warm-up + step decay), ``model`` (MSFlow).
Exports are imported on first use (torch-free import).
"""

from __future__ import annotations

from uadflows.methods import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {"MSFlow": "model", "MSFlowConfig": "config"})


def create_msflow(backbone="wide_resnet50_2", **kwargs):
    """``methods.create("msflow", ...)``, kept for callers that import the factory."""
    from uadflows.methods import create

    return create("msflow", backbone=backbone, **kwargs)


__all__ = ["MSFlow", "MSFlowConfig", "create_msflow"]
