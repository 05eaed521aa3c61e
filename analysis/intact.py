"""Whether the water molecules of a trajectory stay intact: the stability check of a potential.

In every frame: the longest O-H bond of any molecule (each H with its own O, minimum image) and
the shortest H-H distance between any two hydrogens (same or different molecules, all periodic
images). The trajectory is intact when no bond exceeds ``--max-oh`` (1.5 Å) and no H-H distance
falls below ``--min-hh`` (1.0 Å) in any frame (the criteria of the training issue; at 300 K the
O-H bond stays below ~1.15 Å and the intramolecular H-H distance near 1.5 Å). A frame with NaN or
infinite positions (a run that blew up) breaks it too; the frames from there on are not measured.
Without a periodic cell (a molecule in vacuum) distances are taken with open boundaries.
Atoms must be in the order O, H, H molecule after molecule (i-PI's outputs of the inputs/ runs).
"""

import numpy as np

from pet.arguments import positive_float

from .ipi_files import read_trajectory, step_times
from .molecules import minimum_image, water_molecules
from .output import figure
from .pairs import pairs_within

NAME = "intact"
HELP = "longest O-H bond and shortest H-H distance per frame: do the molecules stay intact?"
EXAMPLE = "pet-analyze intact bulk.pos_0.xyz --dt 0.5 --out bulk-intact"

HH_SEARCH = 2.0
"""Å; H-H pairs are searched within this distance (the intramolecular one is ~1.5 Å)."""


def bond_extremes(positions: np.ndarray, cells: np.ndarray, molecules: np.ndarray):
    """(F,) longest O-H bond and (F,) shortest H-H distance in Å of each frame.

    ``positions`` (F, N, 3) Å, finite, ``cells`` (F, 3, 3) rows = lattice vectors (zeros: open
    boundaries), ``molecules`` (M, 3) atom indices O, H, H. A frame without an H-H pair within
    :data:`HH_SEARCH` gets inf.
    """
    bonds = minimum_image(positions[:, molecules[:, 1:]] - positions[:, molecules[:, :1]], cells)
    longest = np.linalg.norm(bonds, axis=-1).max(axis=(1, 2))
    hydrogens = molecules[:, 1:].ravel()
    shortest = np.full(len(positions), np.inf)
    for frame, (points, cell) in enumerate(zip(positions[:, hydrogens], cells)):
        _, _, vectors = pairs_within(points, cell, HH_SEARCH)
        if len(vectors):
            shortest[frame] = np.linalg.norm(vectors, axis=-1).min()
    return longest, shortest


def check(steps, longest, shortest, max_oh: float, min_hh: float) -> dict:
    """The verdict on the measured frames (the first ``len(longest)`` of ``steps``; the frames after
    them hold NaN or infinite positions): overall extremes and the first MD step breaking either
    criterion, or the first step not measured (None if every frame is intact)."""
    unmeasured = np.ones(len(steps) - len(longest), bool)
    broken = np.concatenate([(longest > max_oh) | (shortest < min_hh), unmeasured])
    non_finite = unmeasured.size > 0
    return {"intact": not bool(broken.any()),
            "first_broken_step": int(steps[np.argmax(broken)]) if broken.any() else None,
            "first_non_finite_step": int(steps[len(longest)]) if non_finite else None,
            "longest_oh": float(longest.max()) if len(longest) else None,
            "shortest_hh": float(shortest.min()) if len(shortest) else None,
            "max_oh": max_oh, "min_hh": min_hh, "n_frames": len(steps)}


def _distance_text(value, limit: float) -> str:
    """'1.234 Å, limit 1.5' for a summary line, or 'not measured' / 'none within 2 Å'."""
    if value is None:
        return "not measured"
    if not np.isfinite(value):
        return f"none within {HH_SEARCH} Å"
    return f"{value:.3f} Å, limit {limit}"


def verdict(result: dict) -> str:
    """'intact', 'BROKEN from step S' or 'BROKEN from step S (NaN or infinite positions from step T)'."""
    if result["intact"]:
        return "intact"
    text = f"BROKEN from step {result['first_broken_step']}"
    if result["first_non_finite_step"] is not None:
        text += f" (NaN or infinite positions from step {result['first_non_finite_step']})"
    return text


def add_arguments(parser):
    parser.add_argument("positions", help="i-PI positions trajectory (xyz or extxyz), atoms O, H, H per molecule")
    parser.add_argument("--dt", type=positive_float,
                        help="i-PI <timestep> in fs, to plot against time (default: steps)")
    parser.add_argument("--max-oh", type=positive_float, default=1.5,
                        help="longest O-H bond allowed, Å (default 1.5)")
    parser.add_argument("--min-hh", type=positive_float, default=1.0,
                        help="shortest H-H distance allowed, Å (default 1.0)")


def run(args):
    trajectory = read_trajectory(args.positions, "length", finite=False)
    molecules = water_molecules(trajectory.symbols)
    bad = trajectory.first_non_finite_frame()
    measured = slice(0, len(trajectory) if bad is None else bad)
    longest, shortest = bond_extremes(trajectory.values[measured], trajectory.cells[measured], molecules)
    result = check(trajectory.steps, longest, shortest, args.max_oh, args.min_hh)
    steps = trajectory.steps[measured]
    if args.dt is None:
        x, label = steps, "MD step"
    else:
        x, label = step_times(steps, args.dt), "time (ps)"
    result.update({"steps": steps, "longest_oh_per_frame": longest,
                   "shortest_hh_per_frame": shortest, "n_molecules": len(molecules),
                   "units": "Å"})
    fig, axes = figure(2, width=5.5)
    for axis, series, limit, name in ((axes[0], longest, args.max_oh, "longest O-H bond"),
                                      (axes[1], shortest, args.min_hh, "shortest H-H distance")):
        axis.plot(x, series, lw=0.8)
        axis.axhline(limit, color="r", ls="--", label=f"limit {limit} Å")
        axis.set(xlabel=label, ylabel=f"{name} (Å)")
        axis.legend()
    message = (f"{len(molecules)} molecules, {len(trajectory)} frames: {verdict(result)} (longest O-H "
               f"{_distance_text(result['longest_oh'], args.max_oh)}; shortest H-H "
               f"{_distance_text(result['shortest_hh'], args.min_hh)})")
    return result, fig, message
