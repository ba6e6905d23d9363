"""The one evaluator every method is scored with (see docs/metrics.md).

From a notebook::

    from uadflows.metrics import au_pro, pixel_metrics, evaluate
    au_pro(maps, masks, limit=0.3)          # maps (N, H, W) or list of (H, W); masks alike
    evaluate(labels, scores, maps, masks)   # everything, maps upsampled to the masks' size

Every function returns plain Python floats (JSON-serialisable) and raises ``MetricsError``
(a ValueError) naming the argument and image for bad input.
"""

from uadflows.metrics.aupro import au_pro, pro_curve
from uadflows.metrics.evaluate import RESOLUTIONS, evaluate
from uadflows.metrics.image import image_metrics
from uadflows.metrics.inputs import MetricsError
from uadflows.metrics.pixel import pixel_metrics, roc_points
from uadflows.metrics.resize import to_map_resolution, to_mask_resolution
from uadflows.metrics.segmentation import mean_iou

__all__ = [
    "MetricsError",
    "RESOLUTIONS",
    "au_pro",
    "evaluate",
    "image_metrics",
    "mean_iou",
    "pixel_metrics",
    "pro_curve",
    "roc_points",
    "to_map_resolution",
    "to_mask_resolution",
]
