"""Indexing each real layout (tiny trees written by uadflows.data.tiny)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from uadflows.data import (FORMATS, OFFICIAL_CATEGORIES, DatasetError, index_category,
                           read_image, read_index, read_mask, resolve_categories, write_index)
from uadflows.data.tiny import make_tiny

SIZE = (24, 32)  # (H, W), not square so that a swapped H/W shows


def _counts(samples):
    return (sum(s.split == "train" for s in samples),
            sum(s.split == "test" and s.label == 0 for s in samples),
            sum(s.split == "test" and s.label == 1 for s in samples))


def test_official_lists():
    assert FORMATS == ("mvtec", "btad", "visa", "folder", "demo", "mpdd", "ksdd2", "realiad",
                       "mvtec_ad2")
    assert len(OFFICIAL_CATEGORIES["mvtec"]) == 15
    assert OFFICIAL_CATEGORIES["btad"] == ("01", "02", "03")
    assert len(OFFICIAL_CATEGORIES["visa"]) == 12
    assert OFFICIAL_CATEGORIES["demo"] == ("brick", "grass", "gravel")
    assert len(OFFICIAL_CATEGORIES["mpdd"]) == 6 and "metal_plate" in OFFICIAL_CATEGORIES["mpdd"]
    assert len(OFFICIAL_CATEGORIES["realiad"]) == 30
    assert OFFICIAL_CATEGORIES["mvtec_ad2"] == ("can", "fabric", "fruit_jelly", "rice",
                                                "sheet_metal", "vial", "wallplugs", "walnuts")


def test_mvtec_grayscale_index_is_sorted_and_complete(tmp_path):
    make_tiny("mvtec", tmp_path, ("grid",), grayscale=True, n_train=4, n_test_good=2,
              n_test_defect=3)
    samples = index_category("mvtec", tmp_path, "grid")
    assert _counts(samples) == (4, 2, 3)
    assert [s.image.name for s in samples[:4]] == ["000.png", "001.png", "002.png", "003.png"]
    assert [s.split for s in samples] == ["train"] * 4 + ["test"] * 5
    defective = [s for s in samples if s.label]
    assert all(s.defect == "crack" and s.mask.name == f"{s.image.stem}_mask.png" for s in defective)
    assert all(s.mask is None and s.defect == "good" for s in samples if not s.label)
    rgb = read_image(samples[0].image)
    assert rgb.shape == (*SIZE, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], rgb[..., 2])  # grayscale copied to every channel
    assert index_category("mvtec", tmp_path, "grid") == samples  # deterministic


def test_btad_mixed_extensions_matched_by_stem(tmp_path):
    make_tiny("btad", tmp_path, ("02",), n_train=2, n_test_good=2, n_test_defect=4)
    samples = index_category("btad", tmp_path, "02")
    assert _counts(samples) == (2, 2, 4)
    suffixes = {s.image.suffix for s in samples}
    assert suffixes == {".bmp", ".png"}
    for s in samples:
        if s.label:
            assert s.defect == "ko" and s.mask.stem == s.image.stem
            assert s.mask.suffix != s.image.suffix
        else:
            assert s.defect == "good"


def test_visa_csv_split_and_non_255_masks(tmp_path):
    make_tiny("visa", tmp_path, ("candle", "pcb1"), n_train=3, n_test_good=2, n_test_defect=2)
    samples = index_category("visa", tmp_path, "pcb1")
    assert _counts(samples) == (3, 2, 2)
    assert all(s.image.parts[-5] == "pcb1" for s in samples)
    for s in (s for s in samples if s.label):
        raw = np.asarray(Image.open(s.mask))
        assert 0 < raw.max() < 255  # the odd case: class values, not 0/255
        assert read_mask(s.mask).sum() == (raw != 0).sum() > 0
        assert s.defect == "bad"


def test_visa_prepared_tree(tmp_path):
    make_tiny("visa", tmp_path, ("cashew",), visa_prepared=True)
    samples = index_category("visa", tmp_path, "cashew")
    assert _counts(samples) == (3, 2, 2)
    assert all(s.mask.name == s.image.stem + ".png" for s in samples if s.label)  # no _mask


def test_folder_with_and_without_ground_truth(tmp_path):
    make_tiny("folder", tmp_path / "a", ("part_x", "part_y"))
    make_tiny("folder", tmp_path / "b", ("part_z",), ground_truth=False)
    assert resolve_categories("folder", tmp_path / "a", "all") == ["part_x", "part_y"]
    with_gt = index_category("folder", tmp_path / "a", "part_y")
    without = index_category("folder", tmp_path / "b", "part_z")
    assert all(s.mask is not None for s in with_gt if s.label)
    assert _counts(without)[2] == 2 and all(s.mask is None for s in without)


def test_demo_format_reads_mvtec_layout(tmp_path):
    make_tiny("mvtec", tmp_path, ("brick",))
    assert _counts(index_category("demo", tmp_path, "brick")) == (3, 2, 2)


def test_resolve_categories(tmp_path):
    make_tiny("mvtec", tmp_path, ("bottle",))
    assert resolve_categories("mvtec", tmp_path, "all") == list(OFFICIAL_CATEGORIES["mvtec"])
    assert resolve_categories("btad", tmp_path, ["03", "01"]) == ["03", "01"]
    assert resolve_categories("mvtec", tmp_path, "bottle") == ["bottle"]
    with pytest.raises(DatasetError, match=rf"botle.*{tmp_path}"):
        resolve_categories("mvtec", tmp_path, ["bottle", "botle"])
    with pytest.raises(DatasetError, match=rf"nothere.*{tmp_path}"):
        resolve_categories("folder", tmp_path, ["nothere"])
    with pytest.raises(DatasetError, match="looks like one category"):
        resolve_categories("folder", tmp_path / "bottle", "all")
    with pytest.raises(DatasetError, match="unknown dataset format 'kolektor'"):
        resolve_categories("kolektor", tmp_path, "all")


def test_index_csv_round_trip(tmp_path):
    root = make_tiny("btad", tmp_path / "data", ("01",))
    samples = index_category("btad", root, "01")
    absolute = write_index(samples, tmp_path / "out" / "index.csv")
    assert read_index(absolute) == samples
    relative = write_index(samples, tmp_path / "out" / "rel.csv", root=root)
    lines = relative.read_text().splitlines()
    assert lines[0] == "image,split,label,defect,mask"
    assert lines[1].startswith("01/train/ok/")
    assert read_index(relative, root=root) == samples
    assert not [p for p in relative.parent.iterdir() if p.name.startswith(".")]  # no temp left
    with pytest.raises(DatasetError, match="not under the index root"):
        write_index(samples, tmp_path / "x.csv", root=tmp_path / "elsewhere")


def test_index_csv_rows_are_checked(tmp_path):
    root = make_tiny("mvtec", tmp_path / "data")
    good = write_index(index_category("mvtec", root, "bottle"), tmp_path / "i.csv", root=root)
    lines = good.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines[:2] + ["bottle/test/good/999.png,test,0,good,"]) + "\n")
    with pytest.raises(DatasetError, match=r"bad\.csv, line 3: image .*999\.png does not exist"):
        read_index(bad, root=root)
    bad.write_text("\n".join(lines[:2] + [lines[2].replace(",0,good,", ",1,good,")]) + "\n")
    with pytest.raises(DatasetError, match=r"bad\.csv, line 3: defect 'good' contradicts label 1"):
        read_index(bad, root=root)
    bad.write_text("path,split\n")
    with pytest.raises(DatasetError, match=r"bad\.csv: header"):
        read_index(bad)

