"""Where the whole frames of an xyz or extxyz file end: a trajectory that a run is still writing
(or that was cut short) ends in an incomplete frame, which the readers leave out with a warning.
One rule for pet.data (pet-eval, pet-train) and analysis.ipi_files (pet-analyze); imports no torch."""

import itertools
from typing import Iterable, NamedTuple, Optional, Union


class FrameLayout(NamedTuple):
    """The whole frames at the start of an xyz file, and what follows them."""

    n_lines: int
    """Lines they take (count line, comment line and one line per atom, each)."""
    n_frames: int
    incomplete: bool
    """Whether an incomplete frame follows them, up to the end of the file: fewer lines than its
    count line says, or a last line without its newline."""
    malformed_line: Optional[int] = None
    """The line (from 1) after them that should be a frame's atom count and is not (not a
    non-negative integer; blank lines after the last frame are allowed); None if there is none."""


def _ends_line(line: Union[str, bytes]) -> bool:
    return line.endswith(b"\n" if isinstance(line, bytes) else "\n")


def frame_layout(lines: Iterable[Union[str, bytes]]) -> FrameLayout:
    """The :class:`FrameLayout` of the ``lines`` of an xyz file (text or bytes, each with its
    newline, as a file yields them), each frame read with its own atom count (frames may differ
    in size)."""
    lines = iter(lines)
    n_lines = n_frames = 0
    for count in lines:
        try:
            n_atoms = int(count)
        except ValueError:
            n_atoms = -1
        if n_atoms < 0:
            if count.strip() or any(line.strip() for line in lines):
                return FrameLayout(n_lines, n_frames, False, n_lines + 1)
            break
        body = list(itertools.islice(lines, n_atoms + 1))
        if len(body) < n_atoms + 1 or not _ends_line(body[-1]):
            return FrameLayout(n_lines, n_frames, True)
        n_lines += n_atoms + 2
        n_frames += 1
    return FrameLayout(n_lines, n_frames, False)
