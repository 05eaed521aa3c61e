"""Force channels: one loaded PET model, evaluated in a mode.

Modes: ``raw`` (the network as it is), a rotation grid ``N[i]`` such as ``2i`` (the rotation
average), or ``random`` (one random rotation per structure and call, seeded). Several channels share
one model in memory and one lock, so that channels served from different threads never run the
model at the same time (on a CPU they would only compete for the same cores). They also share the
last raw result (:class:`LastRaw`): at an MTS outer step i-PI asks the raw and the averaged
channel for the same positions, and the averaged channel's extras need the raw result too, so one
raw evaluation (and one neighbour list) serves both.

Every answer carries a dict of diagnostics (i-PI's ``extras``; all energies in eV, forces in eV/Å):

- ``channel``: the mode;
- ``virial_antisymmetry_ev``: the largest element of (W - Wᵀ)/2 (i-PI gets the symmetric part);
- grid channels also: ``rotations`` (grid size), ``energy_raw_ev`` (E of the raw model),
  ``symmetry_error_energy_ev`` = |Ē - E| and ``symmetry_error_forces_ev_per_ang`` = mean over
  atoms and components of |F̄ - F|, the symmetry error of this structure.
"""

import threading
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from grids.averaging import RawModel, make_evaluator
from grids.quadrature import GridTooLarge, parse_grid_spec
from pet.compute import Properties
from pet.model import PET
from pet.neighbors import OVERLAP_DISTANCE, Graph
from pet.verlet import VerletGraphs

from .protocol import Answer, Structure

class StructureError(ValueError):
    """A structure the model cannot evaluate (empty, NaN or infinite, overlapping atoms, unknown species)."""


def parse_mode(mode: str) -> str:
    """The canonical channel mode: ``raw``, ``random`` or a grid spec (``2i``); ValueError otherwise
    (the grid's own message for a grid larger than the largest allowed)."""
    mode = str(mode).strip()
    if mode in ("raw", "random"):
        return mode
    try:
        order, improper = parse_grid_spec(mode)
    except GridTooLarge:
        raise
    except ValueError:
        raise ValueError(f"bad channel mode {mode!r}: use raw, random or a rotation grid "
                         "N or Ni (e.g. 2i, 3i)") from None
    return f"{order}{'i' if improper else ''}"


class LastRaw:
    """The raw model's result (forces and virial) for the last structures a channel evaluated.

    Keyed by the exact atomic numbers, positions and cells, so a hit is the same evaluation
    (i-PI sends the same bytes to every forcefield at one position). Use under the model lock.
    """

    def __init__(self):
        self.key: Optional[bytes] = None
        self.graph: Optional[Graph] = None
        self.result: Optional[Properties] = None

    @staticmethod
    def key_of(numbers: np.ndarray, structures: Sequence[Structure]) -> bytes:
        parts = [np.ascontiguousarray(numbers, dtype=np.int64).tobytes()]
        for s in structures:
            parts += [np.ascontiguousarray(s.positions, dtype=np.float64).tobytes(),
                      np.ascontiguousarray(s.cell, dtype=np.float64).tobytes()]
        return b"".join(parts)

    def get(self, key: bytes) -> Tuple[Optional[Graph], Optional[Properties]]:
        """(graph, raw result) stored under ``key``; (None, None) for another key."""
        return (self.graph, self.result) if key == self.key else (None, None)

    def put(self, key: bytes, graph: Graph, result: Optional[Properties]) -> None:
        self.key, self.graph, self.result = key, graph, result


class Channel:
    """``model`` evaluated in ``mode``; ``lock`` serialises model calls across channels.

    ``seed``: random channels only; ``chunk_size``: the most rotated copies per forward pass;
    ``max_memory``: grid channels only, bytes one forward and backward pass may take (see
    :class:`grids.averaging.GridAverage`); ``last_raw``: a :class:`LastRaw` shared with the
    other channels of the same model and lock (None: a private one); ``skin`` (Å): the
    neighbour-list skin of :class:`pet.verlet.VerletGraphs` (0: a new list at every call).
    Counters ``requests``, ``structures`` and ``seconds`` (time in the model) grow with each call.
    """

    def __init__(self, model: PET, mode: str, lock: Optional[threading.Lock] = None,
                 seed: Optional[int] = None, chunk_size: Optional[int] = None,
                 max_memory: Optional[float] = None, last_raw: Optional[LastRaw] = None,
                 skin: float = 0.5):
        self.mode = parse_mode(mode)
        self.model = model
        self.lock = lock if lock is not None else threading.Lock()
        self.last_raw = last_raw if last_raw is not None else LastRaw()
        self.evaluator = make_evaluator(model, self.mode, seed=seed, chunk_size=chunk_size,
                                        max_memory=max_memory)
        self.is_grid = self.mode not in ("raw", "random")
        self.raw = RawModel(model)
        self.graphs = VerletGraphs(model.hypers.cutoff, skin)
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.requests = self.structures = 0
        self.seconds = 0.0

    def check_species(self, numbers: np.ndarray) -> None:
        """StructureError naming the elements the model does not know, if any."""
        try:
            self.model.species_index(torch.as_tensor(np.asarray(numbers, dtype=np.int64)))
        except ValueError as error:
            raise StructureError(str(error)) from None

    def evaluate(self, numbers: np.ndarray, structures: Sequence[Structure]) -> List[Answer]:
        """Answers for ``structures`` (all with the atomic numbers ``numbers``), in one model call."""
        key = LastRaw.key_of(numbers, structures)
        with self.lock:
            graph, _ = self.last_raw.get(key)
        if graph is None:
            graph = self._graph(numbers, structures)
        start = time.perf_counter()
        with self.lock:
            _, raw = self.last_raw.get(key)  # another channel may have evaluated it meanwhile
            if raw is None and self.mode != "random":
                raw = self.raw(graph, forces=True, virial=True)
                self.last_raw.put(key, graph, raw)
            result = raw if self.mode == "raw" else self.evaluator(graph, forces=True, virial=True)
        self.seconds += time.perf_counter() - start
        self.requests += 1
        self.structures += len(structures)

        n_atoms = len(numbers)
        energy = result.energy.detach().cpu().double().numpy()
        forces = result.forces.detach().cpu().double().numpy().reshape(len(structures), n_atoms, 3)
        virial = result.virial.detach().cpu().double().numpy()
        if self.is_grid:
            raw_energy = raw.energy.detach().cpu().double().numpy()
            raw_forces = raw.forces.detach().cpu().double().numpy().reshape(forces.shape)
        answers = []
        for s in range(len(structures)):
            extras = {"channel": self.mode,
                      "virial_antisymmetry_ev": float(np.abs(virial[s] - virial[s].T).max() / 2)}
            if self.is_grid:
                extras.update({
                    "rotations": len(self.evaluator),
                    "energy_raw_ev": float(raw_energy[s]),
                    "symmetry_error_energy_ev": float(abs(energy[s] - raw_energy[s])),
                    "symmetry_error_forces_ev_per_ang": float(np.abs(forces[s] - raw_forces[s]).mean()),
                })
            answers.append(Answer(float(energy[s]), forces[s], virial[s], extras))
        return answers

    def _graph(self, numbers: np.ndarray, structures: Sequence[Structure]) -> Graph:
        """The checked graph of ``structures`` on the model's device and dtype."""
        if len(numbers) == 0:
            raise StructureError("i-PI sent an empty structure (0 atoms)")
        for s in structures:
            if not (np.all(np.isfinite(s.positions)) and np.all(np.isfinite(s.cell))):
                raise StructureError("i-PI sent positions or a cell with NaN or infinite values "
                                     "(the simulation has probably blown up)")
        try:
            graph = self.graphs.graph([numbers] * len(structures), [s.positions for s in structures],
                                      [s.cell for s in structures], [bool(np.any(s.cell)) for s in structures])
        except ValueError as error:
            raise StructureError(str(error)) from None
        self._check_overlaps(graph)
        return graph.to(self.device, self.dtype)

    @staticmethod
    def _check_overlaps(graph: Graph) -> None:
        if graph.n_edges == 0:
            return
        closest = int(torch.argmin(graph.distances))
        distance = float(graph.distances[closest])
        if distance < OVERLAP_DISTANCE:
            i, j = int(graph.centers[closest]), int(graph.neighbors[closest])
            offset = int((graph.structure < graph.structure[i]).sum())
            raise StructureError(
                f"atoms {i - offset} and {j - offset} overlap ({distance:.3f} Å apart, "
                f"less than {OVERLAP_DISTANCE} Å): the simulation has probably blown up"
            )
