"""The report's statistics: interval columns, underlines by the paired test, the paired
table in summary.md, critical-difference figures (synthetic sweep, 3 models)."""

from __future__ import annotations

import pandas as pd
import pytest

from uadflows.report import write_figures, write_tables
from uadflows.report.synthetic import write_synthetic_sweep

MODELS = [("a-good", "fastflow", "resnet18"), ("b-mid", "msflow", "resnet18"),
          ("c-poor", "uflow", "resnet18")]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    return write_synthetic_sweep(root, categories={"mvtec": ["bottle", "cable", "grid"]},
                                 models=MODELS, seeds=(0,), n_good=6, n_defect=6)


def test_interval_columns_bracket_the_value(sweep):
    df = pd.read_csv(sweep)
    for m in ("image_auroc", "pixel_auroc", "au_pro"):
        assert (df[f"{m}_low"] <= df[m] + 1e-3).all() and (df[m] <= df[f"{m}_high"] + 1e-3).all()
        assert (df[f"{m}_high"] > df[f"{m}_low"]).any()


def test_paired_table_underlines_and_summary(sweep, tmp_path):
    files = {p.name: p for p in write_tables(sweep, tmp_path, resamples=300, spread="interval")}
    pairs = pd.read_csv(files["paired_mvtec.csv"] if "paired_mvtec.csv" in files
                        else tmp_path / "paired_mvtec.csv")
    assert set(pairs.category) == {"bottle", "cable", "grid"}
    assert len(pairs[(pairs.category == "bottle") & (pairs.metric == "pixel_auroc")]) == 3
    # the noisiest model's maps are clearly worse at pixel level: significant after Holm
    poor = pairs[(pairs.a == "a-good") & (pairs.b == "c-poor") & (pairs.metric == "pixel_auroc")]
    assert (poor["diff"] > 0).all() and (poor["p_holm"] < 0.05).all()
    main = (tmp_path / "main_mvtec_pixel_auroc.tex").read_text()
    assert "underlined: not significantly worse than the best" in main
    assert "half-width of the 95" in main
    summary = files["summary.md"].read_text()
    assert "Paired bootstrap over the test images" in summary
    assert "| bottle | pixel_auroc | a-good | c-poor |" in summary
    assert "- pixel_auroc (n = 3 categories): Wilcoxon a-good vs b-mid" in summary
    assert "Friedman p = " in summary


def test_cd_figures(sweep, tmp_path):
    """The figure itself (write_figures calls it per dataset and metric; the whole figure set
    is slow): needs >= 3 models, and its title carries the Friedman p and the CD."""
    from uadflows.report import load_metrics
    from uadflows.report.significance import cd_figure

    runs = load_metrics(sweep)
    fig = cd_figure(runs, "au_pro", "MVTec AD, AU-PRO")
    assert fig is not None and "Friedman p =" in fig.axes[0].get_title()
    fig.savefig(tmp_path / "cd.png")
    assert (tmp_path / "cd.png").stat().st_size > 1000
    assert cd_figure(runs[runs.model != "c-poor"], "au_pro", "two models") is None


def test_cd_figure_is_the_same_bytes_in_every_process(sweep, tmp_path):
    """scikit-posthocs draws crossbars through sets of names, whose order follows the hash
    seed: the figure must not (the SLURM test compares a cluster run's files with a local
    run's, byte for byte)."""
    import os
    import subprocess
    import sys

    code = ("import sys; from uadflows.report import load_metrics; "
            "from uadflows.report.significance import cd_figure; "
            "fig = cd_figure(load_metrics(sys.argv[1]), 'au_pro', 'AU-PRO'); "
            "fig.savefig(sys.argv[2], metadata={'CreationDate': None})")
    outputs = []
    for seed in ("1", "2", "3", "4", "5"):
        out = tmp_path / f"cd{seed}.pdf"
        subprocess.run([sys.executable, "-c", code, str(sweep), str(out)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed})
        outputs.append(out.read_bytes())
    assert all(o == outputs[0] for o in outputs)
