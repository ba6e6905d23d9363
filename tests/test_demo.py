"""The demo dataset: layout, determinism, idempotent writing, disjoint crops, exact masks."""

from __future__ import annotations

import numpy as np
import pytest

from uadflows.data import DatasetError, index_category, read_image, read_mask, verify
from uadflows.data.demo import (CROP, DEFECT_TYPES, STAMP, TEST_COLUMNS, TRAIN_COLUMNS, _rng,
                                crop_plan, make_demo, render_crop)

SMALL = dict(image_size=64, n_train=3, n_test_good=2, n_test_defect=8)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_defaults_make_the_mvtec_layout(tmp_path):
    root = make_demo(tmp_path / "demo", ("grass",))  # one category keeps the test short
    table, indexed = verify("demo", root, ["grass"])
    assert list(indexed) == ["grass"]
    for samples in indexed.values():
        assert len(samples) == 70
        assert sum(s.split == "train" for s in samples) == 40
        assert sum(s.split == "test" and not s.label for s in samples) == 10
        assert {s.defect for s in samples if s.label} == set(DEFECT_TYPES)
    assert (root / "grass" / "ground_truth" / "scratch" / "000_mask.png").is_file()
    assert read_image(root / "grass" / "test" / "good" / "000.png").shape == (128, 128, 3)
    assert "cut:5 hole:5 scratch:5 stain:5" in table


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = _files(make_demo(tmp_path / "a", ("gravel",), seed=3, **SMALL))
    assert first == _files(make_demo(tmp_path / "b", ("gravel",), seed=3, **SMALL))
    other = _files(make_demo(tmp_path / "c", ("gravel",), seed=4, **SMALL))
    assert first.keys() == other.keys() and first != other
    # a category's files do not depend on which other categories are made with it
    both = _files(make_demo(tmp_path / "d", ("brick", "gravel"), seed=3, **SMALL))
    assert {k: v for k, v in both.items() if k.startswith("gravel/")} == \
        {k: v for k, v in first.items() if k.startswith("gravel/")}


def test_rerun_is_idempotent_and_cleans_up(tmp_path):
    root = make_demo(tmp_path, ("brick",), **SMALL)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    make_demo(tmp_path, ("brick",), **SMALL)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before
    make_demo(tmp_path, ("brick",), **{**SMALL, "n_test_defect": 2})  # fewer: stale files go
    assert not (root / "brick" / "test" / "stain").exists()
    assert len(index_category("demo", root, "brick")) == 3 + 2 + 2
    assert not [p for p in root.rglob(".*.tmp")]


def test_refuses_to_overwrite_foreign_data(tmp_path):
    (tmp_path / "grass").mkdir()
    with pytest.raises(DatasetError, match=rf"{tmp_path / 'grass'}.*{STAMP}"):
        make_demo(tmp_path, ("grass",), **SMALL)
    with pytest.raises(DatasetError, match="unknown demo category 'moss'"):
        make_demo(tmp_path / "x", ("moss",))


def test_train_and_test_crops_come_from_disjoint_columns(tmp_path):
    assert TRAIN_COLUMNS[1] <= TEST_COLUMNS[0]
    root = make_demo(tmp_path, ("brick",), seed=1, **SMALL)
    for split, name, count in (("train", "train", 3), ("test_good", "test", 2)):
        for i in range(count):
            plan = crop_plan(_rng(1, "brick", split, i), name)
            columns = TRAIN_COLUMNS if name == "train" else TEST_COLUMNS
            assert columns[0] <= plan.col and plan.col + CROP <= columns[1]
            folder = "train/good" if name == "train" else "test/good"
            saved = read_image(root / "brick" / folder / f"{i:03d}.png")
            assert np.array_equal(saved, render_crop("brick", plan, 64))


@pytest.mark.parametrize("category", ["brick", "grass", "gravel"])
def test_masks_are_exactly_the_changed_pixels_and_defects_are_visible(tmp_path, category):
    root = make_demo(tmp_path, (category,), seed=2, image_size=128, n_train=1, n_test_good=1,
                     n_test_defect=8)
    for i in range(8):
        rng = _rng(2, category, "test_defect", i)
        clean = render_crop(category, crop_plan(rng, "test"), 128)
        defect, number = DEFECT_TYPES[i % 4], i // 4
        image = read_image(root / category / "test" / defect / f"{number:03d}.png")
        mask = read_mask(root / category / "ground_truth" / defect / f"{number:03d}_mask.png")
        changed = np.any(image != clean, axis=2)
        assert np.array_equal(mask, changed)
        assert mask.sum() >= 40, (defect, int(mask.sum()))  # not a speck
        contrast = np.abs(image.astype(int) - clean.astype(int))[mask].mean()
        assert contrast >= 40, (defect, float(contrast))  # a person sees it
