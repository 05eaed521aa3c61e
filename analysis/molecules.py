"""Water molecules in a trajectory: atom indices, minimum images, whole molecules, axes, centres of mass.

Atoms are expected in i-PI's (and the start structures') order O, H, H molecule after molecule.
"""

import numpy as np

from .errors import AnalysisError

MAX_OH_DISTANCE = 1.6
"""Å; an O-H distance above this in a frame means the atom order is not O, H, H per molecule."""

MIN_CELL_VOLUME = 1e-9
"""Å³; a cell of smaller volume is no periodic cell (open boundaries)."""


def water_molecules(symbols) -> np.ndarray:
    """(M, 3) atom indices (O, H, H) of each molecule, from symbols in O H H order."""
    symbols = list(symbols)
    if len(symbols) == 0 or len(symbols) % 3 or symbols != ["O", "H", "H"] * (len(symbols) // 3):
        raise AnalysisError("atoms must be water molecules in the order O, H, H, molecule after molecule")
    return np.arange(len(symbols)).reshape(-1, 3)


def minimum_image(vectors: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Vectors (F, ..., 3) in Å replaced by their minimum images in each frame's cell (F, 3, 3).

    Exact in orthorhombic cells; in triclinic cells exact for vectors shorter than half the
    smallest distance between opposite cell faces (bonds, displacements between frames). A frame
    without a periodic cell (zero volume: a molecule in vacuum) keeps its vectors (open boundaries).
    """
    shape = vectors.shape
    flat = vectors.reshape(shape[0], -1, 3).copy()
    periodic = np.abs(np.linalg.det(cells)) > MIN_CELL_VOLUME
    fractional = np.einsum("fkj,fjl->fkl", flat[periodic], np.linalg.inv(cells[periodic]))
    fractional -= np.round(fractional)
    flat[periodic] = np.einsum("fkj,fjl->fkl", fractional, cells[periodic])
    return flat.reshape(shape)


def whole_molecules(positions: np.ndarray, cells: np.ndarray, molecules: np.ndarray) -> np.ndarray:
    """(F, M, 3, 3) positions of O, H, H per molecule with each H at its minimum image near its O.

    ``positions`` (F, N, 3) Å, ``cells`` (F, 3, 3); raises AnalysisError if an O-H distance
    exceeds :data:`MAX_OH_DISTANCE` (wrong atom order or a broken molecule).
    """
    oxygens = positions[:, molecules[:, 0]]
    bonds = minimum_image(positions[:, molecules[:, 1:]] - oxygens[:, :, None], cells)
    lengths = np.linalg.norm(bonds, axis=-1)
    if np.any(lengths > MAX_OH_DISTANCE):
        frame, molecule, _ = np.argwhere(lengths > MAX_OH_DISTANCE)[0]
        raise AnalysisError(
            f"frame {frame}, molecule {molecule}: O-H distance {lengths[frame, molecule].max():.2f} Å "
            f"> {MAX_OH_DISTANCE} Å (atoms must be O, H, H per molecule and molecules intact)")
    return np.concatenate([oxygens[:, :, None], oxygens[:, :, None] + bonds], axis=2)


def molecular_axes(whole: np.ndarray) -> np.ndarray:
    """(F, M, 3) unit vectors from O to the midpoint of the two H (the dipole direction), from
    :func:`whole_molecules`."""
    axis = 0.5 * (whole[:, :, 1] + whole[:, :, 2]) - whole[:, :, 0]
    return axis / np.linalg.norm(axis, axis=-1, keepdims=True)


def centre_of_mass_frame(whole: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """(F, M, 3, 3) atom positions relative to their molecule's centre of mass; ``masses`` (M, 3) amu."""
    centre = np.einsum("fmaj,ma->fmj", whole, masses) / masses.sum(axis=1)[None, :, None]
    return whole - centre[:, :, None]
