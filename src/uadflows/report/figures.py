"""Figures (PNG and PDF, matplotlib's Agg canvas, no pyplot state) from the run folders.

  examples_<dataset>_<category>_<model>   test image, ground truth, anomaly map, overlay for
                                          the best and worst cases of one run
  curves_<dataset>_<category>             image ROC and pixel PRO curves of every model
                                          (the thinned curves metrics.json keeps)
  loss_<dataset>_<category>               training loss per epoch (history.csv), one panel
                                          per model, one line per seed
  bars_<dataset>                          per-category bars, one panel per metric, one
                                          bar per model
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image

from uadflows.report import significance
from uadflows.report.labels import dataset_name, figures_for_run, metric_name, slug
from uadflows.report.runs import (
    METRICS,
    ReportError,
    load_metrics,
    read_history,
    read_json,
    read_scores,
    run_dir,
)

DPI = 120
EXAMPLE_ROWS = 4  # best two detections, the most missed defect, the worst false alarm


def write_figures(metrics_csv: str | Path, out_dir: str | Path) -> list[Path]:
    """Write every figure for the runs in ``metrics_csv``; returns the files (PNG and PDF)."""
    runs = load_metrics(metrics_csv)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = runs.assign(_dir=[str(_maybe_dir(row, metrics_csv)) for _, row in runs.iterrows()])
    written: list[Path] = []
    for (dataset, category), group in runs.groupby(["dataset", "category"], sort=True):
        index = _read_index(Path(metrics_csv), dataset, category)
        for model, mine in group.groupby("model", sort=True):
            ok = mine[(mine["status"] == "ok") & (mine["_dir"] != "")].sort_values("seed")
            if ok.empty:
                continue
            fig = _examples_figure(ok.iloc[0], index, Path(metrics_csv))
            written += _save(fig, out / slug("examples", dataset, category, model))
        fig = _curves_figure(group)
        if fig is not None:
            written += _save(fig, out / slug("curves", dataset, category))
        fig = _loss_figure(group)
        if fig is not None:
            written += _save(fig, out / slug("loss", dataset, category))
    for (dataset, resolution, protocol), group in runs.groupby(
        ["dataset", "resolution", "protocol"], sort=True
    ):
        setting = (resolution, protocol)
        suffix = () if setting == ("original", "last-epoch") else setting
        metrics = [m for m in METRICS if group[m].notna().any()]
        if metrics:
            written += _save(_bars_figure(group, metrics), out / slug("bars", dataset, *suffix))
        for metric in [m for m in ("image_auroc", "pixel_auroc", "au_pro") if m in metrics]:
            fig = significance.cd_figure(group, metric, f"{dataset_name(dataset)}, {metric_name(metric)}")
            if fig is not None:  # needs >= 3 models and >= 2 categories
                written += _save(fig, out / slug("cd", dataset, metric, *suffix))
    return written


# ---- helpers ------------------------------------------------------------------------------
def _maybe_dir(row: pd.Series, metrics_csv) -> Path | str:
    try:
        return run_dir(row, metrics_csv)
    except ReportError:
        if row["status"] == "ok":
            raise
        return ""  # a failed run may have left no folder at all


def _save(fig: Figure, stem: Path) -> list[Path]:
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    fig.savefig(png, dpi=DPI)
    fig.savefig(pdf, metadata={"CreationDate": None})  # reproducible bytes
    return [png, pdf]


def _read_index(metrics_csv: Path, dataset: str, category: str) -> dict[str, str]:
    """image path -> defect type, from results/index/<dataset>/<category>.csv if it is there."""
    path = metrics_csv.resolve().parent / "index" / dataset / f"{category}.csv"
    if not path.is_file():
        return {}
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"image", "defect"} <= set(table.columns):
        raise ReportError(f"{path}: index needs columns 'image' and 'defect'")
    return dict(zip(table["image"], table["defect"]))


def _resolve(path: str, metrics_csv: Path) -> Path:
    """Image paths in scores.npz are absolute or relative to the working directory or the
    repository root (the folder above results/)."""
    candidates = [Path(path), metrics_csv.resolve().parent.parent / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ReportError(f"{path}: image listed in scores.npz not found (tried "
                      f"{', '.join(map(str, candidates))})")


def _load(path: str, metrics_csv: Path, size: tuple[int, int], mask: bool) -> np.ndarray:
    """An image (RGB floats in [0, 1]) or a binary mask at the map's (h, w)."""
    h, w = size
    if mask and not path:
        return np.zeros((h, w), dtype=bool)
    try:
        with Image.open(_resolve(path, metrics_csv)) as img:
            if mask:
                return np.asarray(img.convert("L").resize((w, h), Image.NEAREST)) > 0
            return np.asarray(img.convert("RGB").resize((w, h), Image.BILINEAR)) / 255.0
    except OSError as err:
        raise ReportError(f"{path}: unreadable image ({err})") from err


def _cases(labels: np.ndarray, scores: np.ndarray) -> list[tuple[int, str]]:
    """Best: the two defects scored highest. Worst: the defect scored lowest and the normal
    image scored highest. Without defects (or normals) the rows come from the other class."""
    defects = np.flatnonzero(labels == 1)[np.argsort(-scores[labels == 1], kind="stable")]
    normals = np.flatnonzero(labels == 0)[np.argsort(-scores[labels == 0], kind="stable")]
    picks = [(i, "best: defect found") for i in defects[:2]]
    if len(defects) > 2:
        picks.append((defects[-1], "worst: defect missed"))
    if len(normals):
        picks.append((normals[0], "worst: false alarm"))
    if len(normals) > 1 and len(picks) < EXAMPLE_ROWS:
        picks.append((normals[-1], "best: clean normal"))
    seen: set[int] = set()
    return [(int(i), tag) for i, tag in picks if not (i in seen or seen.add(i))][:EXAMPLE_ROWS]


def _examples_figure(row: pd.Series, index: dict[str, str], metrics_csv: Path) -> Figure:
    folder = Path(row["_dir"])
    data = read_scores(folder / "scores.npz")
    maps = data["maps"].astype(np.float32)
    labels = data["labels"].astype(int)
    scores = data["image_scores"].astype(np.float64)
    low, high = np.percentile(maps, [1.0, 99.9])  # one colour scale for every row
    cases = _cases(labels, scores)
    fig = Figure(layout="constrained", figsize=(8.4, 2.2 * len(cases) + 0.5))
    axes = fig.subplots(len(cases), 4, squeeze=False)
    cmap = colormaps["inferno"]
    for r, (i, tag) in enumerate(cases):
        size = maps[i].shape
        image = _load(str(data["images"][i]), metrics_csv, size, mask=False)
        truth = _load(str(data["masks"][i]), metrics_csv, size, mask=True)
        shown = np.clip((maps[i] - low) / max(high - low, 1e-12), 0, 1)
        overlay = 0.55 * image + 0.45 * cmap(shown)[..., :3]
        axes[r, 0].imshow(image)
        axes[r, 1].imshow(truth, cmap="gray", vmin=0, vmax=1)
        handle = axes[r, 2].imshow(maps[i], cmap=cmap, vmin=low, vmax=high)
        axes[r, 3].imshow(overlay)
        if truth.any():
            axes[r, 3].contour(truth, levels=[0.5], colors="cyan", linewidths=0.8)
        name = Path(str(data["images"][i])).name
        defect = index.get(str(data["images"][i]), "defect" if labels[i] else "good")
        axes[r, 0].set_ylabel(f"{tag}\n{defect}/{name}\nscore {scores[i]:.3g}", fontsize=7)
        fig.colorbar(handle, ax=axes[r, 2], fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    for c, title in enumerate(["test image", "ground truth", "anomaly map", "overlay"]):
        axes[0, c].set_title(title, fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{dataset_name(row['dataset'])} / {row['category']} / {row['model']} "
                 f"(seed {row['seed']}; maps at model resolution)", fontsize=10)
    return fig


def _model_colors(models) -> dict[str, tuple]:
    palette = colormaps["tab10"]
    return {m: palette(i % 10) for i, m in enumerate(sorted(models))}


def _curves_figure(group: pd.DataFrame) -> Figure | None:
    colors = _model_colors(group["model"].unique())
    curves = []
    for _, row in group[(group["status"] == "ok") & (group["_dir"] != "")].iterrows():
        data = read_json(Path(row["_dir"]) / "metrics.json").get("curves") or {}
        curves.append((row, data))
    if not any(data for _, data in curves):
        return None
    fig = Figure(layout="constrained", figsize=(9, 3.8))
    roc_ax, pro_ax = fig.subplots(1, 2)
    labelled: set[tuple[str, str]] = set()
    for row, data in curves:
        for key, ax in (("roc", roc_ax), ("pro", pro_ax)):
            if key not in data:
                continue
            x, y = (np.asarray(v, dtype=float) for v in data[key])
            label = row["model"] if (row["model"], key) not in labelled else None
            labelled.add((row["model"], key))
            ax.plot(x, y, color=colors[row["model"]], lw=1.2, alpha=0.85, label=label)
    limit = float(group["pro_limit"].iloc[0])
    roc_ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="image ROC",
               xlim=(0, 1), ylim=(0, 1.01))
    pro_ax.axvline(limit, color="0.5", lw=0.8, ls="--")
    pro_ax.set(xlabel="pixel false positive rate", ylabel="per-region overlap",
               title=f"pixel PRO (AU-PRO integrates up to FPR {limit:g})",
               xlim=(0, min(1.0, 2 * limit)),
               ylim=(0, 1.01))
    for ax in (roc_ax, pro_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    row = group.iloc[0]
    fig.suptitle(f"{dataset_name(row['dataset'])} / {row['category']}: curves from metrics.json "
                 "(every seed)", fontsize=10)
    return fig


def _loss_figure(group: pd.DataFrame) -> Figure | None:
    histories = []
    for _, row in group[group["_dir"] != ""].sort_values(["model", "seed"]).iterrows():
        history = read_history(Path(row["_dir"]) / "history.csv")
        if history is not None:
            histories.append((row, history))
    if not histories:
        return None
    models = sorted({row["model"] for row, _ in histories})
    fig = Figure(layout="constrained", figsize=(3.6 * len(models), 3.2))
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    colors = colormaps["viridis"]
    for ax, model in zip(axes, models):
        mine = [(row, h) for row, h in histories if row["model"] == model]
        for k, (row, history) in enumerate(mine):
            failed = row["status"] == "failed"
            ax.plot(history["epoch"], history["loss"], color=colors(k / max(len(mine) - 1, 1)),
                    ls="--" if failed else "-", lw=1.2,
                    label=f"seed {row['seed']}" + (" (failed)" if failed else ""))
        ax.set(title=model, xlabel="epoch", ylabel="training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    row = group.iloc[0]
    fig.suptitle(f"{dataset_name(row['dataset'])} / {row['category']}: training loss",
                 fontsize=10)
    return fig


def _bars_figure(group: pd.DataFrame, metrics: list[str]) -> Figure:
    """One panel per metric: per-category bars, one per model, std over seeds as whiskers."""
    categories = sorted(group["category"].unique())
    models = sorted(group["model"].unique())
    width = 0.8 / len(models)
    fig = Figure(layout="constrained",
                 figsize=(max(6.0, 0.45 * len(categories) * max(len(models), 2)),
                          2.4 * len(metrics) + 0.6))
    axes = fig.subplots(len(metrics), 1, squeeze=False, sharex=True)[:, 0]
    for ax, metric in zip(axes, metrics):
        _bars_panel(ax, group, metric, categories, models, width)
    axes[-1].set_xticks(np.arange(len(categories)), categories, rotation=45, ha="right",
                        fontsize=8)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7, ncols=min(len(models), 4), loc="outside lower center")
    row = group.iloc[0]
    fig.suptitle(f"{dataset_name(row['dataset'])}: per-category metrics in percent\n(mean, "
                 f"whiskers: std over seeds; {row['resolution']} resolution, {row['protocol']})",
                 fontsize=9)
    return fig


def _bars_panel(ax, group, metric, categories, models, width) -> None:
    colors = _model_colors(models)
    lowest, failed_at = 100.0, []
    for k, model in enumerate(models):
        mine = group[group["model"] == model]
        means, stds, failed = [], [], []
        for category in categories:
            cell = mine[mine["category"] == category]
            values = cell.loc[cell["status"] == "ok", metric].dropna() * 100
            means.append(values.mean() if len(values) else np.nan)
            stds.append(values.std(ddof=1) if len(values) > 1 else 0.0)
            failed.append(bool((cell["status"] == "failed").any()) and values.empty)
        x = np.arange(len(categories)) + (k - (len(models) - 1) / 2) * width
        ax.bar(x, np.nan_to_num(means), width, yerr=stds, color=colors[model], label=model,
               capsize=2, error_kw={"lw": 0.8})
        lowest = min([lowest, *[m for m in means if np.isfinite(m)]])
        failed_at += [xi for xi, is_failed in zip(x, failed) if is_failed]
    # AUROCs crowd near 100: start the axis a little below the lowest bar, and say so
    bottom = max(0.0, np.floor(lowest / 5) * 5 - 5) if lowest < 100 else 0.0
    ax.set_ylim(bottom, 100.5)
    for xi in failed_at:  # a failed cell is marked, never silently left empty
        ax.annotate("failed", (xi, bottom), xytext=(0, 3), textcoords="offset points",
                    rotation=90, fontsize=6, color="red", ha="center", va="bottom")
    ax.set_ylabel(metric_name(metric) + (f"\n(axis from {bottom:g})" if bottom else ""),
                  fontsize=8)
    ax.grid(axis="y", alpha=0.3)


__all__ = ["write_figures", "figures_for_run"]
