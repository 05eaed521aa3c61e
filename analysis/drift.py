"""Drift of i-PI's conserved quantity: the slope of a straight line fitted to conserved(t).

The slope (eV/ps) is reported in meV per molecule per ns, with the standard error of the
least-squares slope (which assumes independent residuals and so underestimates the error of a
strongly correlated series). ``--column`` may name another energy column (``potential``,
``kinetic_md``, ``pot_component_raw(1)``, ...): energies are extensive, so their drift per molecule
compares systems of different sizes. A column of another dimension (a temperature, a pressure, a
step count) is refused: its drift is not an energy per molecule. Several properties files give
one fit each, side by side (the JSON then holds a list ``runs``, each with its ``label`` and ``file``).
"""

import numpy as np

from pet.arguments import positive_int

from .errors import AnalysisError
from .ipi_files import column, read_properties, time_column
from .output import figure
from .stats import linear_fit

NAME = "drift"
HELP = "drift of the conserved quantity in meV per molecule per ns, with the fit error"
EXAMPLE = ("pet-analyze drift nve.out --molecules 512 --out nve-drift; several runs: "
           "pet-analyze drift a/simulation.out b/simulation.out --labels a b --molecules 64 --out drifts")

EV_PER_PS_TO_MEV_PER_NS = 1e6
"""meV/ns per eV/ps."""


def conserved_drift(time: np.ndarray, conserved: np.ndarray, n_molecules: int) -> dict:
    """Linear fit of ``conserved`` (eV) against ``time`` (ps): drift and error in meV/molecule/ns."""
    slope, intercept, error = linear_fit(time, conserved)
    scale = EV_PER_PS_TO_MEV_PER_NS / n_molecules
    residuals = conserved - (slope * time + intercept)
    return {"drift_meV_per_molecule_per_ns": slope * scale,
            "drift_error_meV_per_molecule_per_ns": error * scale,
            "slope_eV_per_ps": slope, "intercept_eV": intercept,
            "residual_rms_meV_per_molecule": float(np.sqrt(np.mean(residuals ** 2)) * 1e3 / n_molecules),
            "duration_ps": float(time[-1] - time[0]), "n_molecules": n_molecules}


def add_arguments(parser):
    parser.add_argument("properties", nargs="+", help="i-PI properties file(s) with time and conserved "
                        "columns; several (runs of one system, e.g. different outer steps) are compared")
    parser.add_argument("--molecules", type=positive_int, required=True, help="number of molecules in the system")
    parser.add_argument("--column", default="conserved", help="the conserved-quantity column, or another energy column "
                        "(default conserved)")
    parser.add_argument("--labels", nargs="+", metavar="LABEL",
                        help="a name for each properties file in the plot and the JSON (default: the file names)")


def energy_column(columns, name: str, path) -> np.ndarray:
    """The (T,) values in eV of the energy column ``name``; AnalysisError naming its unit and the
    file's energy columns if it is not an energy (see :func:`analysis.ipi_files.column`)."""
    values = column(columns, name, path)
    if columns.units[name] != "eV":
        energies = [other for other, unit in columns.units.items() if unit == "eV"]
        raise AnalysisError(f"{path}: --column {name} is in {columns.units[name] or 'no unit'}, not an energy: "
                            f"drift gives the slope of an energy column in meV/molecule/ns (energy columns "
                            f"here: {', '.join(energies) or 'none'})")
    return values


def _one_run(path, column_name, n_molecules) -> dict:
    columns = read_properties(path)
    time = time_column(columns, path, min_rows=3)
    conserved = energy_column(columns, column_name, path)
    result = conserved_drift(time, conserved, n_molecules)
    result["time"], result["conserved"] = time, conserved
    return result


def _plot_trace(axis, result, n_molecules, label, fit_colour=None):
    """conserved(t) − conserved(0) per molecule (meV) and its fitted line (dashed; the trace's colour
    unless ``fit_colour``)."""
    time, conserved = result["time"], result["conserved"]
    lines = axis.plot(time, 1e3 * (conserved - conserved[0]) / n_molecules, lw=0.8, label=label)
    fit = 1e3 * (result["slope_eV_per_ps"] * time + result["intercept_eV"] - conserved[0]) / n_molecules
    axis.plot(time, fit, "--", color=fit_colour or lines[0].get_color(),
              label=(f"{result['drift_meV_per_molecule_per_ns']:.3g} ± "
                     f"{result['drift_error_meV_per_molecule_per_ns']:.2g} meV/molecule/ns"))


def _summary(result) -> str:
    return (f"{result['drift_meV_per_molecule_per_ns']:.4g} ± {result['drift_error_meV_per_molecule_per_ns']:.2g} "
            f"meV/molecule/ns over {result['duration_ps']:.4g} ps")


def run(args):
    if args.labels is not None and len(args.labels) != len(args.properties):
        raise AnalysisError(f"--labels: {len(args.labels)} labels for {len(args.properties)} files")
    if len(args.properties) == 1:
        result = _one_run(args.properties[0], args.column, args.molecules)
        fig, (axis,) = figure(1, width=7.0)
        _plot_trace(axis, result, args.molecules, args.column, fit_colour="k")
        axis.set(xlabel="time (ps)", ylabel="change per molecule (meV)")
        axis.legend()
        return result, fig, "drift " + _summary(result)
    labels = args.labels or args.properties
    runs = [{"label": label, "file": path, **_one_run(path, args.column, args.molecules)}
            for label, path in zip(labels, args.properties)]
    fig, (traces, drifts) = figure(2, width=6.0)
    for entry in runs:
        _plot_trace(traces, entry, args.molecules, entry["label"])
    traces.set(xlabel="time (ps)", ylabel=f"change of {args.column} per molecule (meV)")
    traces.legend(fontsize="small")
    position = np.arange(len(runs))
    values = [entry["drift_meV_per_molecule_per_ns"] for entry in runs]
    drifts.errorbar(position, values,
                    yerr=[entry["drift_error_meV_per_molecule_per_ns"] for entry in runs], fmt="o", capsize=3)
    drifts.axhline(0.0, color="0.7", lw=0.8)
    drifts.set_yscale("symlog", linthresh=10.0)
    drifts.set_ylim(3 * min(min(values), -10.0), 3 * max(max(values), 10.0))  # room above and below the points
    drifts.set_xticks(position, labels)
    drifts.set(ylabel="drift (meV/molecule/ns)")
    message = "drift " + "; ".join(f"{entry['label']}: {_summary(entry)}" for entry in runs)
    return {"runs": runs, "n_molecules": args.molecules}, fig, message
