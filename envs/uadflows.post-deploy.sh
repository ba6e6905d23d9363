#!/usr/bin/env bash
# Snakemake runs this once, inside the freshly created environment, from its working
# directory: the repository root when run as documented (`snakemake --profile slurm ...`).
# Elsewhere, point UADFLOWS_ROOT at the checkout.
set -euo pipefail
root="${UADFLOWS_ROOT:-$PWD}"
if ! grep -qs '^name = "uadflows"' "$root/pyproject.toml"; then
    echo "envs/uadflows.post-deploy.sh: $root/pyproject.toml is not the uadflows package;" \
         "run snakemake from the repository root or set UADFLOWS_ROOT to it" >&2
    exit 1
fi
# Dependencies come from uadflows.yaml (conda-forge builds); install only the package.
python -m pip install --no-deps --no-build-isolation --editable "$root"
