"""Tables and figures from a tiny synthetic sweep (64 px images, 2 categories, 2 models,
2 seeds, one failed run)."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import needs_pdflatex
from uadflows.report import ReportError, figures_for_run, load_metrics, write_figures, write_tables
from uadflows.report.cells import Cell, bold_best, mean_cell, run_cell
from uadflows.report.figures import _cases
from uadflows.report.synthetic import write_synthetic_sweep

FAILED = ("mvtec", "metal_nut", "msflow-wrn50", 1)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    return write_synthetic_sweep(root, failed=(FAILED,))


@pytest.fixture(scope="module")
def tables(sweep):
    out = sweep.parent / "tables"
    return {p.name: p for p in write_tables(sweep, out)}


def test_tables_written(tables):
    metrics = ["image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap",
               "pixel_f1_max", "au_pro"]
    expected = {f"main_mvtec_{m}.tex" for m in metrics} | {
        "overview_mvtec.tex", "published_mvtec.tex", "cost_mvtec.tex", "failed_runs.tex",
        "tables.tex", "summary.md"}
    assert set(tables) == expected
    index = tables["tables.tex"].read_text()
    inputs = re.findall(r"\\input\{\\uadflowsTablesDir/([^}]+)\}", index)
    assert sorted(inputs) == sorted(n for n in expected if n.endswith(".tex") and n != "tables.tex")


def test_main_table_layout_and_caption(tables):
    tex = tables["main_mvtec_pixel_auroc.tex"].read_text()
    for piece in ("\\toprule", "\\midrule", "\\bottomrule", "\\label{tab:main_mvtec_pixel_auroc}",
                  "MVTec AD", "pixel AUROC", "original resolution", "protocol last-epoch",
                  "metal\\_nut", "FastFlow", "WRN50-2"):
        assert piece in tex, piece
    assert tex.count("\\midrule") == 2  # header rule and the rule above the mean row


def test_main_table_values_and_bold(sweep, tables):
    runs = pd.read_csv(sweep)
    tex = tables["main_mvtec_pixel_auroc.tex"].read_text()
    row = next(line for line in tex.splitlines() if line.startswith("bottle &"))
    cells = [c.strip().rstrip("\\").strip() for c in row.split("&")[1:]]
    expected = {}
    for model in ("fastflow-r18", "msflow-wrn50"):
        values = runs.query("category == 'bottle' and model == @model")["pixel_auroc"] * 100
        expected[model] = (values.mean(), values.std(ddof=1))
    for cell, (mean, std) in zip(cells, expected.values()):
        assert f"{mean:.1f} $\\pm$ {std:.1f}" in cell
    best = max(expected, key=lambda m: round(expected[m][0], 1))
    bold = [m for m, c in zip(expected, cells) if c.startswith("\\textbf{")]
    assert bold == [best]


def test_failed_run_is_listed_never_dropped(tables):
    failed = tables["failed_runs.tex"].read_text()
    assert "msflow-wrn50" in failed and "diverged" in failed and "metal\\_nut" in failed
    main = tables["main_mvtec_image_auroc.tex"].read_text()
    row = next(line for line in main.splitlines() if line.startswith("metal\\_nut &"))
    assert "\\dagger" in row.split("&")[2]  # the msflow cell: one of its seeds failed
    assert "seeds of this cell failed" in main
    summary = tables["summary.md"].read_text()
    assert "## Failed runs" in summary and "loss diverged" in summary


def test_published_comparison(sweep, tables):
    tex = tables["published_mvtec.tex"].read_text()
    assert "longtable" in tex and "gathierry/FastFlow" in tex
    runs = load_metrics(sweep)
    ours = runs.query("model == 'fastflow-r18'").groupby("category")["pixel_auroc"].mean().mean()
    # gathierry/FastFlow's ResNet18 mean pixel AUROC at the last epoch is 95.6
    delta = ours * 100 - 95.6
    sign = "$+$" if delta >= 0 else "$-$"
    line = next(line for line in tex.splitlines()
                if "& 95.6 &" in line and "mean of 2" in line and "last" in line)
    assert f"{sign}{abs(delta):.1f}" in line


def test_without_published_numbers(sweep, tmp_path):
    written = write_tables(sweep, tmp_path, published=pd.DataFrame())
    assert not [p for p in written if p.name.startswith("published")]


def test_published_matched_by_format_not_name(tmp_path):
    """Config dataset names are free: the benchmark is spec.json's format."""
    csv = write_synthetic_sweep(tmp_path, categories={"mvtec_paper": ["bottle"]}, seeds=(0,),
                                models=[("fastflow-r18", "fastflow", "resnet18")])
    written = {p.name for p in write_tables(csv, tmp_path / "tables")}
    assert "published_mvtec_paper.tex" in written


def test_summary_markdown(tables):
    summary = tables["summary.md"].read_text()
    assert "| Method / Backbone | image AUROC |" in summary
    assert "| FastFlow / R18 |" in summary and "| bottle |" in summary


def test_tables_compile(tables, tmp_path):
    needs_pdflatex()
    folder = tables["tables.tex"].parent
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n"
        "\\usepackage{booktabs,longtable,graphicx}\n"
        f"\\newcommand{{\\uadflowsTablesDir}}{{{folder}}}\n"
        f"\\begin{{document}}\n\\input{{{folder}/tables.tex}}\n\\end{{document}}\n")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]
    # TeX wraps its log at 79 characters, long paths included (xdist's temp paths are long)
    log = (tmp_path / "doc.log").read_text(errors="replace").replace("\n", "")
    for name in tables:
        if name.endswith(".tex") and name != "tables.tex":
            assert f"{folder}/{name}" in log, f"{name} was not read"
    assert (tmp_path / "doc.pdf").stat().st_size > 10_000


def test_bad_metrics_csv(sweep, tmp_path):
    runs = pd.read_csv(sweep)
    cases = {
        "no_status.csv": (runs.drop(columns="status"), "missing column"),
        "percent.csv": (runs.assign(image_auroc=runs["image_auroc"] * 100), "'image_auroc'"),
        "status.csv": (runs.assign(status="done"), "unknown status"),
        "twice.csv": (pd.concat([runs, runs.iloc[:1]]), "listed twice"),
    }
    for name, (frame, message) in cases.items():
        path = tmp_path / name
        frame.to_csv(path, index=False)
        with pytest.raises(ReportError, match=re.escape(message)) as err:
            write_tables(path, tmp_path / "out")
        assert name in str(err.value)
    with pytest.raises(ReportError, match="not found"):
        write_tables(tmp_path / "missing.csv", tmp_path / "out")


def test_cells():
    runs = pd.DataFrame({"category": ["a", "a", "a", "b", "b"], "seed": [0, 1, 2, 0, 1],
                         "status": ["ok", "ok", "failed", "ok", "ok"],
                         "m": [0.90, 0.80, np.nan, 0.70, 0.50]})
    cell = run_cell(runs[runs.category == "a"], "m")
    assert cell.mean == pytest.approx(85.0) and cell.std == pytest.approx(np.std([90, 80], ddof=1))
    assert cell.marks == ("dagger",) and "$^{\\dagger}$" in cell.latex()
    mean = mean_cell(runs, "m", ["a", "b", "c"])  # "c" has no run: partial mean
    assert mean.mean == pytest.approx((85 + 60) / 2) and "star" in mean.marks
    full = mean_cell(runs, "m", ["a", "b"])
    assert full.std == pytest.approx(np.std([(90 + 70) / 2, (80 + 50) / 2], ddof=1))
    assert run_cell(runs[runs.status == "failed"], "m").text == "failed"
    row = [Cell(91.04), Cell(90.96), Cell(text="--")]
    bold_best(row)  # 91.0 and 91.0 as displayed: a tie, both bold
    assert [c.bold for c in row] == [True, True, False]


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    root = tmp_path_factory.mktemp("figs")
    csv = write_synthetic_sweep(root, categories={"mvtec": ["bottle"]}, seeds=(0, 1),
                                failed=(("mvtec", "bottle", "msflow-wrn50", 1),))
    return csv, write_figures(csv, root / "figures")


def test_figures_written(figures):
    csv, written = figures
    names = {p.name for p in written}
    for stem in ("examples_mvtec_bottle_fastflow-r18", "examples_mvtec_bottle_msflow-wrn50",
                 "curves_mvtec_bottle", "loss_mvtec_bottle", "bars_mvtec"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names, stem
    for path in written:
        assert path.stat().st_size > 5_000, path
        if path.suffix == ".pdf":
            assert path.read_bytes().startswith(b"%PDF")
        else:
            with Image.open(path) as image:
                assert min(image.size) > 200
    run = figures_for_run(csv.parent / "figures", "mvtec", "bottle", "fastflow-r18")
    assert [p.name for p in run] == ["examples_mvtec_bottle_fastflow-r18.pdf",
                                     "examples_mvtec_bottle_fastflow-r18.png"]


def test_example_cases():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.95, 0.85])
    cases = _cases(labels, scores)
    assert cases == [(5, "best: defect found"), (6, "best: defect found"),
                     (4, "worst: defect missed"), (1, "worst: false alarm")]
    only_normal = _cases(np.zeros(3, dtype=int), np.array([0.2, 0.5, 0.1]))
    assert only_normal == [(1, "worst: false alarm"), (2, "best: clean normal")]


def test_figure_with_missing_image(tmp_path):
    csv = write_synthetic_sweep(tmp_path, categories={"mvtec": ["bottle"]}, seeds=(0,),
                                models=[("fastflow-r18", "fastflow", "resnet18")])
    shutil.rmtree(tmp_path / "data")  # the dataset moved away after scoring
    with pytest.raises(ReportError, match="not found"):
        write_figures(csv, tmp_path / "figures")
