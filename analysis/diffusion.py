"""Mean-square displacement of the oxygens and the self-diffusion coefficient.

Positions are unwrapped by adding, frame after frame, the minimum-image displacement between
consecutive frames (so the stride between saved frames must keep moves below half a cell).
MSD(τ) = ⟨|r(t + τ) − r(t)|²⟩ over all time origins t and oxygens; D is the slope of a line fitted
to MSD(τ) over the window [fit-start, fit-end] divided by 6. The trajectory is cut into blocks, D
fitted in each, and the error of D is the standard error of the block values. The centre of mass
is not removed (i-PI removes its velocity by default).

Finite-size (Yeh-Hummer) correction for a cubic periodic box of side L:
    D_∞ = D_PBC + k_B T ξ / (6π η L),   ξ = 2.837297, η the shear viscosity.
Without a periodic cell (molecules in vacuum) the positions are taken as they are and there is
no correction.
"""

import numpy as np
from ase.units import _k as BOLTZMANN_J_PER_K

from pet.arguments import non_negative_float, positive_float, positive_int

from .errors import AnalysisError
from .ipi_files import frame_interval, read_trajectory
from .molecules import minimum_image
from .output import figure
from .stats import block_slices, linear_fit, mean_and_error, vector_autocorrelation

NAME = "diffusion"
HELP = "O mean-square displacement and diffusion coefficient (block errors, Yeh-Hummer correction)"
EXAMPLE = "pet-analyze diffusion bulk.pos_0.xyz --dt 5 --blocks 4 --viscosity 0.85 --out bulk-msd"

YEH_HUMMER_XI = 2.837297
"""The cubic-lattice constant ξ of the Yeh-Hummer correction."""

A2_PER_PS_TO_1E9_M2_PER_S = 10.0
"""1 Å²/ps = 1e-8 m²/s = 10 × 1e-9 m²/s."""


def unwrap(positions: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(F, n, 3) continuous positions from wrapped ones, by minimum-image steps between frames."""
    steps = minimum_image(np.diff(positions, axis=0), cells[1:])
    return np.concatenate([positions[:1], positions[:1] + np.cumsum(steps, axis=0)], axis=0)


def mean_square_displacement(positions: np.ndarray, max_lag: int) -> np.ndarray:
    """(max_lag + 1,) MSD in Å² at lags 0..max_lag frames, averaged over origins and atoms.

    ``positions`` (T, n, 3) unwrapped; the FFT algorithm MSD = S1 − 2 S2 (O(T log T)).
    """
    T = len(positions)
    correlation = vector_autocorrelation(positions, max_lag)  # checks max_lag
    squares = np.sum(positions ** 2, axis=-1)  # (T, n)
    cumulative = np.concatenate([np.zeros((1, squares.shape[1])), np.cumsum(squares, axis=0)])
    lags = np.arange(max_lag + 1)
    s1 = (cumulative[T - lags] + cumulative[T] - cumulative[lags]) / (T - lags)[:, None]
    return np.mean(s1 - 2.0 * correlation, axis=1)


def fit_window(lag_times: np.ndarray, start, end) -> list:
    """[start, end] in ps of the fit (default 20 %..100 % of the largest lag), within the lags and
    holding at least 3 of them."""
    largest = float(lag_times[-1])
    start = 0.2 * largest if start is None else start
    end = largest if end is None else end
    if end > largest * (1 + 1e-9):
        raise AnalysisError(f"--fit-end {end} ps is beyond the largest lag, {largest:.6g} ps (half a block: "
                            "fewer --blocks give longer lags)")
    if np.sum((lag_times >= start) & (lag_times <= end)) < 3:
        raise AnalysisError(f"the fit window {start:.6g}-{end:.6g} ps holds fewer than 3 lags "
                            f"(lags every {lag_times[1]:.6g} ps up to {largest:.6g} ps)")
    return [start, end]


def fit_diffusion(lag_times: np.ndarray, msd: np.ndarray, start: float, end: float) -> float:
    """D in Å²/ps from the slope of MSD(τ) (Å²) for start ≤ τ ≤ end (ps, see :func:`fit_window`),
    divided by 6."""
    window = (lag_times >= start) & (lag_times <= end)
    return linear_fit(lag_times[window], msd[window])[0] / 6.0


def yeh_hummer_correction(temperature: float, viscosity_mpa_s: float, box_length: float) -> float:
    """k_B T ξ / (6π η L) in 1e-9 m²/s; T in K, η in mPa·s, L in Å."""
    metres_squared_per_second = (BOLTZMANN_J_PER_K * temperature * YEH_HUMMER_XI
                                 / (6.0 * np.pi * viscosity_mpa_s * 1e-3 * box_length * 1e-10))
    return metres_squared_per_second * 1e9


def diffusion(positions, cells, frame_time: float, n_blocks: int, fit_start=None, fit_end=None) -> dict:
    """MSD of the whole trajectory and per block, D with its block error.

    ``positions`` (F, n, 3) Å wrapped or not, ``cells`` (F, 3, 3), ``frame_time`` ps between
    frames. Lags reach half a block; the default window is 20 %..100 % of that.
    """
    unwrapped = unwrap(positions, cells)
    parts = block_slices(len(unwrapped), n_blocks)
    max_lag = (parts[0].stop - parts[0].start) // 2
    if max_lag < 4:
        raise AnalysisError(f"{len(unwrapped)} frames are too few for {n_blocks} blocks "
                            f"(at least 8 frames per block: {8 * n_blocks})")
    lag_times = np.arange(max_lag + 1) * frame_time
    start, end = fit_window(lag_times, fit_start, fit_end)
    msd = mean_square_displacement(unwrapped, max_lag)
    block_values = [fit_diffusion(lag_times, mean_square_displacement(unwrapped[part], max_lag), start, end)
                    for part in parts]
    return {"lag_time": lag_times, "msd": msd, "fit_window": [start, end],
            "D": fit_diffusion(lag_times, msd, start, end),
            "D_error": float(mean_and_error(block_values)[1]), "D_blocks": block_values,
            "n_atoms": positions.shape[1], "n_frames": len(positions)}


def add_arguments(parser):
    parser.add_argument("positions", help="i-PI positions trajectory (xyz or extxyz)")
    parser.add_argument("--dt", type=positive_float, required=True, help="i-PI <timestep> in fs (time per step)")
    parser.add_argument("--element", default="O", help="element whose MSD is computed (default O)")
    parser.add_argument("--blocks", type=positive_int, default=4, help="blocks for the error bar (default 4)")
    parser.add_argument("--fit-start", type=non_negative_float,
                        help="start of the fit window in ps (default 20%% of the largest lag)")
    parser.add_argument("--fit-end", type=positive_float,
                        help="end of the fit window in ps, at most the largest lag "
                             "(default the largest lag, half a block)")
    parser.add_argument("--temperature", type=positive_float, default=300.0,
                        help="K, for the Yeh-Hummer correction (default 300)")
    parser.add_argument("--viscosity", type=positive_float, default=0.85,
                        help="shear viscosity in mPa s (default 0.85, water at 300 K)")


def finite_size_correction(cells: np.ndarray, temperature: float, viscosity: float):
    """The Yeh-Hummer record for the mean box length of ``cells`` (F, 3, 3), or None without a cell."""
    if not np.any(cells):
        return None
    box = float(np.mean(np.abs(np.linalg.det(cells)) ** (1.0 / 3.0)))
    return {"box_length_angstrom": box, "temperature_K": temperature, "viscosity_mPa_s": viscosity,
            "correction_1e9_m2_per_s": yeh_hummer_correction(temperature, viscosity, box)}


def run(args):
    positions = read_trajectory(args.positions, "length")
    selected = [index for index, symbol in enumerate(positions.symbols) if symbol == args.element]
    if not selected:
        raise AnalysisError(f"{args.positions}: no atom of element {args.element}")
    result = diffusion(positions.values[:, selected], positions.cells, frame_interval(positions, args.dt),
                       args.blocks, args.fit_start, args.fit_end)
    D = result["D"] * A2_PER_PS_TO_1E9_M2_PER_S
    error = result["D_error"] * A2_PER_PS_TO_1E9_M2_PER_S
    correction = finite_size_correction(positions.cells, args.temperature, args.viscosity)
    if correction is None:
        finite_size = "no periodic cell: no Yeh-Hummer correction"
    else:
        correction["D_corrected_1e9_m2_per_s"] = D + correction["correction_1e9_m2_per_s"]
        finite_size = (f"Yeh-Hummer (L {correction['box_length_angstrom']:.4g} Å, η {args.viscosity} mPa s) "
                       f"+{correction['correction_1e9_m2_per_s']:.3g} → "
                       f"{correction['D_corrected_1e9_m2_per_s']:.4g} ×1e-9 m²/s")
    result.update({"units": {"lag_time": "ps", "msd": "angstrom^2", "D": "angstrom^2/ps",
                             "D_1e9_m2_per_s": "1e-9 m^2/s"},
                   "element": args.element, "D_1e9_m2_per_s": D, "D_error_1e9_m2_per_s": error,
                   "yeh_hummer": correction})
    fig, (axis,) = figure(1, width=7.0)
    axis.plot(result["lag_time"], result["msd"], color="tab:blue", label="MSD")
    start, end = result["fit_window"]
    window = np.linspace(start, end, 2)
    offset = np.interp(start, result["lag_time"], result["msd"]) - 6 * result["D"] * start
    axis.plot(window, offset + 6 * result["D"] * window, "k--",
              label=f"D = {D:.3g} ± {error:.2g} ×10⁻⁹ m²/s")
    axis.set(xlabel="lag time (ps)", ylabel=f"MSD {args.element} (Å²)")
    axis.legend()
    message = f"D({args.element}) = {D:.4g} ± {error:.2g} ×1e-9 m²/s; {finite_size}"
    return result, fig, message
