"""``pet-eval MODEL``: accuracy and rotational symmetry error of a PET model.

- Accuracy (the paper's Table I): MAE and RMSE of the energy (meV per frame and per molecule) and
  of the force components (meV/Å) against the labels of the frames, for the raw model and
  optionally for rotation-averaged ones (``--accuracy-grid``).
- Symmetry error (Table II): for each grid G, MAE over structures of |E_G - E_ref| (meV per
  frame and per molecule) and MAE over force components of F_G - F_ref (meV/Å), with the
  reference grid ``--reference`` (3i, as in the paper); "raw" is the model without averaging.
- A plot of the force symmetry error against the number of rotations (Fig. S1).

A molecule is counted as 3 atoms (H2O). Evaluation runs in float64 by default: in float32 the
rounding of total energies of ~10^4 eV reaches meV, the size of the errors measured here.
"""

import json
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from grids.averaging import make_evaluator
from grids.quadrature import grid_size, parse_grid_spec

from . import checkpoint
from .arguments import OneLineParser, positive_int
from .calculator import load_model, resolve_device
from .data import DataError, check_frame, default_dataset, read_structures
from .model import PET
from .models import default_model_path
from .neighbors import graph_from_atoms
from .output_paths import output_prefix

ATOMS_PER_MOLECULE = 3
SUBSETS = ("test", "validation", "train", "all")
UNITS = {"energy": "meV per frame", "energy_per_molecule": "meV per molecule (3 atoms)",
         "force": "meV/Å (per Cartesian component)"}

REPORT_KEYS = {
    "model": "the checkpoint evaluated",
    "data": "the file the frames came from",
    "subset": "test, validation, train (of the checkpoint's split) or all",
    "n_frames": "number of frames evaluated",
    "frame_indices": "their indices in the file",
    "n_atoms": "atoms of each frame",
    "labelled_frames": "frames with an energy or forces",
    "device": "torch device", "dtype": "float32 or float64",
    "units": "units of the numbers below",
    "accuracy": "mode (raw, 2i, ...) → ACCURACY_KEYS, against the labels; {} without labels",
    "symmetry": "{reference: grid, grids: mode → SYMMETRY_KEYS}, or null with --grids none",
    "seconds": "wall time", "files": "files written (PREFIX.json, PREFIX.png)",
}
"""Top-level keys of the JSON report."""

ACCURACY_KEYS = ("n_energy_frames", "energy_mae", "energy_rmse", "energy_per_molecule_mae",
                 "energy_per_molecule_rmse", "n_force_components", "force_mae", "force_rmse")
"""Errors of one mode against the labels (meV, meV per molecule, meV/Å; null where no label)."""

SYMMETRY_KEYS = ("n_rotations", "n_energy_frames", "energy_mae", "energy_per_molecule_mae",
                 "n_force_components", "force_mae")
"""Symmetry error of one mode against the reference grid (meV, meV per molecule, meV/Å)."""


def parse_modes(text: str) -> List[str]:
    """``"raw,1,2i"`` → ["raw", "1", "2i"]; ``"none"`` or "" → []; bad grids raise ValueError."""
    modes = [] if text.strip().lower() in ("", "none") else [m.strip() for m in text.split(",")]
    for mode in modes:
        if mode != "raw":
            parse_grid_spec(mode)
    return list(dict.fromkeys(modes))


def n_rotations(mode: str) -> int:
    """Rotations evaluated by ``mode``: 1 for the raw model, the grid size otherwise."""
    return 1 if mode == "raw" else grid_size(*parse_grid_spec(mode))


def labels(atoms):
    """(energy in eV or None, forces (N, 3) in eV/Å or None) stored with ``atoms``."""
    results = getattr(atoms.calc, "results", None) or {}
    energy, forces = results.get("energy"), results.get("forces")
    return (None if energy is None else float(energy),
            None if forces is None else np.asarray(forces, dtype=float))


def parse_frame_slice(text: Optional[str]) -> slice:
    """``START:STOP:STEP`` (Python's slice, any part may be empty; a single number K means K only)
    as a slice; ValueError for anything else."""
    if text is None:
        return slice(None)
    parts = text.split(":")
    try:
        values = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        values = None
    if values is None or len(parts) > 3 or (len(parts) == 3 and values[2] == 0):
        raise ValueError(f"--frames {text!r}: use START:STOP:STEP (e.g. 100::50), with a non-zero step")
    if len(parts) == 1:
        return slice(values[0], None if values[0] == -1 else values[0] + 1)
    return slice(*values)


def check_split_fits(n_frames: int, split: dict, source: str, whole_file: bool = False) -> None:
    """DataError unless a file of ``n_frames`` frames can be the one the checkpoint's ``split``
    was made on: exactly as many frames as the split when it was made on the ``whole_file`` (no
    max_frames), at least as many otherwise, and every index of the split in range."""
    made_on = split.get("n_frames", 0)
    if n_frames < made_on or (whole_file and n_frames != made_on):
        raise DataError(f"{source} has {n_frames} frames but the checkpoint's split was made on "
                        f"{'all ' if whole_file else ''}{made_on} frames of {split.get('path', '?')}: "
                        "pass the data it was trained on with --data, or use --subset all")
    largest = max((int(i) for part in ("train", "validation", "test") for i in split.get(part, [])),
                  default=-1)
    if largest >= n_frames:
        raise DataError(f"the checkpoint's split refers to frame {largest}; {source} has {n_frames}")


def select_frames(n_frames: int, split: dict, subset: str, max_frames: Optional[int],
                  source: str, frames: slice = slice(None), whole_file: bool = False) -> List[int]:
    """Indices of the frames to evaluate: the checkpoint split's ``subset`` (checked by
    :func:`check_split_fits`) or all, then the ``frames`` slice of those, at most ``max_frames``."""
    if subset == "all":
        indices = list(range(n_frames))
    else:
        if not split.get(subset):
            raise DataError(f"the checkpoint records no '{subset}' split: use --subset all")
        check_split_fits(n_frames, split, source, whole_file)
        indices = [int(i) for i in split[subset]]
    selected = indices[frames]
    if not selected:
        which = "" if subset == "all" else f"{subset} "
        raise DataError(f"--frames selects no frame of the {len(indices)} {which}frame(s) of {source}")
    indices = selected
    if max_frames is not None:
        indices = indices[:max_frames]
    return indices


class Errors:
    """Running sums of energy and force differences over frames; :meth:`summary` in meV."""

    def __init__(self):
        self.energy, self.per_molecule = [], []
        self.force_abs = self.force_sq = 0.0
        self.force_count = 0

    def add(self, n_atoms: int, energy: Optional[float] = None, forces: Optional[np.ndarray] = None):
        """Add one frame's differences: ``energy`` in eV, ``forces`` (N, 3) in eV/Å (None: absent)."""
        if energy is not None:
            self.energy.append(1000 * energy)
            self.per_molecule.append(1000 * energy * ATOMS_PER_MOLECULE / n_atoms)
        if forces is not None:
            self.force_abs += 1000 * float(np.abs(forces).sum())
            self.force_sq += 1e6 * float(np.square(forces).sum())
            self.force_count += forces.size

    def summary(self, rmse: bool = True) -> dict:
        """MAE (and RMSE) in meV, meV per molecule and meV/Å; None where nothing was added."""
        force_mae = self.force_abs / self.force_count if self.force_count else None
        force_rmse = float(np.sqrt(self.force_sq / self.force_count)) if self.force_count else None
        result = {"n_energy_frames": len(self.energy), "energy_mae": _mae(self.energy),
                  "energy_rmse": _rmse(self.energy), "energy_per_molecule_mae": _mae(self.per_molecule),
                  "energy_per_molecule_rmse": _rmse(self.per_molecule),
                  "n_force_components": self.force_count, "force_mae": force_mae, "force_rmse": force_rmse}
        return result if rmse else {k: v for k, v in result.items() if not k.endswith("_rmse")}


def _mae(values) -> Optional[float]:
    return float(np.mean(np.abs(values))) if len(values) else None


def _rmse(values) -> Optional[float]:
    return float(np.sqrt(np.mean(np.square(values)))) if len(values) else None


def check_species(model: PET, structures: Sequence) -> None:
    """ValueError naming any element of ``structures`` that ``model`` does not know."""
    numbers = np.unique(np.concatenate([a.numbers for a in structures]))
    model.species_index(torch.as_tensor(numbers))


def evaluate(model: PET, structures: Sequence, grids: Sequence[str] = ("raw", "1", "2", "2i", "3", "3i"),
             reference: str = "3i", accuracy: Sequence[str] = ("raw",), chunk_size: Optional[int] = None,
             progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """Accuracy of the modes ``accuracy`` against the labels of ``structures`` (where present) and
    the symmetry error of each of ``grids`` against ``reference`` (no symmetry part if ``grids`` is
    empty). ``progress(done, total)`` is called after every frame. Returns the "accuracy" and
    "symmetry" parts of the JSON report (:data:`REPORT_KEYS`)."""
    grids, accuracy = list(grids), list(accuracy)
    modes = list(dict.fromkeys(accuracy + grids + ([reference] if grids else [])))
    evaluators = {mode: make_evaluator(model, mode, chunk_size=chunk_size) for mode in modes}
    parameter = next(model.parameters())
    accuracy_errors = {mode: Errors() for mode in accuracy}
    symmetry_errors = {mode: Errors() for mode in grids}
    for done, atoms in enumerate(structures, start=1):
        graph = graph_from_atoms(atoms, model.hypers.cutoff).to(parameter.device, parameter.dtype)
        results = {}
        for mode in modes:
            result = evaluators[mode](graph, forces=True, virial=False)
            results[mode] = (float(result.energy[0]), result.forces.detach().cpu().double().numpy())
        energy, forces = labels(atoms)
        for mode in accuracy:
            accuracy_errors[mode].add(len(atoms), None if energy is None else results[mode][0] - energy,
                                      None if forces is None else results[mode][1] - forces)
        for mode in grids:
            symmetry_errors[mode].add(len(atoms), results[mode][0] - results[reference][0],
                                      results[mode][1] - results[reference][1])
        if progress:
            progress(done, len(structures))
    report = {"accuracy": {}, "symmetry": None}
    for mode, errors in accuracy_errors.items():
        if errors.energy or errors.force_count:
            report["accuracy"][mode] = errors.summary()
    if grids:
        report["symmetry"] = {
            "reference": reference,
            "grids": {mode: {"n_rotations": n_rotations(mode), **errors.summary(rmse=False)}
                      for mode, errors in symmetry_errors.items()},
        }
    return report


def _cell(value, decimals: int, width: int = 9) -> str:
    return " " + (f"{'-':>{width}}" if value is None else f"{value:>{width}.{decimals}f}")


def format_table(report: dict) -> str:
    """The report as readable text tables."""
    lines = [f"{report['model']} on {report['n_frames']} frame(s) ({report['subset']}) of {report['data']}"]
    if report["accuracy"]:
        lines += ["", "accuracy against the labels: MAE and RMSE",
                  f"{'model':<6} {'frames':>6} {'E meV/frame':>20} {'E meV/molecule':>20} {'F meV/Å':>20}",
                  f"{'':<13}" + f" {'MAE':>9} {'RMSE':>9}" * 3]
        for mode, e in report["accuracy"].items():
            lines.append(f"{mode:<6} {e['n_energy_frames']:>6} "
                         f"{_cell(e['energy_mae'], 2)}{_cell(e['energy_rmse'], 2)} "
                         f"{_cell(e['energy_per_molecule_mae'], 3)}{_cell(e['energy_per_molecule_rmse'], 3)} "
                         f"{_cell(e['force_mae'], 2)}{_cell(e['force_rmse'], 2)}")
    else:
        lines += ["", "accuracy: no frame carries an energy or forces"]
    if report["symmetry"]:
        lines += ["", f"symmetry error against {report['symmetry']['reference']}: MAE",
                  f"{'grid':<6} {'rotations':>9}  {'E meV/frame':>11}  {'E meV/molecule':>14}  {'F meV/Å':>10}"]
        for mode, e in report["symmetry"]["grids"].items():
            lines.append(f"{mode:<6} {e['n_rotations']:>9} {_cell(e['energy_mae'], 3, 12)} "
                         f"{_cell(e['energy_per_molecule_mae'], 4, 14)} {_cell(e['force_mae'], 4, 10)}")
    return "\n".join(lines)


def plot_symmetry(symmetry: dict, path: Path) -> bool:
    """Fig. S1: force symmetry error (meV/Å) against the number of rotations, log-log.
    Grids with a zero error (the reference) cannot be shown; returns False if none is left."""
    points = [(mode, e["n_rotations"], e["force_mae"]) for mode, e in symmetry["grids"].items()
              if e["force_mae"] > 0]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.5, 3.5))
    for mode, count, error in points:
        raw = mode == "raw"
        axes.plot(count, error, "s" if raw else "o", color="C1" if raw else "C0")
        axes.annotate("raw model" if raw else mode, (count, error), textcoords="offset points",
                      xytext=(6, -12) if raw else (6, 3), color="C1" if raw else "black")
    grid_points = sorted((c, e) for m, c, e in points if m != "raw")
    if len(grid_points) > 1:
        axes.plot(*zip(*grid_points), "-", color="C0", alpha=0.5)
    axes.set(xscale="log", yscale="log", xlabel="number of rotations",
             ylabel=f"force symmetry error vs {symmetry['reference']} (meV/Å)")
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
    return True


def _progress_printer(stream=sys.stderr, every_s: float = 5.0):
    started, last = time.time(), [0.0]

    def progress(done, total):
        now = time.time() - started
        if done in (1, total) or now - last[0] >= every_s:
            last[0] = now
            eta = now / done * (total - done)
            print(f"  frame {done}/{total}  {now:.0f} s elapsed, ~{eta:.0f} s left", file=stream, flush=True)

    return progress


def training_data_config(stored: dict) -> Optional[dict]:
    """The ``data`` section of the training config a checkpoint dict records, or None."""
    config = (stored.get("metadata") or {}).get("config")
    data = config.get("data") if isinstance(config, dict) else None
    return data if isinstance(data, dict) else None


def data_file(given: Optional[str], stored: dict) -> Path:
    """The file of the frames: ``given`` (--data), else the one the checkpoint's split records,
    else the default data set (when the split records no file, or the model was trained on the
    default data set and the recorded file is not here). DataError when the recorded file of
    other data is not found: indices of one file must not be applied to another."""
    if given:
        return Path(given).expanduser()
    recorded = (stored.get("split") or {}).get("path")
    if not recorded:
        return default_dataset()
    if Path(recorded).is_file():
        return Path(recorded)
    trained_on = training_data_config(stored)
    if trained_on is not None and trained_on.get("path") is None:
        return default_dataset()
    raise DataError(f"the checkpoint's data file {recorded} is not found (moved, or a relative "
                    "path from another directory): pass the data file with --data FILE "
                    "--subset test (with --data alone every frame is evaluated, training frames too)")


def default_subset(given: Optional[str], split: dict) -> str:
    """The frames evaluated without --subset: the test frames of the checkpoint's ``split``
    without --data (``given``) or when --data is the very file the split records (the same
    resolved path); every frame of any other file."""
    if not given:
        return "test"
    recorded = split.get("path")
    same = recorded is not None and Path(given).expanduser().resolve() == Path(recorded).resolve()
    return "test" if same else "all"


def output_files(text: str) -> Tuple[Path, Path]:
    """(PREFIX.json, PREFIX.png) for ``--out text`` (PREFIX is ``text``, or ``text/pet-eval`` for a
    folder, as in pet-analyze), the folder made and checked writable before any frame is evaluated;
    ValueError naming --out otherwise."""
    prefix = output_prefix(text, "pet-eval")
    json_path, png_path = (prefix.with_name(prefix.name + suffix) for suffix in (".json", ".png"))
    for path in (json_path, png_path):
        if path.is_dir():
            raise ValueError(f"--out {text}: {path} is a directory")
    return json_path, png_path


def run(args) -> dict:
    """Everything :func:`main` does but printing the table; returns the JSON report."""
    started = time.time()
    grids = parse_modes(args.grids)
    accuracy = ["raw"] + [m for m in parse_modes(args.accuracy_grid) if m != "raw"]
    if grids:
        parse_grid_spec(args.reference)
    frame_slice = parse_frame_slice(args.frames)
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        raise ValueError(f"--device: {error}") from None
    outputs = output_files(args.out) if args.out is not None else None

    model_path = Path(args.model) if args.model else default_model_path()
    stored = checkpoint.read(model_path)
    split = stored.get("split") or {}
    model = load_model(checkpoint.model_from_dict(stored, f"checkpoint {model_path}"), device, args.dtype)
    subset = args.subset or default_subset(args.data, split)
    if subset != "all" and not split:
        raise DataError(f"{model_path} records no data split: use --subset all (with --data FILE)")
    data = data_file(args.data, stored)
    structures = read_structures(data)
    trained_on = training_data_config(stored)
    whole_file = trained_on is not None and trained_on.get("max_frames") is None
    indices = select_frames(len(structures), split, subset, args.max_frames, str(data), frame_slice,
                            whole_file)
    structures = [structures[i] for i in indices]
    for index, atoms in zip(indices, structures):
        check_frame(atoms, f"{data}: frame {index}")
    check_species(model, structures)
    n_labelled = sum(any(x is not None for x in labels(a)) for a in structures)
    if len(accuracy) > 1 and n_labelled == 0:
        raise DataError(f"{data}: no frame carries energies or forces: cannot compute the accuracy "
                        f"of {args.accuracy_grid}")

    modes = list(dict.fromkeys(accuracy + grids + ([args.reference] if grids else [])))
    print(f"pet-eval: {len(structures)} frame(s) ({subset}) of {data}, modes {', '.join(modes)} "
          f"({sum(n_rotations(m) for m in modes)} evaluations per frame)", file=sys.stderr, flush=True)
    report = {"model": str(model_path), "data": str(data), "subset": subset,
              "n_frames": len(structures), "frame_indices": indices,
              "n_atoms": [len(a) for a in structures], "labelled_frames": n_labelled,
              "device": device, "dtype": args.dtype, "units": UNITS}
    report.update(evaluate(model, structures, grids, args.reference, accuracy, args.chunk_size,
                           progress=_progress_printer()))
    report["seconds"] = time.time() - started
    report["files"] = []
    if outputs:
        json_path, png_path = outputs
        report["files"].append(str(json_path))
        if report["symmetry"] and plot_symmetry(report["symmetry"], png_path):
            report["files"].append(str(png_path))
        json_path.write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv=None) -> int:
    parser = OneLineParser(
        prog="pet-eval",
        description="Accuracy (MAE/RMSE of E and F) and rotational symmetry error (against a "
                    "reference grid) of a PET model.",
        epilog="examples: pet-eval runs/small/best.pt;  pet-eval --data trajectory.xyz --grids raw,2i "
               "--out symmetry-md")
    parser.add_argument("model", nargs="?", help="checkpoint (default: $PET_IPI_MODEL or the shipped model)")
    parser.add_argument("--data", help="any ASE-readable file or i-PI xyz trajectory of positions "
                        "(default: the file the checkpoint's split records, an error if it is not found "
                        "unless the model was trained on the default data set, which is then used; "
                        "no recorded file: the default data set, $PET_IPI_DATA if set)")
    parser.add_argument("--subset", choices=SUBSETS, help="frames of the checkpoint's split to "
                        "evaluate (default: test without --data or when --data is the file the "
                        "split records, else all)")
    parser.add_argument("--frames", metavar="START:STOP:STEP",
                        help="a slice of the selected frames, e.g. 100::50 for every 50th from frame 100 "
                             "of a trajectory (default: all)")
    parser.add_argument("--max-frames", type=positive_int, metavar="N",
                        help="evaluate at most this many frames (after --frames)")
    parser.add_argument("--grids", default="raw,1,2,2i,3,3i",
                        help="modes whose symmetry error is computed, 'none' for none (default: %(default)s)")
    parser.add_argument("--reference", default="3i", help="reference grid of the symmetry error (default: %(default)s)")
    parser.add_argument("--accuracy-grid", default="",
                        help="also the accuracy of these averaged models, e.g. 2i or 2i,3i (the raw "
                             "model's accuracy is always computed)")
    parser.add_argument("--out", metavar="PREFIX", help="write PREFIX.json and PREFIX.png (the "
                        "symmetry plot); an existing folder (or one ending in /): FOLDER/pet-eval.json and .png")
    parser.add_argument("--device", default="cpu",
                        help="torch device: cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"),
                        help="floating-point precision of the model (default: %(default)s; float32 "
                             "rounds energies of ~10^4 eV by ~1 meV)")
    parser.add_argument("--chunk-size", type=positive_int, metavar="K",
                        help="most rotated copies per forward pass (default: automatic)")
    args = parser.parse_args(argv)
    try:
        report = run(args)
    except (DataError, checkpoint.CheckpointError, ValueError, OSError) as error:
        print(f"pet-eval: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pet-eval: interrupted", file=sys.stderr)
        return 130
    print(format_table(report))
    if args.out:
        print(f"wrote {', '.join(report['files'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
