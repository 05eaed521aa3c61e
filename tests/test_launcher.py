"""pet-run: i-PI and pet-driver together on the MTS example, stopped cleanly (also on Ctrl-C)."""

import os
import re
import shutil
import signal
import sys
from pathlib import Path

import pytest

from driver import launcher
from driver_processes import log_text, processes, read_properties, wait_for  # noqa: F401 (fixture)

INPUTS = Path(__file__).resolve().parents[1] / "inputs"
EXAMPLE = INPUTS / "mts-example"


def pet_run(*arguments) -> list:
    return [sys.executable, "-m", "driver.launcher", *map(str, arguments)]


@pytest.fixture
def example(tmp_path) -> Path:
    """A copy of inputs/mts-example (its outputs then stay out of the repository)."""
    return Path(shutil.copytree(EXAMPLE, tmp_path / "mts-example", ignore=shutil.ignore_patterns(
        "simulation.*", "RESTART", "pet-run-*", "#*")))


def processes_in(folder: Path) -> list:
    """Pids of live processes whose working directory is ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd") == str(folder):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def sockets_of(run_pid: int) -> list:
    return [p for p in Path("/tmp").glob(f"ipi_*-{run_pid}")]


def test_mts_example_runs(processes, example, tiny_checkpoint):
    run = processes.start(pet_run(example, "--model", tiny_checkpoint, "--steps", 3, "--timeout", 120),
                          "pet-run.log")
    assert processes.wait(run, 150) == 0, log_text(run)
    text = log_text(run)
    assert "step 3/3" in text and "done" in text
    out = read_properties(example / "simulation.out")
    assert out["step"].tolist() == [0, 1, 2, 3]
    assert "pot_component_raw(0){electronvolt}" in out and "pot_component_raw(1){electronvolt}" in out
    assert (example / "simulation.symerr").is_file()
    driver_log = (example / "pet-run-driver.log").read_text()
    assert re.search(r"channel raw on unix:pet-raw-\d+: 31 requests", driver_log)
    assert re.search(r"channel 2i on unix:pet-2i-\d+: 4 requests", driver_log)
    assert "species the template" in driver_log and "init.xyz" in driver_log
    assert not sockets_of(run.pid) and not processes_in(example)


def test_in_process_example_runs(processes, tmp_path, tiny_checkpoint):
    """inputs/mts-inprocess: the model inside i-PI (<ffdirect>), no driver; --model reaches it."""
    folder = Path(shutil.copytree(INPUTS / "mts-inprocess", tmp_path / "mts-inprocess",
                                  ignore=shutil.ignore_patterns("simulation.*", "RESTART", "pet-run-*", "#*")))
    run = processes.start(pet_run(folder, "--model", tiny_checkpoint, "--steps", 2, "--timeout", 120),
                          "pet-run.log")
    assert processes.wait(run, 150) == 0, log_text(run) + (folder / "pet-run-ipi.log").read_text()[-2000:]
    assert "0 socket channel(s)" in log_text(run)
    assert read_properties(folder / "simulation.out")["step"].tolist() == [0, 1, 2]
    assert not (folder / "pet-run-driver.log").read_text()


def test_ctrl_c_stops_everything(processes, example, tiny_checkpoint):
    run = processes.start(pet_run(example, "--model", tiny_checkpoint, "--steps", 100000), "pet-run.log")
    wait_for(lambda: "s/step" in log_text(run), 120, "MD steps")
    run.send_signal(signal.SIGINT)
    assert processes.wait(run, 60) == 130
    assert "interrupted" in log_text(run)
    assert not sockets_of(run.pid) and not processes_in(example)


def test_driver_failure_stops_ipi(processes, example, tmp_path):
    run = processes.start(pet_run(example, "--model", tmp_path / "missing.pt", "--timeout", 120), "pet-run.log")
    assert processes.wait(run, 150) == 1
    assert "cannot load the model" in log_text(run)
    assert not sockets_of(run.pid) and not processes_in(example)


def test_inputs_pet_run_cannot_run(tmp_path, capsys):
    assert launcher.main([str(tmp_path / "nowhere")]) == 2
    assert "no folder" in capsys.readouterr().err
    (tmp_path / "input.xml").write_text(
        "<simulation><ffsocket name='fast' mode='unix'><address>x</address></ffsocket></simulation>")
    assert launcher.main([str(tmp_path)]) == 2
    assert "ffsocket 'fast': name it raw, random or a rotation grid" in capsys.readouterr().err
    (tmp_path / "input.xml").write_text(
        "<simulation><ffsocket name='raw' mode='shm'><address>x</address></ffsocket></simulation>")
    assert launcher.main([str(tmp_path)]) == 2
    assert "not supported" in capsys.readouterr().err
