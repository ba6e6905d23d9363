"""MPDD, KolektorSDD2, Real-IAD and MVTec AD 2: their layouts, odd cases and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_mpdd
from uadflows.data import DatasetError, index_category, read_index, verify, write_index
from uadflows.data.mvtec_ad2 import private_images
from uadflows.data.realiad import sample_groups
from uadflows.data.tiny import save_image
from uadflows.data.tiny import make_tiny



def _raises(fmt, root, category, *fragments):
    with pytest.raises(DatasetError) as info:
        index_category(fmt, root, category)
    for fragment in fragments:
        assert str(fragment) in str(info.value), f"{fragment!r} not in {info.value}"


def _counts(samples):
    return {split: (sum(s.split == split and not s.label for s in samples),
                    sum(s.split == split and s.label for s in samples))
            for split in ("train", "validation", "test")}


# --- MPDD ----------------------------------------------------------------------------

def test_mpdd_mvtec_layout_and_official_names(tmp_path):
    make_tiny("mpdd", tmp_path, ("bracket_white",))
    samples = index_category("mpdd", tmp_path, "bracket_white")
    assert _counts(samples)["test"] == (2, 2)
    assert {s.defect for s in samples if s.label} == {"hole"}
    _raises("mpdd", tmp_path, "bracket_whte", "unknown mpdd category 'bracket_whte'", tmp_path)
    _raises("mpdd", tmp_path, "tubes", tmp_path / "tubes", "not found")
    (tmp_path / "bracket_white" / "ground_truth" / "hole" / "001_mask.png").unlink()
    _raises("mpdd", tmp_path, "bracket_white",
            tmp_path / "bracket_white" / "test" / "hole" / "001.png", "has no mask")


def test_real_mpdd_metal_plate_as_mpdd(tmp_path):
    MPDD = needs_mpdd()  # beside the clone (UADFLOWS_SHARED elsewhere); CI fails without it
    (tmp_path / "metal_plate").symlink_to(MPDD)  # the official name; the data is not copied
    table, indexed = verify("mpdd", tmp_path, ["metal_plate"])
    assert _counts(indexed["metal_plate"]) == {"train": (55, 0), "validation": (0, 0),
                                               "test": (25, 71)}
    assert "256x256" in table and "defect:71" in table


# --- KolektorSDD2 --------------------------------------------------------------------

def test_ksdd2_labels_from_masks_and_train_defects_left_out(tmp_path):
    make_tiny("ksdd2", tmp_path, n_train=3, n_test_good=2, n_test_defect=2)
    samples = index_category("ksdd2", tmp_path, "ksdd2")
    assert _counts(samples) == {"train": (3, 0), "validation": (0, 0), "test": (2, 2)}
    assert len(list((tmp_path / "train").glob("*_GT.png"))) == 4  # one defective train image
    for s in samples:
        assert (s.mask is not None) == bool(s.label)
        if s.label:
            assert s.mask.name == f"{s.image.stem}_GT.png" and s.defect == "defect"
    assert not any(s.image.stem.endswith("_GT") for s in samples)
    # a normal image's mask all zeros -> normal; one pixel set -> defective
    good = next(s for s in samples if s.split == "test" and not s.label)
    save_image(good.image.with_name(f"{good.image.stem}_GT.png"),
               np.pad(np.full((1, 1), 255, np.uint8), ((3, 20), (5, 26))))
    assert _counts(index_category("ksdd2", tmp_path, "ksdd2"))["test"] == (1, 3)


def test_ksdd2_bad_input(tmp_path):
    make_tiny("ksdd2", tmp_path)
    _raises("ksdd2", tmp_path, "kolektor", "unknown ksdd2 category 'kolektor'")
    gt = tmp_path / "test" / "10005_GT.png"
    gt.rename(tmp_path / "gt.bak")
    _raises("ksdd2", tmp_path, "ksdd2", tmp_path / "test" / "10005.png", "has no mask",
            "10005_GT.png")
    (tmp_path / "gt.bak").rename(gt)
    save_image(tmp_path / "test" / "99999_GT.png", np.zeros((24, 32), np.uint8))
    _raises("ksdd2", tmp_path, "ksdd2", tmp_path / "test" / "99999_GT.png",
            "mask without its image")
    (tmp_path / "test" / "99999_GT.png").unlink()
    gt.write_bytes(gt.read_bytes()[:20])
    _raises("ksdd2", tmp_path, "ksdd2", gt, "unreadable")
    make_tiny("ksdd2", tmp_path / "b")
    for mask in (tmp_path / "b" / "test").glob("*_GT.png"):
        save_image(mask, np.zeros((24, 32), np.uint8))
    _raises("ksdd2", tmp_path / "b", "ksdd2", tmp_path / "b" / "test",
            "empty split, no defective test images")
    _raises("ksdd2", tmp_path / "none", "ksdd2", tmp_path / "none", "root not found")
    (tmp_path / "c").mkdir()
    _raises("ksdd2", tmp_path / "c", "ksdd2", tmp_path / "c" / "train", "split folder not found")


def test_ksdd2_mask_of_another_size(tmp_path):
    make_tiny("ksdd2", tmp_path)
    gt = tmp_path / "test" / "10006_GT.png"
    save_image(gt, np.full((10, 12), 255, np.uint8))
    _raises("ksdd2", tmp_path, "ksdd2", gt, "10x12", "24x32")


# --- Real-IAD ------------------------------------------------------------------------

def _realiad(tmp_path):
    root = make_tiny("realiad", tmp_path / "realiad_256", ("audiojack",), n_train=2,
                     n_test_good=1, n_test_defect=2)
    return root, tmp_path / "realiad_jsons" / "realiad_jsons" / "audiojack.json"


def test_realiad_views_are_samples_and_groups_are_s_folders(tmp_path):
    root, split = _realiad(tmp_path)
    samples = index_category("realiad", root, "audiojack")
    # 2 train, 1 good and 2 defective test samples of 5 views; C5 of a defective one is OK
    assert _counts(samples) == {"train": (10, 0), "validation": (0, 0), "test": (5 + 2, 8)}
    assert all(s.image.suffix == ".jpg" for s in samples)
    assert all(s.mask.name == s.image.stem + "_mask.png" and s.defect == "HS"
               for s in samples if s.label)
    test = [s for s in samples if s.split == "test"]
    groups = sample_groups([s.image for s in test])
    assert len(set(groups)) == 3
    assert sum(g.endswith("NG/HS/S0004") for g in groups) == 5
    # the index csv keeps every view
    csv_path = write_index(samples, tmp_path / "i.csv", root=root)
    assert read_index(csv_path, root=root) == samples


def test_realiad_bad_input(tmp_path):
    root, split = _realiad(tmp_path)
    original = split.read_text()
    data = json.loads(original)
    data["test"][3]["image_path"] = "OK/S0003/gone.jpg"
    split.write_text(json.dumps(data))
    _raises("realiad", root, "audiojack", split, "test[3]", "gone.jpg", "does not exist")
    data = json.loads(original)
    ng = next(i for i, item in enumerate(data["test"]) if item["anomaly_class"] != "OK")
    data["test"][ng]["mask_path"] = None
    split.write_text(json.dumps(data))
    _raises("realiad", root, "audiojack", split, f"test[{ng}]", "has no mask_path")
    data = json.loads(original)
    data["test"][ng]["mask_path"] = "NG/HS/S0004/x_mask.png"
    split.write_text(json.dumps(data))
    _raises("realiad", root, "audiojack", split, f"test[{ng}]", "x_mask.png", "does not exist")
    data = json.loads(original)
    data["train"][1] = data["test"][ng]
    split.write_text(json.dumps(data))
    _raises("realiad", root, "audiojack", split, "train[1]", "anomalous image (HS) in the train")
    data = json.loads(original)
    del data["test"][0]["anomaly_class"]
    split.write_text(json.dumps(data))
    _raises("realiad", root, "audiojack", split, "test[0]", "missing key(s) anomaly_class")
    split.write_text("{not json")
    _raises("realiad", root, "audiojack", split, "unreadable split file")
    split.write_text(json.dumps({"meta": {}, "train": []}))
    _raises("realiad", root, "audiojack", split, "key 'train' missing or empty")
    split.unlink()
    _raises("realiad", root, "audiojack", split, "split file not found")
    _raises("realiad", root, "toy", "realiad_jsons/toy.json", "split file not found")
    _raises("realiad", root, "audio_jack", "unknown realiad category 'audio_jack'")


def test_realiad_truncated_view(tmp_path):
    root, _ = _realiad(tmp_path)
    view = sorted((root / "audiojack" / "OK" / "S0001").glob("*.jpg"))[2]
    view.write_bytes(view.read_bytes()[: 200])
    _raises("realiad", root, "audiojack", view, "truncated")


# --- MVTec AD 2 ----------------------------------------------------------------------

def test_mvtec_ad2_validation_split_and_private_sets(tmp_path):
    make_tiny("mvtec_ad2", tmp_path, ("can", "vial"), n_train=3, n_test_good=2, n_test_defect=3)
    samples = index_category("mvtec_ad2", tmp_path, "vial")
    assert _counts(samples) == {"train": (3, 0), "validation": (2, 0), "test": (2, 3)}
    assert [s.split for s in samples] == ["train"] * 3 + ["validation"] * 2 + ["test"] * 5
    assert all(s.mask.name == f"{s.image.stem}_mask.png" for s in samples if s.label)
    assert not any("private" in str(s.image) for s in samples)  # unlabelled: not indexed
    assert [p.name for p in private_images(tmp_path, "vial", "test_private_mixed")] == \
        [f"{i:03d}_mixed.png" for i in range(5)]
    csv_path = write_index(samples, tmp_path / "i.csv", root=tmp_path)
    assert read_index(csv_path, root=tmp_path) == samples  # validation rows read back
    table, _ = verify("mvtec_ad2", tmp_path, ["can", "vial"])
    assert table.splitlines()[2].split()[1:6] == ["3", "2", "2", "3", "3"]
    assert table.splitlines()[-1].endswith("can 5+5, vial 5+5")


def test_mvtec_ad2_bad_input(tmp_path):
    make_tiny("mvtec_ad2", tmp_path, ("can",))
    can = tmp_path / "can"
    _raises("mvtec_ad2", tmp_path, "walnut", "unknown mvtec_ad2 category 'walnut'")
    _raises("mvtec_ad2", tmp_path, "rice", tmp_path / "rice", "not found")
    (can / "test_public/ground_truth/bad/001_regular_mask.png").unlink()
    _raises("mvtec_ad2", tmp_path, "can", can / "test_public/bad/001_regular.png", "has no mask")
    make_tiny("mvtec_ad2", tmp_path, ("can",))
    for image in (can / "validation" / "good").iterdir():
        image.unlink()
    _raises("mvtec_ad2", tmp_path, "can", can / "validation" / "good", "empty split")
    make_tiny("mvtec_ad2", tmp_path, ("can",))
    save_image(can / "train" / "bad" / "000.png", np.zeros((4, 4), np.uint8))
    _raises("mvtec_ad2", tmp_path, "can", can / "train", "unexpected folder(s) bad/")
    (can / "train" / "bad" / "000.png").unlink()
    (can / "train" / "bad").rmdir()
    (can / "test_private" / "001_regular.png").rename(can / "test_private" / "007_regular.png")
    with pytest.raises(DatasetError, match=r"007_regular\.png: unexpected name, 001_regular\.png is missing"):
        private_images(tmp_path, "can", "test_private")
    with pytest.raises(DatasetError, match=r"private test sets:\n\[can\] .*007_regular"):
        verify("mvtec_ad2", tmp_path, ["can"])
