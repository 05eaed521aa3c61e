"""Graphs of successive positions of the same structures, from a neighbour list with a skin.

An MD run or a relaxation asks for the graph at positions that move a little each step. A
neighbour list of the pairs within R_c + skin holds every pair within R_c for as long as no atom
has moved more than skin / 2 from where the list was built (and the atoms, cells and boundaries
are the same): then a step only recomputes the distances of the listed pairs and keeps those
within R_c, instead of searching neighbours, sorting the edges and matching their reverses.
The graph is the same as :func:`pet.neighbors.build_graph` gives (same edges, same order).
"""

import threading
from typing import Optional, Sequence

import numpy as np

from .neighbors import Edges, Graph, assemble_graph, build_graph, check_structures, concatenated, find_edges

MAX_SKIN = 10.0
"""The largest neighbour-list skin (Å): a larger one only makes the neighbour list slower."""


class VerletGraphs:
    """``graph(numbers, positions, cells, pbcs)`` (arguments as in :func:`pet.neighbors.build_graph`)
    through a neighbour list with a ``skin`` (Å) beyond ``cutoff`` (Å), rebuilt only when needed.

    ``skin`` 0: a new neighbour list at every call; at most :data:`MAX_SKIN`. ``rebuilds``
    counts the lists built, ``calls`` the graphs returned. Safe to call from several threads (one
    at a time).
    """

    def __init__(self, cutoff: float, skin: float = 0.5):
        if not 0 <= skin <= MAX_SKIN:  # NaN too
            raise ValueError(f"the neighbour-list skin must be >= 0 Å and <= {MAX_SKIN:g} Å (a larger "
                             f"skin only slows the neighbour list), got {skin}")
        self.cutoff, self.skin = float(cutoff), float(skin)
        self.rebuilds = self.calls = 0
        self._key: Optional[bytes] = None
        self._reference: Optional[np.ndarray] = None  # (N, 3) Å: positions the list was built at
        self._listed: Optional[Edges] = None  # pairs within cutoff + skin
        self._shift_vectors: Optional[np.ndarray] = None  # (E, 3) Å: shifts @ cell of each listed pair
        self._lock = threading.Lock()

    def graph(self, numbers: Sequence[np.ndarray], positions: Sequence[np.ndarray],
              cells: Sequence[np.ndarray], pbcs: Sequence) -> Graph:
        """The graph of the structures at ``positions`` (float64 on the CPU)."""
        with self._lock:
            return self._graph(numbers, positions, cells, pbcs)

    def _graph(self, numbers, positions, cells, pbcs) -> Graph:
        self.calls += 1
        if self.skin == 0:
            self.rebuilds += 1
            return build_graph(numbers, positions, cells, pbcs, self.cutoff)
        check_structures(numbers, positions, cells, pbcs)
        key = self._key_of(numbers, cells, pbcs)
        current = concatenated(positions)
        if key != self._key or not self._still_valid(current):
            self._rebuild(numbers, positions, cells, pbcs)
            self._key, self._reference = key, current
        return assemble_graph(numbers, current, cells, self._within_cutoff(current))

    def _rebuild(self, numbers, positions, cells, pbcs) -> None:
        self._listed = find_edges(numbers, positions, cells, pbcs, self.cutoff + self.skin)
        structure = np.repeat(np.arange(len(numbers)), [len(z) for z in numbers])
        edge_cells = np.stack([np.asarray(c, dtype=np.float64) for c in cells])[structure[self._listed.centers]]
        self._shift_vectors = np.einsum("ea,eab->eb", self._listed.shifts, edge_cells)
        self.rebuilds += 1

    def _still_valid(self, current: np.ndarray) -> bool:
        displacements = current - self._reference
        moved = np.einsum("na,na->n", displacements, displacements)
        return bool(moved.max(initial=0.0) <= (self.skin / 2) ** 2)

    def _within_cutoff(self, current: np.ndarray) -> Edges:
        """The listed edges shorter than the cutoff at ``current`` (N, 3) positions (Å)."""
        listed = self._listed
        # np.take: several times faster than fancy indexing of rows here
        vectors = (np.take(current, listed.neighbors, axis=0) - np.take(current, listed.centers, axis=0)
                   + self._shift_vectors)
        distances = np.sqrt(np.einsum("ea,ea->e", vectors, vectors))
        keep = distances < self.cutoff
        keep &= keep[listed.reverse]  # an edge and its reverse together, whatever the round-off
        return listed.subset(keep, distances)

    @staticmethod
    def _key_of(numbers, cells, pbcs) -> bytes:
        """What must stay the same for the list to be reused: atoms, cells, boundaries."""
        parts = []
        for z, cell, pbc in zip(numbers, cells, pbcs):
            parts += [np.asarray(z, dtype=np.int64).tobytes(), np.asarray(cell, dtype=np.float64).tobytes(),
                      np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).tobytes(), b"|"]
        return b"".join(parts)
