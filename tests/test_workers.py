"""Passes of an averaged evaluation side by side in worker threads (pet.workers, pet.compute):
the same results as one pass at a time, the caller's torch threads and grad mode respected, errors
raised in the caller, and the automatic choice of workers."""

import threading

import pytest
import torch

from driver.channels import Channel
from driver.protocol import ANGSTROM_PER_BOHR, structure_from_ipi
from grids.averaging import GridAverage
from pet.compilation import compile_transformers
from pet.compute import TOKENS_PER_CHUNK, chunk_bounds, compute, plan_passes, tokens_per_copy
from pet.neighbors import graph_from_atoms
from pet.structures import water_box
from pet.workers import automatic_workers, run_side_by_side


def test_tasks_run_in_their_workers_and_come_back_in_order():
    seen = {}

    def task(index):
        seen[index] = (threading.current_thread(), torch.get_num_threads(), torch.is_grad_enabled())
        return index * index

    caller_threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        with torch.no_grad():
            results = run_side_by_side([lambda i=i: task(i) for i in range(7)], workers=2)
        assert torch.get_num_threads() == 4  # the caller's count is its own
    finally:
        torch.set_num_threads(caller_threads)
    assert results == [i * i for i in range(7)]
    assert len({seen[i][0] for i in range(7)}) == 2  # two worker threads
    assert threading.current_thread() not in {seen[i][0] for i in range(7)}
    assert {seen[i][0] for i in range(0, 7, 2)} == {seen[0][0]}  # dealt round-robin
    assert all(threads == 2 for _, threads, _ in seen.values())  # 4 threads shared by 2 workers
    assert not any(grad for _, _, grad in seen.values())  # the caller's grad mode


def test_one_worker_runs_the_tasks_here():
    idents = run_side_by_side([threading.get_ident, threading.get_ident], workers=1)
    assert idents == [threading.get_ident()] * 2
    assert run_side_by_side([], workers=3) == []


def test_an_error_in_a_worker_is_raised_in_the_caller():
    def failing():
        raise ValueError("this model knows only H, O; the structure contains C")

    with pytest.raises(ValueError, match="knows only H, O"):
        run_side_by_side([lambda: 1, failing, lambda: 3], workers=2)


def test_passes_side_by_side_equal_one_pass_at_a_time(tiny_model, water_cell, water_cluster):
    graph = graph_from_atoms([water_cell, water_cluster], tiny_model.hypers.cutoff)
    serial = GridAverage(tiny_model, "2i", chunk_size=5, workers=1)(graph)
    for workers in (2, 3):
        parallel = GridAverage(tiny_model, "2i", chunk_size=5, workers=workers)(graph)
        for name in ("energy", "energies", "forces", "virial"):
            torch.testing.assert_close(getattr(parallel, name), getattr(serial, name), rtol=1e-12, atol=1e-12)
    assert serial.forces.abs().max() > 1e-3  # the test compares something


def test_balanced_passes_for_several_workers():
    assert chunk_bounds(36, 5) == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 25), (25, 30), (30, 35), (35, 36)]
    assert chunk_bounds(36, 11, workers=2) == [(0, 9), (9, 18), (18, 27), (27, 36)]
    assert chunk_bounds(36, 36, workers=2) == [(0, 18), (18, 36)]
    for copies, size, workers in ((36, 5, 2), (150, 1, 2), (150, 7, 3), (3, 1, 2), (18, 4, 4)):
        bounds = chunk_bounds(copies, size, workers)
        assert bounds[0][0] == 0 and bounds[-1][1] == copies
        assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:]))
        lengths = [stop - start for start, stop in bounds]
        assert max(lengths) <= size and max(lengths) - min(lengths) <= 1
        assert len(bounds) % workers == 0 or len(bounds) == copies


def test_automatic_workers_only_where_every_worker_fills_a_pass():
    small = graph_from_atoms(water_box(1, seed=0), 4.0)
    large = graph_from_atoms(water_box(64, seed=0), 4.0)
    assert 36 * tokens_per_copy(small) < 2 * TOKENS_PER_CHUNK <= 36 * tokens_per_copy(large)
    assert plan_passes(small, 36, workers=2)[1] == 1
    passes, workers = plan_passes(large, 36, workers=2)
    assert workers == 2 and len(passes) % 2 == 0
    assert plan_passes(small, 36, chunk_size=4, workers=2)[1] == 2  # a given chunk size is kept
    with pytest.raises(ValueError, match="workers must be at least 1"):
        plan_passes(large, 36, workers=0)


def test_grid_average_chooses_its_workers(tiny_model, water_cell):
    graph = graph_from_atoms(water_cell, tiny_model.hypers.cutoff)
    assert automatic_workers(torch.device("cpu")) == torch.get_num_threads()
    assert automatic_workers(torch.device("cuda")) == 1
    assert GridAverage(tiny_model, "2i").workers_for(graph) == torch.get_num_threads()
    assert GridAverage(tiny_model, "2i", workers=3).workers_for(graph) == 3
    assert GridAverage(tiny_model, "2i", chunk_size=4).workers_for(graph) == 1  # a memory bound
    assert GridAverage(tiny_model, "2i", max_memory=1e9).workers_for(graph) == 1
    assert GridAverage(compile_transformers(tiny_model), "2i").workers_for(graph) == 1
    with pytest.raises(ValueError, match="workers must be at least 1"):
        GridAverage(tiny_model, "2i", workers=0)


def test_training_derivatives_stay_in_one_pass(tiny_model, water_cell):
    """create_graph (training on forces) keeps one pass in the caller's thread, workers or not."""
    graph = graph_from_atoms(water_cell, tiny_model.hypers.cutoff)
    rotations = torch.linalg.qr(torch.randn(4, 3, 3, dtype=torch.float64))[0]
    result = compute(tiny_model, graph, rotations, torch.full((4,), 0.25, dtype=torch.float64),
                     create_graph=True, workers=2)
    (gradient,) = torch.autograd.grad(result.forces.square().sum(), [tiny_model.layers[0].compress[0].weight])
    assert gradient.abs().max() > 0


def test_a_driver_channel_averages_a_water_box_on_two_workers(tiny_model):
    """pet-driver's 2i channel on 64 molecules with two torch threads: the passes run side by side
    (what --threads 2 gives) and the answer equals the average computed one pass at a time."""
    atoms = water_box(64, seed=3)
    graph = graph_from_atoms(atoms, tiny_model.hypers.cutoff)
    caller_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        channel = Channel(tiny_model, "2i", skin=0.0)
        assert channel.evaluator.passes_for(graph)[1] == 2
        structure = structure_from_ipi(atoms.cell.array.T / ANGSTROM_PER_BOHR, atoms.positions / ANGSTROM_PER_BOHR)
        (answer,) = channel.evaluate(atoms.numbers, [structure])
    finally:
        torch.set_num_threads(caller_threads)
    serial = GridAverage(tiny_model, "2i", workers=1)(graph)
    assert answer.energy == pytest.approx(float(serial.energy[0]), rel=1e-12)
    torch.testing.assert_close(torch.as_tensor(answer.forces), serial.forces, rtol=0, atol=1e-10)
    torch.testing.assert_close(torch.as_tensor(answer.virial), serial.virial[0], rtol=0, atol=1e-9)
