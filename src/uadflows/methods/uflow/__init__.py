"""U-Flow in the registry: ``create("uflow", backbone="ms_cait")``.

Files: ``config.py`` (UFlowConfig), ``model.py`` (the U-shaped flow and the FlowMethod),
``nfa.py`` (the a-contrario -log10 NFA map). See docs/methods/uflow.md.
"""

from __future__ import annotations

from uadflows.methods.uflow.config import UFlowConfig
from uadflows.methods.uflow.model import FlowStage, UFlow, UShapedFlow
from uadflows.methods.uflow.nfa import (
    log10_number_of_tests,
    log10_pixel_tail,
    log_nfa_map,
    region_log10_prob_map,
)


def create_uflow(backbone="ms_cait", **kwargs) -> UFlow:
    """``methods.create("uflow", ...)``, kept for callers that import the factory."""
    from uadflows.methods import create

    return create("uflow", backbone=backbone, **kwargs)


__all__ = [
    "FlowStage",
    "UFlow",
    "UFlowConfig",
    "UShapedFlow",
    "create_uflow",
    "log10_number_of_tests",
    "log10_pixel_tail",
    "log_nfa_map",
    "region_log10_prob_map",
]
