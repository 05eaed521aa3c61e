"""Energies, forces and virials of PET by autograd, optionally averaged over rotated copies.

For K rotations R_k with weights w_k, the edge vectors of every structure are rotated inside
the graph, r_ij → R_k r_ij, and autograd differentiates the weighted energy
Ē = Σ_k w_k E(R_k A) with respect to positions and a strain ε (x → x (I + ε), rows are vectors):
F̄ = -∂Ē/∂x and W̄ = -∂Ē/∂ε (full 3×3, eV). The copies run in chunks of at most ``chunk_size``
to bound memory; every chunk is one batched forward and backward. On a CPU the chunks can run side
by side in worker threads (:mod:`pet.workers`).
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from .model import PET
from .neighbors import Graph
from .workers import run_side_by_side


@dataclass
class Properties:
    """Results for the S structures of a graph with N atoms (eV, eV/Å, eV).

    ``energy`` (S,), ``energies`` (N,) per atom, ``forces`` (N, 3) or None, ``virial`` (S, 3, 3)
    W = -∂E/∂ε or None (stress = -W / volume). ``energy`` and ``energies`` are float64 whatever
    the model's dtype: summed in float32, a thousand atomic energies of some -400 eV each would be
    rounded to ~0.02 eV, too coarse for conserved quantities and ice energy differences.
    """

    energy: torch.Tensor
    energies: torch.Tensor
    forces: Optional[torch.Tensor]
    virial: Optional[torch.Tensor]


def edge_vectors(graph: Graph, positions: torch.Tensor, strain: torch.Tensor) -> torch.Tensor:
    """r_ij (E, 3) in Å from ``positions`` (N, 3) and ``strain`` (S, 3, 3), both in the graph."""
    edge_structure = graph.structure[graph.centers]
    cells = graph.cells[edge_structure]
    vectors = positions[graph.neighbors] - positions[graph.centers]
    vectors = vectors + torch.einsum("ea,eab->eb", graph.shifts, cells)
    deformation = torch.eye(3, dtype=strain.dtype, device=strain.device) + strain
    return torch.einsum("ea,eab->eb", vectors, deformation[edge_structure])


def rotate_edges(vectors: torch.Tensor, rotations: torch.Tensor, graph: Graph) -> torch.Tensor:
    """Rotated copies (K, E, 3): R r for ``rotations`` (K, 3, 3) or per structure (K, S, 3, 3)."""
    if rotations.dim() == 3:
        return torch.einsum("kab,eb->kea", rotations, vectors)
    per_edge = rotations[:, graph.structure[graph.centers]]
    return torch.einsum("keab,eb->kea", per_edge, vectors)


def tokens_per_copy(graph: Graph) -> int:
    """Tokens of one copy of ``graph`` in the transformer (central and edge tokens and the padding
    of :attr:`Graph.layout`: about atoms × (mean neighbour count + 2))."""
    return graph.layout.n_tokens


TOKENS_PER_CHUNK = 8192
"""Default bound on copies × atoms × (neighbours + 1) per forward pass: on a CPU, larger batches
of rotated copies run slower per copy (memory traffic), smaller ones waste per-call overhead."""


def default_chunk_size(graph: Graph) -> int:
    """Rotated copies per forward pass so that one pass holds about :data:`TOKENS_PER_CHUNK` tokens."""
    return max(1, TOKENS_PER_CHUNK // max(tokens_per_copy(graph), 1))


PEAK_PER_SAVED_BYTE = 3.0
"""Peak memory of the forward and backward passes of an averaged evaluation per byte of the tensors
autograd saves in one forward: measured 1.15-2.7 on a CPU (peak resident memory growth; small and
paper-size models, float32, 8 to 512 water molecules, 1 to 150 passes in a row, glibc's malloc
with and without pet.allocator; docs/performance.md), with a margin."""


def saved_bytes_per_token(model: PET, graph: Graph) -> float:
    """Bytes that autograd keeps per token for the backward pass, measured by running the forward
    pass of one copy of ``graph`` (with forces and virial) and adding up the saved tensors."""
    storages = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[(storage.device, storage.data_ptr())] = storage.nbytes()
        return tensor

    dtype, device = graph.positions.dtype, graph.positions.device
    positions = graph.positions.detach().requires_grad_(True)
    strain = torch.zeros(graph.n_structures, 3, 3, dtype=dtype, device=device, requires_grad=True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(edge_vectors(graph, positions, strain)[None], graph)
    return sum(storages.values()) / max(tokens_per_copy(graph), 1)


def memory_chunk_size(graph: Graph, bytes_per_token: float, max_memory: float) -> int:
    """The most copies of ``graph`` per pass whose estimated peak (:data:`PEAK_PER_SAVED_BYTE` ×
    saved bytes) stays within ``max_memory`` bytes; at least 1, even if one copy needs more."""
    per_copy = PEAK_PER_SAVED_BYTE * bytes_per_token * tokens_per_copy(graph)
    return max(1, int(max_memory // max(per_copy, 1.0)))


def chunk_bounds(n_copies: int, chunk_size: int, workers: int = 1) -> List[Tuple[int, int]]:
    """(start, stop) of the passes over ``n_copies`` copies, at most ``chunk_size`` copies each:
    full passes and the rest last for one worker; for several, a multiple of ``workers`` passes
    (where there are that many copies) of sizes that differ by one at most, so that the workers,
    dealt the passes round-robin, get equal shares."""
    if workers <= 1:
        return [(start, min(start + chunk_size, n_copies)) for start in range(0, n_copies, chunk_size)]
    passes = -(-n_copies // chunk_size)
    passes = min(n_copies, -(-passes // workers) * workers)
    return [(n_copies * k // passes, n_copies * (k + 1) // passes) for k in range(passes)]


def plan_passes(graph: Graph, n_copies: int, chunk_size: Optional[int] = None,
                workers: int = 1) -> Tuple[List[Tuple[int, int]], int]:
    """The passes (start, stop) over ``n_copies`` copies of ``graph`` and the workers that run
    them side by side. ``chunk_size`` None: automatic (:func:`default_chunk_size`), and one worker
    where the copies do not fill a pass of :data:`TOKENS_PER_CHUNK` tokens for each (the threads
    would then cost more than they give: one water molecule's 2i average took 8.4 ms on two
    workers against 7.2 ms in one pass, docs/performance.md); a given ``chunk_size`` is kept, with
    ``workers`` as given."""
    if chunk_size is None:
        chunk_size = default_chunk_size(graph)
        if n_copies * tokens_per_copy(graph) < workers * TOKENS_PER_CHUNK:
            workers = 1
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    passes = chunk_bounds(n_copies, chunk_size, workers)
    return passes, min(workers, len(passes))


def compute(
    model: PET,
    graph: Graph,
    rotations: Optional[torch.Tensor] = None,
    weights: Optional[torch.Tensor] = None,
    forces: bool = True,
    virial: bool = True,
    chunk_size: Optional[int] = None,
    create_graph: bool = False,
    workers: int = 1,
) -> Properties:
    """Evaluate ``model`` on ``graph`` (already on the model's device and dtype).

    ``rotations`` (K, 3, 3) or (K, S, 3, 3) and ``weights`` (K,) select the average
    Σ_k w_k E(R_k A); None means the raw model. ``create_graph`` keeps the graph of the
    derivatives (training on forces); it forbids chunking. ``chunk_size`` None: automatic.
    ``workers`` > 1: the chunks run side by side in that many threads (CPU;
    :func:`pet.workers.run_side_by_side`), each worker holding one chunk in memory at a time; the
    chunks' results are added in chunk order whatever the workers. Both as :func:`plan_passes`.
    """
    dtype, device = graph.positions.dtype, graph.positions.device
    if rotations is None:
        rotations = torch.eye(3, dtype=dtype, device=device)[None]
        weights = torch.ones(1, dtype=dtype, device=device)
        rotate = False
    else:
        rotations = rotations.to(device=device, dtype=dtype)
        weights = torch.as_tensor(weights).to(device=device, dtype=dtype)
        rotate = True
    n_copies = rotations.shape[0]
    if create_graph:
        passes, workers = [(0, n_copies)], 1
    else:
        passes, workers = plan_passes(graph, n_copies, chunk_size, workers)
    if workers > 1:
        graph.layout  # noqa: B018 - built here once, not by each worker at the same time

    forces, virial = bool(forces), bool(virial)
    positions = graph.positions.detach().requires_grad_(forces)
    strain = torch.zeros(graph.n_structures, 3, 3, dtype=dtype, device=device, requires_grad=virial)
    inputs = [t for t, wanted in ((positions, forces), (strain, virial)) if wanted]

    def chunk(start: int, stop: int):
        """Weighted atomic energies (N,) of copies start..stop and their gradients."""
        vectors = edge_vectors(graph, positions, strain)
        if rotate:
            vectors = rotate_edges(vectors, rotations[start:stop], graph)
        else:
            vectors = vectors[None]
        atomic = model(vectors, graph)
        chunk_energies = torch.einsum("k,kn->n", weights[start:stop], atomic)
        chunk_gradients = []
        if inputs:
            chunk_gradients = torch.autograd.grad(chunk_energies.sum(), inputs, create_graph=create_graph)
        if not create_graph:
            chunk_energies = chunk_energies.detach()
        return chunk_energies, chunk_gradients

    energies = torch.zeros(graph.n_atoms, dtype=torch.float64, device=device)
    gradients = [torch.zeros_like(t) for t in inputs]
    with torch.set_grad_enabled(bool(inputs) or torch.is_grad_enabled()):
        tasks = [lambda start=start, stop=stop: chunk(start, stop) for start, stop in passes]
        for chunk_energies, chunk_gradients in run_side_by_side(tasks, workers):
            gradients = [g + c for g, c in zip(gradients, chunk_gradients)]
            energies = energies + chunk_energies.double()

    energy = torch.zeros(graph.n_structures, dtype=torch.float64, device=device)
    energy = energy.index_add(0, graph.structure, energies)
    results = dict(zip([name for name, wanted in (("forces", forces), ("virial", virial)) if wanted],
                       [-g for g in gradients]))
    return Properties(energy, energies, results.get("forces"), results.get("virial"))
