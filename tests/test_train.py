"""pet-train end to end on a few real frames: learning, resume, restart, stored split, config errors."""

import importlib.util
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from pet import checkpoint
from pet import train as pet_train
from pet.data import split_indices
from pet.evaluate import main as evaluate_main
from pet.compute import compute
from pet.schedule import OneCycle, one_cycle
from pet.train import Trainer, evaluate_errors, load_config, main, merge_config, refit_baseline

TINY_MODEL = {"n_gnn": 2, "d_pet": 16, "n_tl": 1, "n_heads": 2, "d_feedforward": 32, "d_head": 16}
FRACTIONS = [0.5, 0.25, 0.25]
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TRAINING_INPUTS = Path(__file__).resolve().parents[1] / "inputs" / "training"


@pytest.fixture(scope="module")
def frames_file(tmp_path_factory, data_dir):
    """The first 8 frames of the shared data set (192 atoms each) in a small extended-XYZ file."""
    path = tmp_path_factory.mktemp("data") / "water-8.xyz"
    write(path, read(data_dir / "water-revpbe0-1396.xyz.gz", index="0:8"), format="extxyz")
    return path


@pytest.fixture(autouse=True)
def restore_logging():
    """pet-train's main() points the root logger at stdout and train.log: undo that after each test."""
    handlers = list(logging.root.handlers)
    yield
    for handler in logging.root.handlers:
        if handler not in handlers:
            handler.close()
    logging.root.handlers = handlers


def make_config(frames_file, output, **training) -> dict:
    """4 of the frames (2 train, 1 validation, 1 test), the tiny model, ``training`` overrides."""
    return {"model": TINY_MODEL,
            "data": {"path": str(frames_file), "max_frames": 4, "fractions": FRACTIONS, "seed": 3},
            "training": {"epochs": 4, "batch_size": 4, "learning_rate": 2e-3, "seed": 5, **training},
            "output": str(output)}


def write_config(path, config) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_training_learns_forces(frames_file, tmp_path):
    """Forces only, one training frame, no augmentation: a deterministic regression whose loss must
    fall (the force loss sits on a plateau near F = 0 for the first ~30 steps)."""
    config = make_config(frames_file, tmp_path / "run", epochs=70, energy_weight=0.0, augment=False,
                         seed=0, final_lr_ratio=0.5, validate_every=10)
    config["data"].update(max_frames=3, fractions=[0.34, 0.33, 0.33])
    trainer = Trainer(merge_config(config))
    before = evaluate_errors(trainer.model, trainer.train_set)
    result = trainer.run()
    after = evaluate_errors(trainer.model, trainer.train_set)
    losses = [record["loss"] for record in trainer.history]
    assert result["epoch"] == 70 and len(trainer.train_set) == 1 and all(map(math.isfinite, losses))
    assert losses[-1] < 0.85 * losses[0]
    assert after["force_mae"] < 0.9 * before["force_mae"]
    validated = [r for r in trainer.history if "validation_force_mae" in r]
    assert [r["epoch"] for r in validated] == list(range(10, 71, 10))
    assert {"validation_energy_mae", "validation_force_rmse", "lr", "seconds"} <= set(validated[-1])
    best = checkpoint.read(tmp_path / "run" / "best.pt")["metadata"]
    assert best["best_validation_force_mae"] == min(r["validation_force_mae"] for r in validated)
    assert best["history"][-1]["epoch"] == best["epoch"]  # its history ends with its own epoch
    assert checkpoint.read(tmp_path / "run" / "last.pt")["metadata"]["epoch"] == 70


def test_resume_continues_and_matches_an_uninterrupted_run(frames_file, tmp_path, capsys):
    # max_hours ~ 0: every call trains one epoch, saves last.pt and stops, as a job killed by a time limit
    stepwise = write_config(tmp_path / "stepwise.yaml",
                            make_config(frames_file, tmp_path / "stepwise", max_hours=1e-9))
    epochs = []
    for _ in range(5):
        assert main([stepwise]) == 0
        stored = checkpoint.read(tmp_path / "stepwise" / "last.pt")
        epochs.append(stored["metadata"]["epoch"])
        history = stored["metadata"]["history"]
        assert [r["epoch"] for r in history] == list(range(1, len(history) + 1))
    assert epochs == [1, 2, 3, 4, 4]  # the fifth call finds the run complete
    out = capsys.readouterr().out
    assert "resumed from" in out and "at epoch 2" in out and "at epoch 3" in out

    uninterrupted = merge_config(make_config(frames_file, tmp_path / "straight"))
    trainer = Trainer(uninterrupted)
    trainer.run()
    np.testing.assert_allclose([r["loss"] for r in history], [r["loss"] for r in trainer.history], rtol=1e-5)
    np.testing.assert_allclose([r["validation_force_mae"] for r in history],
                               [r["validation_force_mae"] for r in trainer.history], rtol=1e-5)

    assert main([stepwise, "--restart"]) == 0  # starts over: one epoch (max_hours), the same first epoch
    restarted = checkpoint.read(tmp_path / "stepwise" / "last.pt")["metadata"]["history"]
    assert len(restarted) == 1 and restarted[0]["loss"] == pytest.approx(history[0]["loss"], rel=1e-5)

    changed = make_config(frames_file, tmp_path / "stepwise", max_hours=1e-9, learning_rate=1e-3)
    changed["data"]["seed"] = 4
    assert main([write_config(tmp_path / "changed.yaml", changed)]) == 2
    err = capsys.readouterr().err
    assert "another config (data: seed; training: learning_rate differ)" in err and "--restart" in err


def test_split_is_reproducible_and_stored(frames_file, tmp_path, capsys):
    config = merge_config(make_config(frames_file, tmp_path / "run", epochs=1))
    Trainer(config).run()
    expected = split_indices(4, FRACTIONS, seed=3)
    for name in ("last.pt", "best.pt"):
        split = checkpoint.read(tmp_path / "run" / name)["split"]
        assert {k: split[k] for k in expected} == expected
        assert split["path"] == str(frames_file.resolve())
    assert Trainer(config, restart=True).split == {**expected, "path": str(frames_file.resolve())}
    # pet-eval finds the data and the test frames through the stored split
    assert evaluate_main([str(tmp_path / "run" / "best.pt"), "--grids", "none", "--dtype", "float32",
                          "--out", str(tmp_path / "eval")]) == 0
    assert f"frame(s) (test) of {frames_file}" in capsys.readouterr().out
    assert yaml.safe_load((tmp_path / "eval.json").read_text())["frame_indices"] == expected["test"]


def test_symmetry_weight_adds_a_consistency_term(frames_file, tmp_path):
    config = merge_config(make_config(frames_file, tmp_path / "run", epochs=2, symmetry_weight=0.5))
    trainer = Trainer(config)
    with torch.no_grad():  # a non-invariant start (training starts from zero heads, exactly invariant)
        for layer in trainer.model.layers:
            layer.central_head[-1].weight.normal_(0, 0.1)
    graph, energy, forces = trainer.train_set.batch([0, 1])
    state = trainer.rng.bit_generator.state
    with_symmetry = float(trainer._loss(graph, energy, forces).detach())
    trainer.rng.bit_generator.state = state
    config["training"]["symmetry_weight"] = 0.0
    without = float(trainer._loss(graph, energy, forces).detach())
    config["training"]["symmetry_weight"] = 0.5
    assert with_symmetry > without > 0
    trainer.rng.bit_generator.state = state
    assert trainer.run()["epoch"] == 2
    assert all(math.isfinite(r["loss"]) for r in trainer.history)


@pytest.mark.parametrize("text, message", [
    ("training: {epochs: 2, learning_rat: 0.1}\n", "unknown key(s) ['learning_rat'] in 'training'"),
    ("data: {max_frames: 0}\n", "data: max_frames must be null (all frames) or an integer >= 3, got 0"),
    ("data: {max_frames: -2}\n", "data: max_frames must be null (all frames) or an integer >= 3, got -2"),
    ("data: {seed: abc}\n", "data: seed must be a non-negative integer, got 'abc'"),
    ('data: {fractions: "0.9,0.05,0.05"}\n', "data: fractions must be three positive numbers summing to 1"),
    ("data: {fractions: [0.9, 0.1, 0.0]}\n", "data: fractions must be three positive numbers summing to 1"),
    ("data: {path: 5}\n", "data: path must be null (the default data set) or a path (a string), got 5"),
    ('training: {augment: "no"}\n', "training: augment must be true or false, got 'no'"),
    ("training: {energy_weight: -0.1}\n", "training: energy_weight must be a number >= 0, got -0.1"),
    ("training: {force_weight: -1}\n", "training: force_weight must be a number >= 0, got -1"),
    ("training: {symmetry_weight: -1}\n", "training: symmetry_weight must be a number >= 0, got -1"),
    ("training: {symmetry_weight: high}\n", "training: symmetry_weight must be a number >= 0, got 'high'"),
    ("training: {energy_weight: 0, force_weight: 0}\n", "energy_weight and force_weight are both 0"),
    ("training: {patience: -1}\n", "patience must be null (no early stop) or a positive integer, got -1"),
    ("training: {batch_size: 0}\n", "training: batch_size must be a positive integer, got 0"),
    ('training: {batch_size: "4"}\n', "training: batch_size must be a positive integer, got '4'"),
    ("training: {batch_size: 2.5}\n", "training: batch_size must be a positive integer, got 2.5"),
    ("training: {final_lr_ratio: 0}\n", "training: final_lr_ratio must be a number in (0, 1], got 0"),
    ("training: {validate_every: 0}\n", "training: validate_every must be a positive integer, got 0"),
    ("training: {threads: -1}\n", "threads must be null (torch's default) or a positive integer, got -1"),
    ("training: {threads: two}\n", "threads must be null (torch's default) or a positive integer, got 'two'"),
    ('training: {max_hours: "1h"}\n', "max_hours must be null (no limit) or a positive number, got '1h'"),
    ("training: {learning_rate: abc}\n", "training: learning_rate must be a positive number, got 'abc'"),
    ("training: {learning_rate: -1e-3}\n", "training: learning_rate must be a positive number, got '-1e-3'"),
    ("training: {epochs: one}\n", "training: epochs must be a positive integer, got 'one'"),
    ("training: {epochs: 0}\n", "training: epochs must be a positive integer, got 0"),
    ("training: {epochs: -1}\n", "training: epochs must be a positive integer, got -1"),
    ("training: {epochs: 1.5}\n", "training: epochs must be a positive integer, got 1.5"),
    ("training: {warmup_fraction: -0.1}\n", "training: warmup_fraction must be a number in [0, 1], got -0.1"),
    ("training: {warmup_fraction: 1.5}\n", "training: warmup_fraction must be a number in [0, 1], got 1.5"),
    ("training: {device: gpu}\n", "training: device must be cpu, cuda or cuda:N, got 'gpu'"),
    ("training: {dtype: float16}\n", "training: dtype must be float32 or float64, got 'float16'"),
    ('model: {cutoff: "4"}\n', "model: cutoff must be a positive number, got '4'"),
    ("model: {n_gnn: 2.0}\n", "model: n_gnn must be a positive integer, got 2.0"),
    ("optimizer: {lr: 0.1}\n", "unknown section(s) ['optimizer']"),
    ("model: {n_gnn: 2\ndata: [1\n", "is not valid YAML"),
    ("data: 5\n", "'data' must be a mapping"),
    ("model: {d_pet: 15, n_heads: 2}\n", "model:"),
    ("training: {ema_decay: 1.0}\n", "ema_decay must be null (off) or a number in [0, 1)"),
    ("training: {ema_decay: fast}\n", "ema_decay must be null (off) or a number in [0, 1)"),
])
def test_config_errors(tmp_path, capsys, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert main([str(path), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pet-train: error:") and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("text, message", [
    ("", "config.yaml is empty (no keys, only comments or blank lines)"),
    ("# only a comment\n\n", "config.yaml is empty (no keys, only comments or blank lines)"),
    ("training:\n  epochs: 2\n  batch_size: 1\n  epochs: 3\n",
     "config.yaml: 'epochs' is given twice in one mapping (lines 2 and 4; only the last would count)"),
    ("training: {epochs: 2}\nmodel: {n_gnn: 2}\ntraining: {epochs: 3}\n",
     "config.yaml: 'training' is given twice in one mapping (lines 1 and 3"),
    ("training: {epochs: 2, force_only_epochs: 2}\n",
     "training: force_only_epochs must be smaller than epochs (2): the energy term would never be "
     "trained, got 2"),
    ("1: x\nfoo: {}\n", "unknown section(s) [1, 'foo']"),
], ids=["empty", "comments", "key-twice", "section-twice", "force-only-epochs", "number-key"])
def test_configs_that_would_train_something_else_are_refused(tmp_path, capsys, monkeypatch, text, message):
    """An empty config (the defaults: the paper's model), a repeated key (the last one), no
    epoch with the energy term: refused before any data is read."""
    monkeypatch.setattr("pet.train.read_frames", lambda path: pytest.fail("data read before the checks"))
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert main([str(path), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pet-train: error:") and message in err and err.count("\n") == 1, err


def test_yaml_merge_keys_merge_with_the_mappings_own_keys_overriding(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("training:\n  <<: {epochs: 3, batch_size: 2}\n  batch_size: 4\n  learning_rate: 1.0e-3\n"
                    "output: run\n")
    training = load_config(str(path))["training"]
    assert (training["epochs"], training["batch_size"], training["learning_rate"]) == (3, 4, 1e-3)


def test_a_binary_config_is_one_line_naming_it(tmp_path, capsys):
    path = tmp_path / "model.pt"
    path.write_bytes(b"PK\x03\x04\x00\xff\xfe binary")
    assert main([str(path), "--output", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == (f"pet-train: error: {path} is not a text (YAML) file: byte 5 is "
                                       "not UTF-8\n")


def test_numbers_that_yaml_reads_as_strings_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads 1e-3 as the string "1e-3": such numbers are numbers."""
    path = tmp_path / "config.yaml"
    path.write_text("model: {cutoff: 4e0}\n"
                    "training: {learning_rate: 1e-3, max_hours: 5E-1, ema_decay: 9.9e-1}\n")
    config = load_config(path)
    assert config["training"]["learning_rate"] == 1e-3 and config["training"]["max_hours"] == 0.5
    assert config["training"]["ema_decay"] == 0.99 and config["model"]["cutoff"] == 4.0


def test_output_must_be_given_and_be_a_directory(tmp_path, capsys):
    path = write_config(tmp_path / "config.yaml", {"output": None})
    assert main([path]) == 2
    err = capsys.readouterr().err
    assert err == ("pet-train: error: " f"{path}: output is null: give the output directory in the config "
                   "('output: DIR') or with --output DIR\n")
    existing = tmp_path / "a-file"
    existing.write_text("not a directory\n")
    for argv in ([path, "--output", str(existing)], [path, "--output", str(existing / "run")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("pet-train: error: output: ") and str(existing) in err, err
        assert err.count("\n") == 1, err


def test_environment_is_checked_before_any_data_is_read(frames_file, tmp_path, capsys, monkeypatch):
    """A missing init_from checkpoint or an absent CUDA device: one line, and no frame read."""
    monkeypatch.setattr("pet.train.read_frames", lambda path: pytest.fail("data read before the checks"))
    cases = [(make_config(frames_file, tmp_path / "run", init_from=str(tmp_path / "absent.pt")),
              f"training: init_from: no checkpoint file at {tmp_path / 'absent.pt'}"),
             (make_config(tmp_path / "absent.xyz", tmp_path / "run"), "data: path: no data file at")]
    if not torch.cuda.is_available():
        cases.append((make_config(frames_file, tmp_path / "run", device="cuda"),
                      "training: device 'cuda' requested but torch sees no CUDA device"))
    for config, message in cases:
        assert main([write_config(tmp_path / "config.yaml", config)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"pet-train: error: {message}") and err.count("\n") == 1, err
        assert not (tmp_path / "run").exists()  # no output folder, no train.log
        assert not any(isinstance(h, logging.FileHandler) for h in logging.root.handlers)  # none left


def test_the_environment_is_checked_once_by_the_trainer(frames_file, tmp_path, monkeypatch):
    calls = []
    check = pet_train.check_environment
    monkeypatch.setattr("pet.train.check_environment", lambda config: calls.append(config) or check(config))
    assert main([write_config(tmp_path / "config.yaml", make_config(frames_file, tmp_path / "run", epochs=1))]) == 0
    assert len(calls) == 1 and (tmp_path / "run" / "train.log").is_file()


@pytest.mark.parametrize("value, message", [
    ("", "PET_IPI_DATA is set but empty: unset it or give a data file"),
    ("/nowhere/data.xyz", "data: path is null and PET_IPI_DATA names no data file: /nowhere/data.xyz"),
])
def test_pet_ipi_data_is_checked_before_any_data_is_read(frames_file, tmp_path, capsys, monkeypatch,
                                                          value, message):
    monkeypatch.setattr("pet.train.read_frames", lambda path: pytest.fail("data read before the checks"))
    monkeypatch.setenv("PET_IPI_DATA", value)
    config = make_config(frames_file, tmp_path / "run")
    config["data"]["path"] = None
    assert main([write_config(tmp_path / "config.yaml", config)]) == 2
    assert capsys.readouterr().err == f"pet-train: error: {message}\n"
    assert not (tmp_path / "run").exists()


def test_input_paths_are_taken_from_the_config_folder(frames_file, tmp_path, capsys, monkeypatch):
    """data: path and init_from relative to the config file's folder, from any current directory;
    the output relative to the current directory; the run resumes from another directory."""
    first = merge_config(make_config(frames_file, tmp_path / "first", epochs=1))
    Trainer(first).run()
    configs, data_folder = tmp_path / "configs" / "stage2", tmp_path / "data"
    configs.mkdir(parents=True)
    data_folder.mkdir()
    (data_folder / frames_file.name).write_bytes(frames_file.read_bytes())
    config = make_config(f"../../data/{frames_file.name}", "run", epochs=2, max_hours=1e-9,
                         init_from="../../first/best.pt")
    path = write_config(configs / "config.yaml", config)
    loaded = load_config(path)
    assert loaded["data"]["path"] == str(data_folder / frames_file.name)
    assert loaded["training"]["init_from"] == str(tmp_path / "first" / "best.pt")
    monkeypatch.chdir(tmp_path / "configs")  # one epoch (max_hours) into configs/run
    assert main(["stage2/config.yaml"]) == 0
    assert "weights from" in capsys.readouterr().out
    monkeypatch.chdir(configs)  # the same config and run from another directory: resumed
    assert main(["config.yaml", "--output", "../run"]) == 0
    assert "resumed from" in capsys.readouterr().out
    stored = checkpoint.read(tmp_path / "configs" / "run" / "last.pt")
    assert stored["metadata"]["epoch"] == 2
    assert stored["split"]["path"] == str(data_folder / frames_file.name)


def test_home_is_expanded_in_every_path(frames_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "frames.xyz").write_bytes(frames_file.read_bytes())
    start = tmp_path / "start"
    Trainer(merge_config(make_config(frames_file, start, epochs=1))).run()
    config = make_config("~/frames.xyz", "~/run", epochs=1, init_from="~/start/best.pt")
    loaded = load_config(write_config(tmp_path / "config.yaml", config))
    assert loaded["data"]["path"] == str(tmp_path / "frames.xyz")
    assert loaded["training"]["init_from"] == str(start / "best.pt")
    assert loaded["output"] == str(tmp_path / "run")
    assert load_config(tmp_path / "config.yaml", output="~/other")["output"] == str(tmp_path / "other")
    Trainer(loaded).run()
    assert (tmp_path / "run" / "last.pt").is_file() and not (tmp_path / "~").exists()


def test_missing_config_file(tmp_path, capsys):
    assert main([str(tmp_path / "absent.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pet-train: error: no config file") and err.count("\n") == 1


def test_resume_accepts_another_spelling_of_the_output_and_new_runtime_keys(frames_file, tmp_path, capsys,
                                                                          monkeypatch):
    """The same run from another directory, with the output as an absolute path with a trailing
    slash and another max_hours, threads and validate_every: resumed, not refused."""
    monkeypatch.chdir(tmp_path)
    first = make_config(frames_file, "run", epochs=2, max_hours=1e-9)
    assert main([write_config(tmp_path / "first.yaml", first)]) == 0
    second = make_config(frames_file, f"{tmp_path / 'run'}/", epochs=2, max_hours=2.0, threads=1,
                         validate_every=2)
    assert main([write_config(tmp_path / "second.yaml", second)]) == 0
    assert "resumed from" in capsys.readouterr().out
    stored = checkpoint.read(tmp_path / "run" / "last.pt")["metadata"]
    assert stored["epoch"] == 2 and stored["config"]["output"] == str(tmp_path / "run")


def test_unreadable_last_checkpoint_says_how_to_start_over(frames_file, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"PK\x03\x04 cut short")
    monkeypatch.setattr("pet.train.read_frames", lambda path: pytest.fail("data read before last.pt's check"))
    assert main([write_config(tmp_path / "config.yaml", make_config(frames_file, run))]) == 2
    err = capsys.readouterr().err
    assert err == (f"pet-train: error: cannot resume: {run / 'last.pt'} is not a pet-ipi checkpoint (a torch "
                   "file cut short or damaged); use --restart (or delete it) to start over\n")


def test_data_path_is_recorded_absolute_and_species_are_logged(frames_file, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(frames_file.parent)
    config = make_config(frames_file.name, tmp_path / "run", epochs=1)
    with caplog.at_level(logging.INFO, logger="pet.train"):
        trainer = Trainer(merge_config(config))
    assert trainer.split["path"] == str(frames_file.resolve())
    assert trainer._metadata()["config"]["data"]["path"] == str(frames_file.resolve())
    assert any("4 frames from" in r.message and "species H, O;" in r.message for r in caplog.records)


def test_species_other_than_water_are_shown(frames_file, tmp_path, caplog):
    """The model takes any species; a CH4 frame in the data is named in the log's data line."""
    methane = Atoms("CH4", positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                                      [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])
    methane.calc = SinglePointCalculator(methane, energy=-220.0, forces=np.zeros((5, 3)))
    path = tmp_path / "mixed.xyz"
    write(path, read(frames_file, index="0:3") + [methane], format="extxyz")
    config = make_config(path, tmp_path / "run")
    with caplog.at_level(logging.INFO, logger="pet.train"):
        trainer = Trainer(merge_config(config))
    assert trainer.model.species == [1, 6, 8]
    assert any("species H, C, O;" in r.message for r in caplog.records)  # by atomic number


@pytest.mark.parametrize("total_steps, warmup_fraction", [(7, 0.3), (10, 0.05), (13, 0.5), (50, 0.05)])
def test_one_cycle_is_torchs_one_cycle(total_steps, warmup_fraction):
    """Where torch's OneCycleLR works, the same learning rates and Adam beta1 at every step, and
    it resumes from a OneCycleLR state (last.pt of earlier versions)."""
    def adam():
        return torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=2e-3)
    theirs_optimizer, ours_optimizer = adam(), adam()
    theirs = torch.optim.lr_scheduler.OneCycleLR(
        theirs_optimizer, max_lr=2e-3, total_steps=total_steps, pct_start=warmup_fraction,
        anneal_strategy="cos", div_factor=25.0, final_div_factor=1.0 / (25.0 * 1e-2))
    ours = OneCycle(ours_optimizer, 2e-3, total_steps, warmup_fraction, 1e-2)
    for step in range(total_steps):
        assert ours.get_last_lr()[0] == pytest.approx(theirs.get_last_lr()[0], rel=1e-12), step
        betas = [optimizer.param_groups[0]["betas"] for optimizer in (ours_optimizer, theirs_optimizer)]
        assert betas[0] == pytest.approx(betas[1], rel=1e-12)
        if step == total_steps // 2:
            resumed = OneCycle(adam(), 2e-3, total_steps, warmup_fraction, 1e-2)
            resumed.load_state_dict(theirs.state_dict())
            assert resumed.get_last_lr() == pytest.approx(ours.get_last_lr(), rel=1e-12)
        for optimizer in (ours_optimizer, theirs_optimizer):
            optimizer.step()  # no gradients: the parameters stay, the schedulers see a step
        ours.step()
        theirs.step()


@pytest.mark.parametrize("warmup_fraction", [0.0, 0.05, 0.1, 0.5, 1.0])
def test_one_cycle_works_for_any_number_of_steps(warmup_fraction):
    """Every step count from 1 (OneCycleLR divides by zero at 20 steps with a warm-up of 0.05):
    rates between the final and the peak one, rising then falling, the final rate at the last
    step (the peak for a run that is all warm-up, or of one step)."""
    for total_steps in range(1, 41):
        factors = [one_cycle(step, total_steps, warmup_fraction, 1e-3)[0] for step in range(total_steps)]
        assert all(1e-3 <= f <= 1.0 for f in factors), total_steps
        top = factors.index(max(factors))
        assert factors[:top + 1] == sorted(factors[:top + 1]), total_steps
        assert factors[top:] == sorted(factors[top:], reverse=True), total_steps
        last_is_peak = warmup_fraction == 1.0 or total_steps == 1
        assert factors[-1] == (1.0 if last_is_peak else 1e-3), total_steps
        if warmup_fraction * total_steps > 2:
            assert factors[0] == pytest.approx(1 / 25)


def test_twenty_steps_with_five_percent_warm_up(frames_file, tmp_path):
    """2 training frames, batch 1, 10 epochs: 20 steps, the case where OneCycleLR divided by zero."""
    trainer = Trainer(merge_config(make_config(frames_file, tmp_path / "run", epochs=10, batch_size=1,
                                               warmup_fraction=0.05)))
    rates = [trainer.scheduler.get_last_lr()[0]]
    for _ in range(20):
        trainer.scheduler.step()
        rates.append(trainer.scheduler.get_last_lr()[0])
    assert rates[0] == pytest.approx(2e-3) and rates[19] == pytest.approx(2e-6) and len(set(rates)) > 10


def test_refit_baseline_zeroes_the_mean_energy_error_and_keeps_forces(frames_file, tmp_path):
    """After force-only epochs the energy zero is arbitrary: the refit removes the mean energy
    error (all frames have one composition) without touching the forces."""
    trainer = Trainer(merge_config(make_config(frames_file, tmp_path / "run", dtype="float64")))
    model, dataset = trainer.model, trainer.train_set
    with torch.no_grad():
        model.baseline += torch.tensor([0.7, -0.3], dtype=torch.float64)
    graph, energy, _ = dataset.batch(range(len(dataset)))
    before = compute(model, graph, virial=False)
    shift = refit_baseline(model, dataset)
    after = compute(model, graph, virial=False)
    assert shift.shape == (2,) and np.abs(shift).max() > 0.01
    assert abs(float((energy - before.energy).mean())) > 10.0  # 0.7 eV per H atom of 128 H atoms
    assert abs(float((energy - after.energy).mean())) < 1e-8
    torch.testing.assert_close(after.forces, before.forces, rtol=0, atol=0)


def test_force_only_epochs_then_energy_refits_the_baseline(frames_file, tmp_path, caplog):
    config = make_config(frames_file, tmp_path / "run", epochs=2, force_only_epochs=1)
    with caplog.at_level(logging.INFO, logger="pet.train"):
        Trainer(merge_config(config)).run()
    refits = [r.message for r in caplog.records if "baseline shifted" in r.message]
    assert len(refits) == 1


def test_init_from_starts_from_a_checkpoint_of_the_same_model_and_split(frames_file, tmp_path, capsys):
    first = merge_config(make_config(frames_file, tmp_path / "first", epochs=1))
    Trainer(first).run()
    start = tmp_path / "first" / "best.pt"
    continued = Trainer(merge_config(make_config(frames_file, tmp_path / "second", init_from=str(start))))
    stored = checkpoint.load(start, dtype=torch.float32).state_dict()
    for name, value in continued.model.state_dict().items():
        torch.testing.assert_close(value, stored[name], rtol=0, atol=0, msg=name)

    other_model = make_config(frames_file, tmp_path / "third", init_from=str(start))
    other_model["model"] = {**TINY_MODEL, "d_pet": 32}
    other_split = make_config(frames_file, tmp_path / "fourth", init_from=str(start))
    other_split["data"]["seed"] = 4
    for config, message in ((other_model, "differs from this config"), (other_split, "another data split")):
        assert main([write_config(tmp_path / "bad.yaml", config)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("pet-train: error: init_from") and message in err and err.count("\n") == 1


def test_learning_curve_of_two_stages(frames_file, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("plot_learning_curve", SCRIPTS / "plot_learning_curve.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    first = merge_config(make_config(frames_file, tmp_path / "first", epochs=2))
    Trainer(first).run()
    second = merge_config(make_config(frames_file, tmp_path / "second", epochs=3, validate_every=2,
                                      init_from=str(tmp_path / "first" / "last.pt")))
    trainer = Trainer(second)
    trainer.run()
    out = tmp_path / "curve"
    assert script.main([str(tmp_path / "first" / "last.pt"), str(tmp_path / "second" / "last.pt"),
                        "--out", str(out)]) == 0
    points = json.loads(out.with_suffix(".json").read_text())["points"]
    assert [(p["series"], p["epoch"]) for p in points] == [(0, 1), (0, 2), (1, 4), (1, 5)]
    assert [p["label"] for p in points] == ["stage 1"] * 2 + ["stage 2"] * 2
    assert points[-1]["force_mae"] == trainer.history[-1]["validation_force_mae"]
    assert out.with_suffix(".png").stat().st_size > 10000

    # --compare: separate runs, each from epoch 1, labelled by size, with cumulative hours
    assert script.main(["--compare", str(tmp_path / "first" / "last.pt"), str(tmp_path / "second" / "last.pt"),
                        "--out", str(out)]) == 0
    points = json.loads(out.with_suffix(".json").read_text())["points"]
    assert [(p["series"], p["epoch"]) for p in points] == [(0, 1), (0, 2), (1, 2), (1, 3)]
    parameters = sum(p.numel() for p in trainer.model.parameters())
    assert points[0]["label"] == (f"d_PET {TINY_MODEL['d_pet']}, N_GNN {TINY_MODEL['n_gnn']}, "
                                  f"N_TL {TINY_MODEL['n_tl']}: {parameters / 1000:.0f}k parameters")
    seconds = [record["seconds"] for record in trainer.history]
    assert points[-1]["hours"] == pytest.approx(sum(seconds) / 3600)
    assert points[-2]["hours"] == pytest.approx(sum(seconds[:2]) / 3600)
    assert f"{points[-1]['label']}: last validated epoch 3" in capsys.readouterr().out
    assert script.main([str(tmp_path / "first" / "last.pt"), str(tmp_path / "second" / "last.pt"),
                        "--labels", "stage 2,stage 3", "--out", str(out)]) == 0
    points = json.loads(out.with_suffix(".json").read_text())["points"]
    assert [p["label"] for p in points] == ["stage 2"] * 2 + ["stage 3"] * 2
    with pytest.raises(SystemExit):
        script.main([str(tmp_path / "first" / "last.pt"), "--labels", "a,b", "--out", str(out)])
    assert "--labels names 2 series for 1 checkpoints" in capsys.readouterr().err
    assert script.main([str(tmp_path / "absent.pt"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("plot_learning_curve.py: error: no checkpoint file")


def test_weight_average_is_validated_saved_and_resumed(frames_file, tmp_path):
    """ema_decay 0 averages nothing: the same run as without it. ema_decay 0.5: best.pt holds the
    average (not the optimiser's weights, which last.pt keeps), and a resumed run matches one
    that ran straight through."""
    plain = Trainer(merge_config(make_config(frames_file, tmp_path / "plain", epochs=2)))
    plain.run()
    zero = Trainer(merge_config(make_config(frames_file, tmp_path / "zero", epochs=2, ema_decay=0.0)))
    zero.run()
    for a, b in zip(plain.history, zero.history):
        assert a["validation_force_mae"] == pytest.approx(b["validation_force_mae"], rel=1e-6)

    straight = Trainer(merge_config(make_config(frames_file, tmp_path / "straight", epochs=2, ema_decay=0.5)))
    straight.run()
    last = checkpoint.read(tmp_path / "straight" / "last.pt")
    average = last["extra"]["weight_average"]
    trainable = [name for name, p in straight.model.named_parameters()]
    assert any(not torch.equal(last["state_dict"][name], a) for name, a in zip(trainable, average))
    best = checkpoint.read(tmp_path / "straight" / "best.pt")
    if best["metadata"]["epoch"] == 2:  # best at the end: best.pt holds the final average
        for name, a in zip(trainable, average):
            torch.testing.assert_close(best["state_dict"][name], a, rtol=0, atol=0, msg=name)
    with straight.average.applied():  # the recorded validation error is that of the average
        errors = evaluate_errors(straight.model, straight.validation_set)
    assert errors["force_mae"] == pytest.approx(straight.history[-1]["validation_force_mae"], rel=1e-6)
    assert straight.history[-1]["validation_force_mae"] != pytest.approx(
        evaluate_errors(straight.model, straight.validation_set)["force_mae"], rel=1e-6)

    stepwise = make_config(frames_file, tmp_path / "stepwise", epochs=2, ema_decay=0.5, max_hours=1e-9)
    Trainer(merge_config(stepwise)).run()
    resumed = Trainer(merge_config(stepwise))
    assert resumed.epoch == 1
    resumed.run()
    np.testing.assert_allclose([r["validation_force_mae"] for r in resumed.history],
                               [r["validation_force_mae"] for r in straight.history], rtol=1e-5)


@pytest.mark.parametrize("path", sorted(TRAINING_INPUTS.rglob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_training_configs_load(path):
    """Every config under inputs/training/ has only known keys and a valid model; a size study's
    configs differ in the model only, and the study at another learning rate differs from the
    first study in the peak learning rate only."""
    config = load_config(path)
    assert config["output"].startswith("runs/")
    for section, key in (("data", "path"), ("training", "init_from")):
        if config[section].get(key) is not None:
            assert Path(config[section][key]).is_file(), (section, key, config[section][key])
    if path.parent.name.startswith("size-study"):
        reference = load_config(path.with_name("d64.yaml"))
        assert {k: v for k, v in config.items() if k not in ("model", "output")} == \
            {k: v for k, v in reference.items() if k not in ("model", "output")}
        first = load_config(TRAINING_INPUTS / "size-study" / path.name)
        first["training"]["learning_rate"] = config["training"]["learning_rate"]
        assert {k: v for k, v in config.items() if k != "output"} == {k: v for k, v in first.items() if k != "output"}
