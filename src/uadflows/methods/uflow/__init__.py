"""U-Flow in the registry: ``create("uflow", backbone="ms_cait")``.

Files: ``config.py`` (UFlowConfig), ``model.py`` (the U-shaped flow and the FlowMethod),
``nfa.py`` (the a-contrario -log10 NFA map). See docs/methods/uflow.md. Exports are
imported on first use (torch-free import).
"""

from __future__ import annotations

from uadflows.methods import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "FlowStage": "model", "UFlow": "model", "UShapedFlow": "model", "UFlowConfig": "config",
    **dict.fromkeys(("log10_number_of_tests", "log10_pixel_tail", "log_nfa_map", "region_log10_prob_map"), "nfa"),
})


def create_uflow(backbone="ms_cait", **kwargs):
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
