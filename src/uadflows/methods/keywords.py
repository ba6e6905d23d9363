"""Building a method's recipe from a config's ``params`` (torch-free, shared by every recipe)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def from_keywords(cls: type[T], method: str, kwargs: dict[str, Any]) -> T:
    """``cls(**kwargs)``, naming every key the recipe dataclass ``cls`` does not know."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"{method}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**kwargs)
