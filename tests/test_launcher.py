"""pet-run: i-PI and pet-driver together on the MTS example, stopped cleanly (also on Ctrl-C)."""

import os
import re
import shutil
import signal
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import ase.io
import pytest
import torch
from ase.build import molecule
from ipi.utils.io.inputs.io_xml import read_dict

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


@pytest.mark.parametrize("presses", [1, 4], ids=["once", "repeatedly"])
def test_ctrl_c_stops_everything(processes, example, tiny_checkpoint, presses):
    """Ctrl-C, also pressed again while pet-run stops i-PI and the driver (which cut the clean-up
    short, leaving the driver running): status 130, no process or socket left."""
    run = processes.start(pet_run(example, "--model", tiny_checkpoint, "--steps", 100000), "pet-run.log")
    wait_for(lambda: "s/step" in log_text(run), 120, "MD steps")
    for _ in range(presses):
        run.send_signal(signal.SIGINT)
        time.sleep(0.1)
    assert processes.wait(run, 60) == 130
    assert "interrupted" in log_text(run)
    assert not sockets_of(run.pid) and not processes_in(example)


def test_driver_failure_stops_ipi(processes, example, tmp_path, tiny_checkpoint):
    """A start structure the driver refuses at its first request (overlapping atoms): pet-run
    reports the driver's error and stops i-PI."""
    water = molecule("H2O")
    water.positions[2] = water.positions[0] + [0.0, 0.0, 0.1]
    water.cell = [30.0, 30.0, 30.0]
    ase.io.write(tmp_path / "overlap.xyz", water, format="extxyz")
    run = processes.start(pet_run(example, "--model", tiny_checkpoint, "--structure", tmp_path / "overlap.xyz",
                                  "--timeout", 120), "pet-run.log")
    assert processes.wait(run, 150) == 1
    assert "pet-driver failed" in log_text(run) and "atoms 0 and 2 overlap" in log_text(run)
    assert not sockets_of(run.pid) and not processes_in(example)


def test_a_driver_model_that_does_not_load_stops_before_ipi(tmp_path, capsys):
    """The model pet-driver would serve is loaded first: a missing file, or one that is not a
    checkpoint, is one line and status 2, and nothing starts."""
    (tmp_path / "notmodel.pt").write_text("not a checkpoint")
    for model, message in [(tmp_path / "missing.pt", f"no checkpoint file at {tmp_path / 'missing.pt'}"),
                           (tmp_path / "notmodel.pt", f"{tmp_path / 'notmodel.pt'} is not a pet-ipi checkpoint")]:
        error = pet_run_error(capsys, EXAMPLE, "--run-dir", tmp_path / "run", "--model", model)
        assert f"pet-run: error: cannot load the model: {message}" in error
        assert not (tmp_path / "run" / "pet-run-ipi.log").exists()


def test_a_blank_model_variable_is_one_line(tmp_path, monkeypatch, capsys):
    """PET_IPI_MODEL set but empty: --help still works, a run is refused in one line."""
    monkeypatch.setenv("PET_IPI_MODEL", "")
    with pytest.raises(SystemExit) as exit_info:
        launcher.main(["--help"])
    assert exit_info.value.code == 0 and "--model PATH" in capsys.readouterr().out
    assert "PET_IPI_MODEL" in pet_run_error(capsys, EXAMPLE, "--run-dir", tmp_path / "run")


def test_a_relative_model_variable_names_the_same_file_for_the_driver(tmp_path, monkeypatch, capsys):
    """PET_IPI_MODEL relative to where pet-run starts: the driver, which runs in the run directory,
    gets that file as an absolute --model (it looked for it in the run directory)."""
    monkeypatch.chdir(INPUTS.parent)
    monkeypatch.setenv("PET_IPI_MODEL", "models/pet-water-small.pt")
    assert launcher.main([str(EXAMPLE), "--run-dir", str(tmp_path / "run"), "--print-driver-command"]) == 0
    command = capsys.readouterr().out.split()
    assert command[command.index("--model") + 1] == str(INPUTS.parent / "models" / "pet-water-small.pt")


def test_a_start_structure_the_model_cannot_take_stops_before_ipi(tmp_path, tiny_checkpoint, capsys):
    methane = molecule("CH4")
    methane.cell = [30.0, 30.0, 30.0]
    ase.io.write(tmp_path / "methane.xyz", methane, format="extxyz")
    error = pet_run_error(capsys, EXAMPLE, "--run-dir", tmp_path / "run", "--model", tiny_checkpoint,
                          "--structure", tmp_path / "methane.xyz")
    assert f"the template {tmp_path / 'run' / launcher.START_NAME}: this model knows only H, O; the " \
           "structure contains C" in error
    assert not (tmp_path / "run" / "pet-run-ipi.log").exists()


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


def input_copy(tmp_path, name: str, *replacements) -> Path:
    """A copy of inputs/NAME in ``tmp_path`` with (old, new) text replacements in its input.xml."""
    folder = Path(shutil.copytree(INPUTS / name, tmp_path / name, ignore=shutil.ignore_patterns(
        "simulation.*", "RESTART", "pet-run-*", "#*")))
    text = (folder / "input.xml").read_text()
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    (folder / "input.xml").write_text(text)
    return folder


def two_waters(tmp_path) -> Path:
    """A start structure of 6 atoms (two water molecules in a 20 Å box)."""
    atoms = molecule("H2O") + molecule("H2O")
    atoms.positions[3:] += [3.0, 0.0, 0.0]
    atoms.cell = [20.0, 20.0, 20.0]
    path = tmp_path / "two-waters.xyz"
    ase.io.write(path, atoms, format="extxyz")
    return path


def pet_run_error(capsys, *arguments) -> str:
    """The one line pet-run prints for a mistake found before anything starts (status 2)."""
    assert launcher.main([str(a) for a in arguments]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("pet-run: error: "), error
    return error


@pytest.mark.parametrize("timeout", ["nan", "-1", "0", "inf"])
def test_pet_run_needs_a_finite_positive_timeout(timeout, capsys):
    with pytest.raises(SystemExit) as exit_info:
        launcher.main([str(EXAMPLE), "--timeout", timeout])
    assert exit_info.value.code == 2
    assert f"argument --timeout: must be a finite number > 0 s, got '{timeout}'" in capsys.readouterr().err


@pytest.mark.parametrize("arguments, message", [
    (["--steps", "2.5"], "argument --steps: must be a positive integer, got '2.5'"),
    (["--steps", "0"], "argument --steps: must be a positive integer, got '0'"),
    (["--mts", "0"], "argument --mts: must be a positive integer, got '0'"),
    (["--mts", "x"], "argument --mts: must be a positive integer, got 'x'"),
    (["--threads", "0"], "argument --threads: must be a positive integer, got '0'"),
    (["--threads", "1.5"], "argument --threads: must be a positive integer, got '1.5'"),
    (["--frame", "x"], "argument --frame: must be an integer (0: the first structure, -1: the last), got 'x'"),
])
def test_numeric_options_say_what_they_take(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        launcher.main([str(EXAMPLE), *arguments])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1, error


def test_mts_that_would_round_the_output_times_is_refused(tmp_path, capsys):
    """bulk-nvt (outer step 10 inner steps, outputs every 1 and 2 outer steps): --mts 3 would
    round the strides; the values of N that keep them are named."""
    error = pet_run_error(capsys, INPUTS / "bulk-nvt", "--mts", 3, "--run-dir", tmp_path / "run")
    assert "--mts 3: the stride of <properties filename='out'> is 1 outer step of 10 inner steps (10 " \
           "inner steps), not a whole number of outer steps of 3 inner steps: use --mts 1, 2, 5 or 10" in error
    assert not (tmp_path / "run" / launcher.COPY_NAME).exists()


def test_ctrl_c_while_preparing_is_one_line(monkeypatch, tmp_path, capsys):
    """An interrupt while the input is prepared (here: while the driver's model loads) ends
    pet-run with one line and status 130, not a traceback."""
    def interrupt(path, dtype):
        raise KeyboardInterrupt

    monkeypatch.setattr(launcher, "load_checked", interrupt)
    assert launcher.main([str(EXAMPLE), "--run-dir", str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err == "pet-run: interrupted\n"


def test_option_mistakes_are_one_line_before_anything_starts(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    error = pet_run_error(capsys, EXAMPLE, "--run-dir", tmp_path / "afile")
    assert f"--run-dir {tmp_path / 'afile'} is a file, not a directory" in error
    error = pet_run_error(capsys, INPUTS / "stability-gas", "--grid", "2i", "--run-dir", tmp_path / "run")
    assert "--grid 2i: input.xml has no averaged channel" in error
    error = pet_run_error(capsys, EXAMPLE, "--grid", "1000", "--run-dir", tmp_path / "run")
    assert "rotation grid '1000' is too large: N can be at most 20" in error
    error = pet_run_error(capsys, EXAMPLE, "--inet", "localhost:65535", "--run-dir", tmp_path / "run")
    assert "need ports 65535 to 65536, beyond 65535: give a port up to 65534" in error
    error = pet_run_error(capsys, INPUTS / "gas-nve", "--structure", two_waters(tmp_path),
                          "--run-dir", tmp_path / "run")
    assert "the new start structure has 6 atoms, but input.xml reads <velocities> from velocities.xyz, with 3" in error


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_is_checked_where_the_model_would_run(tmp_path, capsys):
    error = pet_run_error(capsys, EXAMPLE, "--device", "cuda", "--run-dir", tmp_path / "run")
    assert "torch sees no CUDA device on this machine, where pet-driver would run: use --device cpu" in error
    assert launcher.main([str(EXAMPLE), "--device", "cuda", "--run-dir", str(tmp_path / "run"),
                          "--print-driver-command"]) == 0  # the drivers run elsewhere
    assert "--device cuda" in capsys.readouterr().out
    error = pet_run_error(capsys, INPUTS / "mts-inprocess", "--device", "cuda", "--run-dir", tmp_path / "run")
    assert "ffdirect 'raw': device 'cuda' requested but torch sees no CUDA device on this machine: give it a device this machine has (pet-run --device cpu" in error


@pytest.mark.parametrize("replacement, message", [
    (("<address>pet-raw</address>", "<address>pet-raw</address><parameters>{mode: 2x}</parameters>"),
     "bad mode '2x' in the <parameters> of ffsocket 'raw' in input.xml: use raw, random or a rotation grid N or Ni"),
    (('<ffsocket name="raw" mode="unix">', '<ffsocket name="raw" mode="inet"><port>abc</port>'),
     "ffsocket 'raw' in input.xml: bad <port> 'abc': use a port from 1 to 65535"),
    (('<ffsocket name="raw" mode="unix">\n    <address>pet-raw</address>',
      '<ffsocket name="raw" mode="inet"><port>99999</port>\n    <address>node1</address>'),
     "ffsocket 'raw' in input.xml: bad <port> '99999': use a port from 1 to 65535"),
    (("<address>pet-raw</address>", f"<address>{'a' * 120}</address>"),
     f"ffsocket 'raw' in input.xml: <address>{'a' * 120}</address> is too long: the socket file"),
    (("<address>pet-raw</address>", f"<address>{'a' * 97}</address>"),
     f"<address>{'a' * 97}</address> is too long (pet-run makes it {'a' * 97}-"),
])
def test_bad_ffsockets_are_named_with_their_file(tmp_path, capsys, replacement, message):
    folder = input_copy(tmp_path, "mts-example", replacement)
    assert message in pet_run_error(capsys, folder)
    assert not (folder / launcher.COPY_NAME).exists()


def test_the_sockets_prefix_of_the_input_reaches_the_driver(tmp_path, capsys):
    folder = input_copy(tmp_path, "mts-example", ("<simulation ", '<simulation sockets_prefix="s_" '))
    assert launcher.main([str(folder), "--print-driver-command"]) == 0
    command = capsys.readouterr().out.split()
    assert command[command.index("--sockets-prefix") + 1] == f"{folder}/s_"
    assert f'sockets_prefix="{folder}/s_"' in (folder / launcher.COPY_NAME).read_text()


def test_in_process_forcefields_get_the_options(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    """--grid, --dtype, --model and --structure go into the <ffdirect> parameters (i-PI itself is
    replaced by a command that ends at once: no MD)."""
    monkeypatch.setattr(launcher, "executable", lambda name: "true")
    run_dir = tmp_path / "run"
    assert launcher.main([str(INPUTS / "mts-inprocess"), "--run-dir", str(run_dir), "--grid", "3i",
                          "--dtype", "float32", "--model", str(tiny_checkpoint),
                          "--structure", str(two_waters(tmp_path))]) == 0, capsys.readouterr().err
    written = ElementTree.parse(run_dir / launcher.COPY_NAME).getroot()
    parameters = [read_dict(e.find("parameters").text) for e in written.findall("ffdirect")]
    assert [p["mode"] for p in parameters] == ["raw", "3i"]
    for p in parameters:
        assert (p["dtype"], p["model"], p["template"]) == ("float32", str(tiny_checkpoint),
                                                          str(run_dir / launcher.START_NAME))


def test_an_in_process_model_that_does_not_load_stops_before_ipi(tmp_path, capsys):
    (tmp_path / "notmodel.pt").write_text("not a checkpoint")
    error = pet_run_error(capsys, INPUTS / "mts-inprocess", "--run-dir", tmp_path / "run",
                          "--model", tmp_path / "notmodel.pt")
    assert f"ffdirect 'raw': cannot load the model: {tmp_path / 'notmodel.pt'}" in error
    assert not (tmp_path / "run" / "pet-run-ipi.log").exists()


def test_help_explains_device_and_dtype(capsys):
    with pytest.raises(SystemExit):
        launcher.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--device {cpu,cuda} where the model runs" in text and "--dtype {float32,float64} floating-point" in text


@pytest.mark.parametrize("prefix", ["s_", "sockets/s_"])
def test_a_run_with_a_sockets_prefix_uses_its_socket_files(processes, tmp_path, tiny_checkpoint, prefix):
    """i-PI listens under <simulation sockets_prefix>, pet-driver dials there, and nothing is left;
    a folder of the prefix that does not exist yet is made (i-PI would fail on it)."""
    folder = input_copy(tmp_path, "mts-example", ("<simulation ", f'<simulation sockets_prefix="{prefix}" '))
    run = processes.start(pet_run(folder, "--model", tiny_checkpoint, "--steps", 1, "--timeout", 120),
                          "pet-run.log")
    assert processes.wait(run, 150) == 0, log_text(run)
    assert read_properties(folder / "simulation.out")["step"].tolist() == [0, 1]
    assert (folder / prefix).parent.is_dir()
    assert not list(folder.glob(f"{prefix}*")) and not processes_in(folder)


def test_a_sockets_prefix_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    folder = input_copy(tmp_path, "mts-example", ("<simulation ", '<simulation sockets_prefix="afile/s_" '))
    (folder / "afile").write_text("")
    error = pet_run_error(capsys, folder, "--print-driver-command")
    assert f"the <simulation sockets_prefix> of input.xml: {folder / 'afile'} is a file, not a folder" in error


def test_compile_reaches_the_driver_and_not_the_in_process_forcefields(tmp_path, capsys, monkeypatch):
    """pet-run --compile: in the pet-driver command; refused for an input with in-process
    forcefields only, and where this machine, which would run pet-driver, cannot compile."""
    assert launcher.main([str(EXAMPLE), "--compile", "--run-dir", str(tmp_path / "run"),
                          "--print-driver-command"]) == 0
    assert "--compile" in capsys.readouterr().out.split()
    error = pet_run_error(capsys, INPUTS / "mts-inprocess", "--compile", "--run-dir", tmp_path / "in-process")
    assert "--compile is an option of pet-driver, and input.xml has no <ffsocket>" in error
    monkeypatch.setenv("PATH", str(tmp_path))  # no C++ compiler
    monkeypatch.delenv("CXX", raising=False)
    error = pet_run_error(capsys, EXAMPLE, "--compile", "--run-dir", tmp_path / "local")
    assert "--compile: torch.compile on a CPU needs a C++ compiler" in error
    assert "on this machine, where pet-driver would run" in error
