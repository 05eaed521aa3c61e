"""Ice Ih: the raw model against its rotation average on proton-disordered cells.

Three comparisons, per cell (DESIGN.md section 7 quotes the paper's numbers):

- forces on the initial (idealised) cells: ΔF = F_raw − F_avg per atom; mean absolute component,
  RMS and largest |ΔF_i| in meV/Å;
- relative energies per molecule: e_k = E_k / M_k minus its mean over the cells, for the raw and
  the averaged model, on the initial cells and (when given) on each model's own relaxed geometry
  (i-PI minimiser outputs, last frame), and their difference in meV/molecule;
- RMSD between the raw- and the average-relaxed geometries of a cell: minimum-image differences
  of the atomic positions, their mean (a rigid translation) removed, root mean square in Å.

Energies and forces come from :class:`pet.calculator.PETCalculator` with the given checkpoint
(torch is imported only when this analysis runs).
"""

import sys

import ase.io
import numpy as np

from .errors import AnalysisError
from .ipi_files import read_trajectory
from .molecules import minimum_image
from .output import figure

NAME = "ice"
HELP = "ice cells: forces raw vs grid, relative energies per molecule, RMSD of relaxed geometries"
EXAMPLE = ("pet-analyze ice ../shared/data/ice-ih-hayward-reimers.xyz --model models/pet-water-small.pt "
           "--grid 2i --relaxed-raw raw-*.pos_0.xyz --relaxed-avg 2i-*.pos_0.xyz --out ice")


def force_differences(raw: np.ndarray, average: np.ndarray) -> dict:
    """MAE (component), RMS and max |ΔF_i| in meV/Å between force arrays (N, 3) in eV/Å."""
    difference = 1e3 * (raw - average)
    return {"mae": float(np.abs(difference).mean()), "rms": float(np.sqrt(np.mean(difference ** 2))),
            "max_atom": float(np.linalg.norm(difference, axis=1).max())}


def relative_per_molecule(energies, n_molecules) -> np.ndarray:
    """Energies per molecule (eV) minus their mean over cells, in meV/molecule."""
    per_molecule = np.asarray(energies) / np.asarray(n_molecules)
    return 1e3 * (per_molecule - per_molecule.mean())


def rmsd(first: np.ndarray, second: np.ndarray, cell: np.ndarray) -> float:
    """RMS in Å of minimum-image position differences (N, 3), rigid translation removed."""
    difference = minimum_image((first - second)[None], cell[None])[0]
    difference -= difference.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(difference ** 2, axis=1))))


def _relaxed(path, reference) -> ase.Atoms:
    """The last frame of an i-PI positions trajectory, checked against the cell it started from."""
    trajectory = read_trajectory(path, "length")
    if trajectory.symbols != reference.get_chemical_symbols():
        raise AnalysisError(f"{path}: its atoms differ from those of the cell it should relax")
    return ase.Atoms(trajectory.symbols, positions=trajectory.values[-1], cell=trajectory.cells[-1], pbc=True)


def _evaluate(calculator, atoms):
    atoms = atoms.copy()
    atoms.calc = calculator
    return atoms.get_potential_energy(), atoms.get_forces()


def compare_cells(cells, raw_calculator, avg_calculator, relaxed_raw=None, relaxed_avg=None) -> dict:
    """Per-cell force differences, relative energies and RMSDs (see the module docstring)."""
    n_molecules = [atoms.get_chemical_symbols().count("O") for atoms in cells]
    energies = {"raw": [], "avg": []}
    forces = []
    for k, atoms in enumerate(cells):
        print(f"ice: cell {k + 1}/{len(cells)} ({len(atoms)} atoms): raw and averaged model", file=sys.stderr)
        e_raw, f_raw = _evaluate(raw_calculator, atoms)
        e_avg, f_avg = _evaluate(avg_calculator, atoms)
        energies["raw"].append(e_raw)
        energies["avg"].append(e_avg)
        forces.append(force_differences(f_raw, f_avg))
    result = {"n_molecules": n_molecules, "forces_initial": forces,
              "energy_initial": energies,
              "relative_initial": {key: relative_per_molecule(value, n_molecules) for key, value in energies.items()}}
    result["relative_initial"]["difference"] = result["relative_initial"]["raw"] - result["relative_initial"]["avg"]
    if relaxed_raw is not None:
        relaxed = {"raw": [], "avg": []}
        result["rmsd_relaxed"] = []
        for k, (atoms_raw, atoms_avg) in enumerate(zip(relaxed_raw, relaxed_avg)):
            print(f"ice: relaxed cell {k + 1}/{len(cells)}", file=sys.stderr)
            relaxed["raw"].append(_evaluate(raw_calculator, atoms_raw)[0])
            relaxed["avg"].append(_evaluate(avg_calculator, atoms_avg)[0])
            result["rmsd_relaxed"].append(rmsd(atoms_raw.positions, atoms_avg.positions, np.asarray(atoms_raw.cell)))
        result["energy_relaxed"] = relaxed
        result["relative_relaxed"] = {key: relative_per_molecule(value, n_molecules) for key, value in relaxed.items()}
        result["relative_relaxed"]["difference"] = result["relative_relaxed"]["raw"] - result["relative_relaxed"]["avg"]
    return result


def add_arguments(parser):
    parser.add_argument("cells", help="the initial ice cells (extended XYZ, several frames)")
    parser.add_argument("--model", help="PET checkpoint (default: $PET_IPI_MODEL or the shipped model)")
    parser.add_argument("--grid", default="2i", help="rotation grid of the averaged model (default 2i)")
    parser.add_argument("--index", default=":", help="which frames of CELLS, ASE syntax (default ':')")
    parser.add_argument("--relaxed-raw", nargs="+", metavar="TRAJ",
                        help="positions trajectories of the raw-model relaxations, one per cell, in order")
    parser.add_argument("--relaxed-avg", nargs="+", metavar="TRAJ",
                        help="positions trajectories of the averaged-model relaxations, one per cell, in order")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"], help="default float64")
    parser.add_argument("--chunk-size", type=int, help="most rotated copies per forward pass")


def run(args):
    try:
        cells = ase.io.read(args.cells, args.index)
    except FileNotFoundError:
        raise AnalysisError(f"{args.cells}: no such file") from None
    except Exception as error:
        raise AnalysisError(f"{args.cells}: cannot read the cells ({type(error).__name__}: {error})") from None
    cells = cells if isinstance(cells, list) else [cells]
    if (args.relaxed_raw is None) != (args.relaxed_avg is None):
        raise AnalysisError("give both --relaxed-raw and --relaxed-avg, or neither")
    relaxed_raw = relaxed_avg = None
    if args.relaxed_raw is not None:
        for option, paths in (("--relaxed-raw", args.relaxed_raw), ("--relaxed-avg", args.relaxed_avg)):
            if len(paths) != len(cells):
                raise AnalysisError(f"{option}: {len(paths)} files for {len(cells)} cells")
        relaxed_raw = [_relaxed(path, atoms) for path, atoms in zip(args.relaxed_raw, cells)]
        relaxed_avg = [_relaxed(path, atoms) for path, atoms in zip(args.relaxed_avg, cells)]
    from pet.calculator import PETCalculator, load_model
    from pet.checkpoint import CheckpointError

    try:
        model = load_model(args.model, args.device, args.dtype)
        raw = PETCalculator(model, device=args.device, dtype=args.dtype)
        average = PETCalculator(model, grid=args.grid, device=args.device, dtype=args.dtype,
                                chunk_size=args.chunk_size)
    except (CheckpointError, ValueError) as error:
        raise AnalysisError(str(error)) from None
    result = compare_cells(cells, raw, average, relaxed_raw, relaxed_avg)
    result.update({"grid": args.grid, "units": {"forces": "meV/angstrom", "relative": "meV/molecule",
                                                "energy": "eV", "rmsd": "angstrom"}})
    panels = 3 if relaxed_raw is not None else 2
    fig, axes = figure(panels, width=4.5)
    index = np.arange(1, len(cells) + 1)
    axes[0].semilogy(index, [entry["mae"] for entry in result["forces_initial"]], "o-", label="MAE")
    axes[0].semilogy(index, [entry["max_atom"] for entry in result["forces_initial"]], "s-", label="max atom")
    axes[0].set(xlabel="cell", ylabel=f"|F_raw − F_{args.grid}| (meV/Å)", title="initial cells")
    axes[0].legend()
    for key, marker, colour in (("raw", "o", "C0"), ("avg", "s", "C1")):
        axes[1].plot(index, result["relative_initial"][key], marker + "-", color=colour, label=f"{key} initial")
        if relaxed_raw is not None:
            axes[1].plot(index, result["relative_relaxed"][key], marker + "--", color=colour, mfc="none",
                         label=f"{key} relaxed")
    axes[1].set(xlabel="cell", ylabel="E/molecule − mean (meV)")
    axes[1].legend(fontsize="small")
    if relaxed_raw is not None:
        axes[2].semilogy(index, result["rmsd_relaxed"], "o-")
        axes[2].set(xlabel="cell", ylabel="RMSD raw vs averaged relaxed (Å)")
    for axis in axes:
        axis.set_xticks(index)
    worst = max(entry["max_atom"] for entry in result["forces_initial"])
    message = (f"{len(cells)} cells: max |ΔF| {worst:.3g} meV/Å, relative energies differ by up to "
               f"{np.abs(result['relative_initial']['difference']).max():.3g} meV/molecule (initial)")
    if relaxed_raw is not None:
        message += (f", {np.abs(result['relative_relaxed']['difference']).max():.3g} (relaxed); "
                    f"RMSD up to {max(result['rmsd_relaxed']):.3g} Å")
    return result, fig, message
