"""The ASE calculator (pet.calculator): the same numbers as pet.compute, ASE's conventions, clear errors."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_stress

from grids import random_rotation
from grids.averaging import GridAverage
from pet.calculator import PETCalculator, load_model, parse_device, resolve_device, resolve_dtype
from pet.compute import compute
from pet.neighbors import graph_from_atoms
from rotate_atoms import rotated

CUTOFF = 4.0


def test_results_equal_compute(tiny_checkpoint, tiny_model, water_cell):
    atoms = water_cell.copy()
    atoms.calc = PETCalculator(tiny_checkpoint, dtype="float64")
    reference = compute(tiny_model, graph_from_atoms(water_cell, CUTOFF))
    virial = reference.virial[0].numpy()
    assert atoms.get_potential_energy() == pytest.approx(float(reference.energy[0]), rel=1e-15)
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    np.testing.assert_allclose(atoms.get_forces(), reference.forces.numpy(), rtol=0, atol=1e-13)
    np.testing.assert_allclose(atoms.get_potential_energies(), reference.energies.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(atoms.calc.results["virial"], virial, rtol=0, atol=1e-12)
    stress = -0.5 * (virial + virial.T) / water_cell.get_volume()
    np.testing.assert_allclose(atoms.get_stress(voigt=False), stress, rtol=0, atol=1e-14)
    # Voigt order xx, yy, zz, yz, xz, xy
    np.testing.assert_allclose(atoms.get_stress(), stress.flat[[0, 4, 8, 5, 2, 1]], rtol=0, atol=1e-14)


def test_energies_sum_to_the_energy(tiny_model, water_cell):
    water_cell.calc = PETCalculator(tiny_model, dtype="float64")
    energy = water_cell.get_potential_energy()
    assert water_cell.get_potential_energies().sum() == pytest.approx(energy, rel=1e-14)


@pytest.mark.parametrize("grid", [None, "2"])
def test_stress_equals_ases_numerical_stress(tiny_model, water_cell, grid):
    water_cell.calc = PETCalculator(tiny_model, grid=grid, dtype="float64")
    analytic = water_cell.get_stress(voigt=False)
    numerical = calculate_numerical_stress(water_cell, eps=3e-6, voigt=False)  # symmetric strains
    assert np.abs(analytic).max() > 1e-3
    np.testing.assert_allclose(analytic, numerical, rtol=0, atol=1e-8)


def test_grid_calculator_is_the_grid_average(tiny_model, water_cell):
    water_cell.calc = PETCalculator(tiny_model, grid="2i", dtype="float64", chunk_size=5)
    reference = GridAverage(tiny_model, "2i")(graph_from_atoms(water_cell, CUTOFF))
    assert water_cell.get_potential_energy() == pytest.approx(float(reference.energy[0]), rel=1e-14)
    np.testing.assert_allclose(water_cell.get_forces(), reference.forces.numpy(), atol=1e-11)
    np.testing.assert_allclose(water_cell.calc.results["virial"], reference.virial[0].numpy(), atol=1e-10)
    # the 2i average is much closer to invariant than the raw model
    rotation = random_rotation(np.random.default_rng(2), improper=False)
    turned = rotated(water_cell, rotation)
    turned.calc = PETCalculator(tiny_model, grid="2i", dtype="float64")
    raw = PETCalculator(tiny_model, dtype="float64")
    averaged_change = abs(turned.get_potential_energy() - water_cell.get_potential_energy())
    raw_change = abs(raw.get_potential_energy(turned) - raw.get_potential_energy(water_cell))
    assert averaged_change < 0.2 * raw_change


def test_random_rotation_calculator_rotates_then_rotates_back(tiny_model, water_cell):
    """With a seed, the first call evaluates the raw model on R A for R = random_rotation(default_rng(seed))
    and returns forces rotated back; the next call draws another rotation."""
    calculator = PETCalculator(tiny_model, random_rotation=True, seed=5, dtype="float64")
    water_cell.calc = calculator
    energy, forces = water_cell.get_potential_energy(), water_cell.get_forces()
    rotation = random_rotation(np.random.default_rng(5))
    turned = rotated(water_cell, rotation)
    turned.calc = PETCalculator(tiny_model, dtype="float64")
    assert energy == pytest.approx(turned.get_potential_energy(), rel=1e-14)
    np.testing.assert_allclose(forces, turned.get_forces() @ rotation, atol=1e-11)
    calculator.reset()
    assert abs(water_cell.get_potential_energy() - energy) > 1e-6


def test_conflicting_or_bad_options_are_rejected(tiny_model):
    with pytest.raises(ValueError, match="positive integer N, optionally followed by 'i'"):
        PETCalculator(tiny_model, grid="2x")
    with pytest.raises(ValueError, match="either a rotation grid or random_rotation"):
        PETCalculator(tiny_model, grid="2i", random_rotation=True)
    with pytest.raises(ValueError, match="float32 or float64"):
        PETCalculator(tiny_model, dtype="float16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            PETCalculator(tiny_model, device="cuda")
    with pytest.raises(ValueError, match="device must be cpu, cuda or cuda:N, got 'gpu'"):
        PETCalculator(tiny_model, device="gpu")
    with pytest.raises(ValueError, match="skin must be >= 0 Å and <= 10 Å"):
        PETCalculator(tiny_model, skin=12.0)


def test_device_names_are_checked():
    """pet-train's config and pet-eval's --device: cpu, cuda or cuda:N, and a CUDA device must exist."""
    assert parse_device("cpu") == resolve_device("cpu") == "cpu"
    assert parse_device("cuda:1") == "cuda:1" and parse_device(torch.device("cpu")) == "cpu"
    for bad in ("gpu", "CUDA", "cuda:", "cuda:x", "", 0):
        with pytest.raises(ValueError, match="device must be cpu, cuda or cuda:N"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda:0' requested but torch sees no CUDA device"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(ValueError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("dtype", ["float32", "float64", torch.float32])
def test_float32_and_float64_both_run(tiny_checkpoint, tiny_model, water_cell, dtype):
    reference = compute(tiny_model, graph_from_atoms(water_cell, CUTOFF))
    water_cell.calc = PETCalculator(tiny_checkpoint, dtype=dtype)
    assert next(water_cell.calc.model.parameters()).dtype == resolve_dtype(dtype)
    forces = water_cell.get_forces()
    assert forces.dtype == np.float64 and np.all(np.isfinite(forces))
    assert water_cell.get_potential_energy() == pytest.approx(float(reference.energy[0]), rel=1e-6)
    np.testing.assert_allclose(forces, reference.forces.numpy(), atol=1e-3)
    virial = reference.virial[0].numpy()
    stress = -0.5 * (virial + virial.T) / water_cell.get_volume()
    np.testing.assert_allclose(water_cell.get_stress(voigt=False), stress, atol=1e-5)


def test_open_boundaries_give_no_stress(tiny_model, water_cluster):
    water_cluster.calc = PETCalculator(tiny_model, dtype="float64")
    assert np.isfinite(water_cluster.get_potential_energy())
    assert "virial" not in water_cluster.calc.results
    with pytest.raises(PropertyNotImplementedError):
        water_cluster.get_stress()


def test_empty_structure_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="cannot evaluate an empty structure"):
        PETCalculator(tiny_model).get_potential_energy(Atoms())


def test_unknown_element_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="this model knows only H, O; the structure contains C"):
        PETCalculator(tiny_model).get_potential_energy(molecule("CH4"))


def test_default_model_comes_from_pet_ipi_model(tiny_checkpoint, tiny_model, water_cell, monkeypatch):
    monkeypatch.setenv("PET_IPI_MODEL", str(tiny_checkpoint))
    calculator = PETCalculator(dtype="float64")
    assert calculator.get_potential_energy(water_cell) == pytest.approx(
        float(compute(tiny_model, graph_from_atoms(water_cell, CUTOFF)).energy[0]), rel=1e-15
    )
    loaded = load_model(None, dtype="float64")
    assert loaded.species == [1, 8]


def test_an_empty_pet_ipi_model_is_an_error_naming_it(monkeypatch):
    """PET_IPI_MODEL= (or blanks) would be the current directory: an error naming the variable."""
    for value in ("", "   "):
        monkeypatch.setenv("PET_IPI_MODEL", value)
        with pytest.raises(ValueError, match="^PET_IPI_MODEL is set but empty: unset it or give a checkpoint path$"):
            PETCalculator()
