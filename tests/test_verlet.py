"""Neighbour lists with a skin (pet.verlet): the same graphs as a new list every step, fewer lists."""

import numpy as np
import pytest
import torch

from pet.neighbors import Graph, build_graph
from pet.structures import water_box
from pet.verlet import MAX_SKIN, VerletGraphs

CUTOFF = 4.0


@pytest.fixture(scope="module")
def bulk_frame():
    """64 H2O in a periodic cube at the density of liquid water (12.4 Å)."""
    return water_box(64, seed=4)


def assert_same_graph(got: Graph, expected: Graph) -> None:
    for name in ("numbers", "structure", "centers", "neighbors", "shifts", "reverse", "slots"):
        assert torch.equal(getattr(got, name), getattr(expected, name)), name
    torch.testing.assert_close(got.positions, expected.positions, rtol=0, atol=0)
    torch.testing.assert_close(got.distances, expected.distances, rtol=0, atol=1e-12)


def test_random_walk_gives_the_graphs_of_fresh_lists_with_few_rebuilds(bulk_frame):
    rng = np.random.default_rng(1)
    cell = np.asarray(bulk_frame.cell)
    positions = bulk_frame.positions.copy()
    graphs = VerletGraphs(CUTOFF, skin=0.3)
    for _ in range(40):
        positions = positions + rng.normal(scale=0.01, size=positions.shape)
        got = graphs.graph([bulk_frame.numbers], [positions], [cell], [True])
        assert_same_graph(got, build_graph([bulk_frame.numbers], [positions], [cell], [True], CUTOFF))
    # rms step 0.017 Å per atom: the 192 atoms' largest displacement passes 0.15 Å within ~15 steps
    assert 2 <= graphs.rebuilds <= 10 and graphs.calls == 40


def test_a_small_sheared_cell_with_several_images_of_a_pair(water_cell):
    rng = np.random.default_rng(3)
    cell, positions = np.asarray(water_cell.cell), water_cell.positions
    graphs = VerletGraphs(CUTOFF, skin=0.5)
    for _ in range(10):
        positions = positions + rng.normal(scale=0.01, size=positions.shape)
        got = graphs.graph([water_cell.numbers], [positions], [cell], [True])
        assert_same_graph(got, build_graph([water_cell.numbers], [positions], [cell], [True], CUTOFF))
    assert graphs.rebuilds < 10 and (got.shifts.abs().sum(dim=1) > 1).any()


def test_a_pair_that_comes_within_the_cutoff_appears_without_a_rebuild():
    numbers = [np.array([8, 8])]
    start = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, CUTOFF + 0.1]])
    graphs = VerletGraphs(CUTOFF, skin=0.5)
    assert graphs.graph(numbers, [start], [np.zeros((3, 3))], [False]).n_edges == 0
    closer = start.copy()
    closer[1, 2] -= 0.2  # less than skin / 2
    got = graphs.graph(numbers, [closer], [np.zeros((3, 3))], [False])
    assert graphs.rebuilds == 1 and got.n_edges == 2
    torch.testing.assert_close(got.distances, torch.full((2,), CUTOFF - 0.1, dtype=torch.float64))
    assert torch.equal(got.reverse, torch.tensor([1, 0]))


def test_a_new_cell_new_atoms_or_a_long_move_rebuild_the_list(bulk_frame):
    numbers, cell, positions = bulk_frame.numbers, np.asarray(bulk_frame.cell), bulk_frame.positions
    graphs = VerletGraphs(CUTOFF, skin=0.5)
    graphs.graph([numbers], [positions], [cell], [True])
    graphs.graph([numbers], [positions + 0.1], [cell], [True])
    assert graphs.rebuilds == 1
    strained = cell * 1.01
    got = graphs.graph([numbers], [positions], [strained], [True])
    assert graphs.rebuilds == 2
    assert_same_graph(got, build_graph([numbers], [positions], [strained], [True], CUTOFF))
    swapped = numbers.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    graphs.graph([swapped], [positions], [strained], [True])
    assert graphs.rebuilds == 3
    moved = positions.copy()
    moved[5] += [0.0, 0.26, 0.0]  # one atom beyond skin / 2
    got = graphs.graph([swapped], [moved], [strained], [True])
    assert graphs.rebuilds == 4
    assert_same_graph(got, build_graph([swapped], [moved], [strained], [True], CUTOFF))


def test_batches_of_structures_and_open_boundaries(bulk_frame):
    molecule = bulk_frame[:3]
    numbers = [bulk_frame.numbers, molecule.numbers]
    cells = [np.asarray(bulk_frame.cell), np.zeros((3, 3))]
    positions = [bulk_frame.positions, molecule.positions]
    graphs = VerletGraphs(CUTOFF, skin=0.4)
    rng = np.random.default_rng(2)
    for _ in range(5):
        positions = [p + rng.normal(scale=0.01, size=p.shape) for p in positions]
        got = graphs.graph(numbers, positions, cells, [True, False])
        assert_same_graph(got, build_graph(numbers, positions, cells, [True, False], CUTOFF))
    assert graphs.rebuilds == 1


def test_skin_zero_builds_a_new_list_every_call_and_a_negative_skin_is_refused(bulk_frame):
    graphs = VerletGraphs(CUTOFF, skin=0.0)
    for _ in range(3):
        graphs.graph([bulk_frame.numbers], [bulk_frame.positions], [np.asarray(bulk_frame.cell)], [True])
    assert graphs.rebuilds == 3
    with pytest.raises(ValueError, match="skin must be >= 0"):
        VerletGraphs(CUTOFF, skin=-0.1)
    with pytest.raises(ValueError, match="skin must be >= 0"):
        VerletGraphs(CUTOFF, skin=float("nan"))


@pytest.mark.parametrize("skin", [10.5, float("inf")])
def test_a_skin_beyond_the_bound_is_refused(skin):
    """The bound of pet-driver's --skin, for every user of the neighbour list (PETCalculator too)."""
    assert VerletGraphs(CUTOFF, skin=MAX_SKIN).skin == MAX_SKIN == 10.0
    with pytest.raises(ValueError, match=r"skin must be >= 0 Å and <= 10 Å \(a larger skin only slows "
                                         rf"the neighbour list\), got {skin}"):
        VerletGraphs(CUTOFF, skin=skin)


def test_bad_positions_are_refused_before_the_list_is_used(bulk_frame):
    graphs = VerletGraphs(CUTOFF)
    bad = bulk_frame.positions.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        graphs.graph([bulk_frame.numbers], [bad], [np.asarray(bulk_frame.cell)], [True])
