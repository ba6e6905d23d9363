"""Bad input, fuzzed (issue 20): random bytes, truncated and corrupted files in place of a
dataset's images and masks always give `verify`'s own error naming the file, never a
traceback (hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uadflows.data import verify_main
from uadflows.data.images import read_image, read_mask
from uadflows.data.tiny import make_tiny

# The files of a tiny MVTec category that get replaced: train and test images, and a mask.
TARGETS = ("train/good/000.png", "test/good/000.png", "test/crack/000.png",
           "ground_truth/crack/000_mask.png")


@pytest.fixture(scope="module")
def dataset():
    with tempfile.TemporaryDirectory() as tmp:
        root = make_tiny("mvtec", Path(tmp), ("bottle",))
        assert verify_main("mvtec", root, ["bottle"]) == 0
        yield root


def _bad_file(draw, valid: bytes) -> bytes:
    kind = draw(st.sampled_from(["random", "truncated", "corrupted", "header-only"]))
    if kind == "random":
        return draw(st.binary(max_size=4096))
    if kind == "truncated":
        return valid[:draw(st.integers(0, len(valid) - 1))]
    if kind == "header-only":  # a PNG signature and a plausible IHDR, then garbage
        return valid[:33] + draw(st.binary(min_size=1, max_size=512))
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 16))):
        data[draw(st.integers(8, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), target=st.sampled_from(TARGETS))
def test_verify_names_every_bad_image_or_mask(dataset, capsys, data, target):
    path = dataset / "bottle" / target
    valid = path.read_bytes()
    bad = _bad_file(data.draw, valid)
    path.write_bytes(bad)
    capsys.readouterr()
    try:
        code = verify_main("mvtec", dataset, ["bottle"])  # any other exception fails the test
    finally:
        path.write_bytes(valid)
    err = capsys.readouterr().err
    if code == 0:  # a corruption PIL decodes without complaint (e.g. only IEND cut off)
        path.write_bytes(bad)
        try:
            read_image(path) if "ground_truth" not in target else read_mask(path)
        finally:
            path.write_bytes(valid)
        return
    assert code == 2
    assert str(path) in err, err
