"""Pairs of atoms closer than a cutoff in a periodic cell (vesin), any cell shape and any cutoff,
or with open boundaries; the distance bins of the pair analyses and the checks of their cutoff.

Pairs are counted with every periodic image closer than the cutoff, not only the nearest one, so
the counts stay right beyond half the cell: there a pair is counted with several images, and the
distribution is that of the periodic lattice of copies of the cell (finite-size artefacts), which
:func:`check_cutoff` warns about.
"""

import sys

import numpy as np
from vesin import NeighborList

from pet.arguments import positive_float, positive_int

from .errors import AnalysisError
from .molecules import MIN_CELL_VOLUME

MAX_BINS = 10_000
"""The most distance bins (--r-max / --bin): every frame keeps a histogram of them for the errors."""

MAX_PAIRS = 10_000_000
"""The most pairs expected within the cutoff in one frame (about 40 bytes each in the neighbour list)."""


def pairs_within(points: np.ndarray, cell: np.ndarray, cutoff: float):
    """Each pair (i, j) once, with every periodic image closer than ``cutoff`` (Å).

    ``points`` (n, 3) Å, ``cell`` (3, 3) rows = lattice vectors (triclinic allowed; the cutoff may
    exceed half the cell); a cell of zero volume: open boundaries (no images). Returns i (P,),
    j (P,) and the vectors r_j − r_i + shift (P, 3).
    """
    periodic = bool(abs(np.linalg.det(cell)) > MIN_CELL_VOLUME)
    i, j, vectors = NeighborList(cutoff=cutoff, full_list=False).compute(
        np.ascontiguousarray(points, dtype=float), np.ascontiguousarray(cell, dtype=float),
        periodic, quantities="ijD")
    return i, j, vectors


def distance_edges(r_max: float, bin_width: float) -> np.ndarray:
    """Distance bin edges from 0 to exactly ``r_max`` Å: ⌈r_max / bin_width⌉ equal bins (at most
    :data:`MAX_BINS`), as wide as ``bin_width`` or a little narrower where it does not divide ``r_max``."""
    if not 0 < bin_width < r_max:
        raise AnalysisError(f"need 0 < --bin < --r-max, got {bin_width} and {r_max}")
    n_bins = int(np.ceil(r_max / bin_width - 1e-9))
    if n_bins > MAX_BINS:
        raise AnalysisError(f"--r-max {r_max:g} Å with --bin {bin_width:g} Å makes {n_bins} bins: at most "
                            f"{MAX_BINS} (--bin at least {r_max / MAX_BINS:.3g} Å)")
    return np.linspace(0.0, r_max, n_bins + 1)


def cell_widths(cells: np.ndarray) -> np.ndarray:
    """(F, 3) distances in Å between opposite faces of each cell (F, 3, 3), rows = lattice vectors."""
    volumes = np.abs(np.linalg.det(cells))
    areas = np.linalg.norm(np.cross(cells[:, [1, 2, 0]], cells[:, [2, 0, 1]]), axis=-1)
    return volumes[:, None] / areas


def check_cutoff(n_points: int, cells: np.ndarray, r_max: float, path) -> None:
    """Before the pairs of ``n_points`` atoms within ``r_max`` Å are counted in periodic ``cells``
    (F, 3, 3): AnalysisError if a frame would hold more than :data:`MAX_PAIRS` pairs (about
    n²/2 · (4π/3) r_max³ / V), a warning on stderr if ``r_max`` exceeds half the smallest distance
    between opposite faces of a cell (pairs counted with several periodic images there)."""
    volume = float(np.abs(np.linalg.det(cells)).min())
    expected = 0.5 * n_points ** 2 * 4.0 * np.pi / 3.0 * r_max ** 3 / volume
    if expected > MAX_PAIRS:
        limit = (MAX_PAIRS * volume / (0.5 * n_points ** 2 * 4.0 * np.pi / 3.0)) ** (1.0 / 3.0)
        raise AnalysisError(f"--r-max {r_max:g} Å: about {expected:.3g} pairs per frame ({n_points} atoms in "
                            f"{volume:.4g} Å³), at most {MAX_PAIRS:.0e}: --r-max at most {limit:.3g} Å here")
    widths = cell_widths(cells)
    frame, face = np.unravel_index(np.argmin(widths), widths.shape)
    half = 0.5 * widths[frame, face]
    if r_max > half:
        print(f"warning: {path}: --r-max {r_max:g} Å exceeds half the cell's smallest width ({half:.4g} Å, "
              f"frame {frame}): beyond {half:.4g} Å pairs are counted with several periodic images, the "
              "distribution of the periodic copies of the cell (finite-size artefacts)", file=sys.stderr)


def bins_note(edges: np.ndarray, bin_width: float) -> str:
    """', N bins of W Å' for a summary line when the bins are narrower than ``bin_width``, else ''."""
    width = edges[1] - edges[0]
    return f", {len(edges) - 1} bins of {width:.4g} Å" if width < bin_width * (1 - 1e-9) else ""


def add_binning_arguments(parser, r_max: float, bin_width: float, distance: str = "distance") -> None:
    """--r-max, --bin and --blocks of the pair analyses (defaults ``r_max``, ``bin_width`` in Å)."""
    parser.add_argument("--r-max", type=positive_float, default=r_max,
                        help=f"largest {distance} in Å (default {r_max:g})")
    parser.add_argument("--bin", type=positive_float, default=bin_width,
                        help=f"bin width in Å (default {bin_width:g}; narrowed to end the bins at --r-max)")
    parser.add_argument("--blocks", type=positive_int, default=5,
                        help="blocks for the error bars, at most the number of frames (default 5; 1: no error "
                        "bars, e.g. for a single structure)")
