"""Water structures the project builds itself (no external files): boxes of rigid molecules."""

import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.units import _amu

from grids.quadrature import random_rotation

WATER_MASS_G = 18.01528 * _amu * 1000.0


def water_box(n_molecules: int, density: float = 0.997, seed: int = 0) -> Atoms:
    """A periodic cubic box of ``n_molecules`` H2O (atoms O, H, H per molecule) at ``density`` g/cm³.

    Oxygens sit on a simple cubic lattice (lightly jittered), molecules randomly oriented: a
    start structure for benchmarks and demos, to be equilibrated before measuring anything.
    """
    if n_molecules < 1:
        raise ValueError(f"need at least one molecule, got {n_molecules}")
    if not density > 0:
        raise ValueError(f"density must be positive, got {density}")
    side = (n_molecules * WATER_MASS_G / density) ** (1 / 3) * 1e8  # cm → Å
    per_edge = int(np.ceil(n_molecules ** (1 / 3) - 1e-9))
    spacing = side / per_edge
    rng = np.random.default_rng(seed)
    sites = np.stack(np.meshgrid(*[np.arange(per_edge)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = sites[rng.permutation(len(sites))[:n_molecules]]
    template = molecule("H2O")
    template.positions -= template.positions[0]
    positions = []
    for site in sites:
        rotation = random_rotation(rng, improper=False)
        centre = (site + 0.5) * spacing + rng.uniform(-0.1, 0.1, 3)
        positions.append(template.positions @ rotation.T + centre)
    return Atoms("OH2" * n_molecules, positions=np.concatenate(positions), cell=[side] * 3, pbc=True)
