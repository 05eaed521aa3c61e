"""Writers of synthetic i-PI output files (the formats i-PI 3.3.1 writes) for the analysis tests,
and a water molecule to build known-answer trajectories from."""

import numpy as np
from ase.geometry import cell_to_cellpar

WATER = np.array([[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]])
"""O, H, H in Å: the molecule lies in the xy plane, its dipole (O → H midpoint) along +y."""

WATER_MASSES = np.array([15.999, 1.008, 1.008])
"""amu, as ASE gives them."""


def water_centre_of_mass() -> np.ndarray:
    return WATER_MASSES @ WATER / WATER_MASSES.sum()


def write_ipi_xyz(path, symbols, values, cells, quantity="positions", units="angstrom", steps=None):
    """An i-PI xyz trajectory: values (F, N, 3) in ``units``, cells (F, 3, 3) Å in i-PI's
    orientation (a along x, b in the xy plane), written as CELL(abcABC) with cell{angstrom};
    ``cells`` None: no cell, CELL(abcABC): 0 0 0 0 0 0."""
    values = np.asarray(values, dtype=float)
    steps = range(len(values)) if steps is None else steps
    lines = []
    for frame, parameters, step in zip(values, _cell_parameters(cells, len(values)), steps):
        a, b, c, alpha, beta, gamma = parameters
        lines.append(f"{len(symbols)}")
        lines.append(f"# CELL(abcABC): {a:.8f} {b:.8f} {c:.8f} {alpha:.8f} {beta:.8f} {gamma:.8f}  "
                     f"Step: {step:11d}  Bead: 0 {quantity}{{{units}}}  cell{{angstrom}}")
        lines.extend(f"{symbol:>8s} {x: .10e} {y: .10e} {z: .10e}" for symbol, (x, y, z) in zip(symbols, frame))
    path.write_text("\n".join(lines) + "\n")
    return path


def _cell_parameters(cells, n_frames):
    """(F, 6) a, b, c, α, β, γ of ``cells`` (3, 3) or (F, 3, 3); zeros for ``cells`` None."""
    if cells is None:
        return np.zeros((n_frames, 6))
    cells = np.broadcast_to(np.asarray(cells, dtype=float), (n_frames, 3, 3))
    return np.array([cell_to_cellpar(cell) for cell in cells])


def write_ipi_properties(path, columns):
    """An i-PI properties file from [(header name such as 'time{picosecond}', values (T,)), ...]."""
    header = [f"# column {k:3d}     --> {name} : a test column" for k, (name, _) in enumerate(columns, 1)]
    table = np.stack([np.asarray(values, dtype=float) for _, values in columns], axis=1)
    rows = [" ".join(f"{value: .12e}" for value in row) for row in table]
    path.write_text("\n".join(header + rows) + "\n")
    return path


def rotation_about(axis, angle) -> np.ndarray:
    """(3, 3) rotation by ``angle`` (rad) about unit vector ``axis`` (Rodrigues)."""
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K
