"""Rigid rotations of ase.Atoms for the symmetry tests."""

import numpy as np


def rotated(atoms, rotation):
    """A copy of ``atoms`` with positions and cell rotated, r → R r (rows: x → x Rᵀ); ``rotation``
    (3, 3), proper or improper."""
    copy = atoms.copy()
    copy.positions = atoms.positions @ rotation.T
    copy.cell = np.asarray(atoms.cell) @ rotation.T
    return copy
