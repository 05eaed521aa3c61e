"""The Point Edge Transformer (Pozdnyakov & Ceriotti, NeurIPS 2023) as DESIGN.md section 3 states it.

The network reads raw Cartesian edge vectors, so it is exactly invariant to translations and
permutations but only approximately to rotations. Several structures, or several rotated copies
of the same structures, run in one call: edge vectors have shape (K, E, 3) for K copies of a
graph of E edges, and every hidden tensor carries the leading copy axis K.
"""

from typing import Sequence

import torch
from ase.data import chemical_symbols
from torch import nn

from .cutoff import smooth_cutoff
from .hypers import PETHypers
from .neighbors import Graph
from .transformer import Transformer


GEOMETRY_INIT_SCALE = 2.5
"""Bound (1/Å) of the uniform initial weights of W_r. PyTorch's default (0.5 for 4 inputs) gives
features that vary on the 1 Å scale: the O-H stretch (curvature ~45 eV/Å², displacements ~0.05 Å)
is then out of reach and training sits for epochs on a plateau of zero forces. Five times
larger weights let a model fit a frame's forces within ~100 steps."""


def _mlp(d_in: int, d_hidden: int) -> nn.Sequential:
    """Readout head d_in → d_hidden → d_hidden → 1 with SiLU."""
    return nn.Sequential(
        nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_hidden), nn.SiLU(),
        nn.Linear(d_hidden, 1),
    )


class GNNLayer(nn.Module):
    """One message-passing layer: edge tokens, a central token, a transformer, two heads."""

    def __init__(self, hypers: PETHypers, n_species: int):
        super().__init__()
        d = hypers.d_pet
        self.geometry_embedding = nn.Linear(4, d)
        nn.init.uniform_(self.geometry_embedding.weight, -GEOMETRY_INIT_SCALE, GEOMETRY_INIT_SCALE)
        self.compress = nn.Sequential(nn.Linear(2 * d, d), nn.SiLU(), nn.Linear(d, d))
        self.central_embedding = nn.Embedding(n_species, d)
        self.transformer = Transformer(d, hypers.n_tl, hypers.n_heads, hypers.d_feedforward)
        self.central_head = _mlp(d, hypers.d_head)
        self.bond_head = _mlp(d, hypers.d_head)

    def edge_tokens(self, geometry: torch.Tensor, message: torch.Tensor) -> torch.Tensor:
        """Edge tokens compress([geometry_embedding(geometry) ; message]) (K, E, d) from ``geometry``
        (K, E, 4) and ``message`` (K or 1, E, d).

        The first linear map of ``compress`` acts on the concatenation; its half on the geometry
        embedding is folded into that embedding (two linear maps in a row are one, W_a (W_g g + b_g)
        = (W_a W_g) g + W_a b_g), so the d-wide embedding and the concatenation are never formed:
        the same function, ~8 % fewer multiply-adds per token (docs/performance.md, section 6)."""
        first = self.compress[0]
        d = message.shape[-1]
        on_geometry, on_message = first.weight[:, :d], first.weight[:, d:]
        weight = on_geometry @ self.geometry_embedding.weight
        bias = first.bias + on_geometry @ self.geometry_embedding.bias
        hidden = nn.functional.linear(geometry, weight, bias) + nn.functional.linear(message, on_message)
        return self.compress[2](self.compress[1](hidden))


def concatenated_edge_tokens(layer: GNNLayer, geometry: torch.Tensor, message: torch.Tensor) -> torch.Tensor:
    """What :meth:`GNNLayer.edge_tokens` computes, done as DESIGN.md section 3 states it: the
    geometry embedding, concatenated with the message, through ``compress``. The reference of the
    tests and of ``scripts/bench_model.py --part layout``."""
    message = message.expand(geometry.shape[0], -1, -1)
    return layer.compress(torch.cat([layer.geometry_embedding(geometry), message], dim=-1))


class PET(nn.Module):
    """PET energy model.

    ``species``: the atomic numbers the model knows. Buffers ``baseline`` (eV per atom of each
    species, fitted on the training set) and ``energy_scale`` (eV, multiplies the network's output)
    are part of the state. ``compiled``: whether :func:`pet.compilation.compile_transformers`
    compiled its transformers (their CPU kernels keep the thread count they were compiled with).
    """

    def __init__(self, hypers: PETHypers, species: Sequence[int]):
        super().__init__()
        self.hypers = hypers
        self.species = [int(z) for z in sorted(set(species))]
        if not self.species:
            raise ValueError("a PET model needs at least one species")
        lookup = torch.full((max(self.species) + 1,), -1, dtype=torch.long)
        lookup[self.species] = torch.arange(len(self.species))
        self.register_buffer("species_lookup", lookup, persistent=False)
        self.register_buffer("baseline", torch.zeros(len(self.species)))
        self.register_buffer("energy_scale", torch.ones(()))
        self.neighbor_embedding = nn.Embedding(len(self.species), hypers.d_pet)
        self.layers = nn.ModuleList(GNNLayer(hypers, len(self.species)) for _ in range(hypers.n_gnn))
        self.compiled = False

    def species_index(self, numbers: torch.Tensor) -> torch.Tensor:
        """Map atomic numbers (N,) to species indices (N,); unknown elements raise ValueError."""
        numbers = numbers.to(self.species_lookup.device)
        known = (numbers >= 0) & (numbers < len(self.species_lookup))
        index = torch.full_like(numbers, -1)
        index[known] = self.species_lookup[numbers[known]]
        if bool((index < 0).any()):
            unknown = sorted({int(z) for z in numbers[index < 0].tolist()})
            names = ", ".join(
                chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}" for z in unknown
            )
            known_names = ", ".join(chemical_symbols[z] for z in self.species)
            raise ValueError(f"this model knows only {known_names}; the structure contains {names}")
        return index

    def forward(self, vectors: torch.Tensor, graph: Graph) -> torch.Tensor:
        """Atomic energies (K, N) in eV from edge vectors ``vectors`` (K, E, 3) in Å."""
        n_copies, n_edges, _ = vectors.shape
        n_atoms = graph.n_atoms
        species = self.species_index(graph.numbers)
        distances = vectors.norm(dim=-1)
        cutoff = smooth_cutoff(distances, self.hypers.cutoff, self.hypers.cutoff_width)
        geometry = torch.cat([vectors, distances[..., None]], dim=-1)

        if n_atoms == 0:
            return vectors.new_zeros(n_copies, 0)
        layout = graph.layout

        def arrange(central: torch.Tensor, edge_values: torch.Tensor) -> torch.Tensor:
            """Central (K, N, C) and edge (K, E, C) values into the token tensor (K, T, C), zeros in padding."""
            zero = edge_values.new_zeros(n_copies, 1, edge_values.shape[-1])
            return torch.cat([central, edge_values, zero], dim=1).index_select(1, layout.source)

        keys = arrange(cutoff.new_ones(n_copies, n_atoms, 1), cutoff[..., None])[..., 0]
        blocks = [(start, atoms, width + 1) for start, atoms, width in layout.groups]
        key_weights = [keys[:, start:start + atoms * length].reshape(n_copies * atoms, length)
                       for start, atoms, length in blocks]

        message = self.neighbor_embedding(species[graph.neighbors])[None]  # the same for every copy
        energy = vectors.new_zeros(n_copies, n_atoms)
        for layer in self.layers:
            tokens = layer.edge_tokens(geometry, message)
            central = layer.central_embedding(species).expand(n_copies, -1, -1)
            sequence = arrange(central, tokens)
            outputs = [
                layer.transformer(sequence[:, start:start + atoms * length].reshape(n_copies * atoms, length, -1),
                                  weights).view(n_copies, atoms * length, -1)
                for (start, atoms, length), weights in zip(blocks, key_weights)
            ]
            sequence = torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]
            edge_out = sequence.index_select(1, layout.token_of_edge)
            central_out = sequence.index_select(1, layout.token_of_center)
            bond = layer.bond_head(edge_out)[..., 0] * cutoff
            energy = energy + layer.central_head(central_out)[..., 0]
            energy = energy.index_add(1, graph.centers, bond)
            message = 0.5 * (message + edge_out.index_select(1, graph.reverse))
        return self.energy_scale * energy + self.baseline[species]
