"""Metric-vs-epoch diagnostic (``eval_every: K``) and the opt-in ``best-on-test`` protocol.

Every K-th epoch the model in training is scored on the TEST split and its metrics are
appended to ``diagnostic_on_test.csv`` (figure: ``diagnostic_on_test.png``). This looks at
the test set while training, so it is a diagnostic, never a result: the file's ``note``
column, the figure's title and this docstring say so (``LABEL``). The reported protocol
stays ``last-epoch`` unless a run opts into ``protocol: best-on-test``: the checkpoint with
the best test image AUROC among the evaluated ones, what the original FastFlow / MSFlow /
U-Flow codes report; every table, caption, csv column and MLflow tag then names it.

Pixel metrics here are at the maps' resolution (masks resized to them, nearest): cheaper
than the evaluator's original resolution, close, and only a diagnostic.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uadflows.io import atomic_path

LABEL = "diagnostic: evaluated on the test set; not a protocol"
PROTOCOLS = ("last-epoch", "best-on-test")
CSV_NAME = "diagnostic_on_test.csv"
FIGURE_NAME = "diagnostic_on_test.png"
COLUMNS = ["epoch", "image_auroc", "pixel_auroc", "au_pro", "note"]


def check_protocol(protocol: object, eval_every: object, where: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"{where}: protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if protocol == "best-on-test" and not eval_every:
        raise ValueError(f"{where}: protocol 'best-on-test' needs eval_every (the checkpoints it picks from)")


class TestSet:
    """The test split's features, labels and masks (resized to the maps when first used)."""

    def __init__(self, features_dir: str | Path, size: tuple[int, int], index_csv=None):
        from uadflows.data import read_mask
        from uadflows.features import load_split

        self.data = load_split(features_dir, "test", index_csv=index_csv)
        samples = self.data.samples()
        self.labels = np.array([s.label for s in samples], dtype=int)
        self.masks = [read_mask(s.mask) if s.mask else None for s in samples]
        self.size = tuple(size)
        self._masks_at_maps = None

    @torch.no_grad()
    def evaluate(self, model, device, batch_size: int = 32) -> dict[str, float]:
        from uadflows import metrics as M

        was_training = model.training
        model.eval()
        maps, scores = [], []
        with torch.inference_mode():
            for _, feats in self.data.batches(batch_size, device=device):
                out = model.anomaly_maps(model(feats, with_log_jac=False), self.size)
                maps.append(out["map"].float().cpu().numpy())
                scores.append(out["score"].float().cpu().numpy())
        model.train(was_training)
        maps_arr, scores_arr = np.concatenate(maps), np.concatenate(scores).astype(np.float64)
        result = {"image_auroc": M.image_metrics(self.labels, scores_arr)["image_auroc"]}
        if any(m is not None for m in self.masks):
            if self._masks_at_maps is None:
                self._masks_at_maps = M.to_map_resolution(maps_arr, self.masks)
            pixel = M.pixel_metrics(maps_arr, self._masks_at_maps)
            result.update(pixel_auroc=pixel["pixel_auroc"], au_pro=pixel["au_pro"])
        return result


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows({**r, "note": LABEL} for r in rows)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    epochs = [r["epoch"] for r in rows]
    for key in ("image_auroc", "pixel_auroc", "au_pro"):
        if any(r.get(key) is not None for r in rows):
            ax.plot(epochs, [r.get(key, np.nan) for r in rows], marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{title}\n{LABEL}", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The evaluated checkpoint with the highest test image AUROC (the earliest on ties)."""
    return max(rows, key=lambda r: (r["image_auroc"], -r["epoch"]))


__all__ = ["CSV_NAME", "FIGURE_NAME", "LABEL", "PROTOCOLS", "TestSet", "best", "check_protocol", "plot", "write_csv"]
