"""Where the whole frames of an xyz or extxyz file end: a trajectory that a run is still writing
(or that was cut short) ends in an incomplete frame, which the readers leave out with a warning.
One rule for pet.data (pet-eval, pet-train) and analysis.ipi_files (pet-analyze); imports no torch."""

import itertools
from typing import Iterable, NamedTuple, Optional, Union


class FrameLayout(NamedTuple):
    """The whole frames at the start of an xyz file."""

    n_lines: int
    """Lines they take (count line, comment line and one line per atom, each)."""
    n_frames: int
    incomplete: bool
    """Whether an incomplete frame follows them: fewer lines than its count line says, or a last
    line without its newline."""


def frame_layout(lines: Iterable[Union[str, bytes]]) -> Optional[FrameLayout]:
    """The :class:`FrameLayout` of the ``lines`` of an xyz file (text or bytes, each with its
    newline, as a file yields them), each frame read with its own atom count (frames may differ in
    size); None if they are not laid out as xyz frames (a count line that is not a non-negative
    number; blank lines after the last frame are allowed): left to the parser to report."""
    lines = iter(lines)
    n_lines = n_frames = 0
    for count in lines:
        try:
            n_atoms = int(count)
        except ValueError:
            if count.strip() or any(line.strip() for line in lines):
                return None
            break
        if n_atoms < 0:
            return None
        body = list(itertools.islice(lines, n_atoms + 1))
        if len(body) < n_atoms + 1 or body[-1][-1:] not in ("\n", b"\n"):
            return FrameLayout(n_lines, n_frames, True)
        n_lines += n_atoms + 2
        n_frames += 1
    return FrameLayout(n_lines, n_frames, False)
