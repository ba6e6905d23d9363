"""MVTec AD 2's export for the evaluation server: the completeness check (every fault
named by file) and a real export from a model trained through the workflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image

from uadflows.ad2_export import BINARY, MAPS, check_export, expected_names, write_map
from uadflows.cli import main
from uadflows.data.mvtec_ad2 import AD2_OBJECTS, PRIVATE_SPLITS, private_images
from uadflows.data.tiny import make_tiny

from conftest import snakemake

SIZE = (20, 28)


@pytest.fixture
def export(tmp_path):
    """A tiny MVTec AD 2 tree of all 8 objects and a complete export of random maps."""
    root = make_tiny("mvtec_ad2", tmp_path / "ad2", AD2_OBJECTS, size=SIZE, n_train=1,
                     n_test_good=1, n_test_defect=1)
    out = tmp_path / "export"
    rng = np.random.default_rng(0)
    for obj in AD2_OBJECTS:
        for split in PRIVATE_SPLITS:
            for image in private_images(root, obj, split):
                write_map(out, obj, split, image, rng.random(SIZE).astype(np.float32), 0.5)
    return root, out


def test_complete_export_passes_and_has_the_servers_format(export, capsys):
    root, out = export
    assert check_export(out, root) == []
    assert main(["check-ad2-export", str(out), "--root", str(root)]) == 0
    assert "complete" in capsys.readouterr().out
    tiff = tifffile.imread(out / MAPS / "vial" / "test_private_mixed" / "001_mixed.tiff")
    png = np.asarray(Image.open(out / BINARY / "vial" / "test_private_mixed" / "001_mixed.png"))
    assert tiff.dtype == np.float16 and tiff.shape == SIZE
    assert png.dtype == np.uint8 and set(np.unique(png)) == {0, 255}
    assert np.array_equal(png == 255, tiff >= 0.5)  # the PNG is the thresholded map
    # without the dataset, the official counts are expected (321 can images, ...)
    assert expected_names(None)["can", "test_private"][-1] == "320_regular"
    assert any("missing files: 002_regular.tiff" in f for f in check_export(out))


def test_every_fault_is_named(export, capsys):
    root, out = export
    gone = out / MAPS / "rice" / "test_private" / "001_regular.tiff"
    gone.unlink()
    (out / BINARY / "can" / "test_private" / "notes.txt").write_text("x")
    tifffile.imwrite(out / MAPS / "can" / "test_private" / "000_regular.tiff",
                     np.zeros(SIZE, np.float32))
    tifffile.imwrite(out / MAPS / "fabric" / "test_private_mixed" / "000_mixed.tiff",
                     np.zeros((10, 10), np.float16))
    Image.fromarray(np.full(SIZE, 128, np.uint8)).save(
        out / BINARY / "walnuts" / "test_private" / "000_regular.png")
    Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(
        out / BINARY / "vial" / "test_private" / "000_regular.png")
    for f in (out / BINARY / "wallplugs" / "test_private_mixed").iterdir():
        f.unlink()
    (out / BINARY / "wallplugs" / "test_private_mixed").rmdir()
    faults = "\n".join(check_export(out, root))
    for expected in [
        f"{gone.parent}: missing files: 001_regular.tiff",
        f"{out / BINARY / 'can' / 'test_private'}: superfluous entries (the server refuses them): notes.txt",
        f"{out / MAPS / 'can' / 'test_private' / '000_regular.tiff'}: dtype float32, expected float16",
        f"{out / MAPS / 'fabric' / 'test_private_mixed' / '000_mixed.tiff'}: 10x10 (HxW) but its image is 20x28",
        f"{out / BINARY / 'walnuts' / 'test_private' / '000_regular.png'}: values other than 0 and 255",
        f"{out / BINARY / 'vial' / 'test_private' / '000_regular.png'}: shape (20, 28, 3)",
        f"{out / BINARY / 'wallplugs'}: missing test sets: test_private_mixed",
    ]:
        assert expected in faults, f"{expected!r} not in\n{faults}"
    assert len(faults.splitlines()) == 7
    assert main(["check-ad2-export", str(out), "--root", str(root)]) == 2
    assert "7 fault(s), not ready for upload" in capsys.readouterr().err


def test_missing_objects_and_folders(tmp_path):
    (tmp_path / "export" / MAPS / "can").mkdir(parents=True)
    faults = check_export(tmp_path / "export")
    assert f"{tmp_path / 'export'}: missing folders: {BINARY}" in faults
    assert f"{tmp_path / 'export' / MAPS}: missing objects: fabric, fruit_jelly, rice, " \
           "sheet_metal and 3 more" in faults
    assert check_export(tmp_path / "nowhere") == [f"{tmp_path / 'nowhere'}: export folder not found"]


def test_bad_maps_are_refused(tmp_path):
    image = tmp_path / "000_regular.png"
    with pytest.raises(ValueError, match=r"000_regular\.png: map not finite in float16"):
        write_map(tmp_path, "can", "test_private", image, np.full(SIZE, 1e6), 0.5)
    with pytest.raises(ValueError, match=r"000_regular\.png: map of shape \(20, 28, 1\)"):
        write_map(tmp_path, "can", "test_private", image, np.zeros((*SIZE, 1)), 0.5)


@pytest.mark.slow  # 13 min on the loaded 2-core machine (one object, 1 epoch, 8 exports)
def test_workflow_run_on_mvtec_ad2_then_export(tmp_path):
    """A tiny MVTec AD 2 object through the real workflow (metrics.json: AU-PRO at both
    limits, the validation threshold, SegF1), then its model scores every object's private
    sets into an export that the check accepts (one model for all 8 objects: this tests
    the files, not detection)."""
    root = make_tiny("mvtec_ad2", tmp_path / "ad2", AD2_OBJECTS, size=(72, 88), n_train=6,
                     n_test_good=3, n_test_defect=3)
    config = yaml.safe_load((Path(__file__).parents[1] / "configs/test/tiny.yaml").read_text())
    config["datasets"] = {"ad2": {"format": "mvtec_ad2", "root": str(root), "categories": ["can"]}}
    config["models"]["fastflow"]["epochs"] = 1
    config["report"]["figures"] = False
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(tmp_path, "results/runs/ad2/can/fastflow/seed0/metrics.json")
    run = tmp_path / "results/runs/ad2/can/fastflow/seed0"
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert 0 <= metrics["au_pro_0.05"] <= 1 and 0 <= metrics["au_pro_0.3"] <= 1
    assert metrics["au_pro_0.3"] == pytest.approx(metrics["au_pro"])  # pro_limit 0.3
    assert 0 <= metrics["seg_f1"] <= 1 and "validation_threshold" in metrics
    out = tmp_path / "export"
    for obj in AD2_OBJECTS:  # the threshold: the run's validation_threshold
        assert main(["export-ad2", "--model", str(run / "model.pt"), "--root", str(root),
                     "--category", obj, "--out", str(out), "--device", "cpu",
                     "--threads", "1"]) == 0
    assert check_export(out, root) == []
    tiff = tifffile.imread(out / MAPS / "can" / "test_private" / "000_regular.tiff")
    assert tiff.shape == (72, 88) and tiff.dtype == np.float16 and np.ptp(tiff) > 0
