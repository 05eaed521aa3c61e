"""pet-eval: accuracy and symmetry errors against a hand computation with PETCalculator, JSON, plot, CLI errors."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from pet import checkpoint
from pet.calculator import PETCalculator
from pet.data import read_frames, read_structures
from pet.evaluate import ACCURACY_KEYS, REPORT_KEYS, SYMMETRY_KEYS, main, parse_frame_slice
from pet.structures import water_box

from ipi_outputs import write_ipi_xyz


def _labelled(atoms, seed, energy=True, forces=True):
    """``atoms`` with made-up labels (eV, eV/Å) near the tiny model's scale."""
    rng = np.random.default_rng(seed)
    atoms.calc = SinglePointCalculator(
        atoms, energy=-1740.0 + rng.normal() if energy else None,
        forces=rng.normal(size=(len(atoms), 3)) if forces else None)
    return atoms


@pytest.fixture
def labelled_file(tmp_path, water_cell, water_cluster):
    """Three labelled frames (periodic, open, periodic) in an extended-XYZ file."""
    frames = [_labelled(water_cell, 0), _labelled(water_cluster, 1), _labelled(water_box(3, seed=5), 2)]
    path = tmp_path / "labelled.xyz"
    write(path, frames, format="extxyz")
    return path


def _mean_abs(values):
    return float(np.mean(np.abs(np.concatenate([np.ravel(v) for v in values]))))


def test_numbers_match_a_hand_computation(model_with_split, labelled_file, tmp_path, capsys):
    prefix = tmp_path / "out" / "eval"
    assert main([str(model_with_split), "--grids", "raw,1,2i", "--reference", "2i",
                 "--accuracy-grid", "2i", "--out", str(prefix)]) == 0
    table = capsys.readouterr().out
    report = json.loads(prefix.with_suffix(".json").read_text())
    assert set(report) == set(REPORT_KEYS)
    assert report["subset"] == "test" and report["frame_indices"] == [0, 2]
    assert report["data"] == str(labelled_file) and report["n_frames"] == 2
    assert set(report["accuracy"]) == {"raw", "2i"}
    assert set(report["symmetry"]["grids"]) == {"raw", "1", "2i"}

    frames = [read_frames(labelled_file)[i] for i in (0, 2)]
    predictions = {}
    for mode in ("raw", "1", "2i"):
        calc = PETCalculator(model_with_split, grid=None if mode == "raw" else mode, dtype="float64")
        predictions[mode] = []
        for atoms in frames:
            calc.calculate(atoms.copy(), ["energy", "forces"])
            predictions[mode].append((calc.results["energy"], calc.results["forces"]))

    for mode in ("raw", "2i"):
        expected_e = [1000 * (e - a.get_potential_energy()) for (e, _), a in zip(predictions[mode], frames)]
        expected_f = [1000 * (f - a.get_forces()) for (_, f), a in zip(predictions[mode], frames)]
        errors = report["accuracy"][mode]
        assert tuple(errors) == ACCURACY_KEYS
        assert errors["energy_mae"] == pytest.approx(_mean_abs(expected_e), rel=1e-9)
        assert errors["energy_rmse"] == pytest.approx(np.sqrt(np.mean(np.square(expected_e))), rel=1e-9)
        per_molecule = [e * 3 / len(a) for e, a in zip(expected_e, frames)]
        assert errors["energy_per_molecule_mae"] == pytest.approx(_mean_abs(per_molecule), rel=1e-9)
        assert errors["force_mae"] == pytest.approx(_mean_abs(expected_f), rel=1e-9)
        assert errors["force_rmse"] == pytest.approx(np.sqrt(np.mean(np.concatenate(expected_f) ** 2)), rel=1e-9)
        assert errors["n_energy_frames"] == 2 and errors["n_force_components"] == 3 * (12 + 9)

    for mode in ("raw", "1"):
        errors = report["symmetry"]["grids"][mode]
        assert tuple(errors) == SYMMETRY_KEYS
        expected_e = [1000 * (p[0] - r[0]) for p, r in zip(predictions[mode], predictions["2i"])]
        expected_f = [1000 * (p[1] - r[1]) for p, r in zip(predictions[mode], predictions["2i"])]
        assert errors["energy_mae"] == pytest.approx(_mean_abs(expected_e), rel=1e-6)
        assert errors["force_mae"] == pytest.approx(_mean_abs(expected_f), rel=1e-6)
        assert errors["force_mae"] > 1e-3  # the tiny random model is far from invariant
    reference = report["symmetry"]["grids"]["2i"]
    assert reference["energy_mae"] == reference["force_mae"] == 0.0
    assert report["symmetry"]["grids"]["raw"]["n_rotations"] == 1 and reference["n_rotations"] == 36

    assert prefix.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["files"] == [str(prefix.with_suffix(".json")), str(prefix.with_suffix(".png"))]
    assert "symmetry error against 2i" in table and "accuracy against the labels" in table


def test_unlabelled_molecule_default_grids(tiny_checkpoint, data_dir, tmp_path, capsys):
    """A single molecule without labels: symmetry errors of every grid against 3i, no accuracy."""
    prefix = tmp_path / "molecule"
    assert main([str(tiny_checkpoint), "--data", str(data_dir / "water-molecule.xyz"), "--out", str(prefix)]) == 0
    report = json.loads(prefix.with_suffix(".json").read_text())
    assert report["accuracy"] == {} and report["labelled_frames"] == 0 and report["subset"] == "all"
    grids = report["symmetry"]["grids"]
    assert list(grids) == ["raw", "1", "2", "2i", "3", "3i"] and report["symmetry"]["reference"] == "3i"
    assert [grids[g]["n_rotations"] for g in grids] == [1, 1, 18, 36, 75, 150]
    assert grids["3i"]["force_mae"] == 0.0
    assert grids["2i"]["force_mae"] < grids["raw"]["force_mae"] / 10  # the paper's claim for 2i
    one_molecule = grids["raw"]
    assert one_molecule["energy_per_molecule_mae"] == pytest.approx(one_molecule["energy_mae"])
    assert "no frame carries" in capsys.readouterr().out


def test_partly_labelled_frames(tmp_path, tiny_checkpoint, water_cell, water_cluster):
    """Accuracy only over frames (and quantities) that carry labels."""
    path = tmp_path / "mixed.xyz"
    frames = [_labelled(water_cell, 0), water_cluster, _labelled(water_box(3, seed=5), 2, forces=False)]
    write(path, frames, format="extxyz")
    prefix = tmp_path / "mixed"
    assert main([str(tiny_checkpoint), "--data", str(path), "--grids", "none", "--out", str(prefix)]) == 0
    report = json.loads(prefix.with_suffix(".json").read_text())
    assert report["labelled_frames"] == 2 and report["symmetry"] is None
    errors = report["accuracy"]["raw"]
    assert errors["n_energy_frames"] == 2 and errors["n_force_components"] == 3 * 12
    assert report["files"] == [str(prefix.with_suffix(".json"))]


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def test_cli_errors(tmp_path, tiny_checkpoint, labelled_file, data_dir, capsys):
    molecule = str(data_dir / "water-molecule.xyz")
    cases = [
        ([str(tmp_path / "absent.pt"), "--data", molecule], "no checkpoint file"),
        ([str(tiny_checkpoint), "--data", str(tmp_path / "absent.xyz")], "no data file"),
        ([str(tiny_checkpoint), "--data", molecule, "--accuracy-grid", "2i"], "no frame carries energies"),
        ([str(tiny_checkpoint), "--data", molecule, "--grids", "raw,2x"], "bad rotation grid"),
        ([str(tiny_checkpoint), "--data", molecule, "--reference", "0"], "bad rotation grid"),
        ([str(tiny_checkpoint), "--data", molecule, "--frames", "1:x"], "--frames"),
        ([str(tiny_checkpoint), "--data", molecule, "--frames", "5:"], "--frames selects no frame"),
        ([str(tiny_checkpoint), "--data", str(labelled_file), "--subset", "test"], "records no data split"),
        ([str(tiny_checkpoint)], "records no data split"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        line = _error_line(capsys)
        assert line.startswith("pet-eval: error:") and message in line, (argv, line)

    methane = tmp_path / "methane.xyz"
    write(methane, Atoms("CH4", positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                                           [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]]))
    assert main([str(tiny_checkpoint), "--data", str(methane)]) == 2
    line = _error_line(capsys)
    assert "knows only H, O" in line and "C" in line


@pytest.mark.parametrize("option, value", [("--max-frames", "0"), ("--max-frames", "1e3"),
                                           ("--chunk-size", "0"), ("--chunk-size", "two")])
def test_counts_are_checked_when_the_command_line_is_parsed(tiny_checkpoint, data_dir, capsys, option, value):
    """--max-frames and --chunk-size are positive integers (pet.arguments): an argparse one-liner."""
    with pytest.raises(SystemExit) as stop:
        main([str(tiny_checkpoint), "--data", str(data_dir / "water-molecule.xyz"), option, value])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (f"pet-eval: error: argument {option}: must be a positive integer, "
                                       f"got {value!r} (see pet-eval --help)\n")


def test_ipi_trajectory_and_a_slice_of_its_frames(tiny_checkpoint, tmp_path):
    """An i-PI xyz trajectory of periodic boxes: read with its cell and in Å, every second frame
    from frame 1 evaluated, the symmetry error that of PETCalculator on those frames."""
    boxes = [water_box(3, seed=seed) for seed in range(4)]
    path = write_ipi_xyz(tmp_path / "simulation.pos_0.xyz", boxes[0].get_chemical_symbols(),
                         [b.positions for b in boxes], [np.asarray(b.cell) for b in boxes])
    read_back = read_structures(path)
    for atoms, box in zip(read_back, boxes):
        np.testing.assert_allclose(atoms.positions, box.positions, atol=1e-8)
        np.testing.assert_allclose(np.asarray(atoms.cell), np.asarray(box.cell), atol=1e-6)
        assert atoms.pbc.all()
    prefix = tmp_path / "traj"
    assert main([str(tiny_checkpoint), "--data", str(path), "--frames", "1::2", "--grids", "raw",
                 "--reference", "2i", "--out", str(prefix)]) == 0
    report = json.loads(prefix.with_suffix(".json").read_text())
    assert report["frame_indices"] == [1, 3]
    differences = []
    for index in (1, 3):
        raw, averaged = read_back[index].copy(), read_back[index].copy()
        raw.calc = PETCalculator(tiny_checkpoint, dtype="float64")
        averaged.calc = PETCalculator(tiny_checkpoint, grid="2i", dtype="float64")
        differences.append(raw.get_potential_energy() - averaged.get_potential_energy())
    expected = 1000 * np.mean(np.abs(differences))
    assert report["symmetry"]["grids"]["raw"]["energy_mae"] == pytest.approx(expected, rel=1e-6)


def test_missing_recorded_data_file_is_an_error_not_the_default_data(model_with_split, labelled_file,
                                                                      tmp_path, capsys):
    """The file recorded in the split is gone: the stored test indices must not be applied to the
    default data set; --data still works."""
    moved = labelled_file.rename(tmp_path / "moved.xyz")
    assert main([str(model_with_split), "--grids", "none"]) == 2
    assert _error_line(capsys) == (f"pet-eval: error: the checkpoint's data file {labelled_file} is not found "
                                   "(moved, or a relative path from another directory): pass the data file "
                                   "with --data FILE --subset test (with --data alone every frame is evaluated, "
                                   "training frames too)")
    assert main([str(model_with_split), "--data", str(moved), "--subset", "test", "--grids", "none"]) == 0
    assert "2 frame(s) (test) of" in capsys.readouterr().out


def test_relative_recorded_path_from_another_directory(tiny_model, labelled_file, tmp_path, capsys,
                                                        monkeypatch):
    split = {"train": [1], "validation": [1], "test": [0, 2], "seed": 0, "n_frames": 3,
             "path": labelled_file.name}
    model = checkpoint.save(tmp_path / "relative.pt", tiny_model, split=split)
    monkeypatch.chdir(tmp_path / "..")
    assert main([str(model), "--grids", "none"]) == 2
    assert "the checkpoint's data file labelled.xyz is not found" in _error_line(capsys)


def _trained_on_default_data(tmp_path, tiny_model, recorded, max_frames=None):
    """The tiny model with the split and config of a run on the default data set (path null)."""
    split = {"train": [1], "validation": [1], "test": [0, 2], "seed": 0, "n_frames": 3, "path": str(recorded)}
    config = {"data": {"path": None, "max_frames": max_frames, "fractions": [0.4, 0.3, 0.3], "seed": 0}}
    return checkpoint.save(tmp_path / "default-data.pt", tiny_model, metadata={"config": config}, split=split)


def test_model_of_the_default_data_set_falls_back_to_it(tmp_path, tiny_model, labelled_file, capsys,
                                                         monkeypatch):
    """Trained on the default data set (a file on another machine): the default data set here,
    if it has the split's frame count; 4 frames for a split of all 3 frames is an error."""
    model = _trained_on_default_data(tmp_path, tiny_model, "/elsewhere/water-revpbe0-1396.xyz.gz")
    monkeypatch.setenv("PET_IPI_DATA", str(labelled_file))
    assert main([str(model), "--grids", "none"]) == 0
    assert f"2 frame(s) (test) of {labelled_file}" in capsys.readouterr().out
    four = tmp_path / "four.xyz"
    write(four, read_structures(labelled_file) + [_labelled(water_box(2, seed=7), 3)], format="extxyz")
    monkeypatch.setenv("PET_IPI_DATA", str(four))
    assert main([str(model), "--grids", "none"]) == 2
    line = _error_line(capsys)
    assert f"{four} has 4 frames but the checkpoint's split was made on all 3 frames" in line
    assert "pass the data it was trained on with --data" in line
    limited = _trained_on_default_data(tmp_path, tiny_model, "/elsewhere/data.xyz", max_frames=3)
    assert main([str(limited), "--grids", "none"]) == 0  # max_frames 3: the first 3 frames of 4
    capsys.readouterr()


def test_split_indices_beyond_the_file(model_with_split, tmp_path, water_cell, capsys):
    short = tmp_path / "short.xyz"
    write(short, [_labelled(water_cell, 0)] * 2, format="extxyz")
    assert main([str(model_with_split), "--data", str(short), "--subset", "test"]) == 2
    assert f"{short} has 2 frames but the checkpoint's split was made on 3 frames" in _error_line(capsys)


def test_out_is_checked_before_any_frame_is_evaluated(model_with_split, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way\n")
    assert main([str(model_with_split), "--out", str(blocker / "eval")]) == 2
    err = capsys.readouterr().err
    assert "frame 1/" not in err and "pet-eval: 2 frame(s)" not in err
    assert err.strip().splitlines()[-1] == f"pet-eval: error: --out {blocker / 'eval'}: {blocker} is a file, not a folder"
    (tmp_path / "taken.json").mkdir()
    assert main([str(model_with_split), "--out", str(tmp_path / "taken")]) == 2
    assert _error_line(capsys).endswith(f"{tmp_path / 'taken.json'} is a directory")


def test_out_folder_gets_files_named_pet_eval_inside(model_with_split, tmp_path, capsys):
    """--out FOLDER/ (or an existing folder) writes FOLDER/pet-eval.json and .png, as pet-analyze does."""
    for out, folder in ((f"{tmp_path / 'new'}/", tmp_path / "new"), (str(tmp_path), tmp_path)):
        assert main([str(model_with_split), "--grids", "raw,2", "--reference", "2", "--out", out]) == 0
        assert (folder / "pet-eval.json").is_file() and (folder / "pet-eval.png").is_file()
    assert not (tmp_path / "new.json").exists()


def test_frames_selecting_nothing_name_the_subset(model_with_split, labelled_file, capsys):
    assert main([str(model_with_split), "--frames", "5"]) == 2
    assert _error_line(capsys) == ("pet-eval: error: --frames selects no frame of the 2 test frame(s) of "
                                   f"{labelled_file}")


def test_device_errors_and_help(tiny_checkpoint, data_dir, capsys):
    molecule = str(data_dir / "water-molecule.xyz")
    assert main([str(tiny_checkpoint), "--data", molecule, "--device", "gpu"]) == 2
    assert _error_line(capsys) == "pet-eval: error: --device: device must be cpu, cuda or cuda:N, got 'gpu'"
    if not torch.cuda.is_available():
        assert main([str(tiny_checkpoint), "--data", molecule, "--device", "cuda"]) == 2
        assert "torch sees no CUDA device" in _error_line(capsys)
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--device DEVICE torch device: cpu, cuda or cuda:N (default: cpu)" in help_text
    assert "--dtype {float32,float64} floating-point precision of the model (default: float64" in help_text
    assert "(the raw model's accuracy is always computed)" in help_text


def test_frame_slices():
    assert parse_frame_slice(None) == slice(None)
    assert parse_frame_slice("100::50") == slice(100, None, 50)
    assert parse_frame_slice("-1") == slice(-1, None) and parse_frame_slice("5") == slice(5, 6)
    for bad in ("a:b", "1:2:0", "1:2:3:4"):
        with pytest.raises(ValueError, match="--frames"):
            parse_frame_slice(bad)
