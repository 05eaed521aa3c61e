"""Output folders and prefixes of every command (``pet-train --output``, ``pet-eval --out``,
``pet-analyze --out``), checked and created before any long work so that a bad one costs nothing."""

import os
from pathlib import Path


def writable_folder(folder: Path, option: str) -> Path:
    """``folder``, created with its parents if needed; ValueError naming ``option`` (e.g. ``--out X``)
    if a file is in the way, it cannot be created, or it is not writable (read-only filesystem,
    permissions)."""
    in_the_way = [parent for parent in [*reversed(folder.parents), folder]
                  if parent.exists() and not parent.is_dir()]
    if in_the_way:
        raise ValueError(f"{option}: {in_the_way[0]} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{option}: cannot make the folder {folder} ({error.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{option}: the folder {folder} is not writable")
    return folder


def output_prefix(text: str, default_name: str, option: str = "--out") -> Path:
    """The prefix of ``OPTION text``, its folder made and checked writable: ``text`` itself, or
    ``text/default_name`` if ``text`` is an existing folder or ends in a slash. ValueError if
    ``text`` is empty or the folder is unusable (:func:`writable_folder`)."""
    if not text.strip():
        raise ValueError(f"{option}: the output prefix is empty")
    prefix = Path(os.path.expanduser(text))
    if prefix.is_dir() or text.endswith(("/", os.sep)):
        prefix = prefix / default_name
    writable_folder(prefix.parent, f"{option} {text}")
    return prefix
