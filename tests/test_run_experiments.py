"""scripts/run_experiments.py end to end: the runs of one experiment through pet-run and i-PI,
then its analyses, with a tiny random model (--quick: a few steps per run)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

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


def load_script():
    spec = importlib.util.spec_from_file_location("run_experiments", REPO / "scripts" / "run_experiments.py")
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
    published = REPO / "docs" / "results" / "gas-nve" / "timings.json"
    before = published.read_bytes()
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "run_experiments.py"), "gas-nve",
                           "--analyze-only", "--model", str(tiny_checkpoint), "--runs", str(runs)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "FAILED" in done.stdout  # nothing to analyse
    assert f"results in {runs / 'results'}" in done.stdout
    report = json.loads((runs / "results" / "gas-nve" / "timings.json").read_text())
    assert "gas-nve/raw-drift" in report["failed"]
    assert published.read_bytes() == before


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
