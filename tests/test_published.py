"""The shipped list of published numbers: schema, coverage and internal consistency."""

from __future__ import annotations

import pandas as pd
import pytest

from uadflows.reference import CATEGORIES, COLUMNS, load_published_csv, published


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return published()


def test_schema(table):
    assert list(table.columns) == COLUMNS
    assert (table["source"].str.strip() != "").all()
    assert ((table["value"] > 0) & (table["value"] <= 100)).all()
    assert set(table["method"]) <= {"fastflow", "msflow", "uflow", "cflow", "csflow"}
    assert set(table["dataset"]) <= set(CATEGORIES)
    assert not table.duplicated(subset=[c for c in COLUMNS if c != "value"]).any()


def test_coverage(table):
    mvtec = table[table["dataset"] == "mvtec"]
    fastflow = set(mvtec.loc[mvtec["method"] == "fastflow", "backbone"])
    assert {"resnet18", "wide_resnet50_2", "cait_m48_448",
            "deit_base_distilled_patch16_384"} <= fastflow
    assert {"fastflow", "msflow", "uflow", "cflow", "csflow"} <= set(mvtec["method"])
    for method in ("fastflow", "msflow", "uflow", "cflow", "csflow"):
        assert "mean" in set(mvtec.loc[mvtec["method"] == method, "category"]), method
    # per-category tables are there where the sources give them
    per_category = mvtec[mvtec["category"] != "mean"]
    assert set(per_category["category"]) == CATEGORIES["mvtec"]
    assert {"btad", "visa"} <= set(table["dataset"])


def test_means_agree_with_their_categories(table):
    """Where a source gives every category and the mean, the mean of the (rounded) category
    values must be within rounding of the mean: catches transcription slips."""
    key = ["method", "backbone", "dataset", "metric", "protocol", "image_size", "source"]
    checked = 0
    for _, group in table.groupby(key):
        categories = group[group["category"] != "mean"]
        mean = group[group["category"] == "mean"]
        if mean.empty or len(categories) < len(CATEGORIES[group["dataset"].iloc[0]]):
            continue
        difference = categories["value"].mean() - mean["value"].iloc[0]
        assert abs(difference) <= 0.1, group.iloc[0].to_dict()
        checked += 1
    assert checked >= 20


def _write(tmp_path, **overrides) -> str:
    row = {"method": "fastflow", "backbone": "resnet18", "dataset": "btad", "category": "01",
           "metric": "pixel_auroc", "value": "97.0", "protocol": "not-stated",
           "image_size": "256", "source": "a paper, table 3"}
    row.update(overrides)
    path = tmp_path / "published.csv"
    pd.DataFrame([row]).to_csv(path, index=False)
    return path


def test_loader_keeps_category_strings(tmp_path):
    loaded = load_published_csv(_write(tmp_path))
    assert loaded["category"].iloc[0] == "01"
    assert loaded["value"].iloc[0] == pytest.approx(97.0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"value": "0"}, "outside (0, 100]"),
        ({"value": "0.97e3"}, "outside (0, 100]"),
        ({"value": "high"}, "not a number"),
        ({"source": " "}, "empty 'source'"),
        ({"method": "patchcore"}, "unknown method"),
        ({"dataset": "mpdd"}, "unknown dataset"),
        ({"category": "bottle"}, "not a btad category"),
        ({"metric": "auroc"}, "unknown metric"),
        ({"protocol": "best"}, "unknown protocol"),
        ({"image_size": "256px"}, "not a whole number"),
    ],
)
def test_loader_rejects_bad_rows(tmp_path, overrides, message):
    with pytest.raises(ValueError, match="row 2") as err:
        load_published_csv(_write(tmp_path, **overrides))
    assert message in str(err.value)


def test_every_source_is_public_and_unverified_tables_say_so(table):
    """A source is a paper (arXiv id) or a public repository file, never an internal note;
    where the paper's table number could not be checked, the row says so."""
    sources = table["source"]
    assert not sources.str.contains(r"RECIPES|DESIGN|docs ", regex=True).any(), \
        sorted(set(sources[sources.str.contains("RECIPES|DESIGN|docs ")]))
    public = sources.str.contains(r"arXiv \d{4}\.\d{5}|README\.md|\.py:\d", regex=True)
    assert public.all(), sorted(set(sources[~public]))
    unverified = sources.str.contains("table number not verified against the paper")
    assert 0 < unverified.sum() <= 12  # FastFlow (8), U-Flow BTAD (3), CS-Flow (1)
