"""Start structures for pet-run: one frame of a structure file, written where i-PI reads it.

i-PI's own xyz files (a ``# CELL(abcABC): ...`` comment line, units in the comment) are read with
i-PI's reader, anything else with ASE (extended XYZ, PDB, ...). Positions are in Å, cells as ASE
has them (rows = lattice vectors); the frame i-PI is given is an extended XYZ file (i-PI's
``<file mode="ase">``), which i-PI turns to its own orientation.
"""

from pathlib import Path
from typing import List

import ase.io
import numpy as np
from ase import Atoms

from pet.data import is_ipi_xyz, read_ipi_xyz

from .ipi_input import InputError


def read_frames(path) -> List[Atoms]:
    """Every frame of the structure file ``path``; InputError if it cannot be read or has no cell."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no structure file {path}")
    try:
        frames = read_ipi_xyz(path) if is_ipi_xyz(path) else ase.io.read(path, ":")
    except Exception as error:  # ASE's and i-PI's readers raise many kinds on a malformed file
        raise InputError(f"cannot read the structure file {path} ({type(error).__name__}: {error})") from None
    if not frames:
        raise InputError(f"{path} holds no structure")
    for atoms in frames:
        if abs(np.linalg.det(np.asarray(atoms.cell))) < 1e-12:
            raise InputError(f"{path}: a structure without a cell (i-PI needs one; put a molecule "
                             "in a large box, e.g. 100 Å)")
    return frames


def atom_count(path) -> int:
    """The number of atoms (entries) of the first frame of the structure file ``path``: the first
    line of an xyz file (also i-PI's velocity or force files), else what ASE reads; InputError if
    it cannot be read."""
    path = Path(path)
    try:
        with open(path, errors="replace") as handle:
            first_line = handle.readline().strip()
        return int(first_line) if first_line.isdigit() else len(ase.io.read(path, 0))
    except Exception as error:  # ASE's readers raise many kinds on a malformed file
        raise InputError(f"cannot read {path} ({type(error).__name__}: {error})") from None


def pick_frame(frames: List[Atoms], frame, path) -> Atoms:
    """Frame number ``frame`` (from 0; negative from the end, -1 the last; None: the only one) of
    ``frames`` read from ``path``."""
    if frame is None:
        if len(frames) > 1:
            raise InputError(f"{path} holds {len(frames)} structures: choose one with --frame K "
                             f"(0 to {len(frames) - 1}, or -1 for the last)")
        return frames[0]
    if not -len(frames) <= frame < len(frames):
        raise InputError(f"--frame {frame}: {path} holds {len(frames)} structure(s), "
                         f"numbered 0 to {len(frames) - 1} (or -1 for the last)")
    return frames[frame]


def write_start(atoms: Atoms, path) -> Path:
    """``atoms`` (species, positions, cell; periodic) as extended XYZ at ``path``."""
    path = Path(path)
    clean = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=True)
    ase.io.write(path, clean, format="extxyz")
    return path
