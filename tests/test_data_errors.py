"""Every kind of bad input gets a DatasetError that names the file (or folder) and the fault."""

from __future__ import annotations

import re

import numpy as np
import pytest

from uadflows.data import DatasetError, index_category
from uadflows.data.tiny import make_tiny, save_image


def _raises(fmt, root, category, *fragments):
    with pytest.raises(DatasetError) as info:
        index_category(fmt, root, category)
    message = str(info.value)
    for fragment in fragments:
        assert str(fragment) in message, f"{fragment!r} not in {message!r}"
    return message


def test_missing_root(tmp_path):
    _raises("mvtec", tmp_path / "nowhere", "bottle", tmp_path / "nowhere", "root not found")


def test_missing_category(tmp_path):
    make_tiny("mvtec", tmp_path, ("bottle",))
    _raises("mvtec", tmp_path, "cable", tmp_path / "cable", "not found")


@pytest.mark.parametrize("folder", ["train/good", "test/good", "test/crack"])
def test_empty_split(tmp_path, folder):
    make_tiny("mvtec", tmp_path, ("bottle",))
    for image in (tmp_path / "bottle" / folder).iterdir():
        image.unlink()
    (tmp_path / "bottle" / folder / "notes.txt").write_text("not an image")
    _raises("mvtec", tmp_path, "bottle", tmp_path / "bottle" / folder, "empty split")


def test_unreadable_image(tmp_path):
    make_tiny("mvtec", tmp_path, ("bottle",))
    broken = tmp_path / "bottle" / "test" / "good" / "001.png"
    broken.write_bytes(b"this is not a png")
    _raises("mvtec", tmp_path, "bottle", broken, "unreadable")


def test_truncated_image_found_by_decoding_only(tmp_path):
    make_tiny("mvtec", tmp_path, ("bottle",), size=(64, 64))
    cut = tmp_path / "bottle" / "train" / "good" / "002.png"
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])
    assert len(index_category("mvtec", tmp_path, "bottle", decode=False)) == 7  # header intact
    _raises("mvtec", tmp_path, "bottle", cut, "truncated")


def test_mask_of_another_size(tmp_path):
    make_tiny("btad", tmp_path, ("03",))
    mask = next((tmp_path / "03" / "ground_truth" / "ko").iterdir())
    save_image(mask, np.zeros((10, 12), np.uint8))
    message = _raises("btad", tmp_path, "03", mask, "10x12", "24x32")
    assert re.search(r"image .*03/test/ko/", message)  # names the image too


def test_defective_image_without_mask(tmp_path):
    make_tiny("mvtec", tmp_path, ("bottle",))
    (tmp_path / "bottle" / "ground_truth" / "crack" / "001_mask.png").unlink()
    _raises("mvtec", tmp_path, "bottle", tmp_path / "bottle" / "test" / "crack" / "001.png",
            "has no mask")


def test_missing_ground_truth_folder(tmp_path):
    make_tiny("folder", tmp_path, ("bottle",), ground_truth=False)
    _raises("mvtec", tmp_path, "bottle", tmp_path / "bottle" / "ground_truth", "not found")


def test_folder_partial_ground_truth(tmp_path):
    make_tiny("folder", tmp_path, ("widget",))
    (tmp_path / "widget" / "ground_truth" / "crack" / "000_mask.png").unlink()
    _raises("folder", tmp_path, "widget", tmp_path / "widget" / "test" / "crack" / "000.png",
            "has no mask")


def test_two_masks_with_one_stem(tmp_path):
    make_tiny("btad", tmp_path, ("01",))
    gt = tmp_path / "01" / "ground_truth" / "ko"
    first = sorted(gt.iterdir())[0]
    save_image(gt / f"{first.stem}.tif", np.zeros((24, 32), np.uint8))
    _raises("btad", tmp_path, "01", first.stem, "several masks")


def test_defect_folder_in_train(tmp_path):
    make_tiny("mvtec", tmp_path, ("bottle",))
    save_image(tmp_path / "bottle" / "train" / "crack" / "000.png", np.zeros((4, 4), np.uint8))
    _raises("mvtec", tmp_path, "bottle", tmp_path / "bottle" / "train", "crack/")


def _visa_csv(root):
    return root / "split_csv" / "1cls.csv"


def test_visa_row_pointing_nowhere(tmp_path):
    make_tiny("visa", tmp_path, ("candle",))
    lines = _visa_csv(tmp_path).read_text().splitlines()
    lines[2] = lines[2].replace(".JPG", "_gone.JPG")
    _visa_csv(tmp_path).write_text("\n".join(lines) + "\n")
    _raises("visa", tmp_path, "candle", _visa_csv(tmp_path), "line 3", "_gone.JPG",
            "does not exist")


def test_visa_mask_pointing_nowhere(tmp_path):
    make_tiny("visa", tmp_path, ("candle",))
    text = _visa_csv(tmp_path).read_text()
    _visa_csv(tmp_path).write_text(text.replace("Masks/Anomaly/000.png", "Masks/Anomaly/x.png"))
    _raises("visa", tmp_path, "candle", _visa_csv(tmp_path), "mask", "x.png", "does not exist")


def test_visa_anomaly_without_mask_and_bad_header(tmp_path):
    make_tiny("visa", tmp_path, ("candle",))
    lines = _visa_csv(tmp_path).read_text().splitlines()
    lines[-1] = lines[-1].rsplit(",", 1)[0] + ","
    _visa_csv(tmp_path).write_text("\n".join(lines) + "\n")
    _raises("visa", tmp_path, "candle", _visa_csv(tmp_path), f"line {len(lines)}", "has no mask")
    _visa_csv(tmp_path).write_text("object,split,image\n")
    _raises("visa", tmp_path, "candle", _visa_csv(tmp_path), "missing column(s) label, mask")


def test_visa_category_absent_from_csv(tmp_path):
    make_tiny("visa", tmp_path, ("candle",))
    _raises("visa", tmp_path, "fryum", _visa_csv(tmp_path), "no rows for category 'fryum'")


def test_not_a_visa_root(tmp_path):
    _raises("visa", tmp_path, "candle", "1cls.csv", "not a VisA root")


def test_many_faults_listed_in_one_error(tmp_path):
    make_tiny("mvtec", tmp_path, ("bottle",), n_train=12)
    for image in sorted((tmp_path / "bottle" / "train" / "good").iterdir()):
        image.write_bytes(b"")
    message = _raises("mvtec", tmp_path, "bottle", "12 bad file(s)", "000.png", "and 2 more")
    assert "011.png" not in message
