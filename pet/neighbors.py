"""Neighbour lists (vesin) and the padded per-atom layout that PET runs on.

A :class:`Graph` holds one or several structures concatenated: atoms, directed edges i → j with
|r_ij| < R_c (r_ij = r_j - r_i + shift · cell, periodic images included), the slot of every
edge in its centre's padded neighbour row, the index of every edge's reverse j → i, and (built
on first use, then kept) the transformer's token layout. Rotations leave all of this unchanged,
so one graph serves every rotated copy of a structure and every model call at its positions.
"""

from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Sequence

import numpy as np
import torch
import vesin

from .layout import TokenLayout, token_layout


@dataclass
class Graph:
    """Structures and their neighbour lists, as tensors.

    N atoms, E edges, S structures, M the largest neighbour count of an atom.

    - ``numbers`` (N,) atomic numbers; ``structure`` (N,) index of each atom's structure;
    - ``positions`` (N, 3) in Å; ``cells`` (S, 3, 3) in Å, rows are lattice vectors (ASE);
    - ``centers``, ``neighbors`` (E,) atom indices i and j of edge i → j; ``shifts`` (E, 3) integer
      cell shifts (stored in the float dtype) so that r_ij = r_j - r_i + shifts @ cell;
    - ``reverse`` (E,) index of the edge j → i with the opposite shift;
    - ``slots`` (N, M) index of the m-th edge of atom i, or E for padding.
    """

    numbers: torch.Tensor
    structure: torch.Tensor
    positions: torch.Tensor
    cells: torch.Tensor
    centers: torch.Tensor
    neighbors: torch.Tensor
    shifts: torch.Tensor
    reverse: torch.Tensor
    slots: torch.Tensor

    @property
    def n_atoms(self) -> int:
        return self.numbers.shape[0]

    @property
    def n_edges(self) -> int:
        return self.centers.shape[0]

    @property
    def n_structures(self) -> int:
        return self.cells.shape[0]

    @cached_property
    def layout(self) -> TokenLayout:
        """The token layout of the transformer (:func:`pet.layout.token_layout`), built on first
        use and kept: every chunk of rotated copies and every channel at these positions shares it."""
        return token_layout(self.slots, self.n_edges)

    def to(self, device=None, dtype=None) -> "Graph":
        """The same graph on ``device`` with floating tensors in ``dtype``."""
        moved = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value.is_floating_point():
                moved[field.name] = value.to(device=device, dtype=dtype)
            else:
                moved[field.name] = value.to(device=device)
        return replace(self, **moved)


def _structure_edges(positions, cell, pbc, cutoff):
    """Edges (i, j, shifts) of one structure; an all-zero cell means open boundaries."""
    cell = np.asarray(cell, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if not np.any(cell):
        pbc = np.zeros(3, dtype=bool)
    elif np.any(pbc) and abs(np.linalg.det(cell)) < 1e-12:
        raise ValueError("the cell is singular: give three independent lattice vectors or no cell")
    box = cell if np.any(pbc) else np.zeros((3, 3))
    calculator = vesin.NeighborList(cutoff=cutoff, full_list=True)
    i, j, shifts = calculator.compute(
        points=np.asarray(positions, dtype=np.float64), box=box, periodic=pbc, quantities="ijS"
    )
    return i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64)


def _reverse_index(i, j, shifts, n_atoms):
    """Index of the reverse j → i (shift -S) of every edge i → j (shift S)."""
    if len(i) == 0:
        return np.zeros(0, dtype=np.int64)
    span = int(np.abs(shifts).max()) if len(shifts) else 0
    base = 2 * span + 1
    shift_code = ((shifts[:, 0] + span) * base + (shifts[:, 1] + span)) * base + (shifts[:, 2] + span)
    reverse_code = ((-shifts[:, 0] + span) * base + (-shifts[:, 1] + span)) * base + (-shifts[:, 2] + span)
    key = (i * n_atoms + j) * base**3 + shift_code
    wanted = (j * n_atoms + i) * base**3 + reverse_code
    order = np.argsort(key, kind="stable")
    found = np.searchsorted(key[order], wanted)
    reverse = order[np.minimum(found, len(order) - 1)]
    if not np.array_equal(key[reverse], wanted):
        raise RuntimeError("neighbour list is not symmetric: an edge has no reverse")
    return reverse


def build_graph(
    numbers: Sequence[np.ndarray],
    positions: Sequence[np.ndarray],
    cells: Sequence[np.ndarray],
    pbcs: Sequence,
    cutoff: float,
) -> Graph:
    """Build the graph of several structures (float64 on the CPU; use :meth:`Graph.to`).

    ``numbers[s]`` (n_s,) atomic numbers, ``positions[s]`` (n_s, 3) Å, ``cells[s]`` (3, 3) Å with
    lattice vectors as rows, ``pbcs[s]`` a bool or three bools.
    """
    all_i, all_j, all_shifts, structure = [], [], [], []
    offset = 0
    for index, (z, pos, cell, pbc) in enumerate(zip(numbers, positions, cells, pbcs)):
        pos = np.asarray(pos, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 3 or len(pos) != len(z):
            raise ValueError(f"structure {index}: positions must have shape ({len(z)}, 3)")
        if not np.all(np.isfinite(pos)):
            raise ValueError(f"structure {index}: positions contain NaN or infinity")
        i, j, shifts = _structure_edges(pos, cell, pbc, cutoff)
        all_i.append(i + offset)
        all_j.append(j + offset)
        all_shifts.append(shifts)
        structure.append(np.full(len(z), index, dtype=np.int64))
        offset += len(z)
    n_atoms = offset
    i = np.concatenate(all_i) if all_i else np.zeros(0, dtype=np.int64)
    j = np.concatenate(all_j) if all_j else np.zeros(0, dtype=np.int64)
    shifts = np.concatenate(all_shifts) if all_shifts else np.zeros((0, 3), dtype=np.int64)

    order = np.lexsort((j, i))
    i, j, shifts = i[order], j[order], shifts[order]
    reverse = _reverse_index(i, j, shifts, n_atoms)

    counts = np.bincount(i, minlength=n_atoms)
    width = int(counts.max()) if n_atoms and len(i) else 0
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot_of_edge = np.arange(len(i)) - starts[i]
    slots = np.full((n_atoms, width), len(i), dtype=np.int64)
    slots[i, slot_of_edge] = np.arange(len(i))

    return Graph(
        numbers=torch.as_tensor(np.concatenate([np.asarray(z, dtype=np.int64) for z in numbers])),
        structure=torch.as_tensor(np.concatenate(structure) if structure else np.zeros(0, np.int64)),
        positions=torch.as_tensor(np.concatenate([np.asarray(p, np.float64) for p in positions])),
        cells=torch.as_tensor(np.stack([np.asarray(c, np.float64) for c in cells])),
        centers=torch.as_tensor(i),
        neighbors=torch.as_tensor(j),
        shifts=torch.as_tensor(shifts, dtype=torch.float64),
        reverse=torch.as_tensor(reverse),
        slots=torch.as_tensor(slots),
    )


def graph_from_atoms(frames, cutoff: float) -> Graph:
    """Graph of one ``ase.Atoms`` or a list of them."""
    if not isinstance(frames, (list, tuple)):
        frames = [frames]
    return build_graph(
        [a.numbers for a in frames],
        [a.positions for a in frames],
        [np.asarray(a.cell) for a in frames],
        [a.pbc for a in frames],
        cutoff,
    )


def batch_graphs(graphs: Sequence[Graph]) -> Graph:
    """Concatenate graphs (same device and dtype) into one graph of all their structures."""
    atom_offset, edge_offset, structure_offset = 0, 0, 0
    n_edges = sum(g.n_edges for g in graphs)
    width = max(g.slots.shape[1] for g in graphs)
    parts = {name: [] for name in ("structure", "centers", "neighbors", "reverse", "slots")}
    for g in graphs:
        parts["structure"].append(g.structure + structure_offset)
        parts["centers"].append(g.centers + atom_offset)
        parts["neighbors"].append(g.neighbors + atom_offset)
        parts["reverse"].append(g.reverse + edge_offset)
        slots = torch.where(g.slots < g.n_edges, g.slots + edge_offset, n_edges)
        pad = slots.new_full((g.n_atoms, width - slots.shape[1]), n_edges)
        parts["slots"].append(torch.cat([slots, pad], dim=1))
        atom_offset += g.n_atoms
        edge_offset += g.n_edges
        structure_offset += g.n_structures
    return Graph(
        numbers=torch.cat([g.numbers for g in graphs]),
        positions=torch.cat([g.positions for g in graphs]),
        cells=torch.cat([g.cells for g in graphs]),
        shifts=torch.cat([g.shifts for g in graphs]),
        **{name: torch.cat(values) for name, values in parts.items()},
    )
