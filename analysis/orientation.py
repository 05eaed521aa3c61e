"""Orientational free energy of the molecular axis (O → midpoint of the two H) in the lab frame.

The axis direction u has polar angle θ (u_z = cos θ) and azimuth φ. Histograms over cos θ and φ
are normalised as densities per steradian p(θ, φ), and

    F(θ, φ) = −ln(4π p(θ, φ))          in units of k_B T,

so that an isotropic distribution (an ideal gas, an invariant model) gives F = 0 everywhere.
The 1D profiles are F(cos θ) = −ln(2 p(cos θ)) and F(φ) = −ln(2π p(φ)) of the marginals.
Statistical errors come from block averages of the densities (σ_F = σ_p / p). The anisotropy
statistic χ²/bin = mean over bins of (F/σ_F)² is about (B − 1)/(B − 3) for a flat surface and B
blocks (each error is estimated from B − 1 degrees of freedom), and grows with any anisotropy;
it is given for the surface and for each profile, with each profile's span (max F − min F).
Empty bins (F = ∞) are left out of χ², and so are occupied bins with the same density in every
block (σ_F = 0, counted in ``bins_without_spread``): their deviation cannot be measured. Without
any bin that has a spread (e.g. molecules that do not turn) χ² is undefined: null in the JSON,
"n/a" in the summary. At most 100000 bins (cos θ × φ).
"""

import numpy as np

from pet.arguments import positive_int

from .errors import AnalysisError
from .ipi_files import read_trajectory
from .molecules import molecular_axes, water_molecules, whole_molecules
from .output import figure
from .stats import block_slices, mean_and_error

NAME = "orientation"
HELP = "orientational free energy F(θ, φ) of the molecular axis in k_B T, with block errors"
EXAMPLE = "pet-analyze orientation gas.pos_0.xyz --bins-cos 10 --bins-phi 12 --blocks 10 --out gas-F"

MAX_BINS = 100_000
"""The most bins of the surface, --bins-cos × --bins-phi (each block keeps a histogram of them)."""

ROUND_OFF = 1e-9
"""A block error below this fraction of its density is round-off of identical block values: zero."""


def check_bins(n_cos: int, n_phi: int) -> None:
    """AnalysisError if the surface would have more than :data:`MAX_BINS` bins."""
    if n_cos * n_phi > MAX_BINS:
        raise AnalysisError(f"--bins-cos {n_cos} × --bins-phi {n_phi} = {n_cos * n_phi} bins: at most {MAX_BINS}")


def _free_energy(density: np.ndarray, error: np.ndarray, isotropic: float):
    """(F, σ_F) from a density, its block error (round-off of equal block values set to zero, see
    :data:`ROUND_OFF`) and the density of the isotropic distribution."""
    error = np.where(error <= ROUND_OFF * density, 0.0, error)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.log(density / isotropic), error / density


def orientational_free_energy(axes: np.ndarray, n_cos: int, n_phi: int, n_blocks: int) -> dict:
    """Free-energy surface and profiles of unit vectors ``axes`` (F, M, 3), frames split into blocks.

    Returns cos θ and φ (radians) bin edges, F (n_cos, n_phi) and its error, the profiles
    F(cos θ) (n_cos,), F(φ) (n_phi,) with errors, and χ²/dof of F against a flat surface.
    """
    cos_edges = np.linspace(-1.0, 1.0, n_cos + 1)
    phi_edges = np.linspace(-np.pi, np.pi, n_phi + 1)
    cos_theta = np.clip(axes[..., 2], -1.0, 1.0)
    phi = np.arctan2(axes[..., 1], axes[..., 0])
    solid_angle = np.diff(cos_edges)[:, None] * np.diff(phi_edges)[None, :]

    def densities(part):
        counts, _, _ = np.histogram2d(cos_theta[part].ravel(), phi[part].ravel(), [cos_edges, phi_edges])
        total = counts.sum()
        return (counts / (total * solid_angle),
                counts.sum(axis=1) / (total * np.diff(cos_edges)),
                counts.sum(axis=0) / (total * np.diff(phi_edges)))

    whole = densities(slice(None))
    blocks = [densities(part) for part in block_slices(len(axes), n_blocks)]
    result = {"cos_theta_edges": cos_edges, "phi_edges": phi_edges, "n_samples": int(cos_theta.size),
              "n_blocks": n_blocks}
    for key, density, isotropic, k in (("F", whole[0], 1 / (4 * np.pi), 0),
                                       ("F_cos_theta", whole[1], 0.5, 1),
                                       ("F_phi", whole[2], 1 / (2 * np.pi), 2)):
        error = mean_and_error([block[k] for block in blocks])[1]
        result[key], result[key + "_error"] = _free_energy(density, error, isotropic)
    result["chi2_per_bin_vs_flat"] = _chi2_per_bin(result["F"], result["F_error"])
    result["chi2_per_bin_profiles"] = {name: _chi2_per_bin(result[key], result[key + "_error"])
                                       for name, key in (("cos_theta", "F_cos_theta"), ("phi", "F_phi"))}
    result["profile_span"] = {name: _span(result[key]) for name, key in (("cos_theta", "F_cos_theta"),
                                                                         ("phi", "F_phi"))}
    result["empty_bins"] = int(np.sum(whole[0] == 0))
    result["bins_without_spread"] = int(np.sum(np.isfinite(result["F"]) & ~_measured(result["F"], result["F_error"])))
    return result


def _measured(free_energy: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Mask of the bins whose F and σ_F are finite and σ_F > 0 (occupied, with a spread between blocks)."""
    return np.isfinite(free_energy) & np.isfinite(error) & (error > 0)


def _chi2_per_bin(free_energy: np.ndarray, error: np.ndarray):
    """Mean of (F/σ_F)² over the bins of :func:`_measured`; None (undefined) if there are none."""
    measured = _measured(free_energy, error)
    if not measured.any():
        return None
    return float(np.mean((free_energy[measured] / error[measured]) ** 2))


def _span(free_energy: np.ndarray):
    """max F − min F over the finite bins, k_B T (None if there are none)."""
    finite = free_energy[np.isfinite(free_energy)]
    return float(finite.max() - finite.min()) if finite.size else None


def add_arguments(parser):
    parser.add_argument("positions", help="i-PI positions trajectory (xyz or extxyz)")
    parser.add_argument("--bins-cos", type=positive_int, default=10, help="bins in cos θ (default 10)")
    parser.add_argument("--bins-phi", type=positive_int, default=12, help="bins in φ (default 12)")
    parser.add_argument("--blocks", type=positive_int, default=10,
                        help="blocks for the error bars, at most the number of frames (default 10)")


def run(args):
    check_bins(args.bins_cos, args.bins_phi)
    positions = read_trajectory(args.positions, "length")
    molecules = water_molecules(positions.symbols)
    axes = molecular_axes(whole_molecules(positions.values, positions.cells, molecules))
    result = orientational_free_energy(axes, args.bins_cos, args.bins_phi, args.blocks)
    result["units"] = {"F": "k_B T", "phi_edges": "rad"}
    fig, (surface, polar, azimuth) = figure(3, width=4.8)
    phi_degrees = np.degrees(result["phi_edges"])
    finite = np.isfinite(result["F"])
    limit = float(np.abs(result["F"][finite]).max()) if finite.any() else 1.0
    mesh = surface.pcolormesh(phi_degrees, result["cos_theta_edges"], result["F"], cmap="RdBu_r",
                              shading="flat", vmin=-limit, vmax=limit)
    fig.colorbar(mesh, ax=surface, label="F (k_B T)")
    surface.set(xlabel="φ (°)", ylabel="cos θ", title="F(θ, φ)")
    centres = 0.5 * (result["cos_theta_edges"][1:] + result["cos_theta_edges"][:-1])
    polar.errorbar(centres, result["F_cos_theta"], result["F_cos_theta_error"], marker="o", capsize=3)
    polar.axhline(0.0, color="grey", lw=0.8)
    polar.set(xlabel="cos θ", ylabel="F (k_B T)")
    centres = 0.5 * (phi_degrees[1:] + phi_degrees[:-1])
    azimuth.errorbar(centres, result["F_phi"], result["F_phi_error"], marker="o", capsize=3)
    azimuth.axhline(0.0, color="grey", lw=0.8)
    azimuth.set(xlabel="φ (°)", ylabel="F (k_B T)")
    chi2 = result["chi2_per_bin_vs_flat"]
    unmeasured = result["bins_without_spread"]
    message = (f"{result['n_samples']} orientations: max |F| {limit:.3g} k_B T, χ²/bin against flat "
               f"{'n/a (no bin has a spread between blocks)' if chi2 is None else f'{chi2:.3g}'}, "
               f"{result['empty_bins']} empty bins"
               + (f", {unmeasured} occupied bins without spread between blocks" if unmeasured else ""))
    return result, fig, message
