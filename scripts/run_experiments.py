"""Run the experiments of inputs/ at laptop scale, then their analyses: PNG + JSON per analysis.

    .venv/bin/python scripts/run_experiments.py                  # the four of the study, the shipped model
    .venv/bin/python scripts/run_experiments.py stability        # the 10 ps stability checks (long)
    .venv/bin/python scripts/run_experiments.py gas-nve ice-relax --model runs/small/best.pt
    .venv/bin/python scripts/run_experiments.py --quick --model tiny.pt   # a few steps each

Runs go to ``runs/experiments/<experiment>/<variant>/`` (i-PI's outputs, pet-run's logs), the
results of ``pet-analyze`` to ``runs/experiments/results/<experiment>/<variant>-<analysis>.{png,json}``,
and for each experiment its provenance to ``.../results/<experiment>/timings.json`` (the model's path
and SHA-256, the steps of every run, the wall time of every step). ``--results docs/results``
publishes them in the project's results folder instead, replacing the files of the same names
(docs/results holds longer runs than these: look before you replace). ``--scale X`` multiplies the
length of every run by X (``--scale 8``: gas-nvt runs of 4 ps instead of 0.5). ``--quick`` runs a
few steps of each (to check the whole chain, e.g. with a tiny random model) into
``runs/experiments-quick/``.

The lengths (outer steps; see each input folder's README.md) are chosen for about 25 minutes for
the default four on a 2-core CPU with the shipped model (measured: 25.7 min with --threads 2;
stability adds about 50 min): molecules in float64 (gas-nve, for energy conservation) or
float32, the 64-molecule box in float32, the ice cells in float64 (in float32, atomic energies of
~-150 eV carry ~1e-5 eV of round-off each, ~1e-4 eV summed over a 288-atom cell, about i-PI's
energy tolerance of 8e-5 eV for it: a float32 relaxation of cell 0 ran on at constant energy).
They are far too short for converged numbers: they show what each analysis gives; the input folders
hold the lengths for a real study (GPU or HPC, scripts/hpc/).
"""

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GNVT_GRIDS = ["raw", "1", "2", "2i", "3", "3i"]
ICE_CELLS = [0, 1, 2]
"""The three smallest ice cells (96 molecules each)."""
ICE_FILE = "ice-ih-hayward-reimers.xyz"
GOFR_REFERENCES = ["goo-revpbe0-nnp-300K.dat:bohr", "goo-experiment-295K.dat"]


@dataclass
class Run:
    """One pet-run of an input folder: ``options`` for pet-run, ``steps`` (full) or ``quick``."""

    name: str
    folder: str
    steps: int
    quick: int
    dt_fs: float
    dtype: str
    options: List[str] = field(default_factory=list)


def runs_of(experiment: str, runs_dir: Path) -> List[Run]:
    """The pet-runs of ``experiment``, in order (later ones may start from earlier outputs)."""
    if experiment == "gas-nve":
        return [Run("raw", experiment, 200, 5, 5.0, "float64", ["--grid", "raw"]),
                Run("mts", experiment, 200, 5, 5.0, "float64"),
                Run("avg", experiment, 2000, 50, 0.5, "float64", ["--mts", "1"])]
    if experiment == "gas-nvt":
        return [Run(grid, experiment, 1000, 100, 0.5, "float32", ["--grid", grid]) for grid in GNVT_GRIDS]
    if experiment == "bulk-nvt":
        equilibrated = ["--structure", str(runs_dir / "bulk-nvt" / "equilibration" / "simulation.pos_0.xyz"),
                        "--frame", "-1"]
        return [Run("equilibration", experiment, 60, 4, 5.0, "float32", ["--grid", "raw"]),
                Run("raw", experiment, 80, 32, 5.0, "float32", ["--grid", "raw"] + equilibrated),
                Run("mts", experiment, 32, 32, 5.0, "float32", equilibrated),
                Run("random", experiment, 800, 320, 0.5, "float32", ["--grid", "random", "--mts", "1"] + equilibrated)]
    if experiment == "stability":
        return [Run("gas", "stability-gas", 20000, 20, 0.5, "float32"),
                Run("bulk", "bulk-nvt", 2000, 4, 5.0, "float32", ["--grid", "raw"])]
    if experiment == "ice-relax":  # raw to convergence, then 2i from the raw minimum (36× dearer per step)
        runs = []
        for k in ICE_CELLS:
            raw_minimum = runs_dir / experiment / f"cell{k}-raw" / "simulation.pos_0.xyz"
            runs += [Run(f"cell{k}-raw", experiment, 1000, 2, 0.0, "float64", ["--frame", str(k), "--grid", "raw"]),
                     Run(f"cell{k}-2i", experiment, 60, 2, 0.0, "float64",
                         ["--structure", str(raw_minimum), "--frame", "-1"])]
        return runs
    raise ValueError(experiment)


def analyses_of(experiment: str, runs_dir: Path, results: Path, model: str, shared: Path, quick: bool):
    """(output name, pet-analyze arguments) of ``experiment``, from the outputs of its runs."""
    folder = runs_dir / experiment
    few = quick  # short trajectories: fewer blocks and segments
    found = []

    def out(name):
        return ["--out", str(results / experiment / name)]

    if experiment == "gas-nve":
        for run in runs_of(experiment, runs_dir):
            path = folder / run.name
            found.append((f"{run.name}-angular-momentum", ["angular-momentum", str(path / "simulation.pos_0.xyz"),
                          str(path / "simulation.vel_0.xyz"), "--dt", str(run.dt_fs)] + out(f"{run.name}-angular-momentum")))
            found.append((f"{run.name}-drift", ["drift", str(path / "simulation.out"), "--molecules", "1"]
                          + out(f"{run.name}-drift")))
        found.append(("mts-spectrum", ["spectrum", str(folder / "mts" / "simulation.out"), "--segments",
                                       "2" if few else "4"] + out("mts-spectrum")))
    elif experiment == "gas-nvt":
        torque = ["torque", "--blocks", "2" if few else "5"]
        for grid in GNVT_GRIDS:
            path = folder / grid
            torque += ["--run", grid, str(path / "simulation.pos_0.xyz"), str(path / "simulation.frc_0.xyz")]
            found.append((f"{grid}-orientation", ["orientation", str(path / "simulation.pos_0.xyz"),
                          "--bins-cos", "4" if few else "6", "--bins-phi", "4" if few else "8",
                          "--blocks", "2" if few else "5"] + out(f"{grid}-orientation")))
        found.append(("torque", torque + out("torque")))
    elif experiment == "bulk-nvt":
        references = [arg for ref in GOFR_REFERENCES for arg in ("--reference", str(shared / ref))]
        blocks = "2" if few else "4"
        for run in runs_of(experiment, runs_dir)[1:]:
            path = folder / run.name
            positions = str(path / "simulation.pos_0.xyz")
            found += [
                (f"{run.name}-gofr", ["gofr", positions, "--blocks", blocks] + references + out(f"{run.name}-gofr")),
                (f"{run.name}-orientation-correlation", ["orientation-correlation", positions, "--r-max", "6",
                 "--blocks", blocks] + out(f"{run.name}-orientation-correlation")),
                (f"{run.name}-diffusion", ["diffusion", positions, "--dt", str(run.dt_fs), "--blocks", "2"]
                 + out(f"{run.name}-diffusion")),
                (f"{run.name}-dipole-acf", ["dipole-acf", positions, "--dt", str(run.dt_fs)]
                 + out(f"{run.name}-dipole-acf")),
                (f"{run.name}-drift", ["drift", str(path / "simulation.out"), "--molecules", "64"]
                 + out(f"{run.name}-drift")),
            ]
        for name in ("mts", "random"):
            found.append((f"{name}-spectrum", ["spectrum", str(folder / name / "simulation.out"),
                          "--segments", "2" if few else "4"] + out(f"{name}-spectrum")))
    elif experiment == "stability":
        for run, molecules in zip(runs_of(experiment, runs_dir), (1, 64)):
            path = folder / run.name
            found += [(f"{run.name}-intact", ["intact", str(path / "simulation.pos_0.xyz"), "--dt", str(run.dt_fs)]
                       + out(f"{run.name}-intact")),
                      (f"{run.name}-drift", ["drift", str(path / "simulation.out"), "--molecules", str(molecules)]
                       + out(f"{run.name}-drift"))]
    elif experiment == "ice-relax":
        index = f"{ICE_CELLS[0]}:{ICE_CELLS[-1] + 1}"
        found.append(("ice", ["ice", str(shared / ICE_FILE), "--index", index, "--model", model, "--grid", "2i",
                              "--relaxed-raw"] + [str(folder / f"cell{k}-raw" / "simulation.pos_0.xyz") for k in ICE_CELLS]
                      + ["--relaxed-avg"] + [str(folder / f"cell{k}-2i" / "simulation.pos_0.xyz") for k in ICE_CELLS]
                      + out("ice")))
    return found


EXPERIMENTS = ["gas-nve", "gas-nvt", "bulk-nvt", "ice-relax", "stability"]
DEFAULT_EXPERIMENTS = [name for name in EXPERIMENTS if name != "stability"]
"""What runs when none is named: the study's four; ``stability`` (10 ps each) only when named."""


def without_runs(experiments: List[str], runs_dir: Path) -> List[str]:
    """The experiments of which ``runs_dir`` holds no run folder (nothing for --analyze-only)."""
    return [experiment for experiment in experiments
            if not any((runs_dir / experiment / run.name).is_dir() for run in runs_of(experiment, runs_dir))]


def timed(command: List[str], label: str, timings: dict) -> bool:
    """Run ``command`` (output passed through); record its wall time under ``label``."""
    print(f"run_experiments: {label}: {' '.join(command)}", flush=True)
    start = time.monotonic()
    status = subprocess.run(command, cwd=REPO).returncode
    timings[label] = round(time.monotonic() - start, 1)
    if status != 0:
        print(f"run_experiments: {label} failed (status {status})", file=sys.stderr, flush=True)
    return status == 0


def steps_of(run: Run, quick: bool, scale: float) -> int:
    """Steps of ``run``: its quick length, or its full length times ``scale`` (at least 1)."""
    return run.quick if quick else max(1, round(run.steps * scale))


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("experiments", nargs="*", default=DEFAULT_EXPERIMENTS, metavar="EXPERIMENT",
                        help=f"which to run, of {' '.join(EXPERIMENTS)} (default: {' '.join(DEFAULT_EXPERIMENTS)})")
    parser.add_argument("--model", help="PET checkpoint (default: $PET_IPI_MODEL or the shipped model)")
    parser.add_argument("--quick", action="store_true", help="a few steps per run, results under runs/")
    parser.add_argument("--scale", type=float, default=1.0, metavar="X",
                        help="multiply the length of every run by X (default 1: laptop scale, ~26 min for the default four)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads of every pet-driver (default: torch's; 1 when another job "
                             "shares the cores)")
    parser.add_argument("--analyze-only", action="store_true", help="only the analyses, of runs already done")
    parser.add_argument("--runs", help="where the runs go (default runs/experiments[-quick])")
    parser.add_argument("--results", help="where the analyses go (default RUNS/results; "
                        "docs/results to publish them)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from driver.ipi_input import shared_data_dir
    from pet.checkpoint import file_sha256
    from pet.models import default_model_path

    unknown = [name for name in args.experiments if name not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown experiment(s) {', '.join(unknown)}: choose from {', '.join(EXPERIMENTS)}")
    if not args.scale > 0:
        parser.error(f"--scale must be positive, got {args.scale}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.quick and args.scale != 1.0:
        parser.error("--quick and --scale exclude each other")
    try:
        model = Path(args.model or default_model_path()).resolve()
    except ValueError as error:  # $PET_IPI_MODEL set but empty
        print(f"run_experiments: {error}", file=sys.stderr)
        return 2
    if not model.is_file():
        print(f"run_experiments: no model at {model} (give one with --model or $PET_IPI_MODEL)", file=sys.stderr)
        return 2
    shared = shared_data_dir()
    runs_dir = Path(args.runs or REPO / "runs" / ("experiments-quick" if args.quick else "experiments")).resolve()
    results = Path(args.results or runs_dir / "results").resolve()
    missing = without_runs(args.experiments, runs_dir) if args.analyze_only else []
    if missing:
        print(f"run_experiments: no runs found in {runs_dir} for {', '.join(missing)} "
              "(--analyze-only analyses runs done before)", file=sys.stderr)
        return 2
    total, failed = 0.0, []
    shown = model.relative_to(REPO) if model.is_relative_to(REPO) else model
    provenance = {"model": str(shown), "model_sha256": file_sha256(model), "quick": args.quick, "scale": args.scale}
    for experiment in args.experiments:
        timings, steps, ok = {}, {}, True
        (results / experiment).mkdir(parents=True, exist_ok=True)
        for run in [] if args.analyze_only else runs_of(experiment, runs_dir):
            steps[run.name] = steps_of(run, args.quick, args.scale)
            command = [str(BIN / "pet-run"), str(REPO / "inputs" / run.folder), "--run-dir",
                       str(runs_dir / experiment / run.name), "--model", str(model), "--dtype", run.dtype,
                       "--steps", str(steps[run.name])] + run.options
            if args.threads is not None:
                command += ["--threads", str(args.threads)]
            if not timed(command, f"{experiment}/{run.name}", timings):
                ok = False
                break
        if ok:
            for name, arguments in analyses_of(experiment, runs_dir, results, str(model), shared, args.quick):
                if not timed([str(BIN / "pet-analyze")] + arguments, f"{experiment}/{name}", timings):
                    failed.append(f"{experiment}/{name}")
        else:
            failed.append(experiment)
        total += sum(timings.values())
        path = results / experiment / "timings.json"
        if args.analyze_only and path.is_file():  # keep the record of the runs analysed
            report = json.loads(path.read_text())
            report["seconds"].update(timings)
        else:
            report = {**provenance, "steps": steps, "seconds": timings}
        report["failed"] = [name for name in failed if name.split("/")[0] == experiment]
        path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"run_experiments: {total:.0f} s in all; results in {results}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
