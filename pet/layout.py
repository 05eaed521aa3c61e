"""Token layout of PET's transformer: atoms grouped by neighbour count, each group padded to its own width.

Every atom is a sequence of its central token and its edge tokens. Padding all atoms to the
largest neighbour count M wastes 20-33 % of the tokens of liquid water (mean count ~27, largest
33-43 for 64-512 molecules), and attention costs grow with the square of the width. Here the
atoms are sorted by neighbour count and split into at most :data:`MAX_GROUPS` groups of about
equal size, each padded to the largest count in it. Padded keys have cutoff weight 0 and drop out
of the attention exactly, so the result is that of the single padded block up to round-off.

All tokens of all groups (and of all K copies) live in one tensor (K, T, d): group g occupies the
positions ``start_g`` to ``start_g + n_g (w_g + 1)``, atom after atom, central token first.
"""

from dataclasses import dataclass
from typing import List, Tuple

import torch

MAX_GROUPS = 4
"""At most this many groups of atoms (fewer for small structures: one per :data:`ATOMS_PER_GROUP`)."""

ATOMS_PER_GROUP = 64
"""Fewest atoms per group worth a transformer call of its own (smaller groups cost more in
per-call overhead than they save)."""


@dataclass
class TokenLayout:
    """Where every token sits in the (K, T, d) token tensor.

    - ``source`` (T,): the row of [central tokens (N) ; edge tokens (E) ; zero (1)] that fills each
      position (N + E for padding);
    - ``groups``: (start, atoms, width) per group: positions start … start + atoms (width + 1);
    - ``token_of_edge`` (E,), ``token_of_center`` (N,): the position of each edge's and atom's token.
    """

    source: torch.Tensor
    groups: List[Tuple[int, int, int]]
    token_of_edge: torch.Tensor
    token_of_center: torch.Tensor

    @property
    def n_tokens(self) -> int:
        return self.source.shape[0]


def token_layout(slots: torch.Tensor, n_edges: int) -> TokenLayout:
    """The layout for ``slots`` (N, M) edge indices per atom, filled from the left, ``n_edges`` for padding."""
    n_atoms = slots.shape[0]
    device = slots.device
    counts = (slots < n_edges).sum(dim=1)
    order = torch.argsort(counts, stable=True)
    n_groups = max(1, min(MAX_GROUPS, n_atoms // ATOMS_PER_GROUP))
    bounds = [round(g * n_atoms / n_groups) for g in range(n_groups + 1)]
    sorted_counts = counts[order].tolist()

    spans = []  # (first, stop, width) over the sorted atoms; equal widths merged
    for first, stop in zip(bounds[:-1], bounds[1:]):
        if stop == first:
            continue
        group_width = sorted_counts[stop - 1]
        if spans and spans[-1][2] == group_width:
            spans[-1] = (spans[-1][0], stop, group_width)
        else:
            spans.append((first, stop, group_width))

    groups, pieces, start = [], [], 0
    token_of_center = torch.empty(n_atoms, dtype=torch.long, device=device)
    for first, stop, group_width in spans:
        atoms = order[first:stop]
        rows = torch.cat([atoms[:, None], n_atoms + slots[atoms, :group_width]], dim=1)
        pieces.append(rows.reshape(-1))
        token_of_center[atoms] = start + torch.arange(len(atoms), device=device) * (group_width + 1)
        groups.append((start, len(atoms), group_width))
        start += len(atoms) * (group_width + 1)
    source = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long, device=device)
    # rows of the source: central tokens 0..N-1, edges N..N+E-1, padding N+E (slots hold E for padding)
    token_of_edge = torch.empty(n_edges, dtype=torch.long, device=device)
    is_edge = (source >= n_atoms) & (source < n_atoms + n_edges)
    token_of_edge[source[is_edge] - n_atoms] = torch.nonzero(is_edge)[:, 0]
    return TokenLayout(source, groups, token_of_edge, token_of_center)
