"""pet-eval's inputs: files that are not structures, empty environment variables, the default
subset of the recorded data file, --accuracy-grid raw."""

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from pet.evaluate import main
from pet.structures import water_box

from ipi_outputs import WATER, write_ipi_xyz


def _error_line(capsys) -> str:
    """The one line pet-eval wrote on stderr last (after its progress lines), no traceback."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.fixture
def labelled_file(tmp_path):
    """Three labelled periodic boxes of 3 molecules in an extended-XYZ file."""
    frames = []
    for seed in range(3):
        atoms = water_box(3, seed=seed)
        atoms.calc = SinglePointCalculator(atoms, energy=-1300.0 + seed, forces=np.zeros((9, 3)))
        frames.append(atoms)
    path = tmp_path / "labelled.xyz"
    write(path, frames, format="extxyz")
    return path


@pytest.mark.parametrize("quantity", ["forces", "velocities", "forces_component_raw"])
def test_an_ipi_trajectory_of_forces_or_velocities_is_refused(tiny_checkpoint, tmp_path, capsys, quantity):
    path = write_ipi_xyz(tmp_path / f"simulation.{quantity}.xyz", ["O", "H", "H"], [WATER * 0.01] * 2,
                         np.eye(3) * 20.0, quantity=quantity, units="atomic_unit")
    assert main([str(tiny_checkpoint), "--data", str(path), "--grids", "raw", "--reference", "1"]) == 2
    assert _error_line(capsys) == (f"pet-eval: error: {path} is an i-PI trajectory of {quantity}, not of "
                                   "positions: give the positions trajectory (e.g. simulation.pos_0.xyz)")


def test_an_ipi_extxyz_trajectory_of_forces_is_refused(tiny_checkpoint, tmp_path, capsys):
    """i-PI's format="ase" keeps the forces in a column and writes zero positions."""
    atoms = Atoms("OH2", cell=np.eye(3) * 20.0, pbc=True)
    atoms.arrays["forces"] = WATER * 0.01
    atoms.info["ipi_comment"] = "Step: 0 Bead: 0 forces{ase}  cell{ase}"
    path = tmp_path / "simulation.for_0.extxyz"
    write(path, atoms, format="extxyz")
    assert main([str(tiny_checkpoint), "--data", str(path), "--grids", "raw", "--reference", "1"]) == 2
    assert f"{path} is an i-PI trajectory of forces, not of positions" in _error_line(capsys)


@pytest.mark.parametrize("position, message", [
    (1e200, "frame 1: a coordinate is 1e+200 Å, more than 1e+06 Å from 0"),
    (2e4, "frame 1: the atoms span 20000 Å along x, more than 10000 Å"),
    (np.nan, "frame 1: positions contain NaN or infinity"),
    (0.05, "frame 1: atoms 0 and 2 overlap (0.050 Å apart, less than 0.3 Å)"),
], ids=["1e200", "2e4", "nan", "overlap"])
def test_frames_that_are_not_structures_are_refused_naming_file_and_frame(tiny_checkpoint, tmp_path, capsys,
                                                                          position, message):
    """The second frame of a file has an atom far away, at NaN or 0.05 Å from another: one line
    naming the file, the frame (and the atoms), before any evaluation."""
    good = Atoms("OH2", positions=WATER)
    bad = Atoms("OH2", positions=[[0, 0, 0], [0.757, 0.586, 0], [position, 0, 0]])
    path = tmp_path / "frames.xyz"
    write(path, [good, bad], format="extxyz")
    assert main([str(tiny_checkpoint), "--data", str(path), "--grids", "raw", "--reference", "1"]) == 2
    err = capsys.readouterr().err
    assert "frame 1/" not in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"pet-eval: error: {path}: {message}")


def test_only_the_frames_evaluated_are_checked(tiny_checkpoint, tmp_path, capsys):
    """A trajectory that blew up after frame 0: its first frame can still be evaluated."""
    broken = Atoms("OH2", positions=[[0, 0, 0], [0.1, 0, 0], [1, 0, 0]])
    path = tmp_path / "blew-up.xyz"
    write(path, [Atoms("OH2", positions=WATER), broken], format="extxyz")
    assert main([str(tiny_checkpoint), "--data", str(path), "--frames", "0", "--grids", "raw",
                 "--reference", "1"]) == 0
    assert "1 frame(s) (all) of" in capsys.readouterr().out


def test_an_ipi_trajectory_without_a_cell_has_open_boundaries(tiny_checkpoint, tmp_path):
    """CELL(abcABC): 0 0 0 ... (no cell), positions in Bohr: read in Å with open boundaries."""
    bohr = 0.529177210903
    path = write_ipi_xyz(tmp_path / "gas.pos_0.xyz", ["O", "H", "H"], [WATER / bohr] * 2, None,
                         units="atomic_unit")
    prefix = tmp_path / "gas"
    assert main([str(tiny_checkpoint), "--data", str(path), "--grids", "raw", "--reference", "1",
                 "--out", str(prefix)]) == 0
    report = json.loads(prefix.with_suffix(".json").read_text())
    assert report["n_frames"] == 2 and report["n_atoms"] == [3, 3]


def test_empty_pet_ipi_model_is_an_error_naming_it(labelled_file, tmp_path, capsys, monkeypatch):
    for value in ("", "  "):
        monkeypatch.setenv("PET_IPI_MODEL", value)
        assert main(["--data", str(labelled_file), "--grids", "none"]) == 2
        assert _error_line(capsys) == ("pet-eval: error: PET_IPI_MODEL is set but empty: unset it or give "
                                       "a checkpoint path")


def test_empty_pet_ipi_data_is_an_error_naming_it(tiny_checkpoint, capsys, monkeypatch):
    """A model that records no data file evaluates the default data set: $PET_IPI_DATA, not the
    current directory, when it is set but empty."""
    monkeypatch.setenv("PET_IPI_DATA", "")
    assert main([str(tiny_checkpoint), "--subset", "all", "--grids", "none"]) == 2
    assert _error_line(capsys) == "pet-eval: error: PET_IPI_DATA is set but empty: unset it or give a data file"


def test_data_of_the_recorded_file_defaults_to_its_test_frames(model_with_split, labelled_file, tmp_path,
                                                               capsys, monkeypatch):
    """--data naming the file the split records (any spelling) evaluates its test frames, as
    without --data; a copy elsewhere, or --subset all, every frame."""
    monkeypatch.chdir(labelled_file.parent)
    for spelling in (str(labelled_file), labelled_file.name, f"./{labelled_file.name}"):
        assert main([str(model_with_split), "--data", spelling, "--grids", "none"]) == 0
        assert f"2 frame(s) (test) of {Path(spelling)}" in capsys.readouterr().out
    copy = tmp_path / "copy" / "labelled.xyz"
    copy.parent.mkdir()
    copy.write_bytes(labelled_file.read_bytes())
    assert main([str(model_with_split), "--data", str(copy), "--grids", "none"]) == 0
    assert f"3 frame(s) (all) of {copy}" in capsys.readouterr().out
    assert main([str(model_with_split), "--data", str(labelled_file), "--subset", "all", "--grids", "none"]) == 0
    assert "3 frame(s) (all) of" in capsys.readouterr().out


def test_accuracy_grid_raw_is_the_raw_accuracy_once(model_with_split, tmp_path):
    prefix = tmp_path / "raw"
    assert main([str(model_with_split), "--grids", "none", "--accuracy-grid", "raw", "--out", str(prefix)]) == 0
    report = json.loads(prefix.with_suffix(".json").read_text())
    assert list(report["accuracy"]) == ["raw"]
