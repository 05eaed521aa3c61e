"""Ice Ih: the raw model against its rotation average on proton-disordered cells.

Three comparisons, per cell (the paper's numbers, for the 2i grid: forces differ by less than
1 meV/Å, relative energies by ~0.02 meV/molecule, relaxed geometries lie ~0.001 Å apart; the
README's Analyses section describes the options):

- forces on the initial (idealised) cells: ΔF = F_raw − F_avg per atom; mean absolute component,
  RMS and largest |ΔF_i| in meV/Å;
- relative energies per molecule: e_k = E_k / M_k minus its mean over the cells, for the raw and
  the averaged model, on the initial cells and (when given) on each model's own relaxed geometry
  (i-PI minimiser outputs, last frame), and their difference in meV/molecule;
- RMSD between the raw- and the average-relaxed geometries of a cell: minimum-image differences
  of the atomic positions, their mean (a rigid translation) removed, root mean square in Å.

Cells analysed in separate runs (a relaxation per session) are combined with ``--merge``: the
earlier JSON results come first and the relative energies are recomputed over all the cells from
the absolute energies each result stores; the results record the cell indices, the grid, the
dtype and the model's SHA-256 so that only results of the same model are combined.

The model compared with the raw one is ``--grid``: a rotation grid N or Ni (the rotation
average; default 2i) or ``random`` (the raw model on one random rotation per evaluation, drawn
from ``--seed``, default 0, so that a run can be repeated); ``raw`` is refused (it would compare
the raw model with itself). Energies and forces come from :class:`pet.calculator.PETCalculator`
with the given checkpoint (torch is imported only when this analysis runs).
"""

import argparse
import json
import sys
from pathlib import Path
from typing import List, Tuple

import ase.io
from ase.io.formats import string2index
import numpy as np

from grids.quadrature import parse_grid_spec
from pet.arguments import non_negative_int, positive_int

from .errors import AnalysisError
from .ipi_files import existing_file, read_trajectory
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


def with_relative_energies(result: dict) -> dict:
    """``result`` with ``relative_initial`` (and ``relative_relaxed`` where it has relaxed energies):
    raw, avg and their difference, in meV/molecule, from the absolute energies of its cells."""
    for stage in ("initial", "relaxed"):
        energies = result.get(f"energy_{stage}")
        if energies is None:
            continue
        relative = {key: relative_per_molecule(energies[key], result["n_molecules"]) for key in ("raw", "avg")}
        relative["difference"] = relative["raw"] - relative["avg"]
        result[f"relative_{stage}"] = relative
    return result


def compare_cells(cells, raw_calculator, avg_calculator, relaxed_raw=None, relaxed_avg=None,
                  compared: str = "averaged model") -> dict:
    """Per-cell force differences, relative energies and RMSDs (see the module docstring);
    ``compared`` names ``avg_calculator`` in the progress lines."""
    n_molecules = [atoms.get_chemical_symbols().count("O") for atoms in cells]
    energies = {"raw": [], "avg": []}
    forces = []
    for k, atoms in enumerate(cells):
        print(f"ice: cell {k + 1}/{len(cells)} ({len(atoms)} atoms): raw and {compared}", file=sys.stderr)
        e_raw, f_raw = _evaluate(raw_calculator, atoms)
        e_avg, f_avg = _evaluate(avg_calculator, atoms)
        energies["raw"].append(e_raw)
        energies["avg"].append(e_avg)
        forces.append(force_differences(f_raw, f_avg))
    result = {"n_molecules": n_molecules, "forces_initial": forces, "energy_initial": energies}
    if relaxed_raw is not None:
        relaxed = {"raw": [], "avg": []}
        result["rmsd_relaxed"] = []
        for k, (atoms_raw, atoms_avg) in enumerate(zip(relaxed_raw, relaxed_avg)):
            print(f"ice: relaxed cell {k + 1}/{len(cells)}", file=sys.stderr)
            relaxed["raw"].append(_evaluate(raw_calculator, atoms_raw)[0])
            relaxed["avg"].append(_evaluate(avg_calculator, atoms_avg)[0])
            result["rmsd_relaxed"].append(rmsd(atoms_raw.positions, atoms_avg.positions, np.asarray(atoms_raw.cell)))
        result["energy_relaxed"] = relaxed
    return with_relative_energies(result)


PER_CELL = ("cells", "n_molecules", "forces_initial", "rmsd_relaxed")
"""The per-cell lists of a result; energy_initial and energy_relaxed hold one list per model."""


def check_mergeable(earlier: List[Tuple[str, dict]], cells: List[int], provenance: dict, relaxed: bool) -> None:
    """AnalysisError unless the earlier results (name, JSON of this analysis) can be merged with
    this run's (before its model evaluation): ``cells`` its cell indices, ``provenance`` its grid,
    dtype and model_sha256, ``relaxed`` whether it has relaxed geometries.

    They must share the grid, the model (SHA-256, where recorded: a missing one is reported on
    stderr) and the dtype (where recorded); all or none of them must have relaxed geometries; a
    cell may appear only once.
    """
    seen = set(cells)
    for name, other in earlier:
        if "cells" not in other:
            raise AnalysisError(f"{name} does not say which cells it holds (written before pet-analyze "
                                'recorded them): add "cells": [indices from 0 in the cells file] to it')
        for key in ("grid", "dtype", "model_sha256"):
            if key in other and other[key] != provenance[key]:
                raise AnalysisError(f"{name}: {key} {other[key]} differs from this run's {provenance[key]}")
        if "model_sha256" not in other:
            print(f"ice: {name} does not record its model's SHA-256: it is taken to be this run's model "
                  f"({provenance['model']})", file=sys.stderr)
        if ("energy_relaxed" in other) != relaxed:
            raise AnalysisError(f"{name}: relaxed geometries in some results and not in others: merge "
                                "results of the same kind")
        repeated = sorted(seen & set(other["cells"]))
        if repeated:
            raise AnalysisError(f"{name}: cells {repeated} appear twice")
        seen |= set(other["cells"])


def merge_results(earlier: List[Tuple[str, dict]], result: dict) -> dict:
    """The cells of earlier results (name, JSON of this analysis, passed by
    :func:`check_mergeable`) followed by those of ``result``, relative energies taken over all of them."""
    parts = [other for _, other in earlier] + [result]
    merged = {key: [value for part in parts for value in part[key]] for key in PER_CELL if key in result}
    for energies in ("energy_initial", "energy_relaxed"):
        if energies in result:
            merged[energies] = {key: [value for part in parts for value in part[energies][key]]
                                for key in ("raw", "avg")}
    return with_relative_energies(merged)


def _read_results(paths) -> List[Tuple[str, dict]]:
    results = []
    for path in paths:
        try:
            results.append((path, json.loads(existing_file(path).read_text())))
        except (OSError, ValueError) as error:
            raise AnalysisError(f"{path}: not a JSON file ({error})") from None
        if not isinstance(results[-1][1], dict) or "energy_initial" not in results[-1][1]:
            raise AnalysisError(f"{path}: not a result of pet-analyze ice")
    return results


def add_arguments(parser):
    parser.add_argument("cells", help="the initial ice cells (extended XYZ, several frames)")
    parser.add_argument("--model", help="PET checkpoint (default: $PET_IPI_MODEL or the shipped model)")
    parser.add_argument("--grid", type=compared_model, default="2i",
                        help="the model compared with raw: a rotation grid N or Ni (the average; default 2i), "
                             "or random (one random rotation per evaluation, seeded by --seed)")
    parser.add_argument("--seed", type=non_negative_int,
                        help="seed of the random rotations of --grid random, a non-negative integer (default 0)")
    parser.add_argument("--index", type=ase_index, default=":",
                        help="which frames of CELLS, ASE syntax: N, START:STOP[:STEP] (default ':')")
    parser.add_argument("--relaxed-raw", nargs="+", metavar="TRAJ",
                        help="positions trajectories of the raw-model relaxations, one per cell, in order")
    parser.add_argument("--relaxed-avg", nargs="+", metavar="TRAJ",
                        help="positions trajectories of the averaged-model relaxations, one per cell, in order")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="earlier results of this analysis (same model, grid and dtype, other cells): "
                             "their cells come first and the relative energies are taken over all cells")
    parser.add_argument("--device", type=torch_device, default="cpu",
                        help="torch device: cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"], help="default float64")
    parser.add_argument("--chunk-size", type=positive_int, help="most rotated copies per forward pass")


def compared_model(text: str) -> str:
    """argparse type of --grid: a rotation grid spec (N or Ni, checked by
    :func:`grids.quadrature.parse_grid_spec`) or 'random'; 'raw' is refused."""
    text = text.strip()
    if text == "raw":
        raise argparse.ArgumentTypeError("'raw' would compare the raw model with itself (every difference "
                                         "zero): give the model to compare with raw, a rotation grid N or Ni "
                                         "(e.g. 2i) or random")
    if text != "random":
        try:
            parse_grid_spec(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _compared_calculator(args, model, calculator):
    """The PETCalculator of --grid (``calculator``: the class) and the provenance it adds to the
    results (``seed`` for --grid random)."""
    if args.grid != "random":
        return calculator(model, grid=args.grid, device=args.device, dtype=args.dtype,
                          chunk_size=args.chunk_size), {}
    seed = 0 if args.seed is None else args.seed
    return calculator(model, random_rotation=True, seed=seed, device=args.device, dtype=args.dtype), {"seed": seed}


def ase_index(text: str) -> str:
    """argparse type: ``text`` checked to be ASE's index syntax of a frame or a slice (3, -1, 0:3, ::2)."""
    try:
        selection = string2index(text)
    except ValueError:
        selection = None
    if not isinstance(selection, (int, slice)):  # string2index passes other text through (a name)
        raise argparse.ArgumentTypeError(f"'{text}' is not an ASE index (e.g. 3, 0:3, -1)")
    return text


def torch_device(text: str) -> str:
    """argparse type: a torch device this machine has (imports torch, as this analysis does anyway)."""
    from pet.calculator import resolve_device

    try:
        return resolve_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _read_cells(path, index: str) -> Tuple[List[int], List[ase.Atoms]]:
    """The frames ``index`` (ASE syntax, checked by :func:`ase_index`) of the cells file, with
    their indices from 0."""
    selection = string2index(index)
    try:
        frames = ase.io.read(existing_file(path), ":")
    except AnalysisError:
        raise
    except Exception as error:
        raise AnalysisError(f"{path}: cannot read the cells ({type(error).__name__}: {error})") from None
    if not frames:
        raise AnalysisError(f"{path}: no structures in it (the cells must be extended XYZ frames)")
    indices = list(range(len(frames)))
    try:
        chosen = indices[selection] if isinstance(selection, slice) else [indices[selection]]
    except IndexError:
        raise AnalysisError(f"--index {index}: {path} holds {len(frames)} cells") from None
    if not chosen:
        raise AnalysisError(f"--index {index}: selects none of the {len(frames)} cells of {path}")
    return chosen, [frames[k] for k in chosen]


def _relaxed_pairs(args, cells):
    """The last frames of the --relaxed-raw and --relaxed-avg trajectories, one per cell (None, None
    without them)."""
    if (args.relaxed_raw is None) != (args.relaxed_avg is None):
        raise AnalysisError("give both --relaxed-raw and --relaxed-avg, or neither")
    if args.relaxed_raw is None:
        return None, None
    for option, paths in (("--relaxed-raw", args.relaxed_raw), ("--relaxed-avg", args.relaxed_avg)):
        if len(paths) != len(cells):
            raise AnalysisError(f"{option}: {len(paths)} files for {len(cells)} cells")
    return ([_relaxed(path, atoms) for path, atoms in zip(args.relaxed_raw, cells)],
            [_relaxed(path, atoms) for path, atoms in zip(args.relaxed_avg, cells)])


def run(args):
    if args.seed is not None and args.grid != "random":
        raise AnalysisError(f"--seed applies to --grid random only (grid {args.grid} has no randomness)")
    indices, cells = _read_cells(args.cells, args.index)
    relaxed_raw, relaxed_avg = _relaxed_pairs(args, cells)
    earlier = _read_results(args.merge or [])
    from pet.calculator import PETCalculator, load_model
    from pet.checkpoint import CheckpointError, file_sha256
    from pet.models import default_model_path

    try:
        model = load_model(args.model, args.device, args.dtype)
        raw = PETCalculator(model, device=args.device, dtype=args.dtype)
        average, randomness = _compared_calculator(args, model, PETCalculator)
    except (CheckpointError, ValueError) as error:
        raise AnalysisError(str(error)) from None
    model_path = Path(args.model or default_model_path())
    provenance = {"grid": args.grid, "dtype": args.dtype, "model": str(model_path),
                  "model_sha256": file_sha256(model_path), **randomness}
    check_mergeable(earlier, indices, provenance, relaxed_raw is not None)
    compared = "randomly rotated model" if args.grid == "random" else f"{args.grid}-averaged model"
    result = {"cells": indices, **compare_cells(cells, raw, average, relaxed_raw, relaxed_avg, compared), **provenance}
    if earlier:
        result = {**merge_results(earlier, result), **provenance, "merged": [name for name, _ in earlier]}
    result["units"] = {"forces": "meV/angstrom", "relative": "meV/molecule", "energy": "eV", "rmsd": "angstrom"}
    return (result, *plot(result))


def plot(result: dict):
    """The figure of a result of this analysis (as ``run`` returns or its JSON holds) and a summary
    line; the cells are labelled by their indices in the cells file, from 0 (as ``--frame``)."""
    grid = result["grid"]
    relaxed = "rmsd_relaxed" in result
    fig, axes = figure(3 if relaxed else 2, width=4.5)
    number = np.asarray(result["cells"])
    axes[0].semilogy(number, [entry["mae"] for entry in result["forces_initial"]], "o", label="MAE")
    axes[0].semilogy(number, [entry["max_atom"] for entry in result["forces_initial"]], "s", label="max atom")
    axes[0].set(xlabel="cell (index from 0)", ylabel=f"|F_raw − F_{grid}| (meV/Å)", title="initial cells")
    axes[0].legend()
    for key, marker, colour in (("raw", "o", "C0"), ("avg", "s", "C1")):
        axes[1].plot(number, result["relative_initial"][key], marker, color=colour, label=f"{key} initial")
        if relaxed:
            axes[1].plot(number, result["relative_relaxed"][key], marker, color=colour, mfc="none",
                         label=f"{key} relaxed")
    axes[1].axhline(0.0, color="0.7", lw=0.8)
    axes[1].set(xlabel="cell (index from 0)", ylabel="E/molecule − mean over the cells (meV)")
    axes[1].legend(fontsize="small")
    if relaxed:
        axes[2].semilogy(number, result["rmsd_relaxed"], "o")
        axes[2].set(xlabel="cell (index from 0)", ylabel="RMSD raw vs averaged relaxed (Å)")
    for axis in axes:
        axis.set_xticks(number)
    worst = max(entry["max_atom"] for entry in result["forces_initial"])
    message = (f"{len(number)} cells: max |ΔF| {worst:.3g} meV/Å, relative energies differ by up to "
               f"{np.abs(result['relative_initial']['difference']).max():.3g} meV/molecule (initial)")
    if relaxed:
        message += (f", {np.abs(result['relative_relaxed']['difference']).max():.3g} (relaxed); "
                    f"RMSD up to {max(result['rmsd_relaxed']):.3g} Å")
    return fig, message
