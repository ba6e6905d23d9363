"""FastFlow's (and U-Flow's CNN path's) unbounded objective on a real category (issue 22):
faithful vs bounded vs no-affine pre-flow LayerNorm (src/uadflows/methods/layernorm.py), trained with the
project's trainer, the training health recorded per epoch (health.py) and the test metrics
every K epochs (the labelled diagnostic of diagnostic.py: evaluated on the test set, not a
protocol; the table's "last epoch" column is the honest protocol's number).

    PYTHONPATH=src .venv/bin/python benchmarks/collapse.py --epochs 100 --json docs/methods/fastflow_collapse.json
    PYTHONPATH=src .venv/bin/python benchmarks/collapse.py --render docs/methods/fastflow_collapse.json
    PYTHONPATH=src .venv/bin/python benchmarks/collapse.py --quick      # smoke run, a few seconds

Each variant trains in its own process (OMP_NUM_THREADS=1), ``--parallel`` at a time.
``--render`` draws docs/methods/<method>_collapse.png (loss, LayerNorm scales, AUROC per
checkpoint) and writes the table between the markers in docs/methods/<method>.md.
``--method uflow``: the same for U-Flow (lr: the method's recipe unless ``--lr``).
``--quick``: a smoke run on a tiny demo category (tests/test_benchmarks.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
NORMS = ("faithful", "bounded", "no-affine")
METHODS = ("fastflow", "uflow")  # the methods with a pre-flow LayerNorm (its ``norm`` param)
DEFAULT_OUT = str(ROOT / "results/collapse")
SETTINGS = ("method", "category", "epochs", "batch_size", "lr", "eval_every", "image_size", "seed")
BEGIN, END = "<!-- collapse-table:begin -->", "<!-- collapse-table:end -->"


def spec_for(norm: str, a) -> dict:
    return {
        "sweep": "collapse", "dataset": a.dataset, "format": a.format, "category": a.category,
        "model": f"{a.method}-{norm}", "method": a.method, "backbone": "tf_efficientnet_lite0",
        "seed": a.seed, "image_size": [a.image_size, a.image_size], "pretrained": True,
        "weights_file": None, "extractor": "lite0", "params": {"norm": norm},
        "train": {"epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr,
                  "checkpoint_every": 1, "eval_every": a.eval_every},
        "evaluation": {"resolution": "model", "pro_limit": 0.3},
        "device": "cpu", "protocol": "last-epoch",
    }


def prepare(a) -> tuple[Path, Path]:
    """The category's index and its lite0 feature cache under ``--out`` (``--quick``: a tiny
    demo category made there first)."""
    from uadflows.data import index_category, write_index
    from uadflows.data.demo import make_demo
    from uadflows.features import extract

    out = Path(a.out)
    if a.quick:
        make_demo(out / "data", (a.category,), seed=0, image_size=a.image_size, n_train=8,
                  n_test_good=4, n_test_defect=4)
    index = out / "index.csv"
    if not index.is_file():
        write_index(index_category(a.format, a.data, a.category), index)
    features = out / "features"
    if not (features / "meta.json").is_file():  # the train stage checks it against the index
        extract(index, features, {"name": "tf_efficientnet_lite0", "image_size": a.image_size,
                                  "pretrained": True}, device="cpu")
    return index, features


def run_job(spec: str, features: str, run: str, index: str) -> None:
    """The project's trainer on one variant (a JSON job spec); prints the training summary."""
    from uadflows.spec import JobSpec
    from uadflows.train import train

    summary = train(JobSpec.parse(json.loads(spec), "collapse.py"), features, run, index_csv=index)
    print(json.dumps(summary, default=str))


def train_one(norm: str, a, index: Path, features: Path) -> float:
    """Train one variant in a subprocess (its own single thread; ``--quick``: in this
    process); returns wall seconds."""
    run = Path(a.out) / f"{a.method}-{norm}"
    run.mkdir(parents=True, exist_ok=True)
    args = [json.dumps(spec_for(norm, a)), str(features), str(run), str(index)]
    t0 = time.time()
    if a.quick:
        run_job(*args)
        return time.time() - t0
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
            "from collapse import run_job; run_job(*sys.argv[1:])")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT / "src")}
    with open(run / "train.log", "a") as log:
        subprocess.run([sys.executable, "-c", code, *args], env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.time() - t0


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: (float(v) if v not in ("", None) and k != "note" else v) for k, v in r.items()}
                for r in csv.DictReader(f)]


def collect(a, walls: dict[str, float]) -> dict:
    """The runs' numbers. A run still training (or stopped) is read from its last
    ``train_state.pt`` (written every epoch), its verdict computed from that history."""
    import torch

    from speed_common import machine
    from uadflows.health import verdict

    runs = {}
    for norm in a.norms:
        run = Path(a.out) / f"{a.method}-{norm}"
        if (run / "summary.json").is_file():
            summary = json.loads((run / "summary.json").read_text())
            history = read_csv(run / "history.csv")
        else:
            state = torch.load(run / "train_state.pt", map_location="cpu", weights_only=True)
            history = state["history"]
            summary = {"status": f"partial: stopped after epoch {state['epoch']} of {a.epochs}",
                       "health": verdict(history), "train_seconds": sum(h["seconds"] for h in history)}
        runs[norm] = {"history": history,
                      "diagnostic_on_test": read_csv(run / "diagnostic_on_test.csv"),
                      "health": verdict(history),  # today's rules, whatever code trained it
                      "status": summary["status"],
                      "train_seconds": summary["train_seconds"], "wall_seconds": walls.get(norm)}
    return {"method": a.method, "category": a.category, "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr,
            "eval_every": a.eval_every, "image_size": a.image_size, "seed": a.seed,
            "machine": machine(), "runs": runs}


def table(result: dict) -> str:
    """Markdown: per variant the last epoch's numbers, the diagnostic's best, the verdict."""
    lines = ["| norm | epochs trained | loss (last epoch) | LayerNorm scale per feature scale | image AUROC, last "
             "evaluated epoch | pixel AUROC, same | best image AUROC on test (epoch; diagnostic) | health verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for norm, r in result["runs"].items():
        last, ev = r["history"][-1], r["diagnostic_on_test"]
        scales = [f"{last[k]:.3f}" for k in sorted(last) if k.startswith("ln_scale")] or ["none"]
        best = max(ev, key=lambda e: (e["image_auroc"], -e["epoch"]))
        final = ev[-1]
        lines.append(f"| {norm} | {int(last['epoch'])} of {result['epochs']} | {last['loss']:.4g} | {' / '.join(scales)} | "
                     f"{final['image_auroc']:.3f} ({int(final['epoch'])}) | "
                     f"{final['pixel_auroc']:.3f} | {best['image_auroc']:.3f} ({int(best['epoch'])}) | "
                     f"{r['health']['message']} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uadflows.methods import label

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    colors = dict(zip(NORMS, ("tab:red", "tab:blue", "tab:green")))
    for norm, r in result["runs"].items():
        h, ev, c = r["history"], r["diagnostic_on_test"], colors.get(norm)
        epochs = [row["epoch"] for row in h]
        axes[0].plot(epochs[1:], [row["loss"] for row in h[1:]], color=c, label=norm)
        for k, style in zip(sorted(k for k in h[-1] if k.startswith("ln_scale")), ("-", "--", ":")):
            axes[1].plot(epochs, [row[k] for row in h], style, color=c, label=f"{norm} {k}")
        e = [row["epoch"] for row in ev]
        axes[2].plot(e, [row["image_auroc"] for row in ev], "-o", ms=3, color=c, label=f"{norm} image")
        axes[2].plot(e, [row["pixel_auroc"] for row in ev], "--s", ms=3, color=c, label=f"{norm} pixel")
    axes[0].set_title("training loss (sum over scales, batch mean), from epoch 2", fontsize=9)
    axes[1].set_title("pre-flow LayerNorm: mean affine weight", fontsize=9)
    axes[1].set_yscale("log")
    axes[2].set_title("AUROC per checkpoint\ndiagnostic: evaluated on the test set; not a protocol", fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"{label(result['method'])}, lite0 @ {result['image_size']} px, MPDD {result['category']}, "
                 f"batch {result['batch_size']}, seed {result['seed']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(result: dict, path: Path) -> dict:
    """``result``'s runs added to (or replacing) those of the --json file at ``path``, which
    must have been measured with the same settings."""
    old = json.loads(path.read_text())
    old.setdefault("method", "fastflow")  # files before --method
    old.setdefault("lr", next(iter(old["runs"].values()))["history"][0]["lr"])  # files before --lr
    for key in SETTINGS:
        if old.get(key) != result[key]:
            raise SystemExit(f"{path}: {key} is {old.get(key)!r}, these runs' is {result[key]!r}; "
                             "not merged (rerun with the same settings)")
    machines = old.pop("machines", None) or {n: old["machine"] for n in old["runs"]}
    old.pop("machine", None)  # one machine per run now
    machines.update({n: result["machine"] for n in result["runs"]})
    runs = {**old["runs"], **result["runs"]}
    return {**old, "machines": machines, "runs": {n: runs[n] for n in NORMS if n in runs}}


def render(result: dict) -> None:
    doc = ROOT / f"docs/methods/{result['method']}.md"
    plot(result, doc.with_name(f"{result['method']}_collapse.png"))
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc}: markers {BEGIN} / {END} missing")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{table(result)}\n{END}{tail}")
    print(table(result))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent.parent / "shared/data"))
    p.add_argument("--dataset", default="mpdd", help="the dataset's name in the runs' job specs")
    p.add_argument("--category", default="mpdd_metal_plate")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--method", default="fastflow", choices=METHODS)
    p.add_argument("--lr", type=float, help="Adam's learning rate (default: the method's recipe)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--norms", nargs="+", default=list(NORMS), choices=NORMS)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--json", help="write the raw numbers here")
    p.add_argument("--render", metavar="JSON", help="only draw the figure and the table from a --json file")
    p.add_argument("--collect", action="store_true", help="only read the runs under --out (finished or not) into --json")
    p.add_argument("--merge", action="store_true",
                   help="add the runs to those already in --json (same settings required) instead of overwriting it")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: a tiny demo category at 64 px, 2 epochs, batch 4, all norms, in --out "
                        "(default: a temporary folder); figure beside the JSON, docs untouched")
    a = p.parse_args(argv)
    if a.render:
        result = json.loads(Path(a.render).read_text())
        render({"method": "fastflow", **result})  # files before --method were FastFlow's
        return
    if a.lr is None:
        from uadflows.methods import recipe

        a.lr = recipe(a.method)["lr"]
    a.format = "folder"
    if a.quick:
        vars(a).update(dataset="demo", format="demo", category="brick", epochs=2, batch_size=4,
                       image_size=64, eval_every=1)
        a.out = a.out if a.out != DEFAULT_OUT else tempfile.mkdtemp(prefix="collapse_quick_")
        a.data, a.parallel = str(Path(a.out) / "data"), 1
    if a.collect:
        result = collect(a, {})
    else:
        index, features = prepare(a)
        with ThreadPoolExecutor(a.parallel) as pool:
            walls = dict(zip(a.norms, pool.map(lambda n: train_one(n, a, index, features), a.norms)))
        result = collect(a, walls)
    if a.json:
        path = Path(a.json)
        if a.merge and path.is_file():
            result = merge(result, path)
        path.write_text(json.dumps(result, indent=1))
        if a.quick:
            plot(result, path.with_suffix(".png"))
    print(table(result))


if __name__ == "__main__":
    main()
