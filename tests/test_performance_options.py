"""The performance options: a memory budget for averaged evaluations, the raw result shared by the
channels of one driver, the neighbour-list skin, and the allocator setting (no timings here: see scripts/bench_*.py)."""

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from driver import cli
from driver.channels import Channel, LastRaw
from driver.protocol import Structure
from grids.averaging import GridAverage
from pet.compute import PEAK_PER_SAVED_BYTE, memory_chunk_size, saved_bytes_per_token, tokens_per_copy
from pet.neighbors import graph_from_atoms


class ForwardCounter:
    """Counts forward passes of a model (a forward hook; the model itself is unchanged)."""

    def __init__(self, model):
        self.calls = 0
        model.register_forward_hook(self.hook)

    def hook(self, module, inputs, output):
        self.calls += 1


def test_memory_budget_sets_the_copies_per_pass_and_changes_no_result(tiny_model, water_cell):
    graph = graph_from_atoms(water_cell, tiny_model.hypers.cutoff)
    per_token = saved_bytes_per_token(tiny_model, graph)
    per_copy = PEAK_PER_SAVED_BYTE * per_token * tokens_per_copy(graph)
    assert per_token > 0
    assert memory_chunk_size(graph, per_token, 5.5 * per_copy) == 5
    assert memory_chunk_size(graph, per_token, 0.1 * per_copy) == 1  # never less than one copy

    reference = GridAverage(tiny_model, "2i")(graph)
    budgeted = GridAverage(tiny_model, "2i", max_memory=5.5 * per_copy)
    counter = ForwardCounter(tiny_model)
    result = budgeted(graph)
    assert budgeted.chunk_size_for(graph) == 5
    assert counter.calls == 1 + 8  # the probe of one copy, then ceil(36 / 5) passes
    for name in ("energy", "forces", "virial"):
        torch.testing.assert_close(getattr(result, name), getattr(reference, name), rtol=1e-12, atol=1e-12)


def test_saved_bytes_grow_with_the_copies(tiny_model, water_cell):
    """The estimate behind the budget: autograd's saved bytes are proportional to the copies."""
    from pet.compute import compute

    graph = graph_from_atoms(water_cell, tiny_model.hypers.cutoff)
    rotations = torch.eye(3, dtype=torch.float64).expand(4, 3, 3)
    saved = []
    for copies in (1, 4):
        storages = {}

        def pack(tensor):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            compute(tiny_model, graph, rotations[:copies], torch.full((copies,), 1 / copies),
                    chunk_size=copies)
        saved.append(sum(storages.values()))
    assert saved[1] / saved[0] == pytest.approx(4.0, rel=0.1)
    estimate = saved_bytes_per_token(tiny_model, graph) * tokens_per_copy(graph)
    assert estimate == pytest.approx(saved[0], rel=0.1)


def test_bad_memory_budgets_are_rejected(tiny_model):
    with pytest.raises(ValueError, match="not both"):
        GridAverage(tiny_model, "2i", chunk_size=2, max_memory=1e9)
    with pytest.raises(ValueError, match="positive"):
        GridAverage(tiny_model, "2i", max_memory=0)


@pytest.mark.parametrize("arguments, message", [
    (["--max-memory", "0"], "argument --max-memory: must be a finite number > 0 MB, got '0'"),
    (["--max-memory", "100", "--chunk-size", "2"], "either --chunk-size or --max-memory"),
    (["--threads", "0"], "argument --threads: must be a positive integer, got '0'"),
    (["--skin", "-0.1"], "argument --skin: must be a finite number >= 0 Å and <= 10 Å"),
    (["--skin", "nan"], "argument --skin: must be a finite number >= 0 Å and <= 10 Å"),
    (["--skin", "inf"], "got 'inf'"),
    (["--skin", "1e9"], "(a larger skin only slows the neighbour list), got '1e9'"),
])
def test_driver_rejects_bad_memory_thread_and_skin_options(arguments, message, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(arguments)
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1


def structures_of(atoms, shift=0.0):
    return [Structure(atoms.positions + shift, np.asarray(atoms.cell))]


def test_channels_share_the_raw_result_at_the_same_positions(tiny_model, water_cell):
    """An MTS outer step: the averaged channel and then the raw channel at the same positions run
    the raw model once; the raw channel's answer equals that of a channel of its own."""
    lock, shared = threading.Lock(), LastRaw()
    averaged = Channel(tiny_model, "2i", lock, last_raw=shared)
    raw = Channel(tiny_model, "raw", lock, last_raw=shared)
    alone = Channel(tiny_model, "raw")
    numbers = water_cell.numbers
    counter = ForwardCounter(tiny_model)

    averaged.evaluate(numbers, structures_of(water_cell))
    after_average = counter.calls
    answer = raw.evaluate(numbers, structures_of(water_cell))[0]
    assert counter.calls == after_average  # served from the shared raw result
    reference = alone.evaluate(numbers, structures_of(water_cell))[0]
    assert counter.calls == after_average + 1
    assert answer.energy == reference.energy
    np.testing.assert_array_equal(answer.forces, reference.forces)
    np.testing.assert_array_equal(answer.virial, reference.virial)

    raw.evaluate(numbers, structures_of(water_cell, shift=1e-6))  # moved: evaluated anew
    assert counter.calls == after_average + 2


def test_the_skin_changes_no_answer_and_saves_neighbour_lists(tiny_model, water_cell):
    """Along a random walk (0.01 Å per step and coordinate), a channel with the 0.5 Å skin answers
    exactly as one building a new list per request, from one list instead of one per step."""
    with_skin, without = Channel(tiny_model, "2i", skin=0.5), Channel(tiny_model, "2i", skin=0.0)
    rng = np.random.default_rng(5)
    atoms = water_cell.copy()
    for _ in range(6):
        atoms.positions += rng.normal(scale=0.01, size=atoms.positions.shape)
        got = with_skin.evaluate(atoms.numbers, structures_of(atoms))[0]
        expected = without.evaluate(atoms.numbers, structures_of(atoms))[0]
        assert got.energy == expected.energy
        np.testing.assert_array_equal(got.forces, expected.forces)
        np.testing.assert_array_equal(got.virial, expected.virial)
    assert (with_skin.graphs.rebuilds, without.graphs.rebuilds) == (1, 6)


def test_the_calculator_reuses_its_neighbour_list(tiny_model, water_cell):
    from pet.calculator import PETCalculator

    atoms, fresh = water_cell.copy(), water_cell.copy()
    atoms.calc = PETCalculator(tiny_model, dtype="float64")
    fresh.calc = PETCalculator(tiny_model, dtype="float64", skin=0.0)
    for step in range(3):
        atoms.positions = fresh.positions = water_cell.positions + 0.02 * step
        np.testing.assert_array_equal(atoms.get_forces(), fresh.get_forces())
        np.testing.assert_array_equal(atoms.get_stress(), fresh.get_stress())
    assert (atoms.calc.graphs.rebuilds, fresh.calc.graphs.rebuilds) == (1, 3)


def test_raw_first_then_average_reuses_the_raw_result_in_the_extras(tiny_model, water_cell):
    lock, shared = threading.Lock(), LastRaw()
    raw = Channel(tiny_model, "raw", lock, last_raw=shared)
    averaged = Channel(tiny_model, "2i", lock, last_raw=shared)
    separate = Channel(tiny_model, "2i")
    numbers = water_cell.numbers
    raw_answer = raw.evaluate(numbers, structures_of(water_cell))[0]
    counter = ForwardCounter(tiny_model)
    shared_answer = averaged.evaluate(numbers, structures_of(water_cell))[0]
    passes = counter.calls
    separate_answer = separate.evaluate(numbers, structures_of(water_cell))[0]
    assert counter.calls - passes == passes + 1  # the separate channel also runs the raw model
    assert shared_answer.extras == separate_answer.extras
    assert shared_answer.extras["energy_raw_ev"] == raw_answer.energy
    np.testing.assert_array_equal(shared_answer.forces, separate_answer.forces)


def test_the_allocator_setting_applies_on_glibc():
    """In a process of its own: the setting is process-wide."""
    run = subprocess.run([sys.executable, "-c", "from pet.allocator import retain_freed_memory as r; "
                          "print(r())"], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "True", run.stderr


def test_a_loaded_model_needs_no_parameter_gradients_and_gives_the_same_forces(tiny_model, tiny_checkpoint,
                                                                                 water_cell):
    from pet.calculator import load_model
    from pet.compute import compute

    loaded = load_model(tiny_checkpoint, dtype="float64")
    assert not any(p.requires_grad for p in loaded.parameters())
    assert all(p.requires_grad for p in load_model(tiny_model, dtype="float64").parameters())  # left alone
    graph = graph_from_atoms(water_cell, tiny_model.hypers.cutoff)
    assert saved_bytes_per_token(loaded, graph) < 0.7 * saved_bytes_per_token(tiny_model, graph)
    reference, result = compute(tiny_model, graph), compute(loaded, graph)
    torch.testing.assert_close(result.forces, reference.forces, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.virial, reference.virial, rtol=0, atol=1e-12)
