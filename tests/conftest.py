"""Shared fixtures: the data folder, a tiny random PET model and its checkpoint, small water structures.

Models here are float64 unless a test is about float32, so that symmetry and finite-difference
checks hold to round-off.
"""

import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from pet import PET, PETHypers
from pet import checkpoint
from pet.structures import water_box

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # a suite started in the background of a non-interactive shell (nohup ... &) inherits Ctrl-C
    # ignored, and so would every command the tests start, which then (rightly) ignore the Ctrl-C
    # the tests send them: restore Python's handler, which the commands' processes do not inherit
    signal.signal(signal.SIGINT, signal.default_int_handler)

TINY_HYPERS = PETHypers(n_gnn=2, d_pet=16, n_tl=1, n_heads=2, d_feedforward=32, d_head=16)
"""Hypers small enough for fast tests (cutoff 4.0 Å, Δ 0.2 Å as the paper)."""

TINY_BASELINE = {1: -13.6, 8: -430.0}
"""Per-species baseline (eV/atom) of the tiny model; energy_scale is 0.7."""


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``../shared/data`` next to the repository (the real data; never copied into the repo)."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.fail(f"test data folder {path} is missing: the tests read ../shared/data next to the checkout")
    return path


@pytest.fixture
def tiny_model() -> PET:
    """A seeded random PET (species H, O; float64; eval mode) with a non-trivial baseline and scale."""
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        model = PET(TINY_HYPERS, species=[1, 8])
    with torch.no_grad():
        model.baseline.copy_(torch.tensor([TINY_BASELINE[z] for z in model.species]))
        model.energy_scale.fill_(0.7)
    return model.double().eval()


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_model) -> Path:
    """``tiny_model`` saved with :func:`pet.checkpoint.save`; the checkpoint's path."""
    return checkpoint.save(tmp_path / "tiny.pt", tiny_model, metadata={"note": "random test model"})


@pytest.fixture
def model_with_split(tmp_path, tiny_model, labelled_file) -> Path:
    """``tiny_model`` saved with a split of the test module's ``labelled_file`` fixture (3 frames)
    recorded: train and validation frame 1, test frames 0 and 2."""
    split = {"train": [1], "validation": [1], "test": [0, 2], "seed": 0, "n_frames": 3,
             "path": str(Path(labelled_file).resolve())}
    return checkpoint.save(tmp_path / "model.pt", tiny_model, split=split)


@pytest.fixture
def water_cell():
    """4 H2O (12 atoms, O H H order) in a periodic triclinic cell (~4.9 Å, sheared), as ase.Atoms."""
    atoms = water_box(4, seed=1)
    shear = np.array([[1.0, 0.0, 0.0], [0.15, 1.0, 0.0], [-0.1, 0.2, 1.0]])
    atoms.set_cell(np.asarray(atoms.cell) @ shear, scale_atoms=True)
    return atoms


@pytest.fixture
def water_cluster():
    """4 H2O (12 atoms) with open boundaries (no cell, pbc False), as ase.Atoms."""
    atoms = water_box(4, seed=2)
    atoms.set_cell(np.zeros((3, 3)))
    atoms.pbc = False
    return atoms
