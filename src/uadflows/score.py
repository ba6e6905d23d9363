"""Scoring: test features -> anomaly maps and image scores (``scores.npz``).

The flow runs under ``torch.inference_mode`` in batches, without log-determinants (only
the latents enter the maps). Maps are kept float32 at the model's resolution: rounding
them to float16 would create ties that change AUROC and AU-PRO.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uadflows.features import load_split, open_cache, resolve_device
from uadflows.io import atomic_path
from uadflows.train import load_model


def score(
    model_pt: str | Path, features_dir: str | Path, out_npz: str | Path, *,
    batch_size: int = 32, device: str | None = None, index_csv: str | Path | None = None,
) -> dict[str, Any]:
    """``device`` None: the job spec's. The checkpoint is read once."""
    started = time.time()
    model, spec, ck = load_model(model_pt, "cpu")
    if model is None:
        _save_npz(out_npz, status=np.array("failed"), error=np.array(ck.get("error") or ""))
        return {"status": "failed"}
    dev = resolve_device(device or spec.device)
    model.to(dev)

    data = load_split(features_dir, "test", index_csv=index_csv)
    size = spec.image_size
    arrays, seconds, raw = _maps(model, data, size, batch_size, dev)
    if "map" not in arrays or "score" not in arrays:
        raise RuntimeError(f"method {spec.method} returned {sorted(arrays)}, needs map and score")
    samples = data.samples()
    arrays.update(
        status=np.array("ok"),
        labels=np.array([s.label for s in samples], dtype=np.int8),
        images=np.array([str(s.image) for s in samples]),
        masks=np.array([str(s.mask) if s.mask else "" for s in samples]),
        flow_seconds=np.array(seconds),
        pro_map=np.array("maps" if model.pro_map == "map" else model.pro_map),
        started=np.array(started),
        ended=np.array(time.time()),
    )
    arrays["image_scores"] = arrays.pop("score")
    arrays["maps"] = arrays.pop("map")
    if "validation" in open_cache(features_dir)["splits"]:
        # normal images kept apart for choosing thresholds (held out from training, or MVTec
        # AD 2's own); never evaluated. Set-level normalisation: the test set's constants.
        val = load_split(features_dir, "validation", index_csv=index_csv)
        val_arrays, _, _ = _maps(model, val, size, batch_size, dev, reference=raw)
        arrays["validation_maps"] = val_arrays["map"]
        arrays["validation_scores"] = val_arrays["score"]
        arrays["validation_images"] = np.array([str(s.image) for s in val.samples()])
    _save_npz(out_npz, **arrays)
    return {"status": "ok", "n": len(samples), "flow_images_per_s": len(samples) / max(seconds, 1e-9)}


def _maps(model, data, size: tuple[int, int], batch_size: int, dev: torch.device,
          reference: dict[str, torch.Tensor] | None = None
          ) -> tuple[dict[str, np.ndarray], float, dict[str, torch.Tensor]]:
    """Every output of ``anomaly_maps`` over a feature split, the flow's seconds, and the raw
    outputs before ``finalize_maps`` (the reference of another split's normalisation)."""
    maps: dict[str, list[np.ndarray]] = {}
    seconds = 0.0
    with torch.inference_mode():
        for _, feats in data.batches(batch_size, device=dev):
            t0 = time.perf_counter()
            out = model.anomaly_maps(model(feats, with_log_jac=False), size)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - t0
            for k, v in out.items():
                maps.setdefault(k, []).append(v.float().cpu().numpy())
    arrays = {k: torch.from_numpy(np.concatenate(v)) for k, v in maps.items()}
    # Set-level normalisation (CFlow's map over the whole split); the base class returns the
    # maps unchanged.
    done = model.finalize_maps(arrays, size) if reference is None else \
        model.finalize_maps(arrays, size, reference=reference)
    return {k: v.float().cpu().numpy() for k, v in done.items()}, seconds, arrays


def _save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
