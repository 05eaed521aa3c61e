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
from ase.io import read, write

from pet import checkpoint
from pet.data import split_indices
from pet.evaluate import main as evaluate_main
from pet.compute import compute
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
    assert main([write_config(tmp_path / "changed.yaml", changed)]) == 2
    assert "another config" in capsys.readouterr().err


def test_split_is_reproducible_and_stored(frames_file, tmp_path, capsys):
    config = merge_config(make_config(frames_file, tmp_path / "run", epochs=1))
    Trainer(config).run()
    expected = split_indices(4, FRACTIONS, seed=3)
    for name in ("last.pt", "best.pt"):
        split = checkpoint.read(tmp_path / "run" / name)["split"]
        assert {k: split[k] for k in expected} == expected
        assert split["path"] == str(frames_file)
    assert Trainer(config, restart=True).split == {**expected, "path": str(frames_file)}
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


def test_missing_config_file(tmp_path, capsys):
    assert main([str(tmp_path / "absent.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pet-train: error: no config file") and err.count("\n") == 1


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
    if path.parent.name.startswith("size-study"):
        reference = load_config(path.with_name("d64.yaml"))
        assert {k: v for k, v in config.items() if k not in ("model", "output")} == \
            {k: v for k, v in reference.items() if k not in ("model", "output")}
        first = load_config(TRAINING_INPUTS / "size-study" / path.name)
        first["training"]["learning_rate"] = config["training"]["learning_rate"]
        assert {k: v for k, v in config.items() if k != "output"} == {k: v for k, v in first.items() if k != "output"}
