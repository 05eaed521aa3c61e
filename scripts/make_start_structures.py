"""Write the start structures the project builds itself into the input folders (committed files).

    .venv/bin/python scripts/make_start_structures.py          # rewrites them (deterministic)
    .venv/bin/python scripts/make_start_structures.py --check  # exit 1 if a committed file differs

- ``inputs/gas-nve/init.xyz``, ``inputs/gas-nvt/init.xyz``, ``inputs/stability-gas/init.xyz``: one
  H2O (ASE's ``molecule("H2O")``, turned by fixed Euler angles so that no principal axis lies along z) at the centre of a 100 Å box;
- ``inputs/gas-nve/velocities.xyz``: a rigid rotation of that molecule about its centre of mass
  with angular momentum L = (0, 0, 25) amu Å²/ps (≈ 3.9 ħ; kinetic energy printed below), zero
  centre-of-mass velocity, in atomic units (i-PI's ``velocities{atomic_unit}``);
- ``inputs/bulk-nvt/water-64.xyz``: 64 H2O at 0.997 g/cm³ (:func:`pet.structures.water_box`, seed 0:
  a jittered cubic lattice of randomly oriented molecules; equilibrate before measuring).

Files are i-PI xyz (``# CELL(abcABC)`` comment line, positions in Å), atoms O, H, H per molecule.
The data in ``../shared/data`` (the 512-molecule box, the ice cells) is not copied: the inputs name
it as ``$PET_IPI_SHARED/...``.
"""

import sys
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.geometry import cell_to_cellpar
from ase.units import _amu, _hbar
from ipi.utils.units import unit_to_internal

from pet.arguments import OneLineParser
from pet.structures import water_box

INPUTS = Path(__file__).resolve().parents[1] / "inputs"
BOX = 100.0
"""Side (Å) of the gas-phase box: far larger than twice the 4 Å cutoff (open boundaries)."""
ANGULAR_MOMENTUM = np.array([0.0, 0.0, 25.0])
"""Initial angular momentum of the gas-phase NVE molecule, amu Å²/ps."""
EULER_DEGREES = (30.0, 50.0, 70.0)
AMU_A2_PER_PS_IN_HBAR = _amu * 1e-20 / 1e-12 / _hbar
EV_PER_AMU_A2_PER_PS2 = _amu * 1e-20 / 1e-24 / 1.602176634e-19


def ipi_xyz(atoms: Atoms, values=None, quantity: str = "positions{angstrom}") -> str:
    """``atoms`` as an i-PI xyz frame; ``values`` (N, 3) replace the positions (e.g. velocities)."""
    a, b, c, alpha, beta, gamma = cell_to_cellpar(np.asarray(atoms.cell))
    values = atoms.positions if values is None else values
    lines = [str(len(atoms)),
             f"# CELL(abcABC): {a:.8f} {b:.8f} {c:.8f} {alpha:.8f} {beta:.8f} {gamma:.8f} "
             f"Step: 0 Bead: 0 {quantity} cell{{angstrom}}"]
    lines += [f"{s:2s} {x:18.10e} {y:18.10e} {z:18.10e}" for s, (x, y, z) in zip(atoms.symbols, values)]
    return "\n".join(lines) + "\n"


def gas_molecule() -> Atoms:
    atoms = molecule("H2O")
    atoms = atoms[[1, 0, 2] if atoms.get_chemical_symbols()[0] == "H" else [0, 1, 2]]
    atoms.euler_rotate(*EULER_DEGREES, center="COM")
    atoms.set_cell([BOX] * 3)
    atoms.pbc = True
    atoms.positions += 0.5 * BOX - atoms.get_center_of_mass()
    return atoms


def rigid_rotation(atoms: Atoms, angular_momentum: np.ndarray) -> np.ndarray:
    """Velocities (N, 3) in Å/ps of the rigid rotation of ``atoms`` with that angular momentum
    (amu Å²/ps) about its centre of mass: v = ω × (r − R), ω = I⁻¹ L."""
    masses = atoms.get_masses()
    r = atoms.positions - atoms.get_center_of_mass()
    inertia = sum(m * (np.dot(x, x) * np.eye(3) - np.outer(x, x)) for m, x in zip(masses, r))
    omega = np.linalg.solve(inertia, angular_momentum)
    return np.cross(omega, r)


def structures() -> dict:
    """{path relative to inputs/: file text}."""
    gas = gas_molecule()
    velocities = rigid_rotation(gas, ANGULAR_MOMENTUM)
    per_ps_in_au = unit_to_internal("length", "angstrom", 1.0) / unit_to_internal("time", "picosecond", 1.0)
    return {
        "gas-nve/init.xyz": ipi_xyz(gas),
        "gas-nve/velocities.xyz": ipi_xyz(gas, velocities * per_ps_in_au, "velocities{atomic_unit}"),
        "gas-nvt/init.xyz": ipi_xyz(gas),
        "stability-gas/init.xyz": ipi_xyz(gas),
        "bulk-nvt/water-64.xyz": ipi_xyz(water_box(64, seed=0)),
    }


def summary() -> str:
    gas = gas_molecule()
    velocities = rigid_rotation(gas, ANGULAR_MOMENTUM)
    masses = gas.get_masses()
    r = gas.positions - gas.get_center_of_mass()
    momentum = np.sum(masses[:, None] * np.cross(r, velocities), axis=0)
    kinetic = 0.5 * np.sum(masses[:, None] * velocities ** 2) * EV_PER_AMU_A2_PER_PS2
    return (f"gas-phase molecule: L = {np.round(momentum, 10).tolist()} amu Å²/ps "
            f"(|L| = {np.linalg.norm(momentum) * AMU_A2_PER_PS_IN_HBAR:.2f} ħ), rotational kinetic "
            f"energy {1e3 * kinetic:.1f} meV")


def main(argv=None) -> int:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    args = parser.parse_args(argv)
    status = 0
    for name, text in structures().items():
        path = INPUTS / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                print(f"{path} differs from what this script writes", file=sys.stderr)
                status = 1
        else:
            path.write_text(text)
            print(f"wrote {path}")
    print(summary())
    return status


if __name__ == "__main__":
    sys.exit(main())
