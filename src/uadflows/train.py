"""Training from the feature cache, resumable and deterministic.

One run = one (dataset, category, model, seed). The flow sees batches read straight from
the memory-mapped cache; the frozen backbone never runs here. Every ``checkpoint_every``
epochs the full training state (trainable weights, optimiser, scheduler, history) is
written atomically to ``train_state.pt``; a restarted job resumes from it and, on the CPU,
ends with exactly the weights of an uninterrupted run (the batch order of epoch e is drawn
from ``(seed, e)`` alone, so no random state has to survive the restart).
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uadflows import diagnostic
from uadflows.features import index_digest, load_split, open_cache, resolve_device
from uadflows.health import EpochHealth, verdict
from uadflows.provenance import provenance
from uadflows.io import atomic_path, write_json
from uadflows.preemption import Preempted, StopRequest
from uadflows.spec import JobSpec

STATE_FILE = "train_state.pt"
SUMMARY_FILE = "summary.json"
# Checkpoints hold tensors and plain values only (the spec as JSON text), read with
# torch.load(weights_only=True): a checkpoint can never run code. Bumped on layout changes.
CHECKPOINT_FORMAT = 2


class Divergence(RuntimeError):
    """A NaN or infinite loss: the run is recorded as failed, not reported."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(spec: JobSpec):
    """The method of a job spec, its backbone a weightless stand-in (features are cached)."""
    from uadflows import methods

    seed_everything(spec.seed)  # FrEIA's random permutations are drawn at construction
    return methods.create(spec.method, backbone=spec.backbone, pretrained=False,
                          image_size=spec.image_size[0], build_backbone=False, **spec.params)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Everything but the frozen backbone (flows, norms, FrEIA's fixed permutations)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}


def flow_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _save(obj: Any, path: Path) -> None:
    # Through a Python file: a full disk then surfaces as ENOSPC (atomic_path names the path)
    # rather than as torch's bare "unexpected pos" error.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save({"format": CHECKPOINT_FORMAT, **obj}, f)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents; refuses anything but tensors and plain values."""
    path = Path(path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing") from None
    except Exception as e:  # noqa: BLE001 - unpickling refused, truncated, not a zip...
        raise CheckpointError(f"{path}: refused or unreadable checkpoint (only tensors and plain "
                              f"values are loaded): {str(e).splitlines()[0]}; delete it and rerun") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        found = ck.get("format", "none") if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(f"{path}: checkpoint format {found}, this uadflows reads format "
                              f"{CHECKPOINT_FORMAT} (an older version wrote it); delete it and rerun to rebuild")
    return ck


class CheckpointError(RuntimeError):
    """A checkpoint that is refused, unreadable or of another format; names the file."""


def _load_state(path: Path, spec: JobSpec) -> dict[str, Any] | None:
    """The resume state, or None; an unreadable or foreign file is set aside, not trusted."""
    if not path.exists():
        return None
    try:
        state = read_checkpoint(path)
        if "model" not in state or "epoch" not in state:
            raise ValueError("not a uadflows training state")
    except (CheckpointError, ValueError) as e:
        bad = path.with_suffix(".corrupt")
        os.replace(path, bad)
        print(f"warning: corrupted checkpoint: {e}; moved to {bad.name}, training from scratch", flush=True)
        return None
    if state.get("spec") != spec.to_json():
        print(f"warning: {path}: written for another job spec; training from scratch", flush=True)
        return None
    return state


def fit_from_data(model, spec: JobSpec, data, batch_size: int, dev) -> dict[str, float]:
    """A method without an optimiser (``fits_from_data``: kNN) sees the training cache once,
    in batches of the job's batch size; random choices it makes (a bank subset) are seeded
    by the run's seed. Returns its one history row (no loss, no learning rate)."""
    t0 = time.perf_counter()
    generator = torch.Generator().manual_seed(spec.seed)
    model.fit((feats for _, feats in data.batches(batch_size, device=dev)), generator=generator)
    return {"epoch": 1, "loss": float("nan"), "lr": 0.0, "seconds": time.perf_counter() - t0}


def optimizer_step(model, setup, loss: torch.Tensor) -> None:
    """One step of the method's recipe: backward, optional clipping, optimiser, and the
    scheduler where it steps per batch."""
    setup.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if setup.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), setup.grad_clip)
    setup.optimizer.step()
    if setup.scheduler is not None and setup.scheduler_interval == "step":
        setup.scheduler.step()


def train(
    spec: JobSpec,
    features_dir: str | Path,
    out_dir: str | Path,
    *,
    index_csv: str | Path | None = None,
    stop_after_epoch: int | None = None,
    stop: StopRequest | None = None,
) -> dict[str, Any]:
    """Train one run; write ``model.pt``, ``history.csv`` and ``summary.json`` (weight-free:
    status, cost, start and end times) into ``out_dir``.

    ``stop_after_epoch`` ends the process's work early (tests of resumption).
    ``stop``: a scheduler's signal (pre-emption, time limit) seen there ends the current
    epoch with a checkpoint and raises Preempted (uadflows.preemption).
    Returns the summary.
    """
    started = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.tmp"):  # half-written by a killed predecessor of this job
        stale.unlink()
    dev = resolve_device(spec.device)
    name = spec.key

    model = build_model(spec).to(dev)
    opts = spec.train
    epochs, batch_size = opts.epochs, opts.batch_size
    data = load_split(features_dir, "train", index_csv=index_csv)
    digest = index_digest(index_csv) if index_csv else open_cache(features_dir)["index_digest"]
    if model.fits_from_data:  # no optimiser (kNN): one pass over the cache, no epochs
        history = [fit_from_data(model, spec, data, batch_size, dev)]
        return _finish(spec, model, out_dir, history, None, dev, started=started, digest=digest)
    steps = math.ceil(len(data) / batch_size)
    setup = model.train_setup(epochs, steps, lr=opts.lr)
    # Issue 22: test metrics every `eval_every` epochs (a labelled diagnostic), and the
    # opt-in protocol that reports the best of those checkpoints (diagnostic.py).
    eval_every = opts.eval_every or 0
    diagnostic.check_protocol(spec.protocol, eval_every, name)
    test_set = None
    on_gpu = dev.type == "cuda"
    # GPU-only speed options: bfloat16 autocast needs no loss scaling; compile the flow once.
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu and opts.amp)
    flow = torch.compile(model) if on_gpu and opts.compile else model

    state_path = out_dir / STATE_FILE
    history: list[dict[str, float]] = []
    evaluated: list[dict[str, float]] = []
    best_state = None
    start = 0
    state = _load_state(state_path, spec)
    if state is not None:
        model.load_state_dict(state["model"], strict=False)
        setup.optimizer.load_state_dict(state["optimizer"])
        if setup.scheduler is not None and state.get("scheduler") is not None:
            setup.scheduler.load_state_dict(state["scheduler"])
        history, start = state["history"], state["epoch"]
        evaluated, best_state = state.get("evaluated", []), state.get("best")
        print(f"{name}: resuming after epoch {start}/{epochs}", flush=True)

    error = None
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        model.train()
        order = np.random.default_rng([spec.seed, epoch]).permutation(len(data))
        total, count = 0.0, 0
        health = EpochHealth()
        # A method that steps inside its batches (``steps_in_batch``: CFlow's fibers) draws
        # from a generator seeded by (seed, epoch) alone, so a resumed run ends the same.
        draws = torch.Generator().manual_seed(int(np.random.default_rng([spec.seed, epoch]).integers(2**62)))
        for idx, feats in data.batches(batch_size, order, dev):
            with autocast:
                if model.steps_in_batch:
                    out, loss = None, model.train_batch(feats, setup, draws)
                else:
                    out = flow(feats)
                    loss = model.loss(out)
            if not torch.isfinite(loss):
                error = f"run {name} diverged: loss {loss.item()} at epoch {epoch + 1}"
                break
            if out is not None:  # the method's own steps took care of the optimiser
                optimizer_step(model, setup, loss)
                health.add(out)
            total += loss.item() * len(idx)
            count += len(idx)
        if error:
            break
        lr = setup.optimizer.param_groups[0]["lr"]
        if setup.scheduler is not None and setup.scheduler_interval == "epoch":
            setup.scheduler.step()
        # Training health (health.py): mean z^2 per latent dimension per scale (~1 for a flow
        # that fits its training data; far above 1: under-fitted), log-det, LayerNorm weights.
        stats = health.row(model)
        history.append({"epoch": epoch + 1, "loss": total / count, "lr": lr,
                        "seconds": time.perf_counter() - t0, **stats})
        z2_text = " ".join(f"{v:.3f}" for k, v in stats.items() if k.startswith("z2_scale"))
        print(f"{name}: epoch {epoch + 1}/{epochs} loss {total / count:.5f} mean z^2 per scale {z2_text}", flush=True)
        done = epoch + 1
        preempted = stop is not None and stop.signum is not None and done < epochs
        if eval_every and (done % eval_every == 0 or done == epochs):
            test_set = test_set or diagnostic.TestSet(features_dir, spec.image_size, index_csv)
            evaluated.append({"epoch": done, **test_set.evaluate(model, dev)})
            diagnostic.write_csv(out_dir / diagnostic.CSV_NAME, evaluated)
            if spec.protocol == "best-on-test" and diagnostic.best(evaluated)["epoch"] == done:
                best_state = {"epoch": done, "model": trainable_state(model)}
        if done % opts.checkpoint_every == 0 or done == epochs or done == stop_after_epoch or preempted:
            _save({"spec": spec.to_json(), "epoch": done, "history": history,
                   "model": trainable_state(model), "optimizer": setup.optimizer.state_dict(),
                   "scheduler": setup.scheduler.state_dict() if setup.scheduler else None,
                   "evaluated": evaluated, "best": best_state},
                  state_path)
        if preempted:
            raise Preempted(f"{name}: {stop.name} received, checkpoint written after epoch "
                            f"{done}/{epochs}; run again to resume from it", stop.signum)
        if done == stop_after_epoch and done < epochs:
            return {"status": "stopped", "epochs": done}

    return _finish(spec, model, out_dir, history, error, dev, started=started, digest=digest,
                   evaluated=evaluated, best_state=best_state)


def _finish(spec: JobSpec, model, out_dir: Path, history: list[dict[str, float]], error: str | None, dev,
            *, started: float, digest: str, evaluated: list | None = None,
            best_state: dict | None = None) -> dict[str, Any]:
    """history.csv, summary.json, and model.pt (weights unless the run failed; the best
    checkpoint on the test set under the opt-in best-on-test protocol)."""
    name = spec.key
    write_history(out_dir / "history.csv", history)
    if evaluated:
        diagnostic.plot(evaluated, out_dir / diagnostic.FIGURE_NAME, name)
    final = trainable_state(model)
    if spec.protocol == "best-on-test" and best_state is not None and not error:
        final = best_state["model"]
    summary = {
        "status": "failed" if error else "ok",
        "error": error,
        "epochs": len(history),
        "train_seconds": sum(h["seconds"] for h in history),
        "flow_params": flow_parameter_count(model),
        "device": str(dev),
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        "started": started,
        "ended": time.time(),
        "index_digest": digest,
        **provenance(),
        "health": verdict(history),
        "protocol": spec.protocol,
        "best_epoch": best_state["epoch"] if spec.protocol == "best-on-test" and best_state else None,
    }
    _save({"spec": spec.to_json(), "status": summary["status"], "error": error,
           "model": None if error else final}, out_dir / "model.pt")
    write_json(out_dir / SUMMARY_FILE, summary)
    if error:
        print(f"ERROR: {error}; recorded as a failed run", flush=True)
    return summary


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            # the fixed columns, then the health statistics (health.py) in first-seen order
            names = list(dict.fromkeys(["epoch", "loss", "lr", "seconds", *(k for row in history for k in row)]))
            w = csv.DictWriter(f, fieldnames=names)
            w.writeheader()
            w.writerows(history)


def load_model(model_pt: str | Path, device: str | torch.device = "cpu"):
    """(model or None, spec, checkpoint) from a ``model.pt``, read once; None for a failed run."""
    path = Path(model_pt)
    ck = read_checkpoint(path)
    spec = JobSpec.parse(json.loads(ck["spec"]), f"{path} (its spec)")
    if ck["status"] != "ok":
        return None, spec, ck
    model = build_model(spec)
    missing, unexpected = model.load_state_dict(ck["model"], strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise CheckpointError(f"{path}: checkpoint does not fit the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    return model.to(device).eval(), spec, ck
