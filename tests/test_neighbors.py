"""Neighbour lists and the padded graph layout (pet.neighbors), checked against brute force."""

import itertools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read

from pet.compute import edge_vectors
from pet.neighbors import (MAX_COORDINATE, MAX_EXTENT, OVERLAP_DISTANCE, Graph, batch_graphs, build_graph, closest_pair,
                           graph_from_atoms)
from pet.structures import water_box

CUTOFF = 4.0


def brute_force_edges(atoms, cutoff):
    """{(i, j, shift): r_ij} for all 0 < |r_j - r_i + shift @ cell| < cutoff, by enumeration."""
    cell = np.asarray(atoms.cell)
    periodic = atoms.pbc & np.any(cell, axis=1)
    reach = [0, 0, 0]
    if periodic.any():
        volume = abs(np.linalg.det(cell))
        for axis in range(3):
            if periodic[axis]:
                others = [cell[k] for k in range(3) if k != axis]
                height = volume / np.linalg.norm(np.cross(*others))
                reach[axis] = int(np.ceil(cutoff / height)) + 1
    edges = {}
    ranges = [range(-n, n + 1) for n in reach]
    for shift in itertools.product(*ranges):
        offset = np.array(shift) @ cell
        for i, j in itertools.product(range(len(atoms)), repeat=2):
            vector = atoms.positions[j] - atoms.positions[i] + offset
            if 0 < np.linalg.norm(vector) < cutoff:
                edges[(i, j, shift)] = vector
    return edges


def graph_edges(graph):
    """{(i, j, shift): r_ij} of a graph."""
    strain = torch.zeros(graph.n_structures, 3, 3, dtype=graph.positions.dtype)
    vectors = edge_vectors(graph, graph.positions, strain)
    shifts = graph.shifts.to(torch.int64).tolist()
    return {
        (int(i), int(j), tuple(s)): v
        for i, j, s, v in zip(graph.centers, graph.neighbors, shifts, vectors.numpy())
    }


def random_atoms(n_atoms, cell, pbc, seed=0):
    rng = np.random.default_rng(seed)
    cell = np.asarray(cell, dtype=float)
    scaled = rng.uniform(0, 1, (n_atoms, 3))
    positions = scaled @ cell if np.any(cell) else scaled * 4.0
    return Atoms(numbers=rng.choice([1, 8], n_atoms), positions=positions, cell=cell, pbc=pbc)


TRICLINIC = [[4.2, 0.0, 0.0], [1.3, 3.9, 0.0], [-0.8, 0.9, 4.5]]


@pytest.mark.parametrize(
    "cell, pbc",
    [
        (TRICLINIC, True),  # small triclinic cell: many images, self-images included
        (TRICLINIC, [True, False, True]),  # periodic along a and c only
        (np.zeros((3, 3)), False),  # open boundaries, no cell
        (TRICLINIC, False),  # a cell but pbc False: open boundaries
    ],
)
def test_neighbour_list_matches_brute_force(cell, pbc):
    atoms = random_atoms(7, cell, pbc)
    expected = brute_force_edges(atoms, CUTOFF)
    found = graph_edges(graph_from_atoms(atoms, CUTOFF))
    assert len(expected) > 10
    assert set(found) == set(expected)
    for key, vector in expected.items():
        np.testing.assert_allclose(found[key], vector, atol=1e-12)


def test_small_cell_has_self_images_and_far_shifts():
    graph = graph_from_atoms(random_atoms(3, np.diag([2.5, 2.7, 2.6]), True), CUTOFF)
    self_images = graph.centers == graph.neighbors
    assert self_images.any()
    assert int(graph.shifts.abs().max()) >= 2  # the cutoff sphere reaches the second image


def test_reverse_edges_are_the_opposite_edges(water_cell):
    for atoms in (water_cell, random_atoms(5, np.diag([2.5, 2.7, 2.6]), True)):
        graph = graph_from_atoms(atoms, CUTOFF)
        reverse = graph.reverse
        assert torch.equal(graph.centers[reverse], graph.neighbors)
        assert torch.equal(graph.neighbors[reverse], graph.centers)
        assert torch.equal(graph.shifts[reverse], -graph.shifts)
        assert torch.equal(reverse[reverse], torch.arange(graph.n_edges))
        vectors = edge_vectors(graph, graph.positions, torch.zeros(1, 3, 3, dtype=torch.float64))
        torch.testing.assert_close(vectors[reverse], -vectors, rtol=0, atol=1e-12)


def test_slots_hold_each_atoms_edges_then_padding(water_cell):
    graph = graph_from_atoms(water_cell, CUTOFF)
    counts = torch.bincount(graph.centers, minlength=graph.n_atoms)
    assert graph.slots.shape == (graph.n_atoms, int(counts.max()))
    for atom in range(graph.n_atoms):
        row = graph.slots[atom]
        edges = row[: counts[atom]]
        assert torch.equal(torch.sort(edges).values, torch.nonzero(graph.centers == atom)[:, 0])
        assert torch.all(row[counts[atom]:] == graph.n_edges)


def test_batch_graphs_equals_graph_of_the_list(water_cell, water_cluster):
    frames = [water_cell, water_cluster, random_atoms(5, TRICLINIC, True, seed=3)]
    batched = batch_graphs([graph_from_atoms(atoms, CUTOFF) for atoms in frames])
    together = graph_from_atoms(frames, CUTOFF)
    assert batched.n_structures == 3 and batched.n_atoms == sum(len(a) for a in frames)
    for name in Graph.__dataclass_fields__:
        assert torch.equal(getattr(batched, name), getattr(together, name)), name


def test_batched_graph_keeps_structures_apart(water_cluster):
    """Two copies of a cluster at the same place: no edge joins atoms of different structures."""
    graph = graph_from_atoms([water_cluster, water_cluster], CUTOFF)
    assert torch.equal(graph.structure[graph.centers], graph.structure[graph.neighbors])
    assert graph.n_edges == 2 * graph_from_atoms(water_cluster, CUTOFF).n_edges


def test_large_periodic_box_behaves_as_open_boundaries(data_dir):
    """The gas-phase molecule sits in a 100 Å periodic box: the same edges as with no cell."""
    molecule = read(data_dir / "water-molecule.xyz")
    assert molecule.pbc.all() and molecule.cell.lengths().min() > 2 * CUTOFF
    open_molecule = molecule.copy()
    open_molecule.set_cell(np.zeros((3, 3)))
    open_molecule.pbc = False
    assert graph_edges(graph_from_atoms(molecule, CUTOFF)).keys() == graph_edges(
        graph_from_atoms(open_molecule, CUTOFF)
    ).keys()


def test_graph_to_changes_only_floating_tensors(water_cell):
    graph = graph_from_atoms(water_cell, CUTOFF)
    single = graph.to(dtype=torch.float32)
    assert single.positions.dtype == torch.float32 and single.cells.dtype == torch.float32
    assert single.shifts.dtype == torch.float32
    assert single.centers.dtype == torch.int64 and single.slots.dtype == torch.int64
    assert torch.equal(single.shifts.double(), graph.shifts)


def test_isolated_atoms_have_no_edges():
    graph = graph_from_atoms(Atoms("OH", positions=[[0, 0, 0], [0, 0, 10.0]]), CUTOFF)
    assert graph.n_edges == 0 and graph.slots.shape == (2, 0)


def test_bad_structures_are_rejected():
    with pytest.raises(ValueError, match="singular"):
        flat_cell = [[1, 0, 0], [2, 0, 0], [0, 0, 1]]
        graph_from_atoms(Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]], cell=flat_cell, pbc=True), CUTOFF)
    with pytest.raises(ValueError, match="NaN"):
        build_graph([np.array([1])], [np.array([[np.nan, 0.0, 0.0]])], [np.zeros((3, 3))], [False], CUTOFF)
    with pytest.raises(ValueError, match="shape"):
        build_graph([np.array([1, 1])], [np.zeros((2, 2))], [np.zeros((3, 3))], [False], CUTOFF)
    with pytest.raises(ValueError, match="cell must be a finite"):
        build_graph([np.array([1])], [np.zeros((1, 3))], [np.full((3, 3), np.inf)], [True], CUTOFF)
    with pytest.raises(ValueError, match="one of each per structure"):
        build_graph([np.array([1])] * 2, [np.zeros((1, 3))] * 2, [np.zeros((3, 3))], [False] * 2, CUTOFF)
    with pytest.raises(ValueError, match="one of each per structure"):  # a structure without boundaries
        build_graph([np.array([1])] * 2, [np.zeros((1, 3))] * 2, [np.zeros((3, 3))] * 2, [False], CUTOFF)


def test_coordinates_beyond_the_bound_are_refused():
    """An atom at 1e200 Å in a periodic cell gave a silently wrong graph: refused, as is such a
    cell; a vacuum box of 2e4 Å (a gas-phase run) and atoms at the bound itself are accepted."""
    cell = np.eye(3) * 10.0
    far = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [1e200, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"structure 0: a coordinate is 1e\+200 Å, more than 1e\+06 Å from 0"):
        build_graph([np.array([8, 1, 1])], [far], [cell], [True], CUTOFF)
    with pytest.raises(ValueError, match=r"a coordinate is 1000001 Å, more than 1e\+06 Å"):
        build_graph([np.array([1])], [[[MAX_COORDINATE + 1, 0.0, 0.0]]], [cell], [True], CUTOFF)
    with pytest.raises(ValueError, match="a cell vector component is 1e\\+07 Å"):
        build_graph([np.array([1])], [np.zeros((1, 3))], [np.eye(3) * 1e7], [True], CUTOFF)
    water = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]) + 1e4
    assert build_graph([np.array([8, 1, 1])], [water], [np.eye(3) * 2e4], [True], CUTOFF).n_edges == 6
    # atoms far apart with open boundaries: vesin's cell list killed the process (SIGFPE) from 3e5 Å
    apart = np.array([[0.0, 0.0, 0.0], [1e6, 0.0, 0.0]])
    with pytest.raises(ValueError, match="the atoms span 1000000 Å along x, more than 10000 Å"):
        build_graph([np.array([1, 1])], [apart], [np.zeros((3, 3))], [False], CUTOFF)
    edge = np.array([[0.0, 0.0, 0.0], [MAX_EXTENT, 0.0, 0.0]]) + MAX_COORDINATE - MAX_EXTENT  # bounds allowed
    assert build_graph([np.array([1, 1])], [edge], [np.zeros((3, 3))], [False], CUTOFF).n_edges == 0


def test_an_atom_many_cells_away_gives_the_same_graph():
    """Positions as i-PI sends them (unwrapped): an atom 80000 cells away (~1e6 Å) is the same
    structure, its edges' shifts offset by 80000. (The packed sort key of the reverse-edge search
    overflowed int64 there, giving wrong reverses.)"""
    atoms = water_box(64, seed=3)  # 192 atoms, 12.4 Å: 80000 cells is 9.9e5 Å
    cell = np.asarray(atoms.cell)
    moved = atoms.positions.copy()
    moved[4] += 80000 * cell[0]
    graphs = [build_graph([atoms.numbers], [positions], [cell], [True], CUTOFF)
              for positions in (atoms.positions, moved)]
    for name in ("centers", "neighbors", "reverse"):
        assert torch.equal(getattr(graphs[0], name), getattr(graphs[1], name)), name
    assert torch.allclose(graphs[0].distances, graphs[1].distances, atol=1e-8)
    offset = torch.zeros_like(graphs[0].shifts)
    offset[graphs[0].centers == 4, 0] += 80000
    offset[graphs[0].neighbors == 4, 0] -= 80000
    assert torch.equal(graphs[1].shifts, graphs[0].shifts + offset)


def test_closest_pair_finds_overlaps_through_the_boundary():
    positions = np.array([[0.1, 5.0, 5.0], [5.0, 5.0, 5.0], [9.95, 5.0, 5.0]])
    assert closest_pair(positions, np.eye(3) * 10.0, True) == (0, 2, pytest.approx(0.15))
    assert closest_pair(positions, np.zeros((3, 3)), False) is None  # 9.85 Å apart without the cell
    assert closest_pair(positions, np.eye(3) * 10.0, True, within=0.1) is None
    tiny_cell = np.diag([0.25, 10.0, 10.0])  # an atom and its own image 0.25 Å apart
    assert closest_pair(positions[1:2], tiny_cell, True) == (0, 0, pytest.approx(0.25))
    assert OVERLAP_DISTANCE == 0.3
