"""How well U-Flow fits, measured through the real pipeline (not a test: run it by hand).

    PYTHONPATH=src .venv/bin/python benchmarks/uflow_fit.py --json uflow_fit.json
    PYTHONPATH=src .venv/bin/python benchmarks/uflow_fit.py --dataset folder \\
        --root ../shared/data --categories mpdd_metal_plate --image-size 256 --epochs 50 --lr 1e-3

Per category and variant it runs extract -> train -> score -> evaluate (the workflow's
functions) and reports:
- image and pixel AUROC (the shared evaluator);
- mean z^2 per latent dimension on the training images, per scale, with the trained model
  (a flow that fits its data gives ~1; the training log prints the same per epoch);
- NFA detections per normal test image: connected regions of -log10 NFA > 0 (the a-contrario
  guarantee says at most 1 on average when z ~ N(0, I) holds).

Variants: ``official`` (the recipe: all CNN stages, trainable LayerNorm per scale) and, with
``--control``, ``no-layernorm-2-scales`` (this project's recipe before issue 15), side by side.
Defaults are the demo's settings (config.yaml: lite0 at 128 px, 20 epochs, batch 8, lr 1e-3).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from skimage.measure import label

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"official": {}, "no-layernorm-2-scales": {"layernorm": False, "n_scales": 2}}


def run_spec(args, category: str, variant: str):
    from uadflows.spec import JobSpec, TrainOptions

    return JobSpec(
        sweep="uflow-fit", dataset=args.dataset, format=args.dataset, category=category,
        model=f"uflow-{variant}", method="uflow", backbone=args.backbone, seed=args.seed,
        image_size=(args.image_size, args.image_size), extractor=args.backbone,
        params=dict(VARIANTS[variant]), device="cpu",
        train=TrainOptions(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, checkpoint_every=args.epochs),
    )


@torch.inference_mode()
def train_z2(model_pt: Path, features: Path) -> list[float]:
    """Mean z^2 per latent dimension on the training split, per scale (fine -> coarse)."""
    from uadflows.features import load_split
    from uadflows.train import load_model

    model = load_model(model_pt)[0]
    sums, n = None, 0
    for idx, feats in load_split(features, "train").batches(16):
        z2 = [zs.pow(2).mean().item() * len(idx) for zs in model(feats, with_log_jac=False).z]
        sums = z2 if sums is None else [a + b for a, b in zip(sums, z2)]
        n += len(idx)
    return [s / n for s in sums]


def nfa_detections(scores_npz: Path) -> dict[str, float]:
    """Mean number of connected regions with -log10 NFA > 0 per good / defective test image."""
    with np.load(scores_npz) as d:
        labels, log_nfa = d["labels"], d["log_nfa"]
    counts = np.array([label(m > 0, connectivity=1).max() for m in log_nfa])
    return {"nfa_regions_per_good": float(counts[labels == 0].mean()),
            "nfa_regions_per_defective": float(counts[labels == 1].mean()),
            "good_images_with_a_detection": float((counts[labels == 0] > 0).mean())}


@torch.inference_mode()
def nfa_by_tail(model_pt: Path, features: Path, size: tuple[int, int]) -> dict[str, dict[str, float]]:
    """Per NFA tail (ours, clamped at u >= 1, and the official unclamped formula): regions
    with NFA < 1 per good / defective test image and the share of good pixels flagged."""
    from uadflows.features import load_split
    from uadflows.methods.uflow import log_nfa_map
    from uadflows.train import load_model

    model = load_model(model_pt)[0]
    split = load_split(features, "test")
    labels = np.array([s.label for s in split.samples()])
    out = {}
    for tail in ("chernoff", "chernoff_unclamped"):
        maps = np.concatenate([log_nfa_map(model(feats, with_log_jac=False).z, size, tail=tail).numpy()
                               for _, feats in split.batches(16)])
        counts = np.array([label(m > 0, connectivity=1).max() for m in maps])
        out[tail] = {"regions_per_good": float(counts[labels == 0].mean()),
                     "regions_per_defective": float(counts[labels == 1].mean()),
                     "good_pixels_flagged": float((maps[labels == 0] > 0).mean())}
    return out


def measure(args, category: str, root: Path, work: Path) -> list[dict]:
    from uadflows.data import index_category, write_index
    from uadflows.evaluate import evaluate
    from uadflows.features import extract
    from uadflows.score import score
    from uadflows.train import train

    index = work / "index" / f"{category}.csv"
    write_index(index_category(args.dataset, root, category), index)
    features = work / "features" / category
    if not (features / "meta.json").exists():
        extract(index, features, {"name": args.backbone, "image_size": args.image_size, "pretrained": True},
                batch_size=16, device="cpu")
    rows = []
    for variant in args.variants:
        out = work / "runs" / category / variant
        spec = run_spec(args, category, variant)
        out.mkdir(parents=True, exist_ok=True)
        spec.save(out / "spec.json")
        summary = train(spec, features, out, index_csv=index)
        score(out / "model.pt", features, out / "scores.npz", index_csv=index)
        metrics = evaluate(out / "spec.json", out / "summary.json", out / "scores.npz", out / "metrics.json")["metrics"]
        row = {"category": category, "variant": variant, "params": VARIANTS[variant],
               "image_auroc": metrics["image_auroc"], "pixel_auroc": metrics.get("pixel_auroc"),
               "miou": metrics.get("miou"), "train_z2_per_scale": train_z2(out / "model.pt", features),
               **nfa_detections(out / "scores.npz"),
               "nfa_by_tail": nfa_by_tail(out / "model.pt", features, (args.image_size, args.image_size)),
               "flow_params": summary["flow_params"],
               "train_seconds": round(summary["train_seconds"], 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """The Markdown table of the rows (also ``--render FILE`` from a saved ``--json``)."""
    lines = ["| category | variant | image AUROC | pixel AUROC | train z^2 per scale (fine -> coarse) "
             "| NFA regions / good image | same, official unclamped tail |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        z2 = " / ".join(f"{v:.2f}" for v in r["train_z2_per_scale"])
        pix = "-" if r["pixel_auroc"] is None else f"{100 * r['pixel_auroc']:.1f}"
        official = r["nfa_by_tail"]["chernoff_unclamped"]["regions_per_good"] if "nfa_by_tail" in r else None
        lines.append(f"| {r['category']} | {r['variant']} | {100 * r['image_auroc']:.1f} | {pix} | {z2} "
                     f"| {r['nfa_regions_per_good']:.2f} | {'-' if official is None else f'{official:.2f}'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="demo", choices=["demo", "folder", "mvtec"])
    p.add_argument("--root", type=Path, help="dataset root (demo: generated here when absent)")
    p.add_argument("--categories", nargs="+", default=["brick", "grass", "gravel"])
    p.add_argument("--backbone", default="tf_efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--control", action="store_true", help="also the variant without LayerNorm, 2 scales")
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / ".work" / "uflow_fit")
    p.add_argument("--json", type=Path)
    p.add_argument("--render", type=Path, help="print the table of a saved --json and exit")
    args = p.parse_args(argv)
    if args.render:
        print(table(json.loads(args.render.read_text())["rows"]))
        return 0
    args.variants = list(VARIANTS) if args.control else ["official"]
    torch.set_num_threads(1)
    work = args.work / args.dataset
    root = args.root
    if args.dataset == "demo" and root is None:
        from uadflows.data.demo import make_demo

        root = make_demo(work / "data", tuple(args.categories), seed=0, image_size=args.image_size)
    rows = [r for c in args.categories for r in measure(args, c, Path(root), work)]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                                         "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
