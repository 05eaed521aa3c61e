"""Rotation averages of an energy model (DESIGN.md section 4).

Each class here evaluates a PET model on a :class:`pet.neighbors.Graph` and returns
:class:`pet.compute.Properties`; they differ in the rotations applied to the edge vectors:

- :class:`RawModel`: none (the network as it is);
- :class:`GridAverage`: the weighted average over a grid ``N[i]``, Ē = Σ_k w_k E(R_k A), with F̄ and W̄
  from autograd, all rotations in one batched forward and backward (chunked by ``chunk_size``; on
  a CPU the automatic chunks run side by side on the threads);
- :class:`RandomRotation`: one uniformly random proper or improper rotation per call and structure.
"""

from typing import List, Optional, Tuple

import numpy as np
import torch

from pet.compute import Properties, compute, memory_chunk_size, plan_passes, saved_bytes_per_token
from pet.model import PET
from pet.neighbors import Graph
from pet.workers import automatic_workers

from .quadrature import parse_grid_spec, random_rotation, rotation_grid


class RawModel:
    """The model without rotations."""

    name = "raw"

    def __init__(self, model: PET):
        self.model = model

    def __call__(self, graph: Graph, forces: bool = True, virial: bool = True) -> Properties:
        return compute(self.model, graph, forces=forces, virial=virial)


class GridAverage:
    """The model averaged over the rotation grid ``spec`` ("2i", "3", ...).

    ``chunk_size``: the most rotated copies in one forward pass (None: automatic, see
    :func:`pet.compute.default_chunk_size`). ``max_memory`` (bytes; not with ``chunk_size``):
    instead, as many copies per pass as fit in that memory, estimated from the tensors autograd
    saves for one copy (measured at the first call, :func:`pet.compute.saved_bytes_per_token`);
    one copy per pass if even one copy needs more. For GPUs: on a CPU the automatic chunks are
    faster.

    ``workers``: passes run side by side in that many threads (:func:`pet.workers.run_side_by_side`).
    None: automatic, one per torch thread on a CPU (:func:`pet.workers.automatic_workers`) with the
    automatic chunks, and one (a pass at a time) on a GPU, with ``chunk_size`` or ``max_memory``
    (which bound the copies in memory) and for a compiled model (whose kernels have a fixed thread
    count).
    """

    def __init__(self, model: PET, spec: str, chunk_size: Optional[int] = None,
                 max_memory: Optional[float] = None, workers: Optional[int] = None):
        parse_grid_spec(spec)
        if chunk_size is not None and max_memory is not None:
            raise ValueError("give either chunk_size or max_memory, not both")
        if max_memory is not None and not max_memory > 0:
            raise ValueError(f"max_memory must be positive, got {max_memory}")
        self.model = model
        self.name = str(spec)
        rotations, weights = rotation_grid(spec)
        self.rotations = torch.as_tensor(rotations)
        self.weights = torch.as_tensor(weights)
        self.chunk_size = chunk_size
        self.max_memory = max_memory
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.bytes_per_token: Optional[float] = None

    def __len__(self) -> int:
        return len(self.weights)

    def chunk_size_for(self, graph: Graph) -> Optional[int]:
        """Copies per forward pass for ``graph``: ``chunk_size``, from ``max_memory``, or None (automatic)."""
        if self.max_memory is None:
            return self.chunk_size
        if self.bytes_per_token is None:
            self.bytes_per_token = saved_bytes_per_token(self.model, graph)
        return min(len(self), memory_chunk_size(graph, self.bytes_per_token, self.max_memory))

    def workers_for(self, graph: Graph) -> int:
        """Threads whose passes run side by side for ``graph``: ``workers``, else automatic."""
        if self.workers is not None:
            return self.workers
        if self.chunk_size is not None or self.max_memory is not None or getattr(self.model, "compiled", False):
            return 1
        return automatic_workers(graph.positions.device)

    def passes_for(self, graph: Graph) -> Tuple[List[Tuple[int, int]], int]:
        """The passes (start, stop) over the rotations and the workers that one call on ``graph``
        runs (:func:`pet.compute.plan_passes`)."""
        return plan_passes(graph, len(self), self.chunk_size_for(graph), self.workers_for(graph))

    def __call__(self, graph: Graph, forces: bool = True, virial: bool = True) -> Properties:
        return compute(self.model, graph, self.rotations, self.weights, forces=forces,
                       virial=virial, chunk_size=self.chunk_size_for(graph),
                       workers=self.workers_for(graph))


class RandomRotation:
    """The model evaluated on one random rotation (per structure) at every call, seeded."""

    name = "random"

    def __init__(self, model: PET, seed: Optional[int] = None, improper: bool = True):
        self.model = model
        self.improper = improper
        self.rng = np.random.default_rng(seed)

    def __call__(self, graph: Graph, forces: bool = True, virial: bool = True) -> Properties:
        rotations = np.stack(
            [random_rotation(self.rng, self.improper) for _ in range(graph.n_structures)]
        )
        return compute(self.model, graph, torch.as_tensor(rotations)[None],
                       torch.ones(1), forces=forces, virial=virial)


def make_evaluator(model: PET, mode: str = "raw", seed: Optional[int] = None,
                   chunk_size: Optional[int] = None, max_memory: Optional[float] = None):
    """Evaluator of ``mode``: "raw", "random" or a grid spec such as "2i" (``chunk_size`` and
    ``max_memory``, in bytes, apply to grids only: see :class:`GridAverage`)."""
    if mode == "raw":
        return RawModel(model)
    if mode == "random":
        return RandomRotation(model, seed=seed)
    return GridAverage(model, mode, chunk_size=chunk_size, max_memory=max_memory)
