"""Neighbour lists (vesin) and the padded per-atom layout that PET runs on.

A :class:`Graph` holds one or several structures concatenated: atoms, directed edges i → j with
|r_ij| < R_c (r_ij = r_j - r_i + shift · cell, periodic images included), the slot of every
edge in its centre's padded neighbour row, the index of every edge's reverse j → i, and (built
on first use, then kept) the transformer's token layout. Rotations leave all of this unchanged,
so one graph serves every rotated copy of a structure and every model call at its positions.
"""

from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Optional, Sequence

import numpy as np
import torch
import vesin

from .layout import TokenLayout, token_layout

MAX_COORDINATE = 1e6
"""The largest |coordinate| (Å) of an atom or a cell vector accepted: beyond it a structure has
blown up or is not in Å, and float64 positions no longer resolve 1e-10 Å (a gas-phase molecule in
a vacuum box of 2e4 Å is fine)."""

MAX_EXTENT = 1e4
"""The largest span (Å) of a structure's atoms along x, y or z: beyond it a structure has blown up
(vesin's cell list of open boundaries kills the process from a span of ~1e5 cutoffs on)."""

OVERLAP_DISTANCE = 0.3
"""Two atoms closer than this (Å) overlap: not a structure (one that blew up, or wrong units)."""

SHORTEST_SEARCH = 2.0
"""The shortest cutoff (Å) :func:`closest_pair` searches with: vesin's cell lists are slow for
short ones (17 ms per 64-molecule frame at 0.3 Å, 0.2 ms at 2 Å)."""


@dataclass
class Graph:
    """Structures and their neighbour lists, as tensors.

    N atoms, E edges, S structures, M the largest neighbour count of an atom.

    - ``numbers`` (N,) atomic numbers; ``structure`` (N,) index of each atom's structure;
    - ``positions`` (N, 3) in Å; ``cells`` (S, 3, 3) in Å, rows are lattice vectors (ASE);
    - ``centers``, ``neighbors`` (E,) atom indices i and j of edge i → j; ``shifts`` (E, 3) integer
      cell shifts (stored in the float dtype) so that r_ij = r_j - r_i + shifts @ cell;
    - ``reverse`` (E,) index of the edge j → i with the opposite shift;
    - ``slots`` (N, M) index of the m-th edge of atom i, or E for padding;
    - ``distances`` (E,) |r_ij| in Å from the neighbour list (constants, outside autograd: the
      model computes its own r_ij from ``positions``; rotations leave them unchanged).
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
    distances: torch.Tensor

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
    """Edges (i, j, shifts, distances in Å) of one structure; an all-zero cell means open boundaries."""
    cell = np.asarray(cell, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if not np.any(cell):
        pbc = np.zeros(3, dtype=bool)
    elif np.any(pbc) and abs(np.linalg.det(cell)) < 1e-12:
        raise ValueError("the cell is singular: give three independent lattice vectors or no cell")
    box = cell if np.any(pbc) else np.zeros((3, 3))
    calculator = vesin.NeighborList(cutoff=cutoff, full_list=True)
    i, j, shifts, distances = calculator.compute(
        points=np.asarray(positions, dtype=np.float64), box=box, periodic=pbc, quantities="ijSd"
    )
    return i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64), distances


def _sorted_with_reverse(i, j, shifts):
    """(order, reverse): ``order`` sorts the edges by (i, j, shift); ``reverse[e]`` is the index,
    in that order, of the edge j → i (shift -S) of the sorted edge e: i → j (shift S).

    The edge set is symmetric, so the reversed edges, sorted the same way, are the sorted edges
    again: the permutation that sorts them is the inverse of ``reverse``. Two lexicographic sorts
    of the integer columns (no packed key, which overflowed for atoms thousands of cells away).
    """
    if len(i) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], j, i))
    i, j, shifts = i[order], j[order], shifts[order]
    by_reverse = np.lexsort((-shifts[:, 2], -shifts[:, 1], -shifts[:, 0], i, j))
    if not (np.array_equal(j[by_reverse], i) and np.array_equal(i[by_reverse], j)
            and np.array_equal(-shifts[by_reverse], shifts)):
        raise RuntimeError("neighbour list is not symmetric: an edge has no reverse")
    reverse = np.empty_like(by_reverse)
    reverse[by_reverse] = np.arange(len(by_reverse))
    return order, reverse


@dataclass
class Edges:
    """The directed edges of concatenated structures, sorted by (i, j, shift), as numpy arrays.

    ``centers``, ``neighbors`` (E,) atom indices; ``shifts`` (E, 3) integer cell shifts;
    ``distances`` (E,) |r_ij| in Å; ``reverse`` (E,) index of the edge j → i with shift -S.
    """

    centers: np.ndarray
    neighbors: np.ndarray
    shifts: np.ndarray
    distances: np.ndarray
    reverse: np.ndarray

    def subset(self, keep: np.ndarray, distances: Optional[np.ndarray] = None) -> "Edges":
        """The edges where the boolean ``keep`` (E,) is true, still sorted, reverses re-indexed
        (``keep`` must hold an edge and its reverse together); ``distances`` (E,) Å, if given,
        replace the stored ones."""
        kept = np.flatnonzero(keep)
        new_index = np.cumsum(keep) - 1
        return Edges(np.take(self.centers, kept), np.take(self.neighbors, kept),
                     np.take(self.shifts, kept, axis=0),
                     np.take(self.distances if distances is None else distances, kept),
                     np.take(new_index, np.take(self.reverse, kept)))


def check_structures(numbers, positions, cells, pbcs) -> None:
    """ValueError unless there are as many ``positions``, ``cells`` and ``pbcs`` as ``numbers``
    and every structure passes :func:`check_structure` (the message names the structure)."""
    if not len(numbers) == len(positions) == len(cells) == len(pbcs):
        raise ValueError(f"{len(numbers)} lists of atomic numbers, {len(positions)} of positions, "
                         f"{len(cells)} cells and {len(pbcs)} boundary conditions: one of each per structure")
    for index, (z, pos, cell, pbc) in enumerate(zip(numbers, positions, cells, pbcs)):
        try:
            check_structure(z, pos, cell, pbc)
        except ValueError as error:
            raise ValueError(f"structure {index}: {error}") from None


def check_structure(numbers, positions, cell, pbc=True) -> None:
    """ValueError unless ``positions`` is a finite (len(numbers), 3) array and ``cell`` a finite
    (3, 3) one (Å), every coordinate and cell component within :data:`MAX_COORDINATE` of 0 and,
    with open boundaries (``pbc`` False, or a cell of zeros), the atoms within :data:`MAX_EXTENT`
    of each other along every axis (periodic positions may be unwrapped: i-PI does not wrap)."""
    positions, cell = np.asarray(positions), np.asarray(cell)
    if positions.ndim != 2 or positions.shape[1] != 3 or len(positions) != len(numbers):
        raise ValueError(f"positions must have shape ({len(numbers)}, 3)")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions contain NaN or infinity")
    if cell.shape != (3, 3) or not np.all(np.isfinite(cell)):
        raise ValueError("the cell must be a finite (3, 3) array")
    for what, values in (("a coordinate", positions), ("a cell vector component", cell)):
        largest = float(np.abs(values).max(initial=0.0))
        if largest > MAX_COORDINATE:
            raise ValueError(f"{what} is {largest:.7g} Å, more than {MAX_COORDINATE:g} Å from 0 "
                             "(a structure that blew up, or not in Å?)")
    if len(positions) and not (np.any(pbc) and np.any(cell)):
        span = positions.max(axis=0) - positions.min(axis=0)
        axis = int(np.argmax(span))
        if span[axis] > MAX_EXTENT:
            raise ValueError(f"the atoms span {span[axis]:.7g} Å along {'xyz'[axis]}, more than "
                             f"{MAX_EXTENT:g} Å (a structure that blew up, or not in Å?)")


def closest_pair(positions, cell, pbc, within: float = OVERLAP_DISTANCE):
    """(i, j, distance in Å), i <= j, of the closest two atoms of one structure that are less than
    ``within`` Å apart (periodic images included; i == j: an atom and its own image), or None.
    ``positions`` (N, 3) Å, ``cell`` (3, 3) Å (rows = lattice vectors; zeros: open boundaries),
    ``pbc`` a bool or three bools, checked by :func:`check_structure` first."""
    i, j, _, distances = _structure_edges(positions, cell, pbc, max(within, SHORTEST_SEARCH))
    if len(distances) == 0 or distances.min() >= within:
        return None
    closest = int(np.argmin(distances))
    first, second = sorted((int(i[closest]), int(j[closest])))
    return first, second, float(distances[closest])


def find_edges(numbers, positions, cells, pbcs, cutoff: float) -> Edges:
    """Edges within ``cutoff`` (Å) of several structures (arguments as in :func:`build_graph`),
    atom indices counted over the concatenated structures."""
    all_i, all_j, all_shifts, all_distances = [], [], [], []
    offset = 0
    for z, pos, cell, pbc in zip(numbers, positions, cells, pbcs):
        i, j, shifts, distances = _structure_edges(np.asarray(pos, dtype=np.float64), cell, pbc, cutoff)
        all_i.append(i + offset)
        all_j.append(j + offset)
        all_shifts.append(shifts)
        all_distances.append(distances)
        offset += len(z)
    if not all_i:
        return Edges(*(np.zeros(0, dtype=np.int64),) * 2, np.zeros((0, 3), dtype=np.int64),
                     np.zeros(0), np.zeros(0, dtype=np.int64))
    i, j = np.concatenate(all_i), np.concatenate(all_j)
    shifts, distances = np.concatenate(all_shifts), np.concatenate(all_distances)
    order, reverse = _sorted_with_reverse(i, j, shifts)
    return Edges(i[order], j[order], shifts[order], distances[order], reverse)


def assemble_graph(numbers, positions: np.ndarray, cells, edges: Edges) -> Graph:
    """The :class:`Graph` of structures and their ``edges`` (float64 on the CPU): ``numbers`` and
    ``cells`` as in :func:`build_graph`, ``positions`` (N, 3) Å of all the structures' atoms
    concatenated. The padded slots of every atom's row are laid out here."""
    n_atoms = sum(len(z) for z in numbers)
    i = edges.centers
    counts = np.bincount(i, minlength=n_atoms)
    width = int(counts.max()) if n_atoms and len(i) else 0
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot_of_edge = np.arange(len(i)) - starts[i]
    slots = np.full((n_atoms, width), len(i), dtype=np.int64)
    slots[i, slot_of_edge] = np.arange(len(i))
    structure = [np.full(len(z), index, dtype=np.int64) for index, z in enumerate(numbers)]

    return Graph(
        numbers=torch.as_tensor(np.concatenate([np.asarray(z, dtype=np.int64) for z in numbers])),
        structure=torch.as_tensor(np.concatenate(structure) if structure else np.zeros(0, np.int64)),
        positions=torch.as_tensor(np.asarray(positions, dtype=np.float64)),
        cells=torch.as_tensor(np.stack([np.asarray(c, np.float64) for c in cells])),
        centers=torch.as_tensor(i),
        neighbors=torch.as_tensor(edges.neighbors),
        shifts=torch.as_tensor(edges.shifts, dtype=torch.float64),
        reverse=torch.as_tensor(edges.reverse),
        slots=torch.as_tensor(slots),
        distances=torch.as_tensor(edges.distances),
    )


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
    check_structures(numbers, positions, cells, pbcs)
    edges = find_edges(numbers, positions, cells, pbcs, cutoff)
    return assemble_graph(numbers, concatenated(positions), cells, edges)


def concatenated(positions) -> np.ndarray:
    """(N, 3) float64 array of the per-structure ``positions[s]`` (n_s, 3), one after another."""
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in positions]).reshape(-1, 3)


def atoms_arrays(frames):
    """(numbers, positions, cells, pbcs), the arguments of :func:`build_graph`, of one
    ``ase.Atoms`` or a list of them."""
    if not isinstance(frames, (list, tuple)):
        frames = [frames]
    return ([a.numbers for a in frames], [a.positions for a in frames],
            [np.asarray(a.cell) for a in frames], [a.pbc for a in frames])


def graph_from_atoms(frames, cutoff: float) -> Graph:
    """Graph of one ``ase.Atoms`` or a list of them."""
    return build_graph(*atoms_arrays(frames), cutoff)


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
        distances=torch.cat([g.distances for g in graphs]),
        **{name: torch.cat(values) for name, values in parts.items()},
    )
