"""Package exports resolved on first use (PEP 562), so that importing a package does not
import its heavy modules: the light jobs (evaluate, report, mlflow) stay free of torch,
matplotlib and scipy.stats until they need them (tests/test_light_jobs.py)."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps a name to the
    submodule holding it, imported when the name is first read."""

    def __getattr__(attr: str) -> Any:
        if attr not in exports:
            raise AttributeError(f"module {package!r} has no attribute {attr!r}")
        return getattr(importlib.import_module(f"{package}.{exports[attr]}"), attr)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
