"""Pairs of atoms closer than a cutoff in a periodic cell (vesin), any cell shape and any cutoff,
or with open boundaries; the distance bins of the pair analyses."""

import numpy as np
from vesin import NeighborList

from pet.arguments import positive_float, positive_int

from .errors import AnalysisError
from .molecules import MIN_CELL_VOLUME


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
    """Distance bin edges from 0 to exactly ``r_max`` Å: ⌈r_max / bin_width⌉ equal bins, as wide as
    ``bin_width`` or a little narrower where it does not divide ``r_max``."""
    if not 0 < bin_width < r_max:
        raise AnalysisError(f"need 0 < --bin < --r-max, got {bin_width} and {r_max}")
    n_bins = int(np.ceil(r_max / bin_width - 1e-9))
    return np.linspace(0.0, r_max, n_bins + 1)


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
