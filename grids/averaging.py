"""Rotation averages of an energy model (DESIGN.md section 4).

Each class here evaluates a PET model on a :class:`pet.neighbors.Graph` and returns
:class:`pet.compute.Properties`; they differ in the rotations applied to the edge vectors:

- :class:`RawModel`: none (the network as it is);
- :class:`GridAverage`: the weighted average over a grid ``N[i]``, Ē = Σ_k w_k E(R_k A), with F̄ and W̄
  from autograd, all rotations in one batched forward and backward (chunked by ``chunk_size``);
- :class:`RandomRotation`: one uniformly random proper or improper rotation per call and structure.
"""

from typing import Optional

import numpy as np
import torch

from pet.compute import Properties, compute
from pet.model import PET
from pet.neighbors import Graph

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
    :func:`pet.compute.default_chunk_size`).
    """

    def __init__(self, model: PET, spec: str, chunk_size: Optional[int] = None):
        parse_grid_spec(spec)
        self.model = model
        self.name = str(spec)
        rotations, weights = rotation_grid(spec)
        self.rotations = torch.as_tensor(rotations)
        self.weights = torch.as_tensor(weights)
        self.chunk_size = chunk_size

    def __len__(self) -> int:
        return len(self.weights)

    def __call__(self, graph: Graph, forces: bool = True, virial: bool = True) -> Properties:
        return compute(self.model, graph, self.rotations, self.weights, forces=forces,
                       virial=virial, chunk_size=self.chunk_size)


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
                   chunk_size: Optional[int] = None):
    """Evaluator of ``mode``: "raw", "random" or a grid spec such as "2i"."""
    if mode == "raw":
        return RawModel(model)
    if mode == "random":
        return RandomRotation(model, seed=seed)
    return GridAverage(model, mode, chunk_size=chunk_size)
