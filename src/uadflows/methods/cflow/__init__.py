"""CFlow-AD in the registry: ``create("cflow", backbone="wide_resnet50_2")``.

Files: ``config`` (typed recipe, torch-free), ``model`` (decoders, fiber training),
``anomaly_map`` (per-dimension log-likelihoods, the official set-level map and score),
``schedule`` (warm-up + cosine mapped onto plain epochs). See docs/methods/cflow.md.
"""

from __future__ import annotations

from uadflows.methods.cflow.config import CFlowConfig
from uadflows.methods.cflow.model import CFlow


def create_cflow(backbone="wide_resnet50_2", **kwargs) -> CFlow:
    """``methods.create("cflow", ...)``, kept for callers that import the factory."""
    from uadflows.methods import create

    return create("cflow", backbone=backbone, **kwargs)


__all__ = ["CFlow", "CFlowConfig", "create_cflow"]
