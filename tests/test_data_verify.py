"""`verify`: the per-category table, the CLI entry's exit codes, and the real MPDD category."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import needs_mpdd
from uadflows.data import format_table, index_category, summarize, verify, verify_main
from uadflows.data.tiny import make_tiny, save_image



def test_summarize_counts(tmp_path):
    make_tiny("btad", tmp_path, ("02",), n_train=3, n_test_good=2, n_test_defect=4, size=(20, 28))
    summary = summarize(index_category("btad", tmp_path, "02"))
    assert summary == {"train_good": 3, "validation_good": 0, "test_good": 2, "test_defective": 4, "masks": 4,
                       "defect_types": {"ko": 4}, "image_sizes": {"20x28": 9},
                       "pixel_level": True}


def test_table_lists_sizes_and_image_level_only_categories(tmp_path):
    make_tiny("folder", tmp_path, ("with_gt",))
    make_tiny("folder", tmp_path, ("no_gt",), ground_truth=False)
    save_image(tmp_path / "no_gt" / "train" / "good" / "009.png", np.zeros((30, 40), np.uint8))
    table, indexed = verify("folder", tmp_path, "all")
    assert list(indexed) == ["no_gt", "with_gt"]
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["category", "train", "good"]
    assert "24x32, 30x40" in lines[2] and lines[2].startswith("no_gt")
    assert lines[-1].startswith("no ground-truth masks for: no_gt ")
    rows = [{"category": "many", "train_good": 1, "test_good": 1, "test_defective": 1,
             "masks": 1, "image_sizes": {"8x8": 1, "99x99": 1, "10x10": 1}, "pixel_level": True}]
    assert "3 sizes, 8x8 .. 99x99" in format_table(rows)


def test_verify_main_exit_codes(tmp_path, capsys):
    make_tiny("mvtec", tmp_path, ("bottle",))
    assert verify_main("mvtec", tmp_path, ["bottle"]) == 0
    out = capsys.readouterr().out
    assert "bottle" in out and "crack:2" in out
    (tmp_path / "bottle" / "test" / "good" / "000.png").write_bytes(b"garbage")
    assert verify_main("mvtec", tmp_path, ["bottle"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "bottle" / "test" / "good" / "000.png") in err and "unreadable" in err
    assert verify_main("mvtec", tmp_path, "all") == 2  # the other 14 categories are absent
    assert str(tmp_path / "cable") in capsys.readouterr().err


def test_real_mpdd_metal_plate(capsys):
    MPDD = needs_mpdd()
    assert verify_main("folder", MPDD.parent, [MPDD.name]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(MPDD.name))
    assert row.split()[1:6] == ["55", "0", "25", "71", "71"] and "256x256" in row
