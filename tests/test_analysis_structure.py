"""Known answers for the structural analyses: an ideal gas of molecules (flat orientational free
energy, g(r) = 1, no orientation correlation), a Boltzmann-tilted orientation distribution, a simple
cubic lattice in a triclinic cell, hand-placed pairs, and random walks with a known diffusion
coefficient."""

import json

import numpy as np
import pytest
from ase.geometry import cellpar_to_cell

from analysis.cli import main
from analysis.diffusion import mean_square_displacement, unwrap, yeh_hummer_correction
from analysis.gofr import parse_reference, read_reference
from ipi_outputs import WATER, rotation_about, write_ipi_xyz

TRICLINIC = cellpar_to_cell([14.0, 15.0, 16.0, 75.0, 80.0, 70.0])  # a along x, b in the xy plane (i-PI's)


def molecules_along(axes, centres):
    """(M, 3, 3) water molecules with O at ``centres`` and dipole (O → H midpoint) along ``axes``,
    each spun by a random angle about its axis."""
    rng = np.random.default_rng(7)
    out = []
    for axis, centre in zip(axes, centres):
        axis = axis / np.linalg.norm(axis)
        spin = rotation_about([0.0, 1.0, 0.0], rng.uniform(0, 2 * np.pi))
        tilt = np.cross([0.0, 1.0, 0.0], axis)  # turn +y (the template's dipole) onto axis
        if np.linalg.norm(tilt) > 1e-12:
            to_axis = rotation_about(tilt, np.arccos(np.clip(axis[1], -1, 1)))
        else:
            to_axis = np.eye(3) if axis[1] > 0 else rotation_about([1.0, 0.0, 0.0], np.pi)
        out.append(WATER @ (to_axis @ spin).T + centre)
    return np.array(out)


def wrap(points, cell):
    fractional = points @ np.linalg.inv(cell)
    return (fractional - np.floor(fractional)) @ cell


def gas_frames(n_frames, n_molecules, axis_sampler, rng):
    """An ideal gas: random O positions in TRICLINIC, dipole directions from ``axis_sampler``."""
    frames = []
    for _ in range(n_frames):
        centres = rng.random((n_molecules, 3)) @ TRICLINIC
        molecules = molecules_along(axis_sampler(n_molecules), centres)
        frames.append(wrap(molecules.reshape(-1, 3), TRICLINIC))  # H may sit across the boundary
    return np.array(frames)


def isotropic(rng):
    def sample(n):
        vectors = rng.standard_normal((n, 3))
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return sample


def test_ideal_gas_has_flat_free_energy_and_g_of_r_one(tmp_path):
    rng = np.random.default_rng(0)
    frames = gas_frames(400, 24, isotropic(rng), rng)
    write_ipi_xyz(tmp_path / "gas.xyz", ["O", "H", "H"] * 24, frames, TRICLINIC)
    assert main(["orientation", str(tmp_path / "gas.xyz"), "--bins-cos", "8", "--bins-phi", "8", "--blocks", "10",
                 "--out", str(tmp_path / "F")]) == 0
    F = json.loads((tmp_path / "F.json").read_text())
    assert F["n_samples"] == 400 * 24 and F["empty_bins"] == 0
    assert 0.6 < F["chi2_per_bin_vs_flat"] < 2.0  # expected (B − 1)/(B − 3) = 1.29 for B = 10 blocks
    assert all(0.2 < chi2 < 3.0 for chi2 in F["chi2_per_bin_profiles"].values())
    assert all(span < 0.2 for span in F["profile_span"].values())
    for key in ("F", "F_cos_theta", "F_phi"):
        z = np.array(F[key]) / np.array(F[key + "_error"])
        assert np.all(np.abs(z) < 5), key
    assert main(["gofr", str(tmp_path / "gas.xyz"), "--r-max", "6", "--bin", "0.25", "--out", str(tmp_path / "g")]) == 0
    g = json.loads((tmp_path / "g.json").read_text())
    inside = np.array(g["r"]) > 1.0
    z = (np.array(g["g"]) - 1.0)[inside] / np.array(g["g_error"])[inside]
    assert np.mean(z ** 2) < 2.5 and np.all(np.abs(z) < 5)
    assert main(["orientation-correlation", str(tmp_path / "gas.xyz"), "--r-max", "6", "--bin", "1.0",
                 "--out", str(tmp_path / "c")]) == 0
    c = json.loads((tmp_path / "c.json").read_text())
    for key in ("longitudinal", "transverse"):
        z = np.array(c[key])[1:] / np.array(c[key + "_error"])[1:]
        assert np.all(np.abs(z) < 4.5), key


def test_tilted_orientations_give_their_boltzmann_free_energy(tmp_path):
    rng = np.random.default_rng(3)
    a = 1.5  # F(cos θ) = a cos²θ + constant, in k_B T

    def tilted(n):
        accepted = []
        while len(accepted) < n:
            u = isotropic(rng)(4 * n)
            keep = rng.random(len(u)) < np.exp(-a * u[:, 2] ** 2)
            accepted.extend(u[keep])
        return np.array(accepted[:n])

    frames = np.array([molecules_along(tilted(20), rng.random((20, 3)) * 30).reshape(-1, 3) for _ in range(300)])
    write_ipi_xyz(tmp_path / "tilted.xyz", ["O", "H", "H"] * 20, frames, 30 * np.eye(3))
    assert main(["orientation", str(tmp_path / "tilted.xyz"), "--bins-cos", "10", "--bins-phi", "6",
                 "--out", str(tmp_path / "F")]) == 0
    F = json.loads((tmp_path / "F.json").read_text())
    edges = np.array(F["cos_theta_edges"])
    # bin average of a c² over [c0, c1]: a (c1³ − c0³) / (3 (c1 − c0))
    expected = a * np.diff(edges ** 3) / (3 * np.diff(edges))
    profile, error = np.array(F["F_cos_theta"]), np.array(F["F_cos_theta_error"])
    shift = np.average(profile - expected, weights=error ** -2)
    assert np.all(np.abs(profile - expected - shift) < 4.5 * error)
    assert F["chi2_per_bin_vs_flat"] > 5  # clearly not flat
    assert F["chi2_per_bin_profiles"]["cos_theta"] > 20
    spread = expected.max() - expected.min()  # the span of the bin averages of a cos²θ
    assert F["profile_span"]["cos_theta"] == pytest.approx(spread, abs=0.3)


def test_simple_cubic_lattice_in_a_triclinic_cell(tmp_path):
    spacing = 3.0
    cell = 4 * spacing * np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])  # the same lattice, sheared
    sites = spacing * np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    write_ipi_xyz(tmp_path / "sc.xyz", ["O"] * 64, [wrap(sites, cell)] * 2, cell)
    assert main(["gofr", str(tmp_path / "sc.xyz"), "--r-max", "5.95", "--bin", "0.07", "--blocks", "2",
                 "--out", str(tmp_path / "g")]) == 0
    g = json.loads((tmp_path / "g.json").read_text())
    outer = np.array(g["r_edges"])[1:]
    coordination = np.array(g["coordination"])
    for radius, neighbours in ((2.9, 0), (3.5, 6), (4.5, 18), (5.5, 26)):  # shells at a, √2 a, √3 a
        assert coordination[np.searchsorted(outer, radius)] == pytest.approx(neighbours)
    assert g["peak_r"] == pytest.approx(spacing, abs=0.07)


def test_reference_curves_are_read_in_angstrom(data_dir):
    table = read_reference(*parse_reference(f"{data_dir}/goo-revpbe0-nnp-300K.dat:bohr"))
    peak = np.argmax(table[:, 1])
    assert table[peak, 0] == pytest.approx(2.83, abs=0.07) and table[peak, 1] == pytest.approx(2.74, abs=0.05)
    table = read_reference(*parse_reference(f"{data_dir}/goo-experiment-295K.dat"))
    peak = np.argmax(table[:, 1])
    assert table[peak, 0] == pytest.approx(2.81, abs=0.02) and table[peak, 1] == pytest.approx(2.57, abs=0.02)


def test_orientation_correlations_of_hand_placed_pairs(tmp_path):
    cell = 20 * np.eye(3)
    r = np.array([[5.0, 5.0, 5.0], [8.5, 5.0, 5.0]])  # O-O along x, 3.5 Å
    cases = {"along": ([1, 0, 0], [1, 0, 0], 1.0, 0.0),
             "parallel": ([0, 0, 1], [0, 0, 1], 0.0, 0.5),
             "antiparallel": ([0, 1, 0], [0, -1, 0], 0.0, -0.5),
             "head-to-head": ([1, 0, 0], [-1, 0, 0], -1.0, 0.0)}
    for name, (first, second, longitudinal, transverse) in cases.items():
        frame = molecules_along(np.array([first, second], float), r).reshape(-1, 3)
        write_ipi_xyz(tmp_path / f"{name}.xyz", ["O", "H", "H"] * 2, [frame] * 2, cell)
        assert main(["orientation-correlation", str(tmp_path / f"{name}.xyz"), "--r-max", "4", "--bin", "1",
                     "--blocks", "2", "--out", str(tmp_path / name)]) == 0
        c = json.loads((tmp_path / f"{name}.json").read_text())
        assert c["pairs"] == [0, 0, 0, 2]  # one pair per frame, in the bin [3, 4[ Å
        assert c["longitudinal"][3] == pytest.approx(longitudinal, abs=1e-9), name
        assert c["transverse"][3] == pytest.approx(transverse, abs=1e-9), name


def test_random_walk_diffusion_coefficient(tmp_path):
    rng = np.random.default_rng(4)
    D, frame_time = 0.25, 0.01  # Å²/ps, ps (dt = 10 fs per step, one frame per step)
    walk = np.cumsum(np.sqrt(2 * D * frame_time) * rng.standard_normal((1200, 64, 3)), axis=0)
    walk += rng.random((64, 3)) @ TRICLINIC
    write_ipi_xyz(tmp_path / "walk.xyz", ["O"] * 64, wrap(walk, TRICLINIC), TRICLINIC)
    assert main(["diffusion", str(tmp_path / "walk.xyz"), "--dt", "10", "--blocks", "4",
                 "--out", str(tmp_path / "msd")]) == 0
    result = json.loads((tmp_path / "msd.json").read_text())
    assert result["D"] == pytest.approx(D, abs=4 * result["D_error"])
    assert result["D_error"] < 0.1 * D
    assert result["D_1e9_m2_per_s"] == pytest.approx(10 * result["D"])
    lag = np.array(result["lag_time"])
    assert np.allclose(result["msd"], 6 * D * lag, rtol=0.1, atol=0.05)


def test_unwrapping_and_msd_against_brute_force():
    rng = np.random.default_rng(5)
    path = np.cumsum(0.3 * rng.standard_normal((50, 3, 3)), axis=0)
    cells = np.repeat(TRICLINIC[None], 50, axis=0) * 0.3  # small cell: many crossings
    unwrapped = unwrap(wrap(path, cells[0]), cells)
    assert np.allclose(unwrapped - unwrapped[0], path - path[0])
    brute = [np.mean([np.sum((path[t + m] - path[t]) ** 2, axis=-1).mean() for t in range(50 - m)])
             for m in range(11)]
    assert np.allclose(mean_square_displacement(path, 10), brute)


def test_yeh_hummer_correction_matches_the_data_readme():
    # k_B T ξ / (6π η L) for 512 and 64 molecules at 298 K, η = 0.89 mPa s: ~0.28 and ~0.56 ×1e-9 m²/s
    assert yeh_hummer_correction(298.0, 0.89, 24.86) == pytest.approx(0.28, abs=0.01)
    assert yeh_hummer_correction(298.0, 0.89, 12.43) == pytest.approx(0.56, abs=0.01)


def test_intact_measures_bonds_across_the_boundary_and_flags_a_broken_molecule(tmp_path):
    """Two molecules in a triclinic cell, the second's H across the boundary: bonds and the H-H
    distance as placed; then frame 2 stretches one O-H to 1.6 Å and frame 3 brings an H of one
    molecule within 0.9 Å of an H of the other."""
    first = WATER + np.array([1.0, 1.0, 1.0])
    second = WATER + np.array([0.3, 7.0, 8.0])  # its second H at x < 0: wrapped across
    frames = [np.concatenate([first, second]) for _ in range(4)]
    stretched = frames[2][1] - frames[2][0]
    frames[2][1] = frames[2][0] + 1.6 * stretched / np.linalg.norm(stretched)
    frames[3][3:] = first + np.array([0.0, 0.0, 0.9])  # the second molecule 0.9 Å above the first
    frames = np.array([wrap(f, TRICLINIC) for f in frames])
    path = write_ipi_xyz(tmp_path / "pos.xyz", ["O", "H", "H"] * 2, frames, TRICLINIC, steps=[0, 10, 20, 30])
    assert main(["intact", str(path), "--dt", "0.5", "--out", str(tmp_path / "intact")]) == 0
    result = json.loads((tmp_path / "intact.json").read_text())
    bond, hh = np.linalg.norm(WATER[1]), np.linalg.norm(WATER[1] - WATER[2])
    np.testing.assert_allclose(result["longest_oh_per_frame"], [bond, bond, 1.6, bond], atol=1e-8)
    np.testing.assert_allclose(result["shortest_hh_per_frame"], [hh, hh, hh, 0.9], atol=1e-8)
    assert result["intact"] is False and result["first_broken_step"] == 20
    assert (tmp_path / "intact.png").is_file()
    assert main(["intact", str(path), "--max-oh", "1.7", "--min-hh", "0.8", "--out", str(tmp_path / "loose")]) == 0
    assert json.loads((tmp_path / "loose.json").read_text())["intact"] is True


def test_intact_rejects_bad_limits_and_atom_order(tmp_path, capsys):
    path = write_ipi_xyz(tmp_path / "pos.xyz", ["H", "O", "H"], WATER[None], TRICLINIC)
    assert main(["intact", str(path), "--out", str(tmp_path / "x")]) == 2
    assert "O, H, H" in capsys.readouterr().err
    assert main(["intact", str(path), "--max-oh", "-1", "--out", str(tmp_path / "x")]) == 2
    assert "must be a finite number > 0" in capsys.readouterr().err


def test_without_a_cell_bonds_are_open_boundaries_and_pair_analyses_refuse(tmp_path, capsys):
    """A rotating molecule in vacuum (CELL(abcABC): 0 0 0): intact, orientation, dipole-acf and
    diffusion take open boundaries (diffusion without a Yeh-Hummer correction); g(r) and the
    orientation correlations need a cell."""
    frames = np.array([WATER @ rotation_about([0.0, 0.0, 1.0], 0.1 * k).T + 5.0 for k in range(40)])
    path = str(write_ipi_xyz(tmp_path / "gas.xyz", ["O", "H", "H"], frames, None))
    for arguments in (["intact", path], ["orientation", path, "--blocks", "2"], ["dipole-acf", path, "--dt", "1"],
                      ["diffusion", path, "--dt", "1", "--blocks", "2"]):
        assert main(arguments + ["--out", str(tmp_path / arguments[0])]) == 0, arguments[0]
    intact = json.loads((tmp_path / "intact.json").read_text())
    assert intact["intact"] is True
    np.testing.assert_allclose(intact["longest_oh_per_frame"], np.linalg.norm(WATER[1]), atol=1e-8)
    np.testing.assert_allclose(intact["shortest_hh_per_frame"], np.linalg.norm(WATER[1] - WATER[2]), atol=1e-8)
    assert json.loads((tmp_path / "diffusion.json").read_text())["yeh_hummer"] is None
    assert "no periodic cell: no Yeh-Hummer correction" in capsys.readouterr().out
    for analysis in ("gofr", "orientation-correlation"):
        assert main([analysis, path, "--blocks", "2", "--out", str(tmp_path / "x")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all("no periodic cell" in line for line in errors)
    assert "g(r) needs one" in errors[0]


def test_intact_reports_a_blown_up_run_as_broken_from_its_first_non_finite_frame(tmp_path, capsys):
    frames = np.array([WATER + 5.0] * 6)
    frames[4:] = np.nan
    path = str(write_ipi_xyz(tmp_path / "pos.xyz", ["O", "H", "H"], frames, 20 * np.eye(3), steps=range(0, 60, 10)))
    assert main(["intact", path, "--out", str(tmp_path / "intact")]) == 0
    result = json.loads((tmp_path / "intact.json").read_text())
    assert result["intact"] is False and result["first_broken_step"] == 40 and result["first_non_finite_step"] == 40
    assert result["steps"] == [0, 10, 20, 30] and result["n_frames"] == 6
    assert result["longest_oh"] == pytest.approx(np.linalg.norm(WATER[1]))
    assert "BROKEN from step 40 (NaN or infinite positions from step 40)" in capsys.readouterr().out
    for arguments in (["orientation", path], ["gofr", path], ["diffusion", path, "--dt", "1"]):
        assert main(arguments + ["--out", str(tmp_path / "x")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all("frame 4 (step 40) holds NaN or infinite positions" in line for line in errors)


def test_distance_bins_end_at_r_max_in_both_pair_analyses(tmp_path):
    cell = 20 * np.eye(3)
    frame = molecules_along(np.array([[1.0, 0, 0], [1.0, 0, 0]]), np.array([[5.0, 5, 5], [8.5, 5, 5]]))
    path = str(write_ipi_xyz(tmp_path / "pair.xyz", ["O", "H", "H"] * 2, [frame.reshape(-1, 3)] * 2, cell))
    for analysis in ("gofr", "orientation-correlation"):
        assert main([analysis, path, "--r-max", "6", "--bin", "4", "--blocks", "2",
                     "--out", str(tmp_path / analysis)]) == 0
        result = json.loads((tmp_path / f"{analysis}.json").read_text())
        assert result["r_edges"] == pytest.approx([0.0, 3.0, 6.0]) and result["bin_width"] == pytest.approx(3.0)
    assert json.loads((tmp_path / "orientation-correlation.json").read_text())["pairs"] == [0, 2]
    assert main(["gofr", path, "--r-max", "6", "--bin", "0.5", "--blocks", "2", "--out", str(tmp_path / "g")]) == 0
    assert json.loads((tmp_path / "g.json").read_text())["r_edges"] == pytest.approx(np.arange(13) * 0.5)


def test_too_many_blocks_no_pairs_and_a_fit_beyond_the_lags_are_errors(tmp_path, capsys):
    rng = np.random.default_rng(8)
    frames = gas_frames(12, 4, isotropic(rng), rng)
    path = str(write_ipi_xyz(tmp_path / "gas.xyz", ["O", "H", "H"] * 4, frames, TRICLINIC))
    one = str(write_ipi_xyz(tmp_path / "one.xyz", ["O", "H", "H"], frames[:, :3], TRICLINIC))
    walk = np.cumsum(0.1 * rng.standard_normal((40, 8, 3)), axis=0) + 5.0
    walk_path = str(write_ipi_xyz(tmp_path / "walk.xyz", ["O"] * 8, walk, TRICLINIC))
    for arguments in (["gofr", path, "--blocks", "100"], ["orientation-correlation", path, "--blocks", "13"],
                      ["orientation-correlation", one, "--blocks", "2"],
                      ["diffusion", walk_path, "--dt", "1000", "--blocks", "2", "--fit-end", "100"],
                      ["diffusion", walk_path, "--dt", "1000", "--blocks", "6"]):
        assert main(arguments + ["--out", str(tmp_path / "x")]) == 2, arguments
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("pet-analyze")]
    # the default --r-max 6 Å of orientation-correlation is within half of TRICLINIC's smallest width
    assert [line for line in lines if line not in errors] == []
    assert len(errors) == 5
    assert "12 frames cannot make 100 blocks (--blocks at most 12)" in errors[0]
    assert "12 frames cannot make 13 blocks" in errors[1]
    assert "no molecule pairs within --r-max 6.0 Å (1 molecules)" in errors[2]
    assert "--fit-end 100.0 ps is beyond the largest lag, 10 ps" in errors[3]
    assert "40 frames are too few for 6 blocks (at least 8 frames per block: 48)" in errors[4]
    assert main(["diffusion", walk_path, "--dt", "1000", "--blocks", "2", "--fit-end", "10",
                 "--out", str(tmp_path / "msd")]) == 0
    assert json.loads((tmp_path / "msd.json").read_text())["fit_window"] == pytest.approx([2.0, 10.0])


def test_one_block_gives_the_pair_analyses_of_a_single_structure_without_error_bars(tmp_path):
    rng = np.random.default_rng(9)
    frame = gas_frames(1, 4, isotropic(rng), rng)
    path = str(write_ipi_xyz(tmp_path / "snapshot.xyz", ["O", "H", "H"] * 4, frame, TRICLINIC))
    for command in ("gofr", "orientation-correlation"):
        out = tmp_path / command
        assert main([command, path, "--blocks", "2", "--out", str(out)]) == 2
        assert main([command, path, "--blocks", "1", "--r-max", "5", "--out", str(out)]) == 0
        result = json.loads(out.with_suffix(".json").read_text())
        errors = [value for key, value in result.items() if key.endswith("_error")]
        assert errors and all(value is None for value in errors)
        assert result["n_frames"] == 1
