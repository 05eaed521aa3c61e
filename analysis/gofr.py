"""Radial distribution function g(r) between atoms of one element (O-O by default).

Pairs come from a periodic neighbour list (any cell shape; every image closer than r_max). With n
atoms in volume V, the pairs counted per frame in the shell [r, r + dr] give

    g(r) = pairs / (n (n − 1) / 2 · V_shell / V),    V_shell = 4π/3 ((r + dr)³ − r³),

averaged over frames (an ideal gas gives g = 1), and the running coordination number
n(r) = 2 · (pairs closer than r) / n. Error bars: block averages over frames. Reference curves
(two columns r, g; r in Å or Bohr, increasing from >= 0; an i-PI properties file is refused) are
drawn for comparison. The bins end at r_max exactly:
⌈r_max / bin⌉ of them (at most 10000), a little narrower than ``--bin`` where it does not divide
``--r-max``. The trajectory needs a periodic cell (its volume normalises g). Beyond half the
cell's smallest width g(r) counts pairs with several periodic images of the cell, which a warning
says (r_max is bounded so that a frame holds at most 1e7 pairs).
"""

from pathlib import Path

import numpy as np

from .errors import AnalysisError
from .ipi_files import is_properties_text, read_text, read_trajectory, two_columns
from .output import figure
from .pairs import add_binning_arguments, bins_note, check_cutoff, distance_edges, pairs_within
from .stats import block_error

NAME = "gofr"
HELP = "radial distribution function (O-O by default), with block errors and reference curves"
EXAMPLE = ("pet-analyze gofr bulk.pos_0.xyz --r-max 6 --bin 0.05 "
           "--reference ../shared/data/goo-revpbe0-nnp-300K.dat:bohr "
           "--reference ../shared/data/goo-experiment-295K.dat --out bulk-goo")


def pair_histograms(points: np.ndarray, cells: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(F, B) pair counts per frame in the distance bins ``edges`` (B + 1,) Å; ``points`` (F, n, 3)."""
    counts = np.zeros((len(points), len(edges) - 1))
    for frame, (frame_points, cell) in enumerate(zip(points, cells)):
        _, _, vectors = pairs_within(frame_points, cell, edges[-1])
        counts[frame] = np.histogram(np.linalg.norm(vectors, axis=1), edges)[0]
    return counts


def radial_distribution(points: np.ndarray, cells: np.ndarray, edges: np.ndarray, n_blocks: int) -> dict:
    """g(r) of ``points`` (F, n, 3) Å in ``cells`` (F, 3, 3) in the bins ``edges`` (B + 1,) Å from
    :func:`distance_edges`: bin centres, g, block error, n(r)."""
    n = points.shape[1]
    if n < 2:
        raise AnalysisError("g(r) needs at least two atoms of the element")
    counts = pair_histograms(points, cells, edges)
    volumes = np.abs(np.linalg.det(cells))
    shells = 4.0 * np.pi / 3.0 * np.diff(edges ** 3)
    g_frames = counts * volumes[:, None] / (0.5 * n * (n - 1) * shells[None, :])
    centres = 0.5 * (edges[1:] + edges[:-1])
    g = g_frames.mean(axis=0)
    error = block_error(len(g_frames), n_blocks, lambda part: g_frames[part].mean(axis=0))
    peak = int(np.argmax(g))
    paired = bool(counts.any())
    return {"r": centres, "g": g, "g_error": error, "r_edges": edges, "bin_width": edges[1] - edges[0],
            "coordination": 2.0 * np.cumsum(counts.mean(axis=0)) / n,
            "peak_r": float(centres[peak]) if paired else None, "peak_g": float(g[peak]) if paired else None,
            "n_frames": len(points), "n_atoms": n}


def parse_reference(text: str):
    """'PATH' or 'PATH:bohr' / 'PATH:angstrom' → (path, unit)."""
    path, _, unit = text.rpartition(":")
    if unit.lower() in ("bohr", "angstrom") and path:
        return path, unit.lower()
    return text, "angstrom"


def read_reference(path: str, unit: str) -> np.ndarray:
    """(n, 2) reference g(r): r in Å (read in ``unit``), g, from a text table that may be compressed
    (``.gz``, ``.bz2``, ``.xz``); AnalysisError for a file that is not one: an i-PI properties file,
    r not increasing from >= 0, or a value that is not finite."""
    text = read_text(path)
    if is_properties_text(text):
        raise AnalysisError(f"--reference {path}: an i-PI properties file, not a g(r) table "
                            "(columns r, g)")
    table = two_columns(text, path, unit)
    if not np.isfinite(table).all():
        raise AnalysisError(f"--reference {path}: a value that is not a finite number: not a g(r) "
                            "table (columns r, g)")
    if table[0, 0] < 0 or np.any(np.diff(table[:, 0]) <= 0):
        raise AnalysisError(f"--reference {path}: its first column does not increase from r >= 0: "
                            "not a g(r) table (columns r, g)")
    return table


def add_arguments(parser):
    parser.add_argument("positions", help="i-PI positions trajectory (xyz or extxyz)")
    parser.add_argument("--element", default="O", help="element of both atoms of a pair (default O)")
    add_binning_arguments(parser, 6.0, 0.05)
    parser.add_argument("--reference", action="append", default=[], metavar="PATH[:bohr]",
                        help="reference g(r), columns r g; append ':bohr' if r is in Bohr (repeatable)")


def run(args):
    edges = distance_edges(args.r_max, args.bin)
    positions = read_trajectory(args.positions, "length")
    positions.require_cell("g(r) needs one (its volume normalises g)")
    selected = [index for index, symbol in enumerate(positions.symbols) if symbol == args.element]
    if not selected:
        raise AnalysisError(f"{args.positions}: no atom of element {args.element}")
    references = {path: read_reference(path, unit) for path, unit in map(parse_reference, args.reference)}
    check_cutoff(len(selected), positions.cells, args.r_max, args.positions)
    result = radial_distribution(positions.values[:, selected], positions.cells, edges, args.blocks)
    result["element"] = args.element
    result["units"] = {"r": "angstrom"}
    result["references"] = {}
    fig, (axis,) = figure(1, width=7.0)
    if result["g_error"] is not None:
        axis.fill_between(result["r"], result["g"] - result["g_error"], result["g"] + result["g_error"],
                          color="tab:blue", alpha=0.3, lw=0)
    axis.plot(result["r"], result["g"], color="tab:blue", lw=2.0, label=Path(args.positions).name)
    for k, (path, table) in enumerate(references.items()):
        inside = table[:, 0] <= args.r_max
        peak = int(np.argmax(table[:, 1]))
        result["references"][path] = {"peak_r": float(table[peak, 0]), "peak_g": float(table[peak, 1])}
        axis.plot(table[inside, 0], table[inside, 1], lw=1.0, color=f"C{k + 1}", label=Path(path).name)
    axis.axhline(1.0, color="grey", lw=0.8)
    axis.set(xlabel="r (Å)", ylabel=f"g(r) {args.element}-{args.element}", xlim=(0, args.r_max))
    axis.legend(fontsize="small")
    peak = ("no pair within --r-max" if result["peak_r"] is None else
            f"highest peak {result['peak_g']:.3g} at {result['peak_r']:.3g} Å")
    message = (f"g(r) {args.element}-{args.element} from {result['n_frames']} frames: {peak}"
               f"{bins_note(result['r_edges'], args.bin)}")
    return result, fig, message
