"""Longitudinal and transverse correlations of molecular dipole directions versus O-O distance.

For molecules i, j whose oxygens are r_ij apart (unit vector r̂ along r_ij, every periodic
image closer than r_max), with μ̂ the unit dipole direction (O → midpoint of the two H, as for fixed point charges):

    C_L(r) = ⟨(μ̂_i·r̂)(μ̂_j·r̂)⟩                         (components along the O-O axis)
    C_T(r) = ⟨μ̂_i·μ̂_j − (μ̂_i·r̂)(μ̂_j·r̂)⟩ / 2          (per direction perpendicular to it)

averaged over all pairs at distance r and all frames, so C_L + 2 C_T = ⟨μ̂_i·μ̂_j⟩.
Independent random orientations give 0 for both; all dipoles parallel and isotropic pair
directions give 1/3 for both. Error bars: block averages over frames. The bins end at r_max
exactly, and r_max is checked, as in g(r) (a warning beyond half the cell's smallest width). The
trajectory needs a periodic cell.
"""

import numpy as np

from .errors import AnalysisError
from .ipi_files import read_trajectory
from .molecules import molecular_axes, water_molecules, whole_molecules
from .output import figure
from .pairs import add_binning_arguments, bins_note, check_cutoff, distance_edges, pairs_within
from .stats import block_error

NAME = "orientation-correlation"
HELP = "longitudinal and transverse dipole-direction correlations versus O-O distance"
EXAMPLE = "pet-analyze orientation-correlation bulk.pos_0.xyz --r-max 6 --bin 0.25 --out bulk-dipole-corr"


def pair_sums(oxygens: np.ndarray, axes: np.ndarray, cells: np.ndarray, edges: np.ndarray):
    """Per-frame sums over pairs in each distance bin: (counts, Σ longitudinal, Σ transverse), each (F, B).

    ``oxygens`` (F, M, 3) Å, ``axes`` (F, M, 3) unit dipole directions, ``edges`` (B + 1,) Å.
    """
    shape = (len(oxygens), len(edges) - 1)
    counts, longitudinal, transverse = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for frame in range(len(oxygens)):
        i, j, vectors = pairs_within(oxygens[frame], cells[frame], edges[-1])
        distance = np.linalg.norm(vectors, axis=1)
        keep = distance > 0
        i, j, distance, unit = i[keep], j[keep], distance[keep], vectors[keep] / distance[keep, None]
        along = np.sum(axes[frame, i] * unit, axis=1) * np.sum(axes[frame, j] * unit, axis=1)
        across = 0.5 * (np.sum(axes[frame, i] * axes[frame, j], axis=1) - along)
        counts[frame] = np.histogram(distance, edges)[0]
        longitudinal[frame] = np.histogram(distance, edges, weights=along)[0]
        transverse[frame] = np.histogram(distance, edges, weights=across)[0]
    return counts, longitudinal, transverse


def orientation_correlations(oxygens, axes, cells, edges: np.ndarray, n_blocks: int) -> dict:
    """C_L(r), C_T(r) with block errors and pair counts in the bins ``edges`` (B + 1,) Å from
    :func:`distance_edges`; AnalysisError if no pair is within the last edge."""
    counts, longitudinal, transverse = pair_sums(oxygens, axes, cells, edges)
    if not counts.any():
        raise AnalysisError(f"no molecule pairs within --r-max {edges[-1]} Å ({oxygens.shape[1]} molecules)")

    def ratio(sums, part):
        with np.errstate(divide="ignore", invalid="ignore"):
            return sums[part].sum(axis=0) / counts[part].sum(axis=0)

    result = {"r": 0.5 * (edges[1:] + edges[:-1]), "r_edges": edges, "bin_width": edges[1] - edges[0],
              "pairs": counts.sum(axis=0), "n_frames": len(oxygens)}
    for key, sums in (("longitudinal", longitudinal), ("transverse", transverse)):
        result[key] = ratio(sums, slice(None))
        result[key + "_error"] = block_error(len(oxygens), n_blocks, lambda part: ratio(sums, part))
    return result


def add_arguments(parser):
    parser.add_argument("positions", help="i-PI positions trajectory (xyz or extxyz)")
    add_binning_arguments(parser, 6.0, 0.25, "O-O distance")


def run(args):
    edges = distance_edges(args.r_max, args.bin)
    positions = read_trajectory(args.positions, "length")
    positions.require_cell("the O-O pair correlations need one")
    molecules = water_molecules(positions.symbols)
    check_cutoff(len(molecules), positions.cells, args.r_max, args.positions)
    whole = whole_molecules(positions.values, positions.cells, molecules)
    result = orientation_correlations(whole[:, :, 0], molecular_axes(whole), positions.cells, edges, args.blocks)
    result["units"] = {"r": "angstrom"}
    fig, (axis,) = figure(1, width=7.0)
    filled = result["pairs"] > 0
    for key, label in (("longitudinal", "$C_L$"), ("transverse", "$C_T$")):
        error = result[key + "_error"]
        axis.errorbar(result["r"][filled], result[key][filled], None if error is None else error[filled],
                      marker="o", ms=3, capsize=2, label=label)
    axis.axhline(0.0, color="grey", lw=0.8)
    axis.set(xlabel="r$_{OO}$ (Å)", ylabel="dipole-direction correlation")
    axis.legend()
    first = int(np.argmax(filled))
    message = (f"{int(result['pairs'].sum())} pairs: nearest bin r = {result['r'][first]:.3g} Å has "
               f"C_L {result['longitudinal'][first]:.3g}, C_T {result['transverse'][first]:.3g}"
               f"{bins_note(result['r_edges'], args.bin)}")
    return result, fig, message
