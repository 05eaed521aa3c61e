"""Angular momentum of each water molecule about its centre of mass, L(t) (the precession plot).

L = Σ_a m_a (r_a − R) × v_a over the molecule's three atoms, R its centre of mass; masses from
ASE (amu), positions in Å, velocities in Å/ps, so L is in amu·Å²/ps. For a free molecule and an
exactly rotation-invariant potential L is conserved (NVE); a non-invariant model exerts a net
torque and L drifts and precesses. The turn of L is measured from the first frame; it is undefined
(None) where |L| is zero (a molecule at rest).
"""

import numpy as np

from pet.arguments import positive_float

from .ipi_files import common_frames, read_trajectory, step_times
from .molecules import centre_of_mass_frame, water_molecules, whole_molecules
from .errors import AnalysisError
from .output import figure

L_ZERO = 1e-9
"""amu·Å²/ps; an angular momentum smaller than this has no direction (thermal ones are ~10)."""

NAME = "angular-momentum"
HELP = "L(t) of a molecule about its centre of mass, components and |L| (precession plot)"
EXAMPLE = "pet-analyze angular-momentum gas.pos_0.xyz gas.vel_0.xyz --dt 0.5 --out gas-L"


def angular_momenta(positions, velocities, cells, masses, molecules) -> np.ndarray:
    """(F, M, 3) angular momenta in amu·Å²/ps about each molecule's centre of mass.

    ``positions`` (F, N, 3) Å, ``velocities`` (F, N, 3) Å/ps, ``cells`` (F, 3, 3) Å,
    ``masses`` (N,) amu, ``molecules`` (M, 3) atom indices.
    """
    relative = centre_of_mass_frame(whole_molecules(positions, cells, molecules), masses[molecules])
    momenta = masses[molecules][None, :, :, None] * velocities[:, molecules]
    return np.cross(relative, momenta).sum(axis=2)


def largest_turn(L: np.ndarray):
    """The largest angle in degrees between L(t) (F, 3) and L(0), over the frames where |L| is not
    zero; None if |L(0)| is zero (no direction to turn from)."""
    size = np.linalg.norm(L, axis=-1)
    if size[0] < L_ZERO:
        return None
    moving = size >= L_ZERO
    cosine = np.clip(L[moving] @ L[0] / (size[moving] * size[0]), -1.0, 1.0)
    return float(np.degrees(np.arccos(cosine)).max())


def add_arguments(parser):
    parser.add_argument("positions", help="i-PI positions trajectory (xyz or extxyz)")
    parser.add_argument("velocities", help="i-PI velocities trajectory of the same run")
    parser.add_argument("--dt", type=positive_float, required=True, help="i-PI <timestep> in fs (time per step)")
    parser.add_argument("--molecule", type=int, default=0, help="index of the molecule to plot (default 0)")


def run(args):
    positions = read_trajectory(args.positions, "length")
    velocities = read_trajectory(args.velocities, "velocity")
    first, second = common_frames(positions, velocities)
    if len(first) < 2:
        raise AnalysisError(f"{args.positions} and {args.velocities} share {len(first)} MD step: "
                            "L(t) needs at least 2")
    molecules = water_molecules(positions.symbols)
    if not 0 <= args.molecule < len(molecules):
        raise AnalysisError(f"--molecule {args.molecule}: the trajectory has {len(molecules)} molecules")
    L = angular_momenta(positions.values[first], velocities.values[second], positions.cells[first],
                        positions.masses, molecules)
    time = step_times(positions.steps[first], args.dt)
    chosen = L[:, args.molecule]
    size = np.linalg.norm(chosen, axis=-1)
    turn = largest_turn(chosen)
    result = {
        "units": {"time": "ps", "L": "amu*angstrom^2/ps"},
        "molecule": args.molecule,
        "n_molecules": len(molecules),
        "time": time,
        "L": chosen,
        "L_norm": size,
        "L_norm_mean_all_molecules": float(np.linalg.norm(L, axis=-1).mean()),
        "max_change_from_start": float(np.linalg.norm(chosen - chosen[0], axis=-1).max()),
        "max_angle_from_start_deg": turn,
    }
    fig, (components, norm) = figure(2)
    for k, label in enumerate("xyz"):
        components.plot(time, chosen[:, k], label=f"$L_{label}$")
    components.set(xlabel="time (ps)", ylabel="L (amu Å²/ps)", title=f"molecule {args.molecule}")
    components.legend()
    norm.plot(time, size, color="k")
    norm.set(xlabel="time (ps)", ylabel="|L| (amu Å²/ps)")
    turned = ("|L| is zero at the start, so the direction of L is undefined" if turn is None else
              f"L turned by up to {turn:.3g}°")
    message = (f"molecule {args.molecule}: |L| {size.mean():.4g} amu Å²/ps on average, {turned} over "
               f"{time[-1] - time[0]:.4g} ps")
    return result, fig, message
