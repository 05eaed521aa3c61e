"""scripts/run_experiments.py end to end: the runs of one experiment through pet-run and i-PI,
then its analyses, with a tiny random model (--quick: a few steps per run)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quick_gas_nve_runs_and_analyses(tmp_path, tiny_checkpoint):
    runs, results = tmp_path / "runs", tmp_path / "results"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "run_experiments.py"), "gas-nve",
                           "--quick", "--model", str(tiny_checkpoint), "--runs", str(runs),
                           "--results", str(results)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((results / "timings.json").read_text())
    assert report["failed"] == [] and report["quick"] is True
    assert {"gas-nve/raw", "gas-nve/mts", "gas-nve/avg", "gas-nve/mts-spectrum"} <= set(report["seconds"])
    for name in ("raw", "mts", "avg"):
        assert (runs / "gas-nve" / name / "simulation.out").is_file()
        for analysis in ("angular-momentum", "drift"):
            assert (results / "gas-nve" / f"{name}-{analysis}.json").is_file()
            assert (results / "gas-nve" / f"{name}-{analysis}.png").is_file()


def test_unknown_experiment_and_missing_model_are_clear_errors(tmp_path):
    script = str(REPO / "scripts" / "run_experiments.py")
    unknown = subprocess.run([sys.executable, script, "gas-nvx"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown experiment" in unknown.stderr
    missing = subprocess.run([sys.executable, script, "--model", str(tmp_path / "none.pt")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no model" in missing.stderr
