"""The experiment inputs (inputs/gas-nve, gas-nvt, bulk-nvt, ice-relax, stability-gas) run by i-PI through pet-run
with a tiny random model; pet-run's options for their variants; the HPC batch script's dry run."""

import importlib.util
import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from ipi.inputs.simulation import InputSimulation
from ipi.utils.io.inputs.io_xml import xml_parse_file

from analysis.ice import _relaxed
from analysis.ipi_files import read_trajectory
from driver import launcher
from driver.ipi_input import InputError, IPIInput, free_port
from driver.start_structure import read_frames
from driver_processes import log_text, processes, read_properties  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
INPUTS = REPO / "inputs"
EV_PER_AMU_A2_PER_PS2 = 1.0364269656262175e-04
"""1 amu Å²/ps² in eV."""


def pet_run(*arguments) -> list:
    return [sys.executable, "-m", "driver.launcher", *map(str, arguments)]


def run_input(processes, folder: str, run_dir: Path, checkpoint: Path, *options) -> Path:
    """pet-run of inputs/FOLDER in ``run_dir``; asserts it ends with status 0."""
    run = processes.start(pet_run(INPUTS / folder, "--run-dir", run_dir, "--model", checkpoint,
                                  "--timeout", 150, *options), f"pet-run-{folder}.log")
    status = processes.wait(run, 180)
    ipi_log = run_dir / "pet-run-ipi.log"
    assert status == 0, log_text(run) + (ipi_log.read_text()[-3000:] if ipi_log.is_file() else "")
    assert not list((INPUTS / folder).glob("simulation.*")), "outputs were written into the input folder"
    return run_dir


def requests(run_dir: Path, mode: str) -> int:
    """How many requests pet-driver's channel ``mode`` answered (from its log)."""
    for line in (run_dir / "pet-run-driver.log").read_text().splitlines():
        if f"channel {mode} on " in line:
            return int(line.split(": ")[2].split()[0])
    raise AssertionError(f"no channel {mode} in the driver log")


def test_gas_nve_starts_rotating_with_the_stated_angular_momentum(processes, tmp_path, tiny_checkpoint):
    run_dir = run_input(processes, "gas-nve", tmp_path / "run", tiny_checkpoint, "--steps", 2)
    out = read_properties(run_dir / "simulation.out")
    assert out["step"].tolist() == [0, 1, 2]
    positions = read_trajectory(run_dir / "simulation.pos_0.xyz", "length")
    velocities = read_trajectory(run_dir / "simulation.vel_0.xyz", "velocity")
    masses = positions.masses
    r = positions.values[0] - np.average(positions.values[0], axis=0, weights=masses)
    momentum = np.sum(masses[:, None] * np.cross(r, velocities.values[0]), axis=0)
    np.testing.assert_allclose(momentum, [0.0, 0.0, 25.0], atol=5e-3)  # amu Å²/ps, 6-digit files
    kinetic = 0.5 * np.sum(masses[:, None] * velocities.values[0] ** 2) * EV_PER_AMU_A2_PER_PS2
    assert out["kinetic_md{electronvolt}"][0] == pytest.approx(kinetic, rel=1e-4)
    # MTS: raw at each of the 10 inner steps of 2 outer steps and at the start, 2i at outer steps
    assert (requests(run_dir, "raw"), requests(run_dir, "2i")) == (21, 3)


def test_gas_nvt_runs_the_gle_thermostat_with_another_grid(processes, tmp_path, tiny_checkpoint):
    run_dir = run_input(processes, "gas-nvt", tmp_path / "run", tiny_checkpoint, "--steps", 10, "--grid", "1")
    assert read_properties(run_dir / "simulation.out")["step"].tolist() == [0, 10]
    forces = read_trajectory(run_dir / "simulation.frc_0.xyz", "force")
    assert forces.values.shape == (2, 3, 3) and np.all(np.isfinite(forces.values))
    copy = ElementTree.parse(run_dir / "pet-run-input.xml").getroot()
    matrix = copy.find(".//thermostat[@mode='gle']/A")
    assert Path(matrix.text) == REPO.parent / "shared" / "data" / "gle-optimal-sampling-A.txt"
    assert requests(run_dir, "1") == 11


def test_bulk_nvt_random_rotation_at_every_step(processes, tmp_path, tiny_checkpoint):
    run_dir = run_input(processes, "bulk-nvt", tmp_path / "run", tiny_checkpoint, "--steps", 10,
                        "--grid", "random", "--mts", "1", "--dtype", "float32")
    out = read_properties(run_dir / "simulation.out")
    assert out["step"].tolist() == [0, 10]
    assert out["time{picosecond}"][1] == pytest.approx(0.005)  # 10 steps of 0.5 fs
    # random drives every step; raw (weight 0) is evaluated only for the outputs
    assert (requests(run_dir, "random"), requests(run_dir, "raw")) == (11, 2)


def test_stability_gas_starts_at_300_k_and_conserves_energy(processes, tmp_path, tiny_checkpoint):
    run_dir = run_input(processes, "stability-gas", tmp_path / "run", tiny_checkpoint, "--steps", 20,
                        "--dtype", "float64")
    out = read_properties(run_dir / "simulation.out")
    assert out["step"].tolist() == [0, 10, 20]
    # 3 atoms, 9 velocity components drawn at 300 K, then the centre-of-mass motion removed
    assert 0 < out["kinetic_md{electronvolt}"][0] < 0.5
    conserved = out["conserved{electronvolt}"]
    assert abs(conserved[-1] - conserved[0]) < 1e-3 * abs(out["kinetic_md{electronvolt}"][0]) + 1e-6
    assert requests(run_dir, "raw") == 21


def test_ice_relax_lowers_the_energy_of_the_chosen_cell(processes, tmp_path, tiny_checkpoint, data_dir):
    run_dir = run_input(processes, "ice-relax", tmp_path / "run", tiny_checkpoint, "--steps", 2,
                        "--frame", 1, "--grid", "raw", "--dtype", "float32")
    energy = read_properties(run_dir / "simulation.out")["potential{electronvolt}"]
    assert len(energy) == 3 and energy[-1] < energy[0]
    cells = read_frames(data_dir / "ice-ih-hayward-reimers.xyz")[:3]  # 3 cells of 96 molecules
    relaxed = _relaxed(run_dir / "simulation.pos_0.xyz", cells[1])  # what pet-analyze ice reads
    np.testing.assert_allclose(np.asarray(relaxed.cell), np.asarray(cells[1].cell), atol=1e-4)
    moved = [np.abs(relaxed.positions - cell.positions).mean() for cell in cells]
    assert 0 < moved[1] < min(moved[0], moved[2])


def test_ice_relax_needs_a_frame(capsys):
    assert launcher.main([str(INPUTS / "ice-relax"), "--print-driver-command"]) == 2
    assert "holds 9 structures: choose one with --frame K (0 to 8" in capsys.readouterr().err


def test_no_driver_runs_ipi_alone_for_a_driver_started_elsewhere(processes, tmp_path, tiny_checkpoint):
    """The HPC set-up on one machine: i-PI on inet, the printed pet-driver command started apart."""
    run_dir, address = tmp_path / "run", f"localhost:{free_port('localhost')}"
    common = [INPUTS / "gas-nvt", "--run-dir", run_dir, "--inet", address, "--model", tiny_checkpoint,
              "--steps", 10, "--grid", "raw", "--threads", 1]
    printed = subprocess.run(pet_run(*common, "--print-driver-command"), capture_output=True, text=True)
    assert printed.returncode == 0, printed.stderr
    command = shlex.split(printed.stdout)
    assert f"raw=inet:{address}" in command and "--template" in command
    assert command[command.index("--threads") + 1] == "1"
    ipi = processes.start(pet_run(*common, "--no-driver", "--timeout", 150), "pet-run.log")
    driver = processes.start(command, "driver.log")
    assert processes.wait(ipi, 180) == 0, log_text(ipi)
    assert processes.wait(driver, 60) == 0, log_text(driver)
    assert "start the drivers with" in log_text(ipi)
    assert "float64, 1 CPU thread(s))" in log_text(driver)
    assert read_properties(run_dir / "simulation.out")["step"].tolist() == [0, 10]


def test_512_molecule_box_from_the_shared_data(tmp_path, data_dir, capsys):
    run_dir = tmp_path / "run"
    status = launcher.main([str(INPUTS / "bulk-nvt"), "--run-dir", str(run_dir), "--structure",
                            str(data_dir / "water-512.xyz"), "--print-driver-command"])
    assert status == 0, capsys.readouterr().err
    start = run_dir / launcher.START_NAME
    assert len(read_frames(start)[0]) == 1536
    assert f"--template {start}" in capsys.readouterr().out
    element = IPIInput(run_dir / launcher.COPY_NAME).start_file()
    assert (element.text, element.get("mode")) == (launcher.START_NAME, "ase")


def test_missing_shared_data_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PET_IPI_SHARED", str(tmp_path / "nowhere"))
    assert launcher.main([str(INPUTS / "gas-nvt"), "--run-dir", str(tmp_path / "run"),
                          "--print-driver-command"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "gle-optimal-sampling-A.txt" in error and "PET_IPI_SHARED" in error


def test_mts_option_keeps_inner_step_time_and_output_times():
    xml = IPIInput(INPUTS / "bulk-nvt" / "input.xml")
    xml.set_mts(1)
    system = xml.root.find("system")
    assert float(system.find("motion/dynamics/timestep").text) == 0.5
    assert system.find("motion/dynamics/nmts") is None
    weights = {f.get("forcefield"): float(f.get("weight")) for f in system.findall("forces/force")}
    assert weights == {"raw": 0.0, "2i": 1.0} and system.find("forces/force/mts_weights") is None
    assert xml.total_steps == 20000
    assert [e.get("stride") for e in xml.root.find("output")] == ["10", "20"]
    xml = IPIInput(INPUTS / "bulk-nvt" / "input.xml")
    xml.set_mts(5)
    assert xml.root.find("system/motion/dynamics/nmts").text == "[1, 5]"
    assert float(xml.root.find("system/motion/dynamics/timestep").text) == 2.5
    assert xml.total_steps == 4000
    with pytest.raises(InputError, match="no two-level multiple time stepping"):
        IPIInput(INPUTS / "gas-nvt" / "input.xml").set_mts(1)


MTS_XML = """<simulation>
  <output prefix="sim">
    <properties stride="2" filename="out">[step]</properties>
    <checkpoint stride="4"/>
  </output>
  <total_steps>5</total_steps>
  <system><motion mode="dynamics"><dynamics mode="nve">
    <timestep units="femtosecond">3.0</timestep><nmts>[1, 6]</nmts>
  </dynamics></motion></system>
</simulation>"""
"""Outer steps of 6 inner ones (0.5 fs); outputs every 2 and 4 outer steps (12 and 24 inner ones),
5 outer steps (30 inner ones)."""


def test_mts_option_never_rounds_a_count_of_steps(tmp_path):
    path = tmp_path / "input.xml"
    path.write_text(MTS_XML)
    xml = IPIInput(path)
    xml.set_mts(3)
    assert [e.get("stride") for e in xml.root.find("output")] == ["4", "8"] and xml.total_steps == 10
    with pytest.raises(InputError) as error:
        IPIInput(path).set_mts(4)  # strides 3 and 6, but 7.5 steps
    assert str(error.value) == (
        "--mts 4: <total_steps> is 5 outer steps of 6 inner steps (30 inner steps), not a whole number "
        "of outer steps of 4 inner steps: use --mts 1, 2, 3 or 6, which keep every output time and the "
        "simulated time exactly")
    xml = IPIInput(path)
    xml.set_mts(4, steps=7)  # --steps gives the number of steps of the new split
    assert [e.get("stride") for e in xml.root.find("output")] == ["3", "6"] and xml.total_steps == 7
    assert float(xml.root.find("system/motion/dynamics/timestep").text) == 2.0
    with pytest.raises(InputError, match="^--mts 8: the stride of <properties filename='out'> is 2 outer "
                                         "steps of 6 inner steps .* use --mts 1, 2, 3, 4, 6 or 12, which "
                                         "keep every output time exactly$"):
        IPIInput(path).set_mts(8, steps=7)
    path.write_text(MTS_XML.replace('<checkpoint stride="4"/>', '<checkpoint stride="x"/>'))
    with pytest.raises(InputError, match="^the stride of <checkpoint> in input.xml is 'x': it must be a "
                                         "positive integer$"):
        IPIInput(path).set_mts(2)


def test_grid_option_replaces_only_averaged_channels():
    xml = IPIInput(INPUTS / "bulk-nvt" / "input.xml")
    xml.set_grid("random")
    assert [(c.name, c.mode) for c in xml.channels()] == [("raw", "raw"), ("2i", "random")]
    xml = IPIInput(INPUTS / "gas-nvt" / "input.xml")
    xml.set_grid("3i")
    assert [c.mode for c in xml.channels()] == ["3i"]


def test_start_structures_are_what_the_script_writes():
    spec = importlib.util.spec_from_file_location("make_start_structures",
                                                  REPO / "scripts" / "make_start_structures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0


def test_hpc_dry_run_prints_the_commands_and_an_inet_input(tmp_path, tiny_checkpoint):
    run_dir = tmp_path / "run"
    environment = {**os.environ, "DRY_RUN": "1", "PET_INPUT": "inputs/bulk-nvt", "SLURM_JOB_ID": "42",
                   "SLURM_JOB_NODELIST": "cpu7,gpu1,gpu2", "PET_DRIVERS": "3", "PET_PORT": "40000",
                   "PET_RUN_DIR": str(run_dir), "PET_MODEL": str(tiny_checkpoint), "PET_GRID": "3i",
                   "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    result = subprocess.run(["bash", str(REPO / "scripts" / "hpc" / "pet-ipi.sbatch"), "--steps", "100"],
                            env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    ipi = shlex.split(lines[1])
    assert ipi[0].endswith("pet-run") and ipi[1] == "inputs/bulk-nvt"
    assert {"--inet", "cpu7:40000", "--no-driver", "--steps", "100", "--grid", "3i"} <= set(ipi)
    drivers = [shlex.split(line) for line in lines[2:]]
    assert [d[3] for d in drivers] == ["--nodelist=gpu1", "--nodelist=gpu2", "--nodelist=gpu1"]
    for k, step in enumerate(drivers):
        assert step[0] == "srun" and "--gpus=1" in step and f"--output={run_dir}/pet-driver-{k}.log" in step
        command = shlex.split(step[-1])
        assert command[0] == "exec" and command[1].endswith("pet-driver")
        assert {"raw=inet:cpu7:40000", "3i=inet:cpu7:40001", "cuda", str(tiny_checkpoint)} <= set(command)
    with open(run_dir / "pet-run-input.xml") as handle:  # i-PI's own parser accepts the rewritten input
        simulation = InputSimulation()
        simulation.parse(xml_parse_file(handle).fields[0][1])
    sockets = ElementTree.parse(run_dir / "pet-run-input.xml").getroot().findall("ffsocket")
    assert [(s.get("mode"), s.find("address").text, s.find("port").text) for s in sockets] == \
        [("inet", "cpu7", "40000"), ("inet", "cpu7", "40001")]


def test_pet_run_rejects_zero_threads_before_starting_anything(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        launcher.main([str(INPUTS / "gas-nvt"), "--run-dir", str(tmp_path / "run"), "--threads", "0",
                       "--print-driver-command"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "argument --threads: must be a positive integer, got '0'" in error
    assert not (tmp_path / "run").exists()
