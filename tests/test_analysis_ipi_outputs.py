"""The readers of analysis.ipi_files on real i-PI 3.3.1 outputs, and the CLI on them.

i-PI runs 3 MTS steps of two water molecules on two built-in harmonic forcefields
(V = ½ k Σ x², k in atomic units) in-process (<ffdirect>), so every number has a known answer.
"""

import json
import subprocess
import sys
from pathlib import Path

import ase
import ase.io
import ase.units
import numpy as np
import pytest

from analysis.cli import main
from analysis.errors import AnalysisError
from analysis.ipi_files import column, read_properties, read_trajectory
from ipi_outputs import WATER, write_ipi_properties, write_ipi_xyz

K_A, K_B = 1e-3, 2e-3  # Hartree/Bohr², components 0 and 1
HA_PER_BOHR2_TO_EV_PER_A2 = ase.units.Hartree / ase.units.Bohr ** 2

INPUT = f"""<simulation verbosity="low" safe_stride="100">
  <output prefix="sim">
    <properties stride="1" filename="out">[step, time{{picosecond}}, conserved{{electronvolt}}, temperature{{kelvin}},
      potential, pot_component_raw(0){{electronvolt}}, pot_component_raw(1){{electronvolt}}]</properties>
    <trajectory filename="pos" stride="1" format="xyz" cell_units="angstrom">positions{{angstrom}}</trajectory>
    <trajectory filename="posau" stride="1" format="xyz">positions</trajectory>
    <trajectory filename="vel" stride="1" format="xyz">velocities</trajectory>
    <trajectory filename="frc" stride="1" format="xyz">forces{{ev/ang}}</trajectory>
    <trajectory filename="fraw" stride="1" format="xyz">forces_component_raw(0)</trajectory>
    <trajectory filename="velase" stride="1" format="ase">velocities</trajectory>
  </output>
  <total_steps>3</total_steps>
  <prng><seed>1</seed></prng>
  <ffdirect name="a"><pes>harmonic</pes><parameters>{{k1: {K_A}}}</parameters></ffdirect>
  <ffdirect name="b"><pes>harmonic</pes><parameters>{{k1: {K_B}}}</parameters></ffdirect>
  <system>
    <initialize nbeads="1"><file mode="xyz">init.xyz</file>
      <velocities mode="thermal" units="kelvin">300</velocities></initialize>
    <forces>
      <force forcefield="a"><mts_weights>[-1, 1]</mts_weights></force>
      <force forcefield="b"><mts_weights>[1, 0]</mts_weights></force>
    </forces>
    <motion mode="dynamics"><dynamics mode="nve"><timestep units="femtosecond">1.0</timestep>
      <nmts>[1, 2]</nmts></dynamics></motion>
  </system>
</simulation>
"""

START = """6
# CELL(abcABC): 10.0 10.0 10.0 90 90 90 positions{angstrom} cell{angstrom}
O 0.0 0.0 0.0
H 0.757 0.586 0.0
H -0.757 0.586 0.0
O 3.0 0.2 0.1
H 3.757 0.786 0.1
H 2.243 0.786 0.1
"""


@pytest.fixture(scope="module")
def ipi_run(tmp_path_factory) -> Path:
    """A folder with the outputs of a real 3-step i-PI run (about 2 s)."""
    folder = tmp_path_factory.mktemp("ipi")
    (folder / "input.xml").write_text(INPUT)
    (folder / "init.xyz").write_text(START)
    i_pi = Path(sys.executable).parent / "i-pi"
    done = subprocess.run([str(i_pi), "input.xml"], cwd=folder, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return folder


def test_properties_are_converted_to_project_units(ipi_run):
    columns = read_properties(ipi_run / "sim.out")
    positions = read_trajectory(ipi_run / "sim.pos_0.xyz", "length")
    assert np.allclose(column(columns, "time", "sim.out"), [0.0, 0.001, 0.002, 0.003])
    squares = np.sum(positions.values ** 2, axis=(1, 2))  # Å²
    for index, k in ((0, K_A), (1, K_B)):
        expected = 0.5 * k * HA_PER_BOHR2_TO_EV_PER_A2 * squares
        assert np.allclose(columns[f"pot_component_raw({index})"], expected, rtol=1e-5)
    # 'potential' was written without units (atomic units): it must come back in eV too
    assert np.allclose(columns["potential"], columns["pot_component_raw(1)"], rtol=1e-6)


def test_trajectories_come_back_in_angstrom_per_ps_and_ev_per_angstrom(ipi_run):
    positions = read_trajectory(ipi_run / "sim.pos_0.xyz")
    in_bohr = read_trajectory(ipi_run / "sim.posau_0.xyz")
    assert positions.quantity == "positions" and list(positions.steps) == [0, 1, 2, 3]
    assert np.allclose(positions.cells, 10.0 * np.eye(3), atol=1e-5)
    assert np.allclose(in_bohr.values, positions.values, atol=2e-5)
    # forces{ev/ang}: i-PI's own unit detection would read these as atomic units (51× too large)
    forces = read_trajectory(ipi_run / "sim.frc_0.xyz", "force")
    assert np.allclose(forces.values, -K_B * HA_PER_BOHR2_TO_EV_PER_A2 * positions.values, rtol=1e-4, atol=1e-5)
    component = read_trajectory(ipi_run / "sim.fraw.xyz", "force")
    assert component.quantity == "forces_component_raw"
    assert np.allclose(component.values, -K_A * HA_PER_BOHR2_TO_EV_PER_A2 * positions.values, rtol=1e-4, atol=1e-5)
    # velocities: kinetic energy against i-PI's temperature (3N degrees of freedom in this run)
    velocities = read_trajectory(ipi_run / "sim.vel_0.xyz", "velocity")
    amu_a2_per_ps2_in_ev = ase.units._amu * 1e4 / ase.units._e
    kinetic = 0.5 * np.einsum("i,fij->f", velocities.masses, velocities.values ** 2) * amu_a2_per_ps2_in_ev
    temperature = read_properties(ipi_run / "sim.out")["temperature"]
    assert np.allclose(kinetic, 0.5 * 3 * 6 * ase.units.kB * temperature, rtol=1e-4)
    as_ase = read_trajectory(ipi_run / "sim.velase_0.extxyz", "velocity")
    assert np.allclose(as_ase.values, velocities.values, rtol=1e-4, atol=1e-4)
    assert list(as_ase.steps) == [0, 1, 2, 3]


def test_cli_runs_on_real_outputs(ipi_run, tmp_path, capsys):
    run = str(ipi_run)
    assert main(["drift", f"{run}/sim.out", "--molecules", "2", "--out", str(tmp_path / "drift")]) == 0
    assert main(["spectrum", f"{run}/sim.out", "--segments", "1", "--out", str(tmp_path / "spectrum")]) == 0
    assert main(["angular-momentum", f"{run}/sim.pos_0.xyz", f"{run}/sim.vel_0.xyz", "--dt", "1",
                 "--out", str(tmp_path / "L")]) == 0
    assert main(["torque", "--run", "b", f"{run}/sim.pos_0.xyz", f"{run}/sim.frc_0.xyz",
                 "--run", "a", f"{run}/sim.pos_0.xyz", f"{run}/sim.fraw.xyz", "--blocks", "2",
                 "--out", str(tmp_path / "tau")]) == 0
    for name in ("drift", "spectrum", "L", "tau"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    result = json.loads((tmp_path / "tau.json").read_text())
    # the harmonic forces are central (about the origin), not about each molecule's centre of mass
    assert result["runs"]["b"]["mean_torque"] == pytest.approx(2 * result["runs"]["a"]["mean_torque"], rel=1e-3)
    spectrum = json.loads((tmp_path / "spectrum.json").read_text())
    assert set(spectrum["series"]) == {"potential", "delta"}


def test_user_mistakes_give_one_line_errors(ipi_run, tmp_path, capsys):
    run = str(ipi_run)
    assert main(["drift", f"{tmp_path}/missing.out", "--molecules", "2", "--out", str(tmp_path / "x")]) == 2
    assert main(["drift", f"{run}/sim.out", "--molecules", "2", "--column", "nope", "--out", str(tmp_path / "x")]) == 2
    assert main(["spectrum", f"{run}/sim.out", "--raw-index", "5", "--out", str(tmp_path / "x")]) == 2
    assert main(["angular-momentum", f"{run}/sim.vel_0.xyz", f"{run}/sim.pos_0.xyz", "--dt", "1",
                 "--out", str(tmp_path / "x")]) == 2
    assert main(["gofr", f"{run}/sim.out", "--out", str(tmp_path / "x")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 5 and all(line.startswith("pet-analyze ") for line in errors)
    assert "no such file" in errors[0]
    assert "no column 'nope'" in errors[1] and "conserved" in errors[1]
    assert "pot_component_raw(5)" in errors[2]
    assert "expected a length trajectory" in errors[3]
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(AnalysisError, match="not an i-PI properties file"):
        read_properties(ipi_run / "init.xyz")


def water_frames(n_frames):
    """(F, 3, 3) one water molecule shifted a little each frame."""
    return np.array([WATER + [5.0 + 0.01 * k, 5.0, 5.0] for k in range(n_frames)])


def test_an_incomplete_last_frame_or_row_is_left_out_with_a_warning(tmp_path, capsys):
    whole = write_ipi_xyz(tmp_path / "pos.xyz", ["O", "H", "H"], water_frames(5), 10 * np.eye(3)).read_text()
    ase.io.write(tmp_path / "pos.extxyz", [ase.Atoms("OH2", positions=frame, cell=10 * np.eye(3), pbc=True)
                                           for frame in water_frames(5)])
    for name, text in (("cut-line.xyz", whole[:-20]), ("cut-frame.xyz", "\n".join(whole.splitlines()[:-2]) + "\n"),
                       ("cut.extxyz", (tmp_path / "pos.extxyz").read_text()[:-20])):
        trajectory = read_trajectory(write(tmp_path / name, text), "length")
        assert len(trajectory) == 4 and np.allclose(trajectory.values, water_frames(4))
        assert f"{name}: the last frame is incomplete" in capsys.readouterr().err
    with pytest.raises(AnalysisError, match="its only frame is incomplete"):
        read_trajectory(write(tmp_path / "one.xyz", "\n".join(whole.splitlines()[:4])))
    rows = write_ipi_properties(tmp_path / "sim.out", [("time{picosecond}", [0.0, 0.1, 0.2]),
                                                       ("conserved{electronvolt}", [1.0, 2.0, 3.0])]).read_text()
    for text in (rows[:-4], rows[:-1]):  # a row cut in a number, a row without its end of line
        columns = read_properties(write(tmp_path / "cut.out", text))
        assert list(column(columns, "conserved", "cut.out")) == [1.0, 2.0]
        assert "cut.out: the last data row is incomplete" in capsys.readouterr().err
    read_properties(write(tmp_path / "whole.out", rows))
    assert capsys.readouterr().err == ""


def write(path, text):
    path.write_text(text)
    return path


def test_a_trajectory_without_a_cell_has_zero_cells(tmp_path):
    ase.io.write(tmp_path / "gas.extxyz", [ase.Atoms("OH2", positions=frame) for frame in water_frames(3)])
    for trajectory in (read_trajectory(write_ipi_xyz(tmp_path / "gas.xyz", ["O", "H", "H"], water_frames(3), None)),
                       read_trajectory(tmp_path / "gas.extxyz")):  # i-PI reads CELL(abcABC): 0 0 0 with NaN
        assert not trajectory.periodic and np.all(trajectory.cells == 0.0)
        assert np.allclose(trajectory.values, water_frames(3))
    box = write_ipi_xyz(tmp_path / "box.xyz", ["O", "H", "H"], water_frames(3), 10 * np.eye(3))
    assert read_trajectory(box).periodic


def test_non_finite_values_unknown_units_and_wide_columns_are_one_line_errors(tmp_path, capsys):
    frames = water_frames(6)
    frames[4, 1, 0] = np.nan
    path = write_ipi_xyz(tmp_path / "pos.xyz", ["O", "H", "H"], frames, 10 * np.eye(3), steps=range(0, 60, 10))
    with pytest.raises(AnalysisError, match=r"frame 4 \(step 40\) holds NaN or infinite positions"):
        read_trajectory(path)
    assert read_trajectory(path, finite=False).first_non_finite_frame() == 4
    time = [0.0, 0.1, 0.2, 0.3]
    write_ipi_properties(tmp_path / "inf.out", [("time{picosecond}", time),
                                                ("conserved{electronvolt}", [1.0, 2.0, np.inf, 4.0])])
    write_ipi_properties(tmp_path / "unit.out", [("time{picosecond}", time), ("conserved{foo}", time)])
    (tmp_path / "wide.out").write_text("# column   1     --> time{picosecond} : t\n"
                                       "# cols.  2-3     --> kstress : k\n" + "0.0 1 2\n0.1 1 2\n0.2 1 2\n")
    for properties, options in (("inf.out", []), ("unit.out", []), ("wide.out", ["--column", "kstress"])):
        assert main(["drift", str(tmp_path / properties), "--molecules", "1", *options,
                     "--out", str(tmp_path / "x")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # i-PI's table of units is not printed
    errors = captured.err.strip().splitlines()
    assert len(errors) == 3
    assert "inf.out: column 'conserved' is inf in data row 2" in errors[0]
    assert "unit.out: column 'conserved': 'foo' is not an i-PI unit of energy" in errors[1]
    assert "wide.out: column 'kstress' has several values per row" in errors[2]


def test_the_output_prefix_is_checked_before_the_analysis(ipi_run, tmp_path, capsys):
    run = str(ipi_run)
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "adir").mkdir()
    drift = ["drift", f"{run}/sim.out", "--molecules", "2", "--out"]
    assert main([*drift, str(tmp_path / "afile" / "res")]) == 2
    assert main([*drift, ""]) == 2
    assert main(["drift", str(tmp_path / "adir"), "--molecules", "2", "--out", str(tmp_path / "x")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [f"pet-analyze drift: error: --out {tmp_path}/afile/res: {tmp_path}/afile is a file, not a folder",
                      "pet-analyze drift: error: --out: the output prefix is empty",
                      f"pet-analyze drift: error: {tmp_path}/adir is a directory, not a file"]
    for out in ("adir", "adir/", "new/"):  # inside a folder: FOLDER/drift.png and .json
        assert main([*drift, str(tmp_path / out) + ("/" if out.endswith("/") else "")]) == 0
        assert (tmp_path / out / "drift.png").is_file() and (tmp_path / out / "drift.json").is_file()


@pytest.mark.parametrize("arguments, message", [
    (["orientation", "POS", "--bins-cos", "0"], "argument --bins-cos: must be a positive integer, got '0'"),
    (["orientation", "POS", "--bins-phi", "-3"], "argument --bins-phi: must be a positive integer, got '-3'"),
    (["diffusion", "POS", "--dt", "5", "--viscosity", "0"], "argument --viscosity: must be a finite number > 0"),
    (["diffusion", "POS", "--dt", "5", "--temperature", "-300"], "argument --temperature: must be a finite number > 0"),
    (["diffusion", "POS", "--dt", "inf"], "argument --dt: must be a finite number > 0, got 'inf'"),
    (["dipole-acf", "POS", "--dt", "5", "--charge-h", "0"], "argument --charge-h: must be a finite number > 0"),
    (["gofr", "POS", "--blocks", "abc"], "argument --blocks: must be a positive integer, got 'abc'"),
    (["ice", "POS", "--index", "0,2"], "argument --index: '0,2' is not an ASE index"),
    (["ice", "POS", "--index", "1.5"], "argument --index: '1.5' is not an ASE index"),
    (["ice", "POS", "--device", "foo"], "argument --device: device must be cpu, cuda or cuda:N, got 'foo'"),
    (["ice", "POS", "--chunk-size", "0"], "argument --chunk-size: must be a positive integer, got '0'"),
    (["intact"], "the following arguments are required: positions"),
])
def test_bad_arguments_are_one_line_errors_when_parsed(arguments, message, tmp_path, capsys):
    positions = write_ipi_xyz(tmp_path / "pos.xyz", ["O", "H", "H"], water_frames(4), 10 * np.eye(3))
    assert main([str(positions) if word == "POS" else word for word in arguments]
                + ["--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error and error.startswith(f"pet-analyze {arguments[0]}: error:")
    assert not (tmp_path / "x.json").exists()


def test_ice_device_must_exist_on_this_machine(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert main(["ice", "cells.xyz", "--device", "cuda", "--out", str(tmp_path / "x")]) == 2
    assert "argument --device: device 'cuda' requested but torch sees no CUDA device" in capsys.readouterr().err
