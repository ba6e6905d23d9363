"""Which differences in a table are real: the paired tests behind the underlines, the
paired-comparison table and the critical-difference figures (uadflows.stats; the rules are
in docs/statistics.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from uadflows.report.runs import run_dir
from uadflows.stats import (
    RecordsError,
    wilcoxon_pairs,
    friedman_nemenyi,
    holm,
    load_records,
    not_worse_than_best,
    paired_bootstrap,
)

ALPHA = 0.05
RULE = ("underlined: not significantly worse than the best (paired bootstrap over test images, "
        "two-sided, 5\\,\\%, Holm-corrected over the row)")


def entries(group: pd.DataFrame, metrics_csv) -> dict[str, dict[str, list]]:
    """{category: {model: [records of each finished seed]}}; runs without records.npz (older
    pipelines) are left out."""
    out: dict[str, dict[str, list]] = {}
    for _, row in group[group["status"] == "ok"].sort_values("seed").iterrows():
        try:
            path = run_dir(row, metrics_csv) / "records.npz"
        except Exception:  # noqa: BLE001 - a missing folder: no records, no test
            continue
        if path.is_file():
            out.setdefault(row["category"], {}).setdefault(row["model"], []).append(load_records(path))
    return out


def paired_table(group: pd.DataFrame, metrics_csv, metrics: list[str], resamples: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """Paired bootstrap of every pair of models on every category: columns dataset,
    category, metric, a, b, diff, low, high, p, p_holm (Holm over the pairs of one
    category and metric)."""
    frames = []
    for category, by_model in sorted(entries(group, metrics_csv).items()):
        if len(by_model) < 2:
            continue
        try:
            pairs = paired_bootstrap(by_model, metrics, resamples, seed)
        except RecordsError as e:
            raise RecordsError(f"{group['dataset'].iloc[0]}/{category}: {e}") from None
        pairs.insert(0, "category", category)
        frames.append(pairs)
    if not frames:
        return pd.DataFrame(columns=["dataset", "category", "metric", "a", "b", "diff", "low",
                                     "high", "p", "p_holm"])
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "dataset", group["dataset"].iloc[0])
    table["p_holm"] = np.nan
    for _, idx in table.groupby(["category", "metric"]).groups.items():
        table.loc[idx, "p_holm"] = holm(table.loc[idx, "p"].to_numpy())
    return table


def underline_rows(grid: pd.DataFrame, models: list[str], pairs: pd.DataFrame, metric: str) -> None:
    """Underline, in each category row of a main grid, the cells not significantly worse
    than the row's best (the best is bold already)."""
    for category in grid.index:
        rows = pairs[(pairs.category == category) & (pairs.metric == metric)]
        if rows.empty:
            continue
        cells = dict(zip(models, grid.loc[category]))
        values = {m: c.mean for m, c in cells.items() if c.mean is not None}
        if len(values) < 2:
            continue
        best, kept = not_worse_than_best(values, rows, metric, ALPHA)
        for m in kept:
            cells[m].underline = True


def per_category(group: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Categories x models: the mean over finished seeds."""
    ok = group[group["status"] == "ok"]
    return ok.pivot_table(index="category", columns="model", values=metric, aggfunc="mean")


def cd_figure(group: pd.DataFrame, metric: str, title: str):
    """Critical-difference diagram (Friedman + Nemenyi over categories) or None when there
    are fewer than 3 models or 2 complete categories."""
    frame = per_category(group, metric).dropna()
    if frame.shape[1] < 3 or frame.shape[0] < 2:
        return None
    import scikit_posthocs as sp  # here: its import (scipy.stats) only when a diagram is drawn
    from matplotlib.figure import Figure

    result = friedman_nemenyi(frame, ALPHA)
    fig = Figure(figsize=(6, 1.2 + 0.35 * frame.shape[1]))
    ax = fig.subplots()
    sp.critical_difference_diagram(result["ranks"], result["nemenyi"], ax=ax)
    # scikit-posthocs draws each crossbar through a set of model names, in the set's
    # iteration order, which follows the interpreter's hash seed: sorted, the bars are the
    # same lines and the files the same bytes in every process (the SLURM test compares).
    for line in ax.lines:
        x, y = line.get_xdata(), line.get_ydata()
        if len(x) >= 2 and len(set(y)) == 1:
            line.set_xdata(sorted(x))
    ax.set_title(f"{title}: average rank over {result['n']} categories (1 = best)\n"
                 f"Friedman p = {result['p']:.3g}; Nemenyi CD = {result['cd']:.2f} at 5 %; "
                 "bars join entries not significantly different", fontsize=8)
    fig.tight_layout()
    return fig


def summary_lines(table: pd.DataFrame) -> list[str]:
    """The paired-comparison table for summary.md (differences in points of percent)."""
    if table.empty:
        return ["", "No paired comparison (fewer than two models with records per category)."]
    lines = ["", "Paired bootstrap over the test images (same resampled images for both; mean "
             "over seeds): difference a - b in points, its 95 % interval, two-sided p and "
             "Holm-adjusted p (over the pairs of one category and metric).", "",
             "| category | metric | a | b | a - b | 95 % interval | p | p (Holm) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.category} | {r.metric} | {r.a} | {r.b} | {100 * r.diff:+.2f} | "
                     f"[{100 * r.low:+.2f}, {100 * r.high:+.2f}] | {r.p:.3g} | {r.p_holm:.3g} |")
    return lines


def write_paired(table: pd.DataFrame, path: Path) -> Path:
    table.to_csv(path, index=False)
    return path


def across_lines(group: pd.DataFrame, metrics: list[str]) -> list[str]:
    """Summary section: Wilcoxon signed-rank of every pair of models over the categories and
    the Friedman test with average ranks and Nemenyi's critical difference."""
    lines = ["", "Across categories (units: categories, mean over seeds): Wilcoxon signed-rank "
             "test per pair; Friedman test over all models, average rank (1 = best) and "
             "Nemenyi critical difference at 5 %.", ""]
    found = False
    for metric in metrics:
        frame = per_category(group, metric).dropna()
        if frame.shape[1] < 2 or frame.shape[0] < 2:
            continue
        found = True
        w = wilcoxon_pairs(frame)
        text = "; ".join(f"{r.a} vs {r.b}: median {100 * r.median_diff:+.2f}, p = {r.p:.3g}"
                         for r in w.itertuples())
        lines.append(f"- {metric} (n = {frame.shape[0]} categories): Wilcoxon {text}")
        if frame.shape[1] >= 3:
            f = friedman_nemenyi(frame, ALPHA)
            ranks = ", ".join(f"{k} {v:.2f}" for k, v in f["ranks"].sort_values().items())
            lines.append(f"  Friedman p = {f['p']:.3g}; ranks {ranks}; CD = {f['cd']:.2f}")
    return lines if found else []
