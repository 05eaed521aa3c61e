"""Energy and forces of a 64-molecule water box with the shipped PET model, raw and 2i-averaged.

Usage: python scripts/demo_evaluate.py [--model PATH] [--molecules 64] [--grid 2i]
"""

import time

import numpy as np

from pet.arguments import OneLineParser
from pet.calculator import PETCalculator
from pet.structures import water_box


def main():
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--molecules", type=int, default=64)
    parser.add_argument("--grid", default="2i")
    args = parser.parse_args()
    atoms = water_box(args.molecules)
    for grid in (None, args.grid):
        atoms.calc = PETCalculator(args.model, grid=grid)
        start = time.perf_counter()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        elapsed = time.perf_counter() - start
        print(f"{grid or 'raw':>4}: E = {energy:.4f} eV, |F|max = {np.abs(forces).max():.3f} eV/Å, "
              f"{elapsed:.2f} s for {len(atoms)} atoms")


if __name__ == "__main__":
    main()
