"""What produced a run: package and library versions and the code's git commit (MLflow params)."""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

LIBRARIES = {"uadflows": "uadflows", "torch": "torch", "timm": "timm", "freia": "FrEIA"}


def provenance() -> dict[str, str]:
    out = {}
    for key, dist in LIBRARIES.items():
        try:
            out[f"{key}_version"] = version(dist)
        except PackageNotFoundError:
            out[f"{key}_version"] = "unknown"
    out["git_commit"] = git_commit()
    return out


def git_commit() -> str:
    """The commit of the source tree this package runs from, "+dirty" if it has changes;
    "unknown" for an installed wheel."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")
