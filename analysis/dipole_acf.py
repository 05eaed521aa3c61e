"""Autocorrelation of the dipole moment with fixed point charges.

Each molecule carries the SPC/E-like charges q_H = +0.4238 e on each H and q_O = −2 q_H on O
(option ``--charge-h``), at the atomic positions (molecules made whole across the cell), so its
dipole is μ = q_H (r_H1 + r_H2 − 2 r_O) in e·Å (1 e·Å = 4.8032 D), independent of the origin.
Two normalised correlation functions over all time origins:

    total:      C_M(τ) = ⟨M(0)·M(τ)⟩ / ⟨M·M⟩,  M = Σ_i μ_i  (the box dipole, IR-like);
    molecular:  C_μ(τ) = ⟨Σ_i μ_i(0)·μ_i(τ)⟩ / ⟨Σ_i μ_i·μ_i⟩  (single-molecule reorientation).

For one molecule the two coincide; a rigid rotor spinning at ω about an axis perpendicular to its
dipole gives cos(ωτ).
"""

import numpy as np

from pet.arguments import positive_float

from .errors import AnalysisError
from .ipi_files import frame_interval, read_trajectory
from .molecules import water_molecules, whole_molecules
from .output import figure
from .stats import vector_autocorrelation

NAME = "dipole-acf"
HELP = "dipole autocorrelation (total and molecular) with fixed point charges"
EXAMPLE = "pet-analyze dipole-acf bulk.pos_0.xyz --dt 5 --max-lag 2 --out bulk-dipole-acf"

Q_H = 0.4238
"""Default H charge in e (SPC/E); O carries −2 q_H."""

E_ANGSTROM_TO_DEBYE = 4.803204
"""Debye per e·Å."""


def molecular_dipoles(positions, cells, molecules, charge_h: float = Q_H) -> np.ndarray:
    """(F, M, 3) dipoles in e·Å from positions (F, N, 3) Å with charges q_H, q_O = −2 q_H."""
    whole = whole_molecules(positions, cells, molecules)
    return charge_h * (whole[:, :, 1] + whole[:, :, 2] - 2.0 * whole[:, :, 0])


def dipole_autocorrelations(dipoles: np.ndarray, max_lag: int) -> dict:
    """Normalised total and molecular autocorrelations (max_lag + 1,) of ``dipoles`` (F, M, 3)."""
    total = vector_autocorrelation(dipoles.sum(axis=1), max_lag)
    molecular = vector_autocorrelation(dipoles, max_lag).sum(axis=1)
    return {"total": total / total[0], "molecular": molecular / molecular[0]}


def add_arguments(parser):
    parser.add_argument("positions", help="i-PI positions trajectory (xyz or extxyz)")
    parser.add_argument("--dt", type=positive_float, required=True, help="i-PI <timestep> in fs (time per step)")
    parser.add_argument("--max-lag", type=positive_float, help="largest lag in ps (default half the trajectory)")
    parser.add_argument("--charge-h", type=positive_float, default=Q_H, help=f"H charge in e (default {Q_H}, SPC/E)")


def lag_frames(max_lag_ps, frame_time: float, n_frames: int) -> int:
    """The largest lag in frames: ``max_lag_ps`` (ps) rounded to frames, or half the trajectory;
    AnalysisError (in ps and frames) unless it is between 1 and n_frames − 1 frames."""
    if max_lag_ps is None:
        return n_frames // 2
    frames = int(round(max_lag_ps / frame_time))
    if not 0 < frames < n_frames:
        raise AnalysisError(f"--max-lag {max_lag_ps} ps is {frames} frames of {frame_time:.6g} ps: it must be "
                            f"1 to {n_frames - 1} frames, {frame_time:.6g} to {(n_frames - 1) * frame_time:.6g} ps")
    return frames


def run(args):
    positions = read_trajectory(args.positions, "length")
    molecules = water_molecules(positions.symbols)
    frame_time = frame_interval(positions, args.dt)
    max_lag = lag_frames(args.max_lag, frame_time, len(positions))
    dipoles = molecular_dipoles(positions.values, positions.cells, molecules, args.charge_h)
    result = dipole_autocorrelations(dipoles, max_lag)
    result.update({
        "units": {"lag_time": "ps", "dipole": "e*angstrom", "mean_molecular_dipole_debye": "D"},
        "charges": {"H": args.charge_h, "O": -2.0 * args.charge_h},
        "lag_time": np.arange(max_lag + 1) * frame_time,
        "mean_molecular_dipole_debye": float(np.linalg.norm(dipoles, axis=-1).mean() * E_ANGSTROM_TO_DEBYE),
        "mean_square_total_dipole": float(np.mean(np.sum(dipoles.sum(axis=1) ** 2, axis=-1))),
        "n_molecules": len(molecules),
    })
    fig, (axis,) = figure(1, width=7.0)
    axis.plot(result["lag_time"], result["total"], label="total $C_M$")
    axis.plot(result["lag_time"], result["molecular"], "--", label="molecular $C_μ$")
    axis.axhline(0.0, color="grey", lw=0.8)
    axis.set(xlabel="lag time (ps)", ylabel="normalised dipole autocorrelation")
    axis.legend()
    message = (f"{len(molecules)} molecules, mean |μ| {result['mean_molecular_dipole_debye']:.3g} D; "
               f"C_μ at {result['lag_time'][-1]:.3g} ps: {result['molecular'][-1]:.3g}")
    return result, fig, message
