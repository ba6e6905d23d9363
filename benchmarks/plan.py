"""Planning cost: ``snakemake -n`` on sweeps of 500, 5,000 and 20,000 runs, against the
same workflow with every input function, param and resource replaced by a constant
(Snakemake's own floor: parsing, DAG, dry-run printing). A benchmark, not a test.

    PYTHONPATH=src .venv/bin/python benchmarks/plan.py --json plan.json
    PYTHONPATH=src .venv/bin/python benchmarks/plan.py --quick          # 100 and 500 runs

A sweep of R runs: 10 MVTec AD categories x M models x S seeds (roots need not exist: the
workflow plans with ``check_roots=False``). The models are FastFlow with distinct epochs on
one backbone set-up, so every run shares one extractor per category and the floor can name
the feature cache as a constant. Each ``snakemake -n`` runs in its own process; the figure is
its user CPU time (``getrusage`` of children, so the load of other work on the machine does not
inflate it the way it inflates wall time), wall time alongside. Both workflows plan the
same number of jobs (checked).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from speed_common import table  # noqa: E402

CATEGORIES = ["bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw"]
SIZES = {500: (5, 10), 5000: (10, 50), 20000: (20, 100)}  # runs: (models, seeds)
QUICK = {100: (2, 5), 500: (5, 10)}
BACKBONE, IMAGE_SIZE = "resnet18", 256
COLUMNS = ["runs", "jobs", "user_s", "floor_user_s", "extra_user_ms_per_job", "wall_s", "floor_wall_s"]


def sweep_config(models: int, seeds: int, results: str) -> dict:
    return {
        "sweep": "plan", "results": results, "device": "cuda", "seeds": list(range(seeds)),
        "datasets": {"mvtec": {"format": "mvtec", "root": "/nonexistent/mvtec", "categories": CATEGORIES}},
        "models": {f"fastflow{i}": {"method": "fastflow", "backbone": BACKBONE, "image_size": IMAGE_SIZE,
                                    "epochs": 100 + i} for i in range(models)},
    }


# The floor: the real rules' files and wildcards, every input function a constant pattern.
FLOOR = '''
import json
R = {results!r}
RUNS = json.load(open({runs!r}))
CATS = {cats!r}
EXT = {ext!r}
RUN = f"{{R}}/runs/{{{{dataset}}}}/{{{{category}}}}/{{{{model}}}}/seed{{{{seed}}}}"

wildcard_constraints:
    dataset="[A-Za-z0-9_-]+", category="[A-Za-z0-9_.-]+", model="[A-Za-z0-9_.-]+",
    extractor="[A-Za-z0-9_.-]+", seed=r"\\d+",

localrules: all, spec, verify, weights, aggregate, report, mlflow

rule all:
    input: f"{{R}}/metrics.csv", f"{{R}}/report/tables/tables.tex", f"{{R}}/mlflow.json"
    default_target: True

rule verify:
    output: f"{{R}}/index/{{{{dataset}}}}/{{{{category}}}}.csv"
    params: fmt="mvtec", root="/nonexistent/mvtec", index_dir="x"
    log: f"{{R}}/logs/verify/{{{{dataset}}}}/{{{{category}}}}.log"
    shell: "touch {{output}}"

rule weights:
    output: f"{{R}}/weights/{{{{backbone}}}}.json"
    log: f"{{R}}/logs/weights/{{{{backbone}}}}.log"
    shell: "touch {{output}}"

rule extract:
    resources: mem_mb=6000, runtime=60
    input:
        index=f"{{R}}/index/{{{{dataset}}}}/{{{{category}}}}.csv",
        verified=[f"{{R}}/index/mvtec/{{c}}.csv" for c in CATS],
        weights=f"{{R}}/weights/{backbone}.json",
    output: directory(f"{{R}}/features/{{{{dataset}}}}/{{{{category}}}}/{{{{extractor}}}}")
    params: extractor="{{}}", device="cuda"
    threads: 4
    log: f"{{R}}/logs/extract/{{{{dataset}}}}/{{{{category}}}}/{{{{extractor}}}}.log"
    shell: "mkdir -p {{output}}"

rule spec:
    output: f"{{RUN}}/spec.json"
    params: digest="0"
    log: f"{{R}}/logs/spec/{{{{dataset}}}}/{{{{category}}}}/{{{{model}}}}/seed{{{{seed}}}}.log"
    shell: "touch {{output}}"

rule train:
    group: "run"
    resources: mem_mb=6000, runtime=360
    input:
        spec=f"{{RUN}}/spec.json",
        features=f"{{R}}/features/{{{{dataset}}}}/{{{{category}}}}/{{EXT}}",
        index=f"{{R}}/index/{{{{dataset}}}}/{{{{category}}}}.csv",
    output: model=f"{{RUN}}/model.pt", history=f"{{RUN}}/history.csv", summary=f"{{RUN}}/summary.json"
    params: out="x"
    threads: 4
    log: f"{{R}}/logs/train/{{{{dataset}}}}/{{{{category}}}}/{{{{model}}}}/seed{{{{seed}}}}.log"
    shell: "touch {{output}}"

rule score:
    group: "run"
    resources: mem_mb=6000, runtime=30
    input: model=f"{{RUN}}/model.pt", features=f"{{R}}/features/{{{{dataset}}}}/{{{{category}}}}/{{EXT}}"
    output: f"{{RUN}}/scores.npz"
    params: device="cuda"
    threads: 4
    log: f"{{R}}/logs/score/{{{{dataset}}}}/{{{{category}}}}/{{{{model}}}}/seed{{{{seed}}}}.log"
    shell: "touch {{output}}"

rule evaluate:
    group: "run"
    input: spec=f"{{RUN}}/spec.json", summary=f"{{RUN}}/summary.json", scores=f"{{RUN}}/scores.npz"
    output: f"{{RUN}}/metrics.json"
    log: f"{{R}}/logs/evaluate/{{{{dataset}}}}/{{{{category}}}}/{{{{model}}}}/seed{{{{seed}}}}.log"
    shell: "touch {{output}}"

rule aggregate:
    input: [f"{{R}}/runs/{{r}}/metrics.json" for r in RUNS]
    output: f"{{R}}/metrics.csv"
    log: f"{{R}}/logs/aggregate.log"
    shell: "touch {{output}}"

rule report:
    input: f"{{R}}/metrics.csv"
    output: tables=f"{{R}}/report/tables/tables.tex", figures=directory(f"{{R}}/report/figures")
    params: out="x", figures=""
    log: f"{{R}}/logs/report.log"
    shell: "touch {{output.tables}}"

rule mlflow:
    input: metrics=f"{{R}}/metrics.csv", tables=f"{{R}}/report/tables/tables.tex", figures=f"{{R}}/report/figures"
    output: f"{{R}}/mlflow.json"
    params: uri="sqlite:///mlflow.db", experiment="x", sweep="plan", tables="x"
    log: f"{{R}}/logs/mlflow.log"
    shell: "touch {{output}}"
'''


def dry_run(snakefile: Path, configfile: Path, workdir: Path) -> dict:
    """``snakemake -n`` in a child process: its user CPU and wall seconds, and its job count."""
    snakemake = Path(sys.executable).parent / "snakemake"
    cmd = [str(snakemake), "-n", "--quiet", "rules", "-s", str(snakefile), "--configfile", str(configfile),
           "--directory", str(workdir), "--cores", "1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise RuntimeError(f"snakemake -n failed ({snakefile}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return {"user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
            "wall_s": wall, "jobs": _total(p.stdout + p.stderr)}


def _total(text: str) -> int:
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "total" and parts[-1].isdigit():
            return int(parts[-1])
    raise RuntimeError(f"no job total in snakemake's output:\n{text[-2000:]}")


def measure(runs: int, models: int, seeds: int, work: Path) -> dict:
    from uadflows.backbones import extractor_spec

    results = str(work / "results")
    config = sweep_config(models, seeds, results)
    configfile = work / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    run_paths = [f"mvtec/{c}/{m}/seed{s}" for c in CATEGORIES for m in config["models"] for s in config["seeds"]]
    assert len(run_paths) == runs
    (work / "runs.json").write_text(json.dumps(run_paths))
    floor = work / "Snakefile.floor"
    ext = extractor_spec(BACKBONE, image_size=IMAGE_SIZE).key()
    floor.write_text(FLOOR.format(results=results, runs=str(work / "runs.json"), cats=CATEGORIES, ext=ext,
                                  backbone=BACKBONE))
    real = dry_run(ROOT / "Snakefile", configfile, work)
    base = dry_run(floor, configfile, work)
    if real["jobs"] != base["jobs"]:
        raise RuntimeError(f"{runs} runs: the floor plans {base['jobs']} jobs, the workflow {real['jobs']}")
    extra = real["user_s"] - base["user_s"]
    return {"runs": runs, "jobs": real["jobs"], "user_s": real["user_s"], "wall_s": real["wall_s"],
            "floor_user_s": base["user_s"], "floor_wall_s": base["wall_s"],
            "extra_user_ms_per_job": 1000 * extra / real["jobs"], "extra_user_ms_per_run": 1000 * extra / runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 and 500 runs only")
    ap.add_argument("--runs", type=int, nargs="+", choices=sorted({*SIZES, *QUICK}), help="these sizes only")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--render", help="print the markdown table of a saved --json and exit")
    a = ap.parse_args()
    if a.render:
        saved = json.loads(Path(a.render).read_text())
        print(table(saved["rows"], COLUMNS))
        print(f"\n(load average {saved['load_average_1min']:.1f} when written)")
        return
    sizes = QUICK if a.quick else SIZES
    rows = []
    for runs in a.runs or sizes:
        models, seeds = {**QUICK, **SIZES}[runs]
        work = Path(tempfile.mkdtemp(prefix=f"plan{runs}-"))
        try:
            rows.append(measure(runs, models, seeds, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(rows[-1]), flush=True)
    print(table(rows, COLUMNS))
    if a.json:
        Path(a.json).write_text(json.dumps({"load_average_1min": os.getloadavg()[0], "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
