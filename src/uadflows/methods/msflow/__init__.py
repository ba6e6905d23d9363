"""MSFlow in the method registry: ``create("msflow", backbone="wide_resnet50_2")``.

Files: ``config`` (typed recipe), ``parallel`` (per-scale conditional flows and the
positional encoding), ``fusion`` (the cross-scale fusion flow), ``anomaly_map`` (the
"add" map and "mul" score), ``schedule`` (warm-up + step decay), ``model`` (MSFlow).
"""

from __future__ import annotations

from uadflows.methods.msflow.config import MSFlowConfig
from uadflows.methods.msflow.model import MSFlow


def create_msflow(backbone="wide_resnet50_2", **kwargs) -> MSFlow:
    """``methods.create("msflow", ...)``, kept for callers that import the factory."""
    from uadflows.methods import create

    return create("msflow", backbone=backbone, **kwargs)


__all__ = ["MSFlow", "MSFlowConfig", "create_msflow"]
