"""Start-up of the light sub-commands: a fresh interpreter importing what each command
imports before it works (its module and the modules its function imports), best of N,
against controls in the same run: a bare interpreter, one importing torch and timm (what
every job paid before they became lazy) and one importing mlflow alone (the mlflow job's
floor). A benchmark, not a test.

    PYTHONPATH=src .venv/bin/python benchmarks/startup.py --json startup.json
    PYTHONPATH=src .venv/bin/python benchmarks/startup.py --quick        # best of 3
    .venv/bin/python benchmarks/startup.py --markdown startup.json       # its table again

The figure is user+system CPU seconds of the child (``getrusage``), which other work on a
loaded machine does not inflate the way it inflates wall time; wall time alongside.
tests/test_light_jobs.py checks that these paths (run for real) never load torch or timm.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from speed_common import table  # noqa: E402

# What each command's function imports (uadflows/cli.py), plus the CLI itself. The report
# row draws figures (the demo's default: matplotlib); "report --no-figures" does not. The
# mlflow job's own work is MLflow: "(mlflow alone)" is the floor no code of ours can lower.
COMMANDS = {
    "(bare interpreter)": "pass",
    "(torch + timm)": "import torch, timm",
    "(mlflow alone)": "import mlflow",
    "check-config": "import uadflows.cli; from uadflows.config import load_plan, read_config; "
                    "load_plan(read_config('configs/test/tiny.yaml'))",
    "verify": "import uadflows.cli, uadflows.data",
    "evaluate": "import uadflows.cli, uadflows.evaluate, uadflows.metrics, uadflows.data",
    "aggregate": "import uadflows.cli, uadflows.aggregate",
    "report": "import uadflows.cli, uadflows.report.tables, uadflows.report.figures, uadflows.reference",
    "report --no-figures": "import uadflows.cli, uadflows.report.tables, uadflows.reference",
    "mlflow": "import uadflows.cli, uadflows.tracking, mlflow",
}


# Modules whose presence each row reports: the heavy ones, and the slow ones that only
# some jobs' work needs (tests/test_light_jobs.py holds each command to its list).
WATCHED = ("torch", "timm", "sklearn", "matplotlib", "scipy.stats", "mlflow")


def cpu_seconds(code: str) -> tuple[float, float, list[str]]:
    """User+system CPU and wall seconds of ``python -c code``, and the heavy modules it held."""
    probe = f"{code}\nimport sys; print(sorted(m for m in {WATCHED} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise RuntimeError(f"{code!r} failed:\n{p.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, json.loads(p.stdout.strip().splitlines()[-1].replace("'", '"'))


COLUMNS = ["command", "cpu_s_best", "cpu_s_median", "wall_s_best", "heavy_modules"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="best of 3")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", metavar="JSON", help="print the table of an earlier --json file, measure nothing")
    a = ap.parse_args()
    if a.markdown:
        saved = json.loads(Path(a.markdown).read_text())
        print(f"load average (1 min) at the end: {saved['load_average_1min']:.1f}\n")
        print(table(saved["rows"], COLUMNS))
        return
    n = 3 if a.quick else a.repeats
    rows = []
    for name, code in COMMANDS.items():
        samples = [cpu_seconds(code) for _ in range(n)]
        cpu = sorted(s[0] for s in samples)
        wall = sorted(s[1] for s in samples)
        rows.append({"command": name, "cpu_s_best": cpu[0], "cpu_s_median": cpu[n // 2],
                     "wall_s_best": wall[0], "heavy_modules": " ".join(samples[0][2]) or "-", "repeats": n})
        print(json.dumps(rows[-1]), flush=True)
    print(table(rows, COLUMNS))
    if a.json:
        Path(a.json).write_text(json.dumps({"load_average_1min": os.getloadavg()[0], "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
