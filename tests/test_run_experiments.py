"""scripts/run_experiments.py end to end: the runs of one experiment through pet-run and i-PI,
then its analyses, with a tiny random model (--quick: a few steps per run); and the command-line
mistakes of the other scripts (refit_baseline.py, plot_learning_curve.py, hpc/pet-ipi.sbatch)."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from pet import checkpoint

REPO = Path(__file__).resolve().parents[1]


def test_quick_gas_nve_runs_and_analyses(tmp_path, tiny_checkpoint):
    runs, results = tmp_path / "runs", tmp_path / "results"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "run_experiments.py"), "gas-nve",
                           "--quick", "--model", str(tiny_checkpoint), "--runs", str(runs),
                           "--results", str(results), "--threads", "1"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((results / "gas-nve" / "timings.json").read_text())
    assert report["failed"] == [] and report["quick"] is True
    assert report["steps"] == {"raw": 5, "mts": 5, "avg": 50}
    assert len(report["model_sha256"]) == 64
    assert {"gas-nve/raw", "gas-nve/mts", "gas-nve/avg", "gas-nve/mts-spectrum"} <= set(report["seconds"])
    for name in ("raw", "mts", "avg"):
        assert (runs / "gas-nve" / name / "simulation.out").is_file()
        assert "1 CPU thread(s)" in (runs / "gas-nve" / name / "pet-run-driver.log").read_text()
        for analysis in ("angular-momentum", "drift"):
            assert (results / "gas-nve" / f"{name}-{analysis}.json").is_file()
            assert (results / "gas-nve" / f"{name}-{analysis}.png").is_file()


def load_script(name="run_experiments"):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scale_multiplies_the_full_lengths():
    module = load_script()
    gas_nvt = module.runs_of("gas-nvt", Path("runs"))
    assert [module.steps_of(run, False, 8.0) for run in gas_nvt] == [8000] * 6
    assert module.steps_of(gas_nvt[0], False, 1e-6) == 1 and module.steps_of(gas_nvt[0], True, 8.0) == 100


def test_default_is_the_study_without_the_long_stability_checks():
    args = load_script().build_parser().parse_args([])
    assert args.experiments == ["gas-nve", "gas-nvt", "bulk-nvt", "ice-relax"]


def test_results_stay_beside_the_runs_unless_published(tmp_path, tiny_checkpoint):
    """Without --results nothing is written into docs/results (it holds the longer runs)."""
    runs = tmp_path / "runs"
    (runs / "gas-nve" / "raw").mkdir(parents=True)  # a run folder, without outputs
    published = REPO / "docs" / "results" / "gas-nve" / "timings.json"
    before = published.read_bytes()
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "run_experiments.py"), "gas-nve",
                           "--analyze-only", "--model", str(tiny_checkpoint), "--runs", str(runs)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "FAILED" in done.stdout  # no outputs to analyse
    assert f"results in {runs / 'results'}" in done.stdout
    report = json.loads((runs / "results" / "gas-nve" / "timings.json").read_text())
    assert "gas-nve/raw-drift" in report["failed"]
    assert published.read_bytes() == before


def test_analyze_only_without_runs_is_one_error(tmp_path, tiny_checkpoint):
    runs = tmp_path / "empty"
    runs.mkdir()
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "run_experiments.py"), "gas-nve", "bulk-nvt",
                           "--analyze-only", "--model", str(tiny_checkpoint), "--runs", str(runs)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"run_experiments: no runs found in {runs} for gas-nve, bulk-nvt " \
                          "(--analyze-only analyses runs done before)\n"
    assert list(runs.iterdir()) == []  # no results folder, no timings.json


def test_unknown_experiment_and_missing_model_are_clear_errors(tmp_path):
    script = str(REPO / "scripts" / "run_experiments.py")
    unknown = subprocess.run([sys.executable, script, "gas-nvx"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown experiment" in unknown.stderr
    missing = subprocess.run([sys.executable, script, "--model", str(tmp_path / "none.pt")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no model" in missing.stderr
    for bad in (["--scale", "0"], ["--scale", "2", "--quick"]):
        done = subprocess.run([sys.executable, script, *bad], capture_output=True, text=True)
        assert done.returncode == 2 and "--scale" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, script, "--threads", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and "--threads must be at least 1" in done.stderr


def test_learning_curve_outputs_are_prefix_png_and_json_checked_first(tmp_path, tiny_model, capsys):
    script = load_script("plot_learning_curve")
    history = [{"epoch": k, "seconds": 60.0, "validation_force_mae": 100.0 / k, "validation_energy_mae": 5.0 / k,
                "lr": 1e-3} for k in (1, 2)]
    stored = checkpoint.save(tmp_path / "last.pt", tiny_model, metadata={"history": history})
    assert script.main([str(stored), "--out", str(tmp_path / "lc" / "curve.v2")]) == 0
    assert sorted(path.name for path in (tmp_path / "lc").iterdir()) == ["curve.v2.json", "curve.v2.png"]
    (tmp_path / "afile").write_text("not a folder")
    assert script.main([str(tmp_path / "absent.pt"), "--out", str(tmp_path / "afile" / "curve")]) == 2
    assert capsys.readouterr().err == (f"plot_learning_curve.py: error: --out {tmp_path}/afile/curve: "
                                       f"{tmp_path}/afile is a file, not a folder\n")


def test_refit_baseline_prints_the_shift_per_element_and_rejects_bad_inputs(tmp_path, tiny_model, water_cluster,
                                                                            capsys):
    script = load_script("refit_baseline")
    frames = []
    for energy in (-1000.0, -1001.0):
        atoms = water_cluster.copy()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.zeros((len(atoms), 3)))
        frames.append(atoms)
    ase.io.write(tmp_path / "frames.extxyz", frames)
    trained = checkpoint.save(tmp_path / "trained.pt", tiny_model, {},
                              {"path": str(tmp_path / "frames.extxyz"), "train": [0, 1]})
    assert script.main([str(trained), str(tmp_path / "refit.pt")]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"baseline shifted by H [+-]\d+\.\d{4} eV, O [+-]\d+\.\d{4} eV over 2 frames; "
                        rf"saved {re.escape(str(tmp_path / 'refit.pt'))}\n", out), out
    assert script.shift_text([1, 8], [0.0071664, -0.5]) == "H +0.0072 eV, O -0.5000 eV"
    untrained = checkpoint.save(tmp_path / "untrained.pt", tiny_model)
    for source in (tmp_path / "absent.pt", untrained):
        assert script.main([str(source), str(tmp_path / "x.pt")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[0] == f"refit_baseline.py: error: no checkpoint file at {tmp_path / 'absent.pt'}"
    assert "records no training frames" in errors[1] and len(errors) == 2
    with pytest.raises(SystemExit) as exit_status:
        script.main([str(trained), str(tmp_path / "x.pt"), "--frames", "0"])
    assert exit_status.value.code == 2 and "--frames: must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("drivers", ["0", "abc", "-1"])
def test_hpc_script_wants_a_positive_number_of_drivers(tmp_path, drivers):
    environment = {**os.environ, "DRY_RUN": "1", "PET_INPUT": "inputs/bulk-nvt", "SLURM_JOB_NODELIST": "n1,g1",
                   "PET_DRIVERS": drivers, "PET_RUN_DIR": str(tmp_path / "run")}
    done = subprocess.run(["bash", str(REPO / "scripts" / "hpc" / "pet-ipi.sbatch")], env=environment,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"pet-ipi.sbatch: PET_DRIVERS must be a positive integer, got '{drivers}'\n"
    assert not (tmp_path / "run").exists()
