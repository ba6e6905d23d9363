"""Our FastFlow, U-Flow, CFlow and CS-Flow against anomalib's, same weights, same input (not a test: run by hand).

    PYTHONPATH=src /work/main/.venv/bin/python benchmarks/equivalence.py --json docs/fidelity/equivalence.json

anomalib is never a dependency of the project: the script creates its own environment,
benchmarks/.envs/anomalib (git-ignored), a venv that reuses the project's torch, timm and
FrEIA through a .pth file and pip-installs anomalib 2.7.0 there under constraints that pin
the shared packages to the project's versions; then it re-executes itself in it.

Per pair (random backbone weights on both sides, pretrained=False: the computation is what
is compared; our trainable weights are copied into anomalib's model by the name mapping
written out below): parameter counts, the largest difference of the anomaly maps after
removing a constant offset, image scores and latents where the pair gives them, and the
loss of one batch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = ROOT / "benchmarks" / ".envs" / "anomalib"
ANOMALIB = "anomalib==2.7.0"
MAIN_SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def ensure_env() -> Path:
    """The anomalib venv (created once); returns its python."""
    python = ENV / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import anomalib"], capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(ENV)], check=True)
    site = ENV / "lib" / MAIN_SITE.parent.name / "site-packages"
    (site / "uadflows_main_venv.pth").write_text(f"{MAIN_SITE}\n")
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze"], check=True, capture_output=True, text=True).stdout
    constraints = ENV / "constraints.txt"
    constraints.write_text("".join(line + "\n" for line in freeze.splitlines()
                                   if not line.startswith("-e") and "@ file" not in line))
    subprocess.run([python, "-m", "pip", "install", "-q", "-c", str(constraints), ANOMALIB], check=True)
    return python


def in_anomalib_env() -> bool:
    return Path(sys.prefix).resolve() == ENV.resolve()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path)
    p.add_argument("--setup-only", action="store_true", help="create the environment and stop")
    p.add_argument("--render", type=Path, help="print the table of a saved --json and exit")
    args = p.parse_args(argv)
    if args.render:
        print(table(json.loads(args.render.read_text())))
        return 0
    if not in_anomalib_env():
        python = ensure_env()
        if args.setup_only:
            return 0
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        return subprocess.run([str(python), __file__, *(argv if argv is not None else sys.argv[1:])], env=env).returncode
    from equivalence_pairs import run_all  # noqa: E402  (the anomalib side, importable only there)

    result = run_all()
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def table(result: dict) -> str:
    def num(r, key, fmt):
        value = r.get(key)
        return "-" if value is None or value != value else format(value, fmt)  # absent or NaN

    lines = [f"anomalib {result['anomalib']}, torch {result['torch']}, timm {result['timm']}", "",
             "| pair | params ours | params anomalib | max map diff (after offset) | map offset (ours - anomalib) "
             "| max score diff | max latent diff | loss ours | loss anomalib | official loss formula on anomalib's z |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["pairs"]:
        lines.append(f"| {r['pair']} | {r['params_ours']:,} | {r['params_anomalib']:,} | {num(r, 'max_map_diff', '.2e')} "
                     f"| {num(r, 'map_offset', '.3g')} | {num(r, 'max_score_diff', '.2e')} | {num(r, 'max_z_diff', '.2e')} "
                     f"| {r['loss_ours']:.6g} | {r['loss_anomalib']:.6g} | {num(r, 'loss_official_formula', '.6g')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
