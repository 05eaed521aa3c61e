"""Compressed input files, recognised by their name: one rule for every reader (pet.data for
pet-eval and pet-train, analysis.ipi_files for pet-analyze). Imports no torch."""

import bz2
import gzip
import lzma
from pathlib import Path
from typing import Callable, Optional

OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
"""Openers of the compressed files the readers take, by file-name suffix (any case)."""


def opener(path) -> Optional[Callable]:
    """The function that opens ``path`` decompressed, or None if its name says it is not compressed."""
    return OPENERS.get(Path(path).suffix.lower())


def inner_name(path) -> str:
    """The name of the file ``path`` holds: without its compression suffix (``a.xyz.gz`` → ``a.xyz``)."""
    path = Path(path)
    return path.stem if opener(path) else path.name
