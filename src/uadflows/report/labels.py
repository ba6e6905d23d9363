"""Display names and file-name slugs shared by the tables and the figures."""

from __future__ import annotations

import re
from pathlib import Path

# Methods cited in published numbers but not in the registry; registered methods name
# themselves (their class's ``label``).
METHOD_NAMES = {
    "csflow": "CS-Flow",
}
BACKBONE_NAMES = {
    "resnet18": "R18",
    "wide_resnet50_2": "WRN50-2",
    "wide_resnet50_2_l234": "WRN50-2 (layer2-4)",
    "cait_m48_448": "CaiT-M48",
    "deit_base_distilled_patch16_384": "DeiT-B/16",
    "ms_cait": "MS-CaiT",
    "efficientnet_b5": "EffNet-B5",
}
DATASET_NAMES = {"mvtec": "MVTec AD", "mvtec_ad": "MVTec AD", "btad": "BTAD", "visa": "VisA",
                 "demo": "Demo", "mpdd": "MPDD", "ksdd2": "KolektorSDD2", "realiad": "Real-IAD",
                 "mvtec_ad2": "MVTec AD 2"}
# How each dataset's test set is evaluated (docs/datasets.md), named in every caption.
DATASET_PROTOCOLS = {
    "mvtec": "official split", "btad": "official split", "mpdd": "official split",
    "visa": "one-class split (1cls.csv)",
    "ksdd2": "official train/test folders, normal train images only",
    "realiad": "official JSON split (realiad_jsons), every view a sample; sample_* metrics: "
               "maximum over views",
    "mvtec_ad2": "test_public, AU-PRO at FPR 0.05 and 0.3 (au_pro_0.05, au_pro_0.3)",
}
METRIC_NAMES = {
    "image_auroc": "image AUROC",
    "image_ap": "image AP",
    "image_f1_max": "image F1-max (oracle)",
    "pixel_auroc": "pixel AUROC",
    "pixel_ap": "pixel AP",
    "pixel_f1_max": "pixel F1-max (oracle)",
    "au_pro": "AU-PRO",
    "miou": "mIoU (log NFA = 0)",
    # at the thresholds chosen on normal validation images (docs/statistics.md)
    "image_f1_at_val_threshold": "image F1 (validation threshold)",
    "image_precision_at_val_threshold": "image precision (validation threshold)",
    "image_recall_at_val_threshold": "image recall (validation threshold)",
    "pixel_f1_at_val_threshold": "pixel F1 (validation threshold)",
    "pixel_precision_at_val_threshold": "pixel precision (validation threshold)",
    "pixel_recall_at_val_threshold": "pixel recall (validation threshold)",
    "seg_iou_at_val_threshold": "segmentation mIoU (validation threshold)",
    "au_pro_0.05": "AU-PRO (FPR limit 0.05)",
    "au_pro_0.3": "AU-PRO (FPR limit 0.3)",
    "seg_f1": "SegF1 (validation threshold)",
    "sample_auroc": "sample AUROC (max over views)",
}


# Column headers where every metric is a column (the field's usual abbreviations).
METRIC_SHORT = {
    "image_auroc": "I-AUROC",
    "image_ap": "I-AP",
    "image_f1_max": "I-F1max",  # an oracle: the threshold chosen on the test set
    "pixel_auroc": "P-AUROC",
    "pixel_ap": "P-AP",
    "pixel_f1_max": "P-F1max",
    "au_pro": "AU-PRO",
    "miou": "mIoU",
    "image_f1_at_val_threshold": "I-F1@val",
    "pixel_f1_at_val_threshold": "P-F1@val",
    "seg_iou_at_val_threshold": "mIoU@val",
    "au_pro_0.05": "AU-PRO 0.05",
    "au_pro_0.3": "AU-PRO 0.3",
    "seg_f1": "SegF1",
    "sample_auroc": "S-AUROC",
}


def method_name(method: str) -> str:
    from uadflows import methods

    if method in methods.available():
        return methods.label(method) or method
    return METHOD_NAMES.get(method, method)


def backbone_name(backbone: str) -> str:
    """"resnet18" -> "R18"; a pinned timm weights tag stays visible: "R18 (tv_in1k)"."""
    arch, _, tag = backbone.partition(".")
    name = BACKBONE_NAMES.get(arch, arch)
    return f"{name} ({tag})" if tag else name


def dataset_name(dataset: str) -> str:
    return DATASET_NAMES.get(dataset, dataset)


def metric_name(metric: str, pro_limit: float | None = None) -> str:
    name = METRIC_NAMES.get(metric, metric)
    if metric == "au_pro" and pro_limit is not None:
        name = f"{name} (FPR limit {pro_limit:g})"
    return name


def slug(*parts: object) -> str:
    """A file-name-safe join of the parts ("mvtec", "metal_nut") -> "mvtec_metal_nut"."""
    text = "_".join(str(p) for p in parts)
    return re.sub(r"[^A-Za-z0-9.\-]+", "_", text).strip("_")


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(text: object) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(text))


def figures_for_run(figures_dir: str | Path, dataset: str, category: str, model: str) -> list[Path]:
    """The figures that belong to one run (what the MLflow logger attaches to it)."""
    stem = slug("examples", dataset, category, model)
    return sorted(p for p in Path(figures_dir).glob(f"{stem}.*") if p.suffix in (".png", ".pdf"))
