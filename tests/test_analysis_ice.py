"""The ice analysis with a tiny random model on the two smallest proton-disordered cells."""

import json

import ase.io
import numpy as np
import pytest

from analysis.cli import main
from analysis.ice import plot, relative_per_molecule
from ipi_outputs import write_ipi_xyz
from pet.calculator import PETCalculator


def test_ice_forces_energies_and_rmsd(tmp_path, data_dir, tiny_checkpoint):
    cells_path = data_dir / "ice-ih-hayward-reimers.xyz"
    cells = ase.io.read(cells_path, "0:2")
    rng = np.random.default_rng(0)
    relaxed, expected_rmsd = {"raw": [], "avg": []}, []
    for k, atoms in enumerate(cells):
        # stand-ins for the minimisers' outputs: known displacements, plus a rigid shift that
        # carries atoms across the cell boundary (the RMSD must ignore both)
        step_raw = 0.01 * rng.standard_normal((len(atoms), 3))
        step_avg = 0.01 * rng.standard_normal((len(atoms), 3))
        difference = step_raw - step_avg
        expected_rmsd.append(np.sqrt(np.mean(np.sum((difference - difference.mean(0)) ** 2, axis=1))))
        cell = np.asarray(atoms.cell)
        for key, positions in (("raw", atoms.positions + step_raw),
                               ("avg", atoms.positions + step_avg + np.array([2.0, -1.0, 0.5]))):
            fractional = positions @ np.linalg.inv(cell)
            wrapped = (fractional - np.floor(fractional)) @ cell
            path = write_ipi_xyz(tmp_path / f"{key}-{k}.xyz", atoms.get_chemical_symbols(),
                                 [atoms.positions, wrapped], cell)
            relaxed[key].append(str(path))
    assert main(["ice", str(cells_path), "--index", "0:2", "--model", str(tiny_checkpoint), "--grid", "2",
                 "--dtype", "float32", "--relaxed-raw", *relaxed["raw"], "--relaxed-avg", *relaxed["avg"],
                 "--out", str(tmp_path / "ice")]) == 0
    result = json.loads((tmp_path / "ice.json").read_text())
    assert result["n_molecules"] == [96, 96]
    assert np.allclose(result["rmsd_relaxed"], expected_rmsd, rtol=1e-6)

    raw = PETCalculator(str(tiny_checkpoint), dtype="float32")
    average = PETCalculator(str(tiny_checkpoint), grid="2", dtype="float32")
    energies = {"raw": [], "avg": []}
    for k, atoms in enumerate(cells):
        f_raw = raw.get_forces(atoms)
        energies["raw"].append(raw.get_potential_energy(atoms))
        f_avg = average.get_forces(atoms)
        energies["avg"].append(average.get_potential_energy(atoms))
        assert result["forces_initial"][k]["mae"] == pytest.approx(1e3 * np.abs(f_raw - f_avg).mean(), rel=1e-6)
        assert result["forces_initial"][k]["mae"] > 0.0  # the random model is not invariant
    for key in ("raw", "avg"):
        assert np.allclose(result["relative_initial"][key], relative_per_molecule(energies[key], [96, 96]), atol=1e-3)
    assert np.allclose(result["relative_initial"]["difference"],
                       np.subtract(result["relative_initial"]["raw"], result["relative_initial"]["avg"]))
    assert len(result["relative_relaxed"]["raw"]) == 2
    assert (tmp_path / "ice.png").stat().st_size > 0


def test_ice_rejects_mismatched_relaxations(tmp_path, data_dir, tiny_checkpoint, capsys):
    cells_path = data_dir / "ice-ih-hayward-reimers.xyz"
    assert main(["ice", str(cells_path), "--index", "0:2", "--model", str(tiny_checkpoint),
                 "--relaxed-raw", str(cells_path), "--out", str(tmp_path / "ice")]) == 2
    assert main(["ice", str(cells_path), "--index", "0:2", "--model", str(tmp_path / "none.pt"),
                 "--out", str(tmp_path / "ice")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert "both --relaxed-raw and --relaxed-avg" in errors[0]
    assert "no checkpoint file" in errors[1]


def test_ice_merge_matches_one_joint_run(tmp_path, data_dir, tiny_checkpoint, capsys):
    cells_path = str(data_dir / "ice-ih-hayward-reimers.xyz")
    common = ["--model", str(tiny_checkpoint), "--grid", "2", "--dtype", "float32"]
    for index in ("0", "1", "0:2"):
        assert main(["ice", cells_path, "--index", index, *common, "--out", str(tmp_path / index)]) == 0
    joint = json.loads((tmp_path / "0:2.json").read_text())
    single = json.loads((tmp_path / "1.json").read_text())
    assert single["cells"] == [1] and single["relative_initial"]["raw"] == [0.0]
    assert main(["ice", cells_path, "--index", "1", *common, "--merge", str(tmp_path / "0.json"),
                 "--out", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["cells"] == [0, 1] and merged["n_molecules"] == [96, 96]
    # the plots label the cells by their indices in the cells file, as the tables and --frame do
    assert [list(axis.get_xticks()) for axis in plot(single)[0].axes] == [[1], [1]]
    assert list(plot(merged)[0].axes[1].get_xticks()) == [0, 1]
    assert merged["model_sha256"] == joint["model_sha256"]
    for key in ("raw", "avg", "difference"):
        assert np.allclose(merged["relative_initial"][key], joint["relative_initial"][key], atol=1e-3)
    assert np.allclose([entry["mae"] for entry in merged["forces_initial"]],
                       [entry["mae"] for entry in joint["forces_initial"]], rtol=1e-5)

    # results that must not be combined: the same cell twice, another grid, no record of the cells
    other_grid = json.loads((tmp_path / "0.json").read_text())
    other_grid["grid"] = "3i"
    (tmp_path / "grid.json").write_text(json.dumps(other_grid))
    del other_grid["cells"]
    (tmp_path / "old.json").write_text(json.dumps(other_grid))
    assert "ice: cell 1/1 (288 atoms): raw and 2-averaged model" in capsys.readouterr().err
    for earlier in ("1.json", "grid.json", "old.json"):
        assert main(["ice", cells_path, "--index", "1", *common, "--merge", str(tmp_path / earlier),
                     "--out", str(tmp_path / "bad")]) == 2
    assert main(["ice", cells_path, "--index", "12", *common, "--out", str(tmp_path / "bad")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in errors if not line.startswith("ice: cell")]
    assert "cells [1] appear twice" in errors[0]
    assert "grid 3i differs" in errors[1]
    assert "does not say which cells it holds" in errors[2]
    assert "holds 9 cells" in errors[3]


def test_ice_merge_conflicts_are_found_before_the_model_runs(tmp_path, data_dir, tiny_checkpoint, capsys):
    earlier = {"cells": [1], "n_molecules": [96], "energy_initial": {"raw": [-1.0], "avg": [-1.0]},
               "forces_initial": [{"mae": 1.0, "rms": 1.0, "max_atom": 1.0}], "dtype": "float32"}
    for name, changes in (("grid.json", {"grid": "3i"}), ("twice.json", {"grid": "2", "cells": [0]}),
                          ("relaxed.json", {"grid": "2", "energy_relaxed": {"raw": [-1.0], "avg": [-1.0]}})):
        (tmp_path / name).write_text(json.dumps({**earlier, **changes}))
        assert main(["ice", str(data_dir / "ice-ih-hayward-reimers.xyz"), "--index", "0", "--model",
                     str(tiny_checkpoint), "--grid", "2", "--dtype", "float32", "--merge", str(tmp_path / name),
                     "--out", str(tmp_path / "bad")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert all(not line.startswith("ice: cell") for line in errors)  # no cell was evaluated
    errors = [line for line in errors if line.startswith("pet-analyze")]
    assert "grid 3i differs from this run's 2" in errors[0]
    assert "cells [0] appear twice" in errors[1]
    assert "relaxed geometries in some results and not in others" in errors[2]
