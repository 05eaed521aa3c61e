"""Drift of i-PI's conserved quantity: the slope of a straight line fitted to conserved(t).

The slope (eV/ps) is reported in meV per molecule per ns, with the standard error of the
least-squares slope (which assumes independent residuals and so underestimates the error of a
strongly correlated series).
"""

import numpy as np

from .errors import AnalysisError
from .ipi_files import column, read_properties
from .output import figure
from .stats import linear_fit

NAME = "drift"
HELP = "drift of the conserved quantity in meV per molecule per ns, with the fit error"
EXAMPLE = "pet-analyze drift nve.out --molecules 512 --out nve-drift"

EV_PER_PS_TO_MEV_PER_NS = 1e6
"""meV/ns per eV/ps."""


def conserved_drift(time: np.ndarray, conserved: np.ndarray, n_molecules: int) -> dict:
    """Linear fit of ``conserved`` (eV) against ``time`` (ps): drift and error in meV/molecule/ns."""
    if n_molecules < 1:
        raise AnalysisError(f"--molecules must be positive, got {n_molecules}")
    slope, intercept, error = linear_fit(time, conserved)
    scale = EV_PER_PS_TO_MEV_PER_NS / n_molecules
    residuals = conserved - (slope * time + intercept)
    return {"drift_meV_per_molecule_per_ns": slope * scale,
            "drift_error_meV_per_molecule_per_ns": error * scale,
            "slope_eV_per_ps": slope, "intercept_eV": intercept,
            "residual_rms_meV_per_molecule": float(np.sqrt(np.mean(residuals ** 2)) * 1e3 / n_molecules),
            "duration_ps": float(time[-1] - time[0]), "n_molecules": n_molecules}


def add_arguments(parser):
    parser.add_argument("properties", help="i-PI properties file with time and conserved columns")
    parser.add_argument("--molecules", type=int, required=True, help="number of molecules in the system")
    parser.add_argument("--column", default="conserved", help="the conserved-quantity column (default conserved)")


def run(args):
    columns = read_properties(args.properties)
    time = column(columns, "time", args.properties)
    conserved = column(columns, args.column, args.properties)
    result = conserved_drift(time, conserved, args.molecules)
    result["time"], result["conserved"] = time, conserved
    fig, (axis,) = figure(1, width=7.0)
    per_molecule = 1e3 * (conserved - conserved[0]) / args.molecules
    axis.plot(time, per_molecule, lw=0.8, label=args.column)
    fit = 1e3 * (result["slope_eV_per_ps"] * time + result["intercept_eV"] - conserved[0]) / args.molecules
    axis.plot(time, fit, "k--", label=(f"{result['drift_meV_per_molecule_per_ns']:.3g} ± "
                                       f"{result['drift_error_meV_per_molecule_per_ns']:.2g} meV/molecule/ns"))
    axis.set(xlabel="time (ps)", ylabel="change per molecule (meV)")
    axis.legend()
    message = (f"drift {result['drift_meV_per_molecule_per_ns']:.4g} ± "
               f"{result['drift_error_meV_per_molecule_per_ns']:.2g} meV/molecule/ns over {result['duration_ps']:.4g} ps")
    return result, fig, message
