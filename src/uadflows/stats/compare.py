"""Which differences between entries (a (method, backbone) model of the sweep) are real.

- On one category: the paired bootstrap. Every entry is re-scored on the same resampled
  test images (same counts, bootstrap.resample_counts), its value averaged over its seeds,
  and the difference of two entries taken per resample: its percentile interval and a
  two-sided p-value, 2 * min(share of differences <= 0, share >= 0) with the usual +1
  correction ((k + 1) / (B + 1)), so identical entries get exactly p = 1.
- Several comparisons of one row (the best entry against each other) are Holm-corrected
  (statsmodels' ``multipletests``, a dependency of scikit-posthocs).
- Across the categories of a dataset: the Wilcoxon signed-rank test on the per-category
  values of two entries (scipy), and the Friedman test over all entries with the Nemenyi
  post-hoc test and the critical difference of the average ranks (scipy, scikit-posthocs;
  Demšar, JMLR 7, 2006).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from uadflows.stats.bootstrap import percentile_interval, replicates, resample_counts
from uadflows.stats.records import Records, RecordsError


def same_test_set(entries: dict[str, list[Records]]) -> np.ndarray:
    """The labels all records share; raises RecordsError naming the first entry that was
    scored on other images (a paired test needs the same images in the same order)."""
    first_name, first = None, None
    for name, runs in entries.items():
        for r in runs:
            if first is None:
                first_name, first = name, r
            elif len(r.image) != len(first.image) or not np.array_equal(r.image, first.image) \
                    or not np.array_equal(r.label, first.label):
                raise RecordsError(f"entry '{name}': its test images differ from those of "
                                   f"'{first_name}'; a paired comparison needs the same test set")
    if first is None:
        raise RecordsError("no records to compare")
    return np.asarray(first.label)


def paired_bootstrap(entries: dict[str, list[Records]], metrics: list[str], resamples: int = 1000,
                     seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Every pair of entries of one category: columns a, b, metric, diff (a - b on the test
    set itself, binned, mean over seeds), low, high, p."""
    labels = same_test_set(entries)
    counts = np.vstack([np.ones((1, labels.size), np.int64), resample_counts(labels, resamples, seed)])
    values = {}
    for name, runs in entries.items():
        per_seed = [replicates(r, counts) for r in runs]
        values[name] = {m: np.nanmean([v[m] for v in per_seed], axis=0) for m in metrics
                        if all(m in v for v in per_seed)}
    rows = []
    for a, b in combinations(entries, 2):
        for m in metrics:
            if m not in values[a] or m not in values[b]:
                continue
            d = values[a][m] - values[b][m]
            point, boot = d[0], d[1:]
            low, high = percentile_interval(boot, level)
            rows.append({"a": a, "b": b, "metric": m, "diff": float(point), "low": low, "high": high,
                         "p": bootstrap_p(boot)})
    return pd.DataFrame(rows, columns=["a", "b", "metric", "diff", "low", "high", "p"])


def bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from bootstrap differences."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    tail = min(np.count_nonzero(d <= 0), np.count_nonzero(d >= 0))
    return float(min(1.0, 2.0 * (tail + 1) / (d.size + 1)))


def holm(pvalues) -> np.ndarray:
    """Holm-adjusted p-values (NaNs kept as NaN)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def not_worse_than_best(values: dict[str, float], pairs: pd.DataFrame, metric: str,
                        alpha: float = 0.05) -> tuple[str, set[str]]:
    """The best entry of a row and the entries not significantly worse than it (paired
    bootstrap of best vs each, Holm-corrected at ``alpha``). ``pairs``: paired_bootstrap's
    rows of this category."""
    best = max(values, key=lambda k: values[k])
    others = [k for k in values if k != best]
    p = []
    for k in others:
        row = pairs[(pairs.metric == metric) & (((pairs.a == best) & (pairs.b == k)) |
                                                ((pairs.a == k) & (pairs.b == best)))]
        p.append(float(row.p.iloc[0]) if len(row) else np.nan)
    adjusted = holm(p)
    return best, {k for k, q in zip(others, adjusted) if not (q < alpha)}


def wilcoxon_pairs(per_category: pd.DataFrame) -> pd.DataFrame:
    """Wilcoxon signed-rank test for every pair of entries (columns) over the categories
    (rows, complete ones only): columns a, b, n, median_diff, statistic, p."""
    from scipy import stats  # imported here: the report's start-up pays it only when used

    frame = per_category.dropna()
    rows = []
    for a, b in combinations(frame.columns, 2):
        d = (frame[a] - frame[b]).to_numpy()
        if len(d) == 0 or np.all(d == 0):
            stat, p = float("nan"), 1.0
        else:
            res = stats.wilcoxon(frame[a], frame[b])
            stat, p = float(res.statistic), float(res.pvalue)
        rows.append({"a": a, "b": b, "n": len(d), "median_diff": float(np.median(d)) if len(d) else np.nan,
                     "statistic": stat, "p": p})
    return pd.DataFrame(rows, columns=["a", "b", "n", "median_diff", "statistic", "p"])


def friedman_nemenyi(per_category: pd.DataFrame, alpha: float = 0.05) -> dict:
    """Friedman test over entries (columns) and categories (rows, complete ones), the
    average ranks (1 = best), Nemenyi's pairwise p-values and critical difference."""
    import scikit_posthocs as sp
    from scipy import stats  # imported here: the report's start-up pays it only when used

    frame = per_category.dropna()
    n, k = frame.shape
    if k < 3 or n < 2:
        raise ValueError(f"Friedman test needs >= 3 entries and >= 2 categories, got {k} and {n}")
    statistic, p = stats.friedmanchisquare(*[frame[c].to_numpy() for c in frame.columns])
    ranks = frame.rank(axis=1, ascending=False).mean(axis=0)
    nemenyi = sp.posthoc_nemenyi_friedman(frame.to_numpy())
    nemenyi.index = nemenyi.columns = frame.columns
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return {"n": n, "k": k, "statistic": float(statistic), "p": float(p), "ranks": ranks,
            "nemenyi": nemenyi, "cd": float(q * np.sqrt(k * (k + 1) / (6.0 * n)))}
