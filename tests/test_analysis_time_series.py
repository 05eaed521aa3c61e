"""Known answers for the time-series analyses: a rigid rotor spinning at a fixed angular velocity
(angular momentum, torque, dipole autocorrelation), a harmonic oscillator's energy (spectrum) and
a conserved quantity with a linear drift."""

import json

import ase.units
import numpy as np
import pytest

from analysis.cli import main
from analysis.spectrum import power_spectrum
from ipi_outputs import (WATER, WATER_MASSES, rotation_about, water_centre_of_mass, write_ipi_properties,
                         write_ipi_xyz)

CELL = 20.0 * np.eye(3)
AMU_A2_PER_PS2_IN_EV = ase.units._amu * 1e4 / ase.units._e
DT_FS = 2.0


def rotor(omega, n_frames, phase=0.0, centre=(5.0, 5.0, 5.0)):
    """A water molecule turning about its centre of mass at a constant angular velocity ``omega``
    (rad/ps, fixed in the lab), one frame every DT_FS: positions (F, 3, 3) Å, velocities (Å/ps)
    and the forces (eV/Å) that keep it on that motion, F = m ω × (ω × r)."""
    omega = np.asarray(omega, dtype=float)
    body = (WATER - water_centre_of_mass()) @ rotation_about(omega, phase).T
    positions, velocities, forces = [], [], []
    for k in range(n_frames):
        r = body @ rotation_about(omega, np.linalg.norm(omega) * k * DT_FS * 1e-3).T
        v = np.cross(omega, r)
        positions.append(r + centre)
        velocities.append(v)
        forces.append(WATER_MASSES[:, None] * np.cross(omega, v) * AMU_A2_PER_PS2_IN_EV)
    return np.array(positions), np.array(velocities), np.array(forces)


def inertia_tensor(r):
    """(3, 3) amu Å² of the water atoms at r (3, 3) relative to the centre of mass."""
    return sum(m * (np.dot(x, x) * np.eye(3) - np.outer(x, x)) for m, x in zip(WATER_MASSES, r))


def write_rotor(tmp_path, omega, n_frames=150):
    positions, velocities, forces = rotor(omega, n_frames)
    symbols = ["O", "H", "H"]
    write_ipi_xyz(tmp_path / "pos.xyz", symbols, positions, CELL)
    write_ipi_xyz(tmp_path / "vel.xyz", symbols, 100.0 * velocities, CELL, "velocities", "m/s")  # 1 Å/ps = 100 m/s
    write_ipi_xyz(tmp_path / "frc.xyz", symbols, forces, CELL, "forces", "ev/ang")
    return positions


def test_rigid_rotor_angular_momentum_is_I_omega_and_precesses(tmp_path):
    omega = np.array([3.0, -4.0, 12.0])  # rad/ps, not along a principal axis: L turns about ω
    positions = write_rotor(tmp_path, omega)
    assert main(["angular-momentum", str(tmp_path / "pos.xyz"), str(tmp_path / "vel.xyz"), "--dt", str(DT_FS),
                 "--out", str(tmp_path / "L")]) == 0
    result = json.loads((tmp_path / "L.json").read_text())
    L = np.array(result["L"])
    L0 = inertia_tensor(positions[0] - positions[0].T @ WATER_MASSES / WATER_MASSES.sum()) @ omega
    time = np.array(result["time"])
    assert np.allclose(time, np.arange(len(positions)) * DT_FS * 1e-3)
    expected = np.array([rotation_about(omega, np.linalg.norm(omega) * t) @ L0 for t in time])
    assert np.allclose(L, expected, rtol=1e-6, atol=1e-6 * np.linalg.norm(L0))
    assert np.allclose(result["L_norm"], np.linalg.norm(L0), rtol=1e-6)
    assert result["max_angle_from_start_deg"] > 10.0  # it does precess


def test_rigid_rotor_torque_is_dL_dt(tmp_path):
    omega = np.array([3.0, -4.0, 12.0])
    positions = write_rotor(tmp_path / "", omega)
    principal = rotor([0.0, 0.0, 12.0], 150)  # about the out-of-plane principal axis: no torque
    write_ipi_xyz(tmp_path / "pos_z.xyz", ["O", "H", "H"], principal[0], CELL)
    write_ipi_xyz(tmp_path / "frc_z.xyz", ["O", "H", "H"], principal[2], CELL, "forces", "ev/ang")
    assert main(["torque", "--run", "generic", str(tmp_path / "pos.xyz"), str(tmp_path / "frc.xyz"),
                 "--run", "principal", str(tmp_path / "pos_z.xyz"), str(tmp_path / "frc_z.xyz"),
                 "--out", str(tmp_path / "tau")]) == 0
    runs = json.loads((tmp_path / "tau.json").read_text())["runs"]
    L0 = inertia_tensor(positions[0] - positions[0].T @ WATER_MASSES / WATER_MASSES.sum()) @ omega
    expected = np.linalg.norm(np.cross(omega, L0)) * AMU_A2_PER_PS2_IN_EV  # eV
    assert runs["generic"]["mean_torque"] == pytest.approx(expected, rel=1e-6)
    assert runs["generic"]["error"] == pytest.approx(0.0, abs=1e-6 * expected)
    assert runs["principal"]["mean_torque"] < 1e-6 * expected


def test_dipole_autocorrelation_of_a_rotor_is_cos_omega_t(tmp_path):
    omega = 25.0  # rad/ps about z, perpendicular to the dipole (which lies along y in the plane)
    first = rotor([0.0, 0.0, omega], 200, phase=0.0, centre=(5.0, 5.0, 5.0))[0]
    second = rotor([0.0, 0.0, omega], 200, phase=1.0, centre=(12.0, 14.0, 15.0))[0]
    write_ipi_xyz(tmp_path / "pos.xyz", ["O", "H", "H"] * 2, np.concatenate([first, second], axis=1), CELL)
    assert main(["dipole-acf", str(tmp_path / "pos.xyz"), "--dt", str(DT_FS), "--max-lag", "0.2",
                 "--out", str(tmp_path / "acf")]) == 0
    result = json.loads((tmp_path / "acf.json").read_text())
    lag = np.array(result["lag_time"])
    assert lag[-1] == pytest.approx(0.2)
    assert np.allclose(result["molecular"], np.cos(omega * lag), atol=1e-6)
    assert np.allclose(result["total"], np.cos(omega * lag), atol=1e-6)
    # |μ| = q_H · 2 · 0.586 Å
    assert result["mean_molecular_dipole_debye"] == pytest.approx(0.4238 * 2 * 0.586 * 4.803204, rel=1e-6)


def test_power_spectrum_of_a_harmonic_oscillator(tmp_path):
    dt = 0.001  # ps
    time = np.arange(4096) * dt
    frequency = 12.5  # THz, of the oscillator x = cos(2π f t)
    k, amplitude = 2.0, 0.3  # eV/Å², Å
    potential = 0.5 * k * (amplitude * np.cos(2 * np.pi * frequency * time)) ** 2  # peaks at 2f
    rng = np.random.default_rng(0)
    delta = 0.01 * np.sin(2 * np.pi * 40.0 * time) + 1e-4 * rng.standard_normal(len(time))
    hartree = ase.units.Hartree
    write_ipi_properties(tmp_path / "sim.out", [
        ("step", np.arange(len(time))), ("time{picosecond}", time), ("potential", potential / hartree),
        ("pot_component_raw(0){electronvolt}", 1.0 + delta), ("pot_component_raw(1){electronvolt}", np.ones_like(time)),
    ])
    assert main(["spectrum", str(tmp_path / "sim.out"), "--segments", "8", "--out", str(tmp_path / "s")]) == 0
    series = json.loads((tmp_path / "s.json").read_text())["series"]
    df = series["potential"]["frequency"][1]
    assert series["potential"]["peak_frequency"] == pytest.approx(2 * frequency, abs=df)
    assert series["delta"]["peak_frequency"] == pytest.approx(40.0, abs=df)
    assert series["potential"]["variance"] == pytest.approx(potential.var(), rel=1e-6)  # back in eV (i-PI vs ASE Hartree: 1e-7)
    for name in ("potential", "delta"):  # Parseval: the PSD integrates to the variance
        assert np.sum(series[name]["psd"]) * df == pytest.approx(series[name]["variance"], rel=0.03)


def test_power_spectrum_of_white_noise_is_flat():
    rng = np.random.default_rng(1)
    frequency, psd = power_spectrum(rng.standard_normal(20000), dt=0.01, n_segments=32)
    inner = psd[2:-2]
    assert np.mean(inner) == pytest.approx(2 * 0.01, rel=0.05)  # one-sided σ² · 2 dt
    assert frequency[-1] == pytest.approx(50.0)


def test_drift_of_a_linear_conserved_quantity(tmp_path):
    rng = np.random.default_rng(2)
    time = np.arange(2000) * 0.005  # ps
    slope = 0.0032  # eV/ps for 64 molecules → 50 meV/molecule/ns
    noise = 0.002
    conserved = -1234.5 + slope * time + noise * rng.standard_normal(len(time))
    write_ipi_properties(tmp_path / "nve.out", [("time{picosecond}", time), ("conserved{electronvolt}", conserved)])
    assert main(["drift", str(tmp_path / "nve.out"), "--molecules", "64", "--out", str(tmp_path / "d")]) == 0
    result = json.loads((tmp_path / "d.json").read_text())
    expected_error = noise / np.sqrt(np.sum((time - time.mean()) ** 2)) * 1e6 / 64
    assert result["drift_error_meV_per_molecule_per_ns"] == pytest.approx(expected_error, rel=0.1)
    assert abs(result["drift_meV_per_molecule_per_ns"] - 50.0) < 4 * expected_error


def test_drift_of_several_runs_side_by_side(tmp_path, capsys):
    time = np.arange(400) * 0.005  # ps
    paths = []
    for k, slope in enumerate((0.0032, -0.0064)):  # eV/ps for 64 molecules: 50 and -100 meV/molecule/ns
        paths.append(tmp_path / f"run{k}.out")
        write_ipi_properties(paths[-1], [("time{picosecond}", time), ("conserved{electronvolt}", -10.0 + slope * time)])
    paths = [str(path) for path in paths]
    assert main(["drift", *paths, "--labels", "slow", "fast", "--molecules", "64", "--out", str(tmp_path / "d")]) == 0
    result = json.loads((tmp_path / "d.json").read_text())
    assert [entry["label"] for entry in result["runs"]] == ["slow", "fast"]
    assert [entry["drift_meV_per_molecule_per_ns"] for entry in result["runs"]] == pytest.approx([50.0, -100.0])
    assert (tmp_path / "d.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["drift", *paths, "--labels", "one", "--molecules", "64", "--out", str(tmp_path / "x")]) == 2
    assert "2 files" in capsys.readouterr().err


def test_time_columns_must_increase_and_hold_enough_rows(tmp_path, capsys):
    time = np.arange(20) * 0.005
    restarted = np.concatenate([time[:12], time[8:16]])  # a restart appended: steps 8.. again
    for name, times in (("restart.out", restarted), ("zeros.out", 0 * time), ("one.out", time[:1])):
        write_ipi_properties(tmp_path / name, [("time{picosecond}", times), ("conserved{electronvolt}", times),
                                               ("potential{electronvolt}", times)])
    for analysis, name in (("drift", "restart.out"), ("spectrum", "restart.out"), ("drift", "zeros.out"),
                           ("spectrum", "one.out"), ("drift", "one.out")):
        options = ["--molecules", "1"] if analysis == "drift" else ["--series", "potential"]
        assert main([analysis, str(tmp_path / name), *options, "--out", str(tmp_path / "x")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 5
    assert all("the time column does not increase at data row 12 (counted from 0; 0.055 then 0.04)" in line
               for line in errors[:2])
    assert "does not increase at data row 1 (counted from 0; 0 then 0)" in errors[2]
    assert "this analysis needs at least 2 data rows, the file has 1" in errors[3]
    assert "this analysis needs at least 3 data rows, the file has 1" in errors[4]


def test_spectrum_of_the_temperature_is_in_kelvin(tmp_path, capsys):
    time = np.arange(512) * 0.001
    temperature = 300.0 + 10.0 * np.sin(2 * np.pi * 20.0 * time)
    potential = 0.01 * np.cos(2 * np.pi * 30.0 * time)
    write_ipi_properties(tmp_path / "nvt.out", [("time{picosecond}", time), ("temperature{kelvin}", temperature),
                                                ("potential{electronvolt}", potential)])
    assert main(["spectrum", str(tmp_path / "nvt.out"), "--series", "temperature", "potential",
                 "--segments", "2", "--out", str(tmp_path / "s")]) == 0
    series = json.loads((tmp_path / "s.json").read_text())["series"]
    assert series["temperature"]["units"] == {"psd": "K^2/THz", "variance": "K^2"}
    assert series["potential"]["units"] == {"psd": "eV^2/THz", "variance": "eV^2"}
    out = capsys.readouterr().out
    assert f"std {temperature.std():.4g} K;" in out and f"std {potential.std() * 1e3:.4g} meV" in out
    assert main(["spectrum", str(tmp_path / "nvt.out"), "--out", str(tmp_path / "x")]) == 2  # no MTS columns
    error = capsys.readouterr().err
    assert "no column 'pot_component_raw(0)' for 'delta'" in error and "--series potential" in error


def test_lags_and_frames_are_checked_in_ps_and_frames(tmp_path, capsys):
    positions = write_rotor(tmp_path, [0.0, 0.0, 20.0], n_frames=50)
    write_ipi_xyz(tmp_path / "one.xyz", ["O", "H", "H"], positions[:1], CELL)
    write_ipi_xyz(tmp_path / "one-vel.xyz", ["O", "H", "H"], np.zeros((1, 3, 3)), CELL, "velocities", "m/s")
    for arguments in (["dipole-acf", "pos.xyz", "--dt", str(DT_FS), "--max-lag", "20"],
                      ["dipole-acf", "one.xyz", "--dt", str(DT_FS)], ["diffusion", "one.xyz", "--dt", str(DT_FS)],
                      ["angular-momentum", "one.xyz", "one-vel.xyz", "--dt", str(DT_FS)],
                      ["torque", "--run", "rotor", "pos.xyz", "frc.xyz", "--blocks", "60"]):
        arguments = [str(tmp_path / word) if word.endswith(".xyz") else word for word in arguments]
        assert main(arguments + ["--out", str(tmp_path / "x")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 5
    assert "--max-lag 20.0 ps is 10000 frames of 0.002 ps: it must be 1 to 49 frames, 0.002 to 0.098 ps" in errors[0]
    assert all("this analysis needs at least 2 frames, the file has 1" in line for line in errors[1:3])
    assert "share 1 MD step: L(t) needs at least 2" in errors[3]
    assert "run rotor: 50 frames cannot make 60 blocks" in errors[4]


def test_a_molecule_at_rest_has_no_direction_of_angular_momentum(tmp_path, capsys):
    write_ipi_xyz(tmp_path / "pos.xyz", ["O", "H", "H"], [WATER + 5.0] * 10, CELL)
    write_ipi_xyz(tmp_path / "vel.xyz", ["O", "H", "H"], np.zeros((10, 3, 3)), CELL, "velocities", "m/s")
    assert main(["angular-momentum", str(tmp_path / "pos.xyz"), str(tmp_path / "vel.xyz"), "--dt", str(DT_FS),
                 "--out", str(tmp_path / "L")]) == 0
    result = json.loads((tmp_path / "L.json").read_text())
    assert result["max_angle_from_start_deg"] is None and result["L_norm"] == [0.0] * 10
    out = capsys.readouterr().out
    assert "|L| is zero at the start, so the direction of L is undefined" in out and "nan" not in out
