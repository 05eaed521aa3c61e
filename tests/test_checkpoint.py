"""Checkpoints (pet.checkpoint): exact round trip, clear errors for bad files, version upgrades."""

import pytest
import torch
from ase.build import molecule

from pet import checkpoint
from pet.checkpoint import CheckpointError
from pet.compute import compute
from pet.neighbors import graph_from_atoms


def predictions(model, atoms):
    graph = graph_from_atoms(atoms, model.hypers.cutoff).to(dtype=torch.float64)
    return compute(model, graph)


def test_round_trip_gives_bit_identical_predictions(tiny_model, tmp_path, water_cell):
    path = checkpoint.save(tmp_path / "sub" / "model.pt", tiny_model, metadata={"epochs": 3},
                           split={"train": [0, 2], "validation": [1], "test": [3]},
                           extra={"optimizer": {"step": torch.tensor(7)}})
    loaded = checkpoint.load(path, dtype=torch.float64)
    assert loaded.hypers == tiny_model.hypers and loaded.species == tiny_model.species
    assert not loaded.training
    before, after = predictions(tiny_model, water_cell), predictions(loaded, water_cell)
    for name in ("energy", "energies", "forces", "virial"):
        assert torch.equal(getattr(before, name), getattr(after, name)), name
    assert torch.equal(loaded.baseline, tiny_model.baseline)
    assert torch.equal(loaded.energy_scale, tiny_model.energy_scale)

    stored = checkpoint.read(path)
    assert stored["metadata"] == {"epochs": 3}
    assert stored["split"] == {"train": [0, 2], "validation": [1], "test": [3]}
    assert int(stored["extra"]["optimizer"]["step"]) == 7
    assert not (tmp_path / "sub" / "model.pt.tmp").exists()  # written atomically


def test_load_in_float32(tiny_checkpoint, tiny_model, water_cell):
    single = checkpoint.load(tiny_checkpoint)
    assert next(single.parameters()).dtype == torch.float32
    graph = graph_from_atoms(water_cell, 4.0)
    result = compute(single, graph.to(dtype=torch.float32))
    reference = compute(tiny_model, graph)
    torch.testing.assert_close(result.energy.double(), reference.energy, rtol=1e-6, atol=0)


def test_unknown_species_error_names_the_element(tiny_checkpoint):
    model = checkpoint.load(tiny_checkpoint, dtype=torch.float64)
    with pytest.raises(ValueError, match="this model knows only H, O; the structure contains C$"):
        predictions(model, molecule("CH3OH"))
    with pytest.raises(ValueError, match="the structure contains C, N"):
        predictions(model, molecule("CH3CN"))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint file at .*absent.pt"):
        checkpoint.load(tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        checkpoint.load(tmp_path)  # a directory


@pytest.mark.parametrize("name, content, reason", [
    ("notes.txt", b"these are not weights\n", "not a file written by torch.save"),
    ("config.yaml", b"model: {n_gnn: 2}\ntraining: {epochs: 3}\n", "not a file written by torch.save"),
    ("garbage.pt", bytes(range(256)) * 4, "not a file written by torch.save"),
    ("empty.pt", b"", "the file is empty"),
])
def test_file_that_is_not_a_checkpoint_is_one_line(tmp_path, name, content, reason):
    """Not torch's multi-line advice on weights_only: one line with the file and a short reason."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        checkpoint.load(path)
    assert str(error.value) == f"{path} is not a pet-ipi checkpoint ({reason})"


def test_structure_file_and_pickled_objects_are_not_checkpoints(tmp_path, data_dir):
    structure = data_dir / "water-molecule.xyz"
    with pytest.raises(CheckpointError, match="water-molecule.xyz is not a pet-ipi checkpoint") as error:
        checkpoint.load(structure)
    assert "\n" not in str(error.value) and "weights_only" not in str(error.value)
    objects = tmp_path / "objects.pt"
    torch.save({"where": tmp_path}, objects)  # a Path: not loadable with weights_only
    with pytest.raises(CheckpointError, match=r"objects.pt is not a pet-ipi checkpoint \(it holds Python objects"):
        checkpoint.load(objects)


def test_file_that_is_not_a_pet_checkpoint(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="other.pt is not a pet-ipi checkpoint"):
        checkpoint.load(other)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(CheckpointError, match="not a pet-ipi checkpoint"):
        checkpoint.load(tensor)


def test_corrupt_checkpoint(tiny_checkpoint, tmp_path):
    data = tiny_checkpoint.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        checkpoint.load(truncated)
    assert str(error.value) == f"{truncated} is not a pet-ipi checkpoint (a torch file cut short or damaged)"


def test_checkpoint_whose_content_is_not_a_model(tiny_model, tmp_path):
    content = checkpoint.to_dict(tiny_model)
    del content["state_dict"]["baseline"]
    broken = tmp_path / "broken.pt"
    torch.save(content, broken)
    with pytest.raises(CheckpointError, match="does not describe a PET model"):
        checkpoint.load(broken)


def test_wrong_weights_are_counted_not_listed(tiny_model, tmp_path):
    """A checkpoint-format dict with other weights: the counts and the first few names, one short line."""
    content = checkpoint.to_dict(tiny_model)
    content["state_dict"] = {"encoder.weight": torch.zeros(3)}
    other = tmp_path / "other-weights.pt"
    torch.save(content, other)
    with pytest.raises(CheckpointError) as error:
        checkpoint.load(other)
    message = str(error.value)
    n_weights = len(tiny_model.state_dict())
    assert message.startswith(f"checkpoint {other} does not describe a PET model: {n_weights} missing weight(s) "
                              "(baseline, energy_scale, ")
    assert f"and {n_weights - 3} more); 1 unexpected weight(s) (encoder.weight)" in message
    assert len(message) < 300 and "\n" not in message
    content = checkpoint.to_dict(tiny_model)
    content["state_dict"]["baseline"] = torch.zeros(5)
    torch.save(content, other)
    with pytest.raises(CheckpointError, match=r"1 wrongly shaped weight\(s\) \(baseline\)$"):
        checkpoint.load(other)


def test_newer_version_asks_to_upgrade_pet_ipi(tiny_model, tmp_path):
    content = checkpoint.to_dict(tiny_model)
    content["version"] = checkpoint.VERSION + 1
    newer = tmp_path / "newer.pt"
    torch.save(content, newer)
    newer_version = checkpoint.VERSION + 1
    with pytest.raises(CheckpointError, match=f"version {newer_version} is newer .* upgrade pet-ipi"):
        checkpoint.load(newer)
    content["version"] = "one"
    torch.save(content, newer)
    with pytest.raises(CheckpointError, match="no valid version"):
        checkpoint.load(newer)


def test_old_version_is_upgraded(tiny_model, tmp_path, monkeypatch, water_cell):
    """Pretend the format moved to version 2 (hypers renamed to "architecture"): a version-1 file
    goes through the registered upgrade and loads into the same model."""
    old = checkpoint.save(tmp_path / "v1.pt", tiny_model)
    assert checkpoint.read(old)["version"] == 1

    calls = []

    def rename_hypers(content):
        calls.append(content["version"])
        content = dict(content, version=2, architecture=content["hypers"])
        del content["hypers"]
        return content

    original_model_from_dict = checkpoint.model_from_dict

    def model_from_v2(content, *source):
        return original_model_from_dict(dict(content, hypers=content["architecture"]), *source)

    monkeypatch.setattr(checkpoint, "VERSION", 2)
    monkeypatch.setattr(checkpoint, "UPGRADES", {1: rename_hypers})
    monkeypatch.setattr(checkpoint, "model_from_dict", model_from_v2)

    upgraded = checkpoint.read(old)
    assert upgraded["version"] == 2 and "architecture" in upgraded and "hypers" not in upgraded
    loaded = checkpoint.load(old, dtype=torch.float64)
    assert calls == [1, 1]
    assert torch.equal(predictions(loaded, water_cell).forces, predictions(tiny_model, water_cell).forces)
