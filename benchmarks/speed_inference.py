"""Inference throughput (images per second, batch 1 and 32; CaiT set-ups 1 and 8) of each
method and backbone, next to the bare backbone on the same input, and FastFlow on ResNet18
at 256 px next to anomalib's FastFlow. A benchmark, not a test: run it by hand, once.

    PYTHONPATH=src .venv/bin/python benchmarks/speed_inference.py             # everything
    PYTHONPATH=src .venv/bin/python benchmarks/speed_inference.py --quick     # smoke run
    ... --only methods | anomalib

methods: per set-up (own process, random weights, tuned malloc), each timed call runs the
backbone once and then the flow and the anomaly maps of every variant on its output
(FastFlow: FrEIA's block, FrEIA's with the index permutation only, the project's lean
block): a variant's time is backbone + its flow and maps, measured in the same call, as
``predict`` does it (``torch.inference_mode``, ``with_log_jac=False``). Minimum over the
timed calls.

anomalib: run by the anomalib environment's Python (``--anomalib-python``, see
docs/benchmarks.md), one process holding the bare timm ResNet18, anomalib's
``FastflowModel`` and ours with the same weights; each timed call is a whole forward
from pixels (anomalib gets the image normalised, as its pre-processor does; ours
normalises inside). The maps must agree: ours = 1 + anomalib's (it returns -mean prob).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from speed_common import TUNED_MALLOC, emit, fastflow_models, interleaved, machine, run_part, table  # noqa: E402

# (method, backbone, image size). The heavy ones (CaiT-M48: ~20 s per image on the shared
# 2-core machine) are timed at batch 1 and ``--heavy-batch`` (8), one call at the larger.
SETUPS = [
    ("fastflow", "resnet18", 256),
    ("fastflow", "wide_resnet50_2", 256),
    ("fastflow", "deit_base_distilled_patch16_384", 384),
    ("fastflow", "cait_m48_448", 448),
    ("msflow", "wide_resnet50_2", 512),
    ("uflow", "ms_cait", 448),
]
HEAVY = {"cait_m48_448", "ms_cait"}
DEFAULT_ANOMALIB_PYTHON = "/tmp/anomalib-venv/bin/python"


def method_models(method: str, backbone: str, size: int) -> tuple[object, dict]:
    """(extractor, {variant: model built without a backbone})."""
    from uadflows.backbones import create_extractor
    from uadflows.methods import create

    extractor = create_extractor(backbone, image_size=size, pretrained=False).eval()
    if method == "fastflow":
        return extractor, {v: m.eval() for v, m in fastflow_models(backbone, size).items()}
    return extractor, {"as is": create(method, backbone=backbone, pretrained=False, image_size=size,
                                       build_backbone=False).eval()}


def measure_methods(method: str, backbone: str, size: int, batches: list[int], reps: dict[int, int]) -> dict:
    import torch

    extractor, models = method_models(method, backbone, size)
    rows = []
    for batch in batches:
        x = torch.rand(batch, 3, size, size)
        n = reps[batch]
        with torch.inference_mode():
            warm = x[:2] if backbone in HEAVY and batch > 2 else x  # a full heavy batch is minutes
            feats = extractor(warm)
            for m in models.values():
                m.anomaly_maps(m(feats, with_log_jac=False), (size, size))
            bb, flows = [], {v: [] for v in models}
            for _ in range(n):
                t0 = time.perf_counter()
                feats = extractor(x)
                bb.append(time.perf_counter() - t0)
                for v, m in models.items():
                    t0 = time.perf_counter()
                    m.anomaly_maps(m(feats, with_log_jac=False), (size, size))
                    flows[v].append(time.perf_counter() - t0)
        row = {"method": method, "backbone": f"{backbone} @{size}", "batch": batch, "timed calls": n,
               "bare backbone img/s": batch / min(bb)}
        for v in models:
            best = min(b + f for b, f in zip(bb, flows[v]))
            row[f"{v} img/s"] = batch / best
            row[f"{v} flow+maps s"] = min(flows[v])
        rows.append(row)
    return {"rows": rows, "machine": machine()}


def measure_anomalib(batches: list[int], reps: dict[int, int], size: int = 256) -> dict:
    """FastFlow on ResNet18: anomalib's torch model against ours, same weights, one process."""
    import numpy as np
    import torch
    from anomalib.models.image.fastflow.torch_model import FastflowModel

    import anomalib

    ours = {v: m.eval() for v, m in fastflow_models("resnet18", size, build_backbone=True).items()}
    ref = ours["freia"]
    with torch.no_grad():  # move the flows off their initial weights, the same for all
        gen = torch.Generator().manual_seed(1)
        state = {k: (v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() and "w_perm" not in k
                     and not k.startswith("backbone.") else v) for k, v in ref.state_dict().items()}
    for m in ours.values():
        m.load_state_dict(state)
    ano = FastflowModel((size, size), "resnet18", pre_trained=False, flow_steps=8, conv3x3_only=True,
                        hidden_ratio=1.0).eval()
    # Same parameter names once the prefixes are mapped; strict: every weight is copied.
    ano.load_state_dict({k.replace("backbone.model.", "feature_extractor.").replace("flows.", "fast_flow_blocks."): v
                         for k, v in state.items()}, strict=True)
    mean = torch.tensor(ref.backbone.spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(ref.backbone.spec.std).view(1, 3, 1, 1)
    rows, checks = [], {}
    with torch.inference_mode():
        x = torch.rand(4, 3, size, size)
        expected = 1.0 + ano((x - mean) / std).anomaly_map[:, 0]
        for v, m in ours.items():
            got = m.predict(x)["map"]
            checks[v] = float((got - expected).abs().max())
            if not checks[v] < 1e-5:
                raise AssertionError(f"anomaly maps differ from anomalib's: {v} max |diff| {checks[v]}")
        for batch in batches:
            x = torch.rand(batch, 3, size, size)
            fns = {"bare backbone": lambda: ref.backbone(x), "anomalib": lambda: ano((x - mean) / std)}
            fns.update({f"ours {v}": (lambda m=m: m.predict(x)) for v, m in ours.items()})
            t = interleaved(fns, reps[batch])
            row = {"batch": batch, "timed calls": reps[batch]}
            row.update({f"{k} img/s": batch / d["min"] for k, d in t.items()})
            row.update({f"{k} img/s (median)": batch / d["median"] for k, d in t.items()})
            for v in ours:
                row[f"ours {v} / anomalib"] = t["anomalib"]["min"] / t[f"ours {v}"]["min"]
                row[f"ours {v} / anomalib (median)"] = t["anomalib"]["median"] / t[f"ours {v}"]["median"]
            rows.append(row)
    return {"rows": rows, "max_abs_map_diff": checks, "anomalib": anomalib.__version__,
            "seed_weights": "random backbone, flows perturbed N(0, 0.05)", "machine": machine(),
            "numpy": np.__version__}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="ResNet18 FastFlow at 64 px, batch 1 and 4, and anomalib")
    p.add_argument("--only", choices=["methods", "anomalib"], help="one half")
    p.add_argument("--anomalib-python", default=DEFAULT_ANOMALIB_PYTHON)
    p.add_argument("--reps", type=int, default=0, help="timed calls per batch size (default: 5 at batch 1, "
                   "3 at 32 (anomalib), 2 at 32 (methods), 1 for CaiT at 32)")
    p.add_argument("--heavy-batch", type=int, default=8, help="larger batch for CaiT set-ups (default 8)")
    p.add_argument("--json", type=Path)
    p.add_argument("--part", help=argparse.SUPPRESS)
    a = p.parse_args()
    batches = [1, 4] if a.quick else [1, 32]
    big = batches[-1]
    if a.part == "anomalib":
        emit(measure_anomalib(batches, {1: a.reps or (2 if a.quick else 5), big: a.reps or (1 if a.quick else 3)},
                              64 if a.quick else 256))
        return
    if a.part:
        method, backbone, size = a.part.split(":")
        heavy = backbone in HEAVY
        if heavy:
            batches = [1, a.heavy_batch]
        emit(measure_methods(method, backbone, int(size), batches,
                             {1: a.reps or (3 if heavy else 5), batches[-1]: a.reps or (1 if heavy or a.quick else 2)}))
        return
    out: dict = {}
    setups = [("fastflow", "resnet18", 64)] if a.quick else SETUPS
    extra = ["--quick"] if a.quick else []
    extra += ["--reps", str(a.reps)] if a.reps else []
    extra += ["--heavy-batch", str(a.heavy_batch)]
    if a.only in (None, "methods"):
        out["methods"] = []
        for method, backbone, size in setups:
            t0 = time.perf_counter()
            r = run_part(Path(__file__), ["--part", f"{method}:{backbone}:{size}", *extra], env=TUNED_MALLOC)
            print(f"{method} {backbone}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            out["methods"].append(r)
        rows = [row for r in out["methods"] for row in r["rows"]]
        cols = list(dict.fromkeys(c for row in rows for c in row if not c.endswith("flow+maps s")))
        print(table(rows, cols) + "\n")
        cols = ["method", "backbone", "batch", *dict.fromkeys(c for row in rows for c in row if c.endswith("flow+maps s"))]
        print(table(rows, cols) + "\n")
    if a.only in (None, "anomalib"):
        if not Path(a.anomalib_python).exists():
            raise SystemExit(f"{a.anomalib_python}: no anomalib environment; create it as docs/benchmarks.md says")
        r = run_part(Path(__file__), ["--part", "anomalib", *extra], env=TUNED_MALLOC, python=a.anomalib_python)
        out["anomalib"] = r
        cols = [c for c in r["rows"][0] if "median" not in c or " / " in c]
        print(table(r["rows"], cols))
        print(f"\nanomalib {r['anomalib']}; max |our map - (1 + anomalib map)|: {r['max_abs_map_diff']}")
    print("\nmachine:", json.dumps((out.get("methods") or [out.get("anomalib")])[0]["machine"]))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
