"""One table cell: mean (± std over seeds, or ± the half-width of the bootstrap interval)
of a metric in percent, rendered for LaTeX or markdown. Kept apart from the table layout so
every table formats numbers the same way."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MARKS_LATEX = {"dagger": "\\dagger", "star": "*"}
MARKS_MD = {"dagger": "†", "star": "*"}
NOTE_DAGGER = "some seeds of this cell failed; the value is over the seeds that finished"
NOTE_STAR = "mean over the categories that have a value only"


@dataclass
class Cell:
    """mean / std in percent; text replaces the number ("--" no run, "failed", "n/a")."""

    mean: float | None = None
    std: float | None = None
    marks: tuple[str, ...] = ()  # "dagger", "star": keys of the footnotes
    text: str = ""
    bold: bool = False
    underline: bool = False  # not significantly worse than the row's best (significance.py)

    def latex(self) -> str:
        body = (self.text or "--") if self.mean is None else f"{self.mean:.1f}"
        if self.mean is not None and self.std is not None:
            body += f" $\\pm$ {self.std:.1f}"
        if self.bold:
            body = f"\\textbf{{{body}}}"
        if self.underline:
            body = f"\\underline{{{body}}}"
        if not self.marks:
            return body
        return body + "$^{" + "".join(MARKS_LATEX[m] for m in self.marks) + "}$"

    def markdown(self) -> str:
        body = (self.text or "--") if self.mean is None else f"{self.mean:.1f}"
        if self.mean is not None and self.std is not None:
            body += f" ± {self.std:.1f}"
        if self.bold:
            body = f"**{body}**"
        if self.underline:
            body = f"<u>{body}</u>"
        return body + "".join(MARKS_MD[m] for m in self.marks)


def run_cell(runs: pd.DataFrame, metric: str, spread: str = "std") -> Cell:
    """The seeds of one (category, model): mean and sample std (ddof=1) of the finished ones;
    spread="interval": ± the mean half-width of the runs' bootstrap intervals instead."""
    if runs.empty:
        return Cell(text="--")
    n_failed = int((runs["status"] == "failed").sum())
    values = runs.loc[runs["status"] == "ok", metric].dropna().to_numpy(dtype=float) * 100
    marks = ("dagger",) if n_failed else ()
    if len(values) == 0:
        return Cell(text="failed" if n_failed else "n/a", marks=marks)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    if spread == "interval":
        std = half_width(runs[runs["status"] == "ok"], metric)
    return Cell(float(values.mean()), std, marks)


def half_width(runs: pd.DataFrame, metric: str) -> float | None:
    """Mean over runs of half the bootstrap interval (metric_low, metric_high), in percent."""
    low, high = f"{metric}_low", f"{metric}_high"
    if low not in runs or high not in runs:
        return None
    widths = ((runs[high] - runs[low]) / 2).dropna()
    return float(widths.mean() * 100) if len(widths) else None


def mean_cell(runs: pd.DataFrame, metric: str, categories: list[str]) -> Cell:
    """Mean over categories of the per-category means; the std is over seeds of the per-seed
    category mean, given only when at least two seeds cover every category."""
    cells = [run_cell(runs[runs["category"] == c], metric) for c in categories]
    means = [c.mean for c in cells if c.mean is not None]
    if not means:
        failed = any(c.text == "failed" for c in cells)
        return Cell(text="failed" if failed else ("--" if runs.empty else "n/a"))
    partial = len(means) < len(categories)
    std = None
    ok = runs[runs["status"] == "ok"]
    if not partial and not ok.empty:
        per_seed = ok.pivot_table(index="seed", columns="category", values=metric, aggfunc="mean")
        complete = per_seed.reindex(columns=categories).dropna()
        if len(complete) > 1:
            std = float(complete.mean(axis=1).std(ddof=1) * 100)
    marks = tuple(m for m in ("dagger",) if any(m in c.marks for c in cells))
    return Cell(float(np.mean(means)), std, marks + (("star",) if partial else ()))


def bold_best(cells: list[Cell]) -> None:
    """Bold the highest value as displayed (1 decimal), ties included; needs two values."""
    shown = [round(c.mean, 1) for c in cells if c.mean is not None]
    if len(shown) < 2:
        return
    best = max(shown)
    for cell in cells:
        if cell.mean is not None and round(cell.mean, 1) == best:
            cell.bold = True


def notes_for(cells: pd.DataFrame) -> list[str]:
    """Footnotes the marks used in a grid of cells call for."""
    marks = {m for c in cells.to_numpy().ravel() for m in c.marks}
    notes = []
    if "dagger" in marks:
        notes.append(("dagger", NOTE_DAGGER))
    if "star" in marks:
        notes.append(("star", NOTE_STAR))
    return notes
