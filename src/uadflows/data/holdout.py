"""The validation split: normal training images held out from training, on which every run
chooses its thresholds (docs/statistics.md).

The held-out images are marked ``split = validation`` in the category's index, so training
(which reads the ``train`` split of the feature cache) never sees them, the feature cache
holds them as their own split, and the index csv records which they are. A changed
fraction or seed changes the index, hence its digest: the feature cache built from the old
index is refused (``features.open_cache``) and the workflow rebuilds it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from uadflows.data.base import DatasetError, Sample
from uadflows.data.index import sort_key


def validation_count(n_train: int, fraction: float, key: str = "validation.fraction") -> int:
    """How many of ``n_train`` training images are held out: ceil(fraction x n), so that any
    fraction > 0 holds out at least one; at least one must remain for training."""
    if not 0 <= fraction < 1:
        raise DatasetError(f"config key '{key}': {fraction!r} is not in [0, 1)")
    n_val = math.ceil(fraction * n_train)
    if fraction > 0 and n_train - n_val < 1:
        raise DatasetError(f"config key '{key}': {fraction} of {n_train} training image(s) holds "
                           f"out {n_val} and leaves {n_train - n_val} to train on; lower it "
                           "(or set 0: no validation split)")
    return n_val


def hold_out(samples: Sequence[Sample], fraction: float, seed: int,
             key: str = "validation.fraction", groups: Sequence[str] | None = None) -> list[Sample]:
    """``samples`` with ``validation_count`` of the training images, chosen uniformly by
    ``numpy.random.default_rng(seed)`` among the training images in the given order, moved
    to the validation split (the result sorted as an index is). Deterministic: the same samples, fraction and
    seed always hold out the same images. ``groups`` (one name per sample): images that
    must stay together, e.g. Real-IAD's views of one physical sample; then the fraction is
    of the groups, and a group is held out whole (no view of it trains). A dataset that
    already has a validation split (MVTec AD 2) is refused: its official split is used."""
    if any(s.split == "validation" for s in samples):
        raise DatasetError(f"config key '{key}': this dataset has its own validation split; "
                           "remove the key (the official split is used)")
    train = [i for i, s in enumerate(samples) if s.split == "train"]
    names = [str(i) if groups is None else groups[i] for i in train]
    units = list(dict.fromkeys(names))  # distinct, in order
    n_val = validation_count(len(units), fraction, key)
    picked = set(np.random.default_rng(seed).choice(len(units), size=n_val, replace=False).tolist()) \
        if n_val else set()
    held = {units[j] for j in picked}
    chosen = {i for i, name in zip(train, names) if name in held}
    return sorted((replace(s, split="validation") if i in chosen else s for i, s in enumerate(samples)),
                  key=sort_key)
