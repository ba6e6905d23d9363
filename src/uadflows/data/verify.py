"""`uadflows verify`: index every selected category, print a table, fail on bad input."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from uadflows.data.base import DatasetError, Sample
from uadflows.data.images import check_images
from uadflows.data.index import index_category, resolve_categories

COLUMNS = (("category", "category"), ("train_good", "train good"),
           ("validation_good", "val good"), ("test_good", "test good"),
           ("test_defective", "test defective"), ("masks", "masks"),
           ("image_sizes", "image sizes (HxW)"), ("defect_types", "defect types"))


def summarize(samples: Sequence[Sample]) -> dict:
    """Counts for one category's samples (image sizes read from headers only)."""
    test_defective = [s for s in samples if s.split == "test" and s.label == 1]
    sizes = check_images([s.image for s in samples], decode=False)
    for result in sizes:
        if isinstance(result, DatasetError):
            raise result
    return {
        "train_good": sum(s.split == "train" and s.label == 0 for s in samples),
        "validation_good": sum(s.split == "validation" for s in samples),
        "test_good": sum(s.split == "test" and s.label == 0 for s in samples),
        "test_defective": len(test_defective),
        "masks": sum(s.mask is not None for s in samples),
        "defect_types": dict(sorted(Counter(s.defect for s in test_defective).items())),
        "image_sizes": {f"{h}x{w}": n for (h, w), n in sorted(Counter(sizes).items())},
        # pixel-level metrics need a mask for every defective image (folder data may have none)
        "pixel_level": bool(test_defective) and all(s.mask is not None for s in test_defective),
    }


def _cell(key: str, value) -> str:
    if key == "image_sizes" and isinstance(value, dict):
        if len(value) <= 2:
            return ", ".join(value)
        by_area = sorted(value, key=lambda hw: int(hw.split("x")[0]) * int(hw.split("x")[1]))
        return f"{len(value)} sizes, {by_area[0]} .. {by_area[-1]}"
    if key == "defect_types" and isinstance(value, dict):
        return " ".join(f"{name}:{n}" for name, n in value.items())
    return str(value)


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table of ``summarize`` rows (each with a "category" key)."""
    header = [title for _, title in COLUMNS]
    body = [[_cell(key, row.get(key, "")) for key, _ in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    numeric = {1, 2, 3, 4, 5}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body)]
    image_only = [str(r.get("category")) for r in rows if r.get("pixel_level") is False]
    if image_only:
        lines.append(f"no ground-truth masks for: {', '.join(image_only)} "
                     "(only image-level metrics will be computed)")
    return "\n".join(lines)


def verify(fmt: str, root: str | os.PathLike, categories: str | Sequence[str]) -> tuple[str, dict[str, list[Sample]]]:
    """Index and validate every selected category; returns the table and the samples."""
    names = resolve_categories(fmt, root, categories)
    indexed: dict[str, list[Sample]] = {}
    faults: list[str] = []
    for name in names:  # every category is checked, so one run lists all that are wrong
        try:
            indexed[name] = index_category(fmt, root, name)
        except DatasetError as exc:
            faults.append(f"[{name}] {exc}")
    if faults:
        raise DatasetError(f"{len(faults)} of {len(names)} categories failed:\n" + "\n".join(faults))
    rows = [{"category": name, **summarize(samples)} for name, samples in indexed.items()]
    table = format_table(rows)
    if fmt == "mvtec_ad2":
        table += "\n" + _private_counts(Path(root), list(indexed))
    return table, indexed


def _private_counts(root: Path, categories: list[str]) -> str:
    """MVTec AD 2's unlabelled test sets (checked and counted; scored only for export)."""
    from uadflows.data.mvtec_ad2 import PRIVATE_SPLITS, private_images

    cells, faults = [], []
    for name in categories:
        counts = []
        for split in PRIVATE_SPLITS:
            try:
                counts.append(str(len(private_images(root, name, split))))
            except DatasetError as exc:
                faults.append(f"[{name}] {exc}")
        cells.append(f"{name} {'+'.join(counts)}")
    if faults:
        raise DatasetError("private test sets:\n" + "\n".join(faults))
    return ("private test sets (test_private+test_private_mixed, unlabelled, for the "
            f"evaluation server): {', '.join(cells)}")


def verify_main(fmt: str, root: str | os.PathLike, categories: str | Sequence[str]) -> int:
    """CLI entry: print the table and return 0, or print the error and return 2."""
    try:
        table, _ = verify(fmt, root, categories)
    except DatasetError as exc:
        print(f"uadflows verify: error: {exc}", file=sys.stderr)
        return 2
    print(f"{fmt} dataset at {root}")
    print(table)
    return 0
