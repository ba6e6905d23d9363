"""Which of CFlow's decoders decides its image score: per-layer image AUROC of a scored run.

    .venv/bin/python benchmarks/cflow_layers.py RUN_DIR [RUN_DIR ...] [--json out.json]

RUN_DIR holds a CFlow run's scores.npz (``log_prob{l}`` per layer, labels). Per layer, the
official map and score (train.py:314-331: set-level max, exp, upsampled, set max minus it)
computed from that layer alone, its image AUROC, and the AUROC of all layers but it; plus
where the normal images' map maxima lie (border or inside). A diagnostic of a finished run;
it trains nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from uadflows.methods.cflow.anomaly_map import cflow_anomaly_maps


def layers_report(run: Path) -> dict:
    d = np.load(run / "scores.npz")
    labels = d["labels"]
    n = sum(1 for k in d.files if k.startswith("log_prob"))
    lps = [torch.from_numpy(d[f"log_prob{l}"]) for l in range(n)]
    size = tuple(d["maps"].shape[-2:])

    def auroc(sel):
        return round(100 * roc_auc_score(labels, cflow_anomaly_maps(sel, size)["score"].numpy()), 2)

    maps = d["maps"][labels == 0]
    peaks = [np.unravel_index(m.argmax(), m.shape) for m in maps]
    border = sum(1 for r, c in peaks if min(r, c) == 0 or r == size[0] - 1 or c == size[1] - 1)
    return {"run": str(run), "image_auroc": round(100 * roc_auc_score(labels, d["image_scores"]), 2),
            "layer_alone": [auroc([lps[l]]) for l in range(n)],
            "without_layer": [auroc([lps[i] for i in range(n) if i != l]) for l in range(n)],
            "normal_maxima_on_border": f"{border}/{len(peaks)}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = [layers_report(r) for r in args.runs]
    for r in rows:
        print(json.dumps(r))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
