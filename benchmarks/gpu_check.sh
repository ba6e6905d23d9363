#!/usr/bin/env bash
# The demo config on one CUDA GPU, three ways: base (fp32, eager), amp (bfloat16 autocast
# in training) and amp+compile (torch.compile of the flow too). Prints per method training
# and scoring images/s, peak GPU memory, and whether AMP changes any metric by more than
# 0.5 points against base. At most 8 minutes (GPU_CHECK_BUDGET_S, shared by the variants).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      # run from the repository root, venv on PATH
#
# Without CUDA it stops at once with exit status 2.
set -euo pipefail

OUT=${1:-gpu_check}
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
CORES=${CORES:-8}
PYTHON=${PYTHON:-python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to torch ($("$PYTHON" -c 'import torch; print(torch.__version__)' 2>&1 | tail -1));" \
         "run this on a machine with an NVIDIA GPU and a CUDA build of torch" >&2
    exit 2
fi
"$PYTHON" -c 'import torch; print("gpu_check:", torch.cuda.get_device_name(0), "torch", torch.__version__)'

start=$(date +%s)
dirs=()
for variant in base amp amp+compile; do
    left=$(( BUDGET_S - ($(date +%s) - start) ))
    if (( left < 30 )); then
        echo "gpu_check: budget spent before variant $variant" >&2
        exit 3
    fi
    work="$OUT/${variant/+/-}"
    mkdir -p "$work"
    "$PYTHON" benchmarks/gpu_check.py config "$variant" "$work/config.yaml"
    echo "gpu_check: $variant ($left s left)"
    timeout "$left" snakemake -s "$PWD/Snakefile" --directory "$work" --configfile "$work/config.yaml" \
        --cores "$CORES" --quiet rules > "$work/snakemake.log" 2>&1 \
        || { echo "gpu_check: $variant failed, see $work/snakemake.log" >&2; tail -20 "$work/snakemake.log" >&2; exit 1; }
    dirs+=("$variant=$work")
done
"$PYTHON" benchmarks/gpu_check.py report "${dirs[@]}" --json "$OUT/gpu_check.json"
echo "gpu_check: $(( $(date +%s) - start )) s"
