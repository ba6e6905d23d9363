"""CFlow-AD in the registry: ``create("cflow", backbone="wide_resnet50_2_l234")``.

Files: ``config`` (typed recipe, torch-free), ``model`` (decoders, fiber training),
``anomaly_map`` (per-dimension log-likelihoods, the official set-level map and score),
``schedule`` (warm-up + cosine mapped onto plain epochs). See docs/methods/cflow.md. Exports are imported on first use (torch-free import).
"""

from __future__ import annotations

from uadflows.methods import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {"CFlowConfig": "config", "CFlow": "model"})


def create_cflow(backbone="wide_resnet50_2_l234", **kwargs):
    """``methods.create("cflow", ...)``, kept for callers that import the factory."""
    from uadflows.methods import create

    return create("cflow", backbone=backbone, **kwargs)


__all__ = ["CFlow", "CFlowConfig", "create_cflow"]
