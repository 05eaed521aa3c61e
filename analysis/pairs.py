"""Pairs of atoms closer than a cutoff in a periodic cell (vesin), any cell shape and any cutoff."""

import numpy as np
from vesin import NeighborList

from .errors import AnalysisError


def pairs_within(points: np.ndarray, cell: np.ndarray, cutoff: float):
    """Each pair (i, j) once, with every periodic image closer than ``cutoff`` (Å).

    ``points`` (n, 3) Å, ``cell`` (3, 3) rows = lattice vectors (triclinic allowed; the cutoff may
    exceed half the cell). Returns i (P,), j (P,) and the vectors r_j − r_i + shift (P, 3).
    """
    if abs(np.linalg.det(cell)) < 1e-9:
        raise AnalysisError("the trajectory has no periodic cell (zero volume)")
    i, j, vectors = NeighborList(cutoff=cutoff, full_list=False).compute(
        np.ascontiguousarray(points, dtype=float), np.ascontiguousarray(cell, dtype=float),
        True, quantities="ijD")
    return i, j, vectors
