"""The kNN floor's typed recipe (torch-free): what PatchCore scores with, minus its coreset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from uadflows.methods.keywords import from_keywords


@dataclass
class KnnConfig:
    """Parameters of the nearest-neighbour floor.

    batch_size: images per batch of the one pass over the cache that builds the memory bank
        (and of nothing else: there is no optimiser).
    epochs: always 1, the one pass; kept so the trainer reads every method alike.
    lr: unused (there is no optimiser); a job spec's trainer settings hold a positive one.
    bank_size: at most this many training positions kept per scale, drawn uniformly at
        random (seeded by the run's seed) when the training set has more; None keeps all
        (exact nearest neighbours). PatchCore picks its subset by greedy coreset instead.
    chunk: entries of one block of the distance matrix (queries x bank) computed at once;
        bounds the memory of the search (4 MiB blocks stay in cache), not its result.
    image_size: input side in pixels when the factory builds the extractor itself.
    """

    # One pass over the cache instead of an optimiser loop (read by the planner, torch-free).
    fits_from_data: ClassVar[bool] = True

    batch_size: int = 32
    epochs: int = 1
    lr: float = 1.0
    bank_size: int | None = None
    chunk: int = 2**20
    image_size: int | tuple[int, int] = 256

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            problems.append(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.epochs != 1:
            problems.append(f"epochs must be 1 (the memory bank is built in one pass), got {self.epochs!r}")
        if self.bank_size is not None and (not isinstance(self.bank_size, int) or self.bank_size < 1):
            problems.append(f"bank_size must be null or an integer >= 1, got {self.bank_size!r}")
        if not isinstance(self.chunk, int) or self.chunk < 1:
            problems.append(f"chunk must be an integer >= 1, got {self.chunk!r}")
        if problems:
            raise ValueError("knn config: " + "; ".join(problems))

    @classmethod
    def from_kwargs(cls, **kwargs) -> "KnnConfig":
        """Build from keyword parameters, naming any key kNN does not know (e.g. lr)."""
        return from_keywords(cls, "knn", kwargs)


# What the registry reads without importing the model (and torch): uadflows.methods.recipe/label.
LABEL = "kNN"
RECIPE = KnnConfig
