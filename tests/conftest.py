"""Shared fixtures: a tiny demo category with its index and feature cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MPDD = ROOT.parent / "shared" / "data" / "mpdd_metal_plate"

# Tests run offline: a hub download must fail at once, not after a timeout.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY_EXTRACTOR = {"name": "tf_efficientnet_lite0", "image_size": 64, "pretrained": True}


@pytest.fixture(scope="session")
def tiny_category(tmp_path_factory):
    """Demo category 'brick' at 64 px: index CSV and feature cache (paths)."""
    from uadflows.data import index_category, write_index
    from uadflows.data.demo import make_demo
    from uadflows.features import extract

    base = tmp_path_factory.mktemp("tiny")
    root = make_demo(base / "demo", ("brick",), seed=0, image_size=64, n_train=8,
                     n_test_good=4, n_test_defect=4)
    index = base / "index" / "brick.csv"
    write_index(index_category("demo", root, "brick"), index)
    features = base / "features" / "brick"
    extract(index, features, TINY_EXTRACTOR, batch_size=8, device="cpu")
    return {"root": root, "index": index, "features": features, "base": base}


def tiny_spec(seed: int = 0, epochs: int = 3, method: str = "fastflow", **params) -> dict:
    return {
        "sweep": "test", "dataset": "demo", "format": "demo", "category": "brick",
        "model": method, "method": method, "backbone": "tf_efficientnet_lite0", "seed": seed,
        "image_size": [64, 64], "pretrained": True, "weights_file": None, "extractor": "x",
        "params": params,
        "train": {"epochs": epochs, "batch_size": 4, "lr": None, "checkpoint_every": 1},
        "evaluation": {"resolution": "original", "pro_limit": 0.3},
        "device": "cpu", "protocol": "last-epoch",
    }
