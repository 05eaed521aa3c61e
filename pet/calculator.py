"""ASE calculator for PET, raw or rotation-averaged."""

import re
from pathlib import Path
from typing import Optional, Union

import torch
from ase.calculators.calculator import Calculator, all_changes

from grids.averaging import make_evaluator

from . import checkpoint
from .model import PET
from .models import default_model_path
from .neighbors import atoms_arrays
from .verlet import VerletGraphs

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype) -> torch.dtype:
    """torch dtype from a torch dtype or the names "float32" / "float64"."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")


def parse_device(device) -> str:
    """The name of ``device`` (a torch device or "cpu", "cuda", "cuda:N"), checked for its form only."""
    name = str(device)
    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", name):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    return name


def resolve_device(device) -> str:
    """The name of ``device`` (see :func:`parse_device`), checked to exist on this machine."""
    name = parse_device(device)
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but torch sees no CUDA device on this machine")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested but torch sees {torch.cuda.device_count()} "
                             "CUDA device(s)")
    return name


def load_model(model: Union[str, Path, PET, None], device="cpu", dtype=torch.float32) -> PET:
    """A PET from a checkpoint path, an existing module (moved to device/dtype), or None (shipped).

    A model loaded from a checkpoint is for evaluation: its parameters do not require gradients,
    so that autograd keeps about half the memory when it computes forces (an existing module is
    left as it is, it may be in training)."""
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    if isinstance(model, PET):
        return model.to(device=device, dtype=dtype).eval()
    loaded = checkpoint.load(default_model_path() if model is None else model, device, dtype)
    return loaded.requires_grad_(False)


class PETCalculator(Calculator):
    """PET as an ASE calculator.

    ``model``: a checkpoint path, a :class:`pet.model.PET`, or None for the shipped model;
    ``grid``: None (raw) or a rotation grid such as "2i" (the rotation average);
    ``random_rotation``: evaluate on one random rotation per call instead (seed ``seed``);
    ``chunk_size``: the most rotated copies per forward pass (memory bound);
    ``skin`` (Å): the neighbour-list skin (:class:`pet.verlet.VerletGraphs`; 0: a new list per call,
    at most :data:`pet.verlet.MAX_SKIN`).
    Results: ``energy``/``free_energy`` (eV), ``energies`` (eV per atom), ``forces`` (eV/Å),
    ``stress`` (eV/Å³, Voigt, symmetrised; periodic cells only) and ``virial`` (eV, the full
    3×3 -∂E/∂ε, not symmetric for a non-invariant model).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "virial"]

    def __init__(self, model=None, grid: Optional[str] = None, random_rotation: bool = False,
                 seed: Optional[int] = None, device: str = "cpu", dtype="float32",
                 chunk_size: Optional[int] = None, skin: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        if grid is not None and random_rotation:
            raise ValueError("choose either a rotation grid or random_rotation, not both")
        self.model = load_model(model, device, dtype)
        self.mode = "random" if random_rotation else ("raw" if grid is None else str(grid))
        self.evaluator = make_evaluator(self.model, self.mode, seed=seed, chunk_size=chunk_size)
        self.graphs = VerletGraphs(self.model.hypers.cutoff, skin)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if len(self.atoms) == 0:
            raise ValueError("cannot evaluate an empty structure")
        parameter = next(self.model.parameters())
        graph = self.graphs.graph(*atoms_arrays(self.atoms))
        graph = graph.to(parameter.device, parameter.dtype)
        self.model.species_index(graph.numbers)
        periodic = bool(self.atoms.pbc.any() and abs(self.atoms.cell.volume) > 0)
        result = self.evaluator(graph, forces=True, virial=periodic)
        energy = float(result.energy[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": result.energies.detach().cpu().double().numpy(),
            "forces": result.forces.detach().cpu().double().numpy(),
        }
        if periodic:
            virial = result.virial[0].detach().cpu().double().numpy()
            stress = -0.5 * (virial + virial.T) / self.atoms.cell.volume
            self.results["virial"] = virial
            self.results["stress"] = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
