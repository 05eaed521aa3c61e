"""Torque on each water molecule about its centre of mass, and its mean size per run (grid).

τ = Σ_a (r_a − R) × F_a over the molecule's atoms (R the centre of mass), in eV (Å × eV/Å). For an
isolated molecule an exactly rotation-invariant potential gives τ = 0; the mean |τ| over molecules
and frames measures the symmetry breaking of a raw model and what is left after grid averaging.
"""

import numpy as np

from pet.arguments import positive_int

from .errors import AnalysisError
from .ipi_files import common_frames, read_trajectory
from .molecules import centre_of_mass_frame, water_molecules, whole_molecules
from .output import figure
from .stats import block_slices, mean_and_error

NAME = "torque"
HELP = "mean |torque| per molecule for one or several runs (e.g. grids raw/2/2i/3/3i)"
EXAMPLE = ("pet-analyze torque --run raw raw.pos_0.xyz raw.frc_0.xyz "
           "--run 2i 2i.pos_0.xyz 2i.frc_0.xyz --out torques")


def torques(positions, forces, cells, masses, molecules) -> np.ndarray:
    """(F, M, 3) torques in eV about each molecule's centre of mass.

    ``positions`` (F, N, 3) Å, ``forces`` (F, N, 3) eV/Å, ``cells`` (F, 3, 3) Å, ``masses`` (N,)
    amu, ``molecules`` (M, 3) atom indices.
    """
    relative = centre_of_mass_frame(whole_molecules(positions, cells, molecules), masses[molecules])
    return np.cross(relative, forces[:, molecules]).sum(axis=2)


def mean_torque(tau: np.ndarray, n_blocks: int):
    """Mean |τ| over frames and molecules, and its block error."""
    size = np.linalg.norm(tau, axis=-1)
    blocks = [size[part].mean() for part in block_slices(len(size), n_blocks)]
    return float(size.mean()), float(mean_and_error(blocks)[1])


def add_arguments(parser):
    parser.add_argument("--run", nargs=3, action="append", required=True,
                        metavar=("LABEL", "POSITIONS", "FORCES"),
                        help="a run's label, positions and forces trajectories (repeat per run)")
    parser.add_argument("--blocks", type=positive_int, default=5,
                        help="blocks for the error bar, at most the number of frames (default 5)")


def run(args):
    table = {}
    for label, positions_path, forces_path in args.run:
        if label in table:
            raise AnalysisError(f"run label '{label}' given twice")
        positions = read_trajectory(positions_path, "length")
        forces = read_trajectory(forces_path, "force")
        first, second = common_frames(positions, forces)
        molecules = water_molecules(positions.symbols)
        tau = torques(positions.values[first], forces.values[second], positions.cells[first],
                      positions.masses, molecules)
        try:
            mean, error = mean_torque(tau, args.blocks)
        except AnalysisError as problem:
            raise AnalysisError(f"run {label}: {problem}") from None
        table[label] = {"mean_torque": mean, "error": error, "n_frames": len(first),
                        "n_molecules": len(molecules)}
    result = {"units": {"mean_torque": "eV"}, "runs": table}
    fig, (axis,) = figure(1)
    labels = list(table)
    means = [table[label]["mean_torque"] for label in labels]
    errors = [table[label]["error"] for label in labels]
    axis.bar(labels, means, yerr=errors, capsize=4, color="tab:blue")
    if all(value > 0 for value in means):
        axis.set_yscale("log")
    axis.set(ylabel="mean |τ| per molecule (eV)", title="torque about the molecular centre of mass")
    message = "; ".join(f"{label}: {1e3 * table[label]['mean_torque']:.4g} meV" for label in labels)
    return result, fig, "mean |τ| " + message
