"""Datasets as their authors distribute them (MVTec AD, BTAD, VisA), a user's own folder
data, and the embedded demo data: indexing, validation, reading and batching images."""

from uadflows.data.base import DatasetError, Sample
from uadflows.data.images import (IMAGE_SUFFIXES, image_size, load_batch, read_image, read_mask,
                                  sample_mask)
from uadflows.data.index import (FORMATS, OFFICIAL_CATEGORIES, index_category, read_index,
                                 resolve_categories, validate_samples, write_index)
from uadflows.data.verify import format_table, summarize, verify, verify_main

__all__ = [
    "DatasetError", "Sample", "IMAGE_SUFFIXES", "image_size", "load_batch", "read_image",
    "read_mask", "sample_mask", "FORMATS", "OFFICIAL_CATEGORIES", "index_category",
    "read_index", "resolve_categories", "validate_samples", "write_index", "format_table",
    "summarize", "verify", "verify_main",
]
