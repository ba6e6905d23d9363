"""The kNN floor in the registry: ``create("knn", backbone="wide_resnet50_2")``.

Files: ``config`` (typed recipe, torch-free), ``anomaly_map`` (nearest distances, the map
and image score), ``model`` (KnnFloor). See docs/methods/knn.md. Exports are imported on first use (torch-free import).
"""

from __future__ import annotations

from uadflows.methods import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {"KnnConfig": "config", "KnnFloor": "model"})


def create_knn(backbone="wide_resnet50_2", **kwargs):
    """``methods.create("knn", ...)``, kept for callers that import the factory."""
    from uadflows.methods import create

    return create("knn", backbone=backbone, **kwargs)


__all__ = ["KnnConfig", "KnnFloor", "create_knn"]
