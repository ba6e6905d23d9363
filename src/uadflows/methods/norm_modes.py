"""The modes of a pre-flow LayerNorm (``norm`` of FastFlow and of U-Flow's CNN path), torch-free
so that the methods' config.py can check them; the module itself: methods/layernorm.py."""

from __future__ import annotations

NORMS = ("faithful", "bounded", "no-affine")


def check_norm(norm: object, where: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"{where}: norm {norm!r} is not one of {', '.join(NORMS)}")
    return norm  # type: ignore[return-value]
