"""The token layout of atoms grouped by neighbour count: every token where it belongs, fewer
tokens than one block padded to the largest count, and the same energies, forces and virials as
that single block."""

import torch
from ase.io import read

from pet import PET, PETHypers, layout
from pet.compute import compute
from pet.neighbors import graph_from_atoms
from pet.structures import water_box


def test_every_token_is_where_the_layout_says(data_dir):
    graph = graph_from_atoms(read(data_dir / "water-512.xyz"), 4.0)
    n_atoms, n_edges = graph.n_atoms, graph.n_edges
    tokens = layout.token_layout(graph.slots, n_edges)
    counts = (graph.slots < n_edges).sum(dim=1)
    assert len(tokens.groups) == layout.MAX_GROUPS
    assert sum(atoms for _, atoms, _ in tokens.groups) == n_atoms
    assert tokens.n_tokens == sum(atoms * (width + 1) for _, atoms, width in tokens.groups)
    assert tokens.n_tokens < 0.9 * n_atoms * (graph.slots.shape[1] + 1)  # mean count 26, largest 37
    assert torch.equal(tokens.source[tokens.token_of_center], torch.arange(n_atoms))
    assert torch.equal(tokens.source[tokens.token_of_edge], n_atoms + torch.arange(n_edges))
    padding = tokens.source == n_atoms + n_edges
    assert int(padding.sum()) == tokens.n_tokens - n_atoms - n_edges
    for start, atoms, width in tokens.groups:  # each sequence: its atom, then its own edges, then padding
        block = tokens.source[start:start + atoms * (width + 1)].view(atoms, width + 1)
        assert int(counts[block[:, 0]].max()) == width
        for row in block[:5]:
            atom = int(row[0])
            edges = row[1:][row[1:] < n_atoms + n_edges] - n_atoms
            assert torch.equal(edges, graph.slots[atom, :int(counts[atom])])


def test_grouped_layout_gives_the_single_block_results(monkeypatch):
    torch.manual_seed(0)
    model = PET(PETHypers(n_gnn=2, d_pet=16, n_tl=1, n_heads=2, d_feedforward=32, d_head=16), [1, 8]).double()
    def graph():  # a new graph each time: a graph keeps the layout it built first
        return graph_from_atoms(water_box(64, seed=1), model.hypers.cutoff).to(dtype=torch.float64)

    rotations = torch.linalg.qr(torch.randn(3, 3, 3, dtype=torch.float64))[0]
    weights = torch.full((3,), 1 / 3, dtype=torch.float64)
    grouped_graph = graph()
    grouped = compute(model, grouped_graph, rotations, weights)
    assert len(grouped_graph.layout.groups) == 3
    monkeypatch.setattr(layout, "MAX_GROUPS", 1)
    single_graph = graph()
    single = compute(model, single_graph, rotations, weights)
    assert len(single_graph.layout.groups) == 1
    for name in ("energy", "energies", "forces", "virial"):
        torch.testing.assert_close(getattr(grouped, name), getattr(single, name), rtol=1e-10, atol=1e-12, msg=name)


def test_atoms_without_neighbours_and_small_structures():
    slots = torch.tensor([[0, 1], [2, 3], [3, 3]])  # atom 2 has no neighbour (3 = padding)
    tokens = layout.token_layout(slots, 3)
    assert tokens.groups == [(0, 3, 2)]  # fewer than ATOMS_PER_GROUP atoms: one group
    assert torch.equal(tokens.source[tokens.token_of_edge], torch.tensor([3, 4, 5]))


def test_a_graph_builds_its_layout_once(monkeypatch):
    """Every chunk of rotated copies, the chunk size and the graph on another dtype: one build per graph."""
    import pet.neighbors

    builds = []

    def counting(slots, n_edges):
        builds.append(n_edges)
        return layout.token_layout(slots, n_edges)

    monkeypatch.setattr(pet.neighbors, "token_layout", counting)
    model = PET(PETHypers(n_gnn=1, d_pet=16, n_tl=1, n_heads=2, d_feedforward=32, d_head=16), [1, 8])
    graph = graph_from_atoms(water_box(8, seed=2), model.hypers.cutoff).to(dtype=torch.float32)
    rotations = torch.linalg.qr(torch.randn(6, 3, 3))[0]
    compute(model, graph, rotations, torch.full((6,), 1 / 6), chunk_size=2)  # three chunks
    compute(model, graph, rotations, torch.full((6,), 1 / 6))  # automatic chunk size
    assert builds == [graph.n_edges]
    assert graph.layout is graph.layout
    other = graph.to(dtype=torch.float64)
    assert torch.equal(other.layout.source, graph.layout.source) and len(builds) == 2
