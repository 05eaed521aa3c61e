"""PET energies, forces and virials (pet.model, pet.compute): conservative, exactly invariant to
translations and permutations, smooth at the cutoff, consistent between a cell and its supercell."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.io import read

from grids import random_rotation
from grids.averaging import GridAverage
from pet.compute import compute
from pet.model import concatenated_edge_tokens
from pet.neighbors import graph_from_atoms

CUTOFF = 4.0


def evaluate(model, atoms, **kwargs):
    """compute() of ``model`` on ``atoms``, float64 numpy: energy (float), energies, forces, virial (3, 3)."""
    result = compute(model, graph_from_atoms(atoms, CUTOFF), **kwargs)
    as_numpy = lambda t: None if t is None else t.detach().numpy()  # noqa: E731
    return (float(result.energy[0]), as_numpy(result.energies), as_numpy(result.forces),
            None if result.virial is None else result.virial[0].detach().numpy())


def energy_of(model, atoms):
    return evaluate(model, atoms, forces=False, virial=False)[0]


def strained(atoms, strain):
    """Positions and cell deformed x → x (I + ε) (rows are vectors)."""
    copy = atoms.copy()
    deformation = np.eye(3) + strain
    copy.positions = atoms.positions @ deformation
    copy.cell = np.asarray(atoms.cell) @ deformation
    return copy


# ---------------------------------------------------------------- conservative forces and virial


@pytest.mark.parametrize("structure", ["water_cell", "water_cluster"])
def test_forces_are_minus_the_gradient_of_the_energy(structure, tiny_model, request):
    atoms = request.getfixturevalue(structure)
    _, _, forces, _ = evaluate(tiny_model, atoms)
    step = 2e-5  # central differences: truncation ~ step², round-off ~ 1e-12 eV / step
    numerical = np.zeros_like(forces)
    for atom in range(len(atoms)):
        for axis in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[atom, axis] += step
            minus.positions[atom, axis] -= step
            numerical[atom, axis] = -(energy_of(tiny_model, plus) - energy_of(tiny_model, minus)) / (2 * step)
    assert np.abs(forces).max() > 0.1
    np.testing.assert_allclose(forces, numerical, rtol=0, atol=1e-6)


@pytest.mark.parametrize("structure", ["water_cell", "water_cluster"])
def test_virial_is_minus_the_strain_derivative_full_3x3(structure, tiny_model, request):
    """W_ab = -∂E/∂ε_ab with x → x (I + ε), cell too; not symmetric for the raw model."""
    atoms = request.getfixturevalue(structure)
    _, _, _, virial = evaluate(tiny_model, atoms)
    step = 3e-6  # truncation ~ step², round-off ~ 1e-12 eV / step
    numerical = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            strain = np.zeros((3, 3))
            strain[a, b] = step
            numerical[a, b] = -(energy_of(tiny_model, strained(atoms, strain))
                                - energy_of(tiny_model, strained(atoms, -strain))) / (2 * step)
    np.testing.assert_allclose(virial, numerical, rtol=0, atol=1e-6)
    assert np.abs(virial - virial.T).max() > 1e-2  # the test really sees the antisymmetric part


def test_forces_and_virial_of_the_grid_average_are_conservative(tiny_model, water_cell):
    evaluator = GridAverage(tiny_model, "2")

    def averaged_energy(atoms):
        return float(evaluator(graph_from_atoms(atoms, CUTOFF), forces=False, virial=False).energy[0])

    result = evaluator(graph_from_atoms(water_cell, CUTOFF))
    step = 1e-4
    for atom, axis in [(0, 0), (4, 1), (11, 2)]:
        plus, minus = water_cell.copy(), water_cell.copy()
        plus.positions[atom, axis] += step
        minus.positions[atom, axis] -= step
        numerical = -(averaged_energy(plus) - averaged_energy(minus)) / (2 * step)
        assert float(result.forces[atom, axis]) == pytest.approx(numerical, abs=1e-6)
    for a, b in [(0, 1), (2, 0), (1, 1)]:
        strain = np.zeros((3, 3))
        strain[a, b] = 1e-5
        numerical = -(averaged_energy(strained(water_cell, strain))
                      - averaged_energy(strained(water_cell, -strain))) / 2e-5
        assert float(result.virial[0, a, b]) == pytest.approx(numerical, abs=1e-6)


# ---------------------------------------------------------------- exact symmetries


@pytest.mark.parametrize("structure", ["water_cell", "water_cluster"])
def test_translation_invariance_is_exact(structure, tiny_model, request):
    atoms = request.getfixturevalue(structure)
    energy, energies, forces, virial = evaluate(tiny_model, atoms)
    moved = atoms.copy()
    moved.positions += np.array([1.7, -3.1, 0.45])
    if moved.pbc.any():
        moved.wrap()  # atoms now sit in other periodic images: other shifts, same physics
        assert not np.allclose(moved.positions, atoms.positions + np.array([1.7, -3.1, 0.45]))
    energy2, energies2, forces2, virial2 = evaluate(tiny_model, moved)
    assert energy2 == pytest.approx(energy, rel=1e-14)
    np.testing.assert_allclose(energies2, energies, rtol=0, atol=1e-11)
    np.testing.assert_allclose(forces2, forces, rtol=0, atol=1e-11)
    np.testing.assert_allclose(virial2, virial, rtol=0, atol=1e-11)


@pytest.mark.parametrize("structure", ["water_cell", "water_cluster"])
def test_permutation_invariance_is_exact(structure, tiny_model, request):
    atoms = request.getfixturevalue(structure)
    energy, energies, forces, virial = evaluate(tiny_model, atoms)
    order = np.random.default_rng(5).permutation(len(atoms))
    energy2, energies2, forces2, virial2 = evaluate(tiny_model, atoms[order])
    assert energy2 == pytest.approx(energy, rel=1e-14)
    np.testing.assert_allclose(energies2, energies[order], rtol=0, atol=1e-11)
    np.testing.assert_allclose(forces2, forces[order], rtol=0, atol=1e-11)
    np.testing.assert_allclose(virial2, virial, rtol=0, atol=1e-11)


def test_swapping_two_hydrogens_changes_nothing(tiny_model, water_cluster):
    """Like atoms are interchangeable: exchanging the positions of two H atoms (of different
    molecules) gives the same structure, so the same energy and swapped forces."""
    energy, _, forces, _ = evaluate(tiny_model, water_cluster)
    swapped = water_cluster.copy()
    swapped.positions[[1, 4]] = water_cluster.positions[[4, 1]]
    energy2, _, forces2, _ = evaluate(tiny_model, swapped)
    assert energy2 == pytest.approx(energy, rel=1e-14)
    np.testing.assert_allclose(forces2[[4, 1]], forces[[1, 4]], atol=1e-11)


# ---------------------------------------------------------------- the smooth cutoff


def two_waters(separation):
    """Water A with O at the origin, water B (rotated) translated by ``separation`` along x."""
    water = molecule("H2O")
    water.positions -= water.positions[0]
    other = water.copy()
    other.positions = other.positions @ random_rotation(np.random.default_rng(1), improper=False).T
    other.positions += np.array([separation, 0.3, -0.2])
    return water + other


def closest_intermolecular_distance(atoms):
    return np.linalg.norm(atoms.positions[:3, None] - atoms.positions[None, 3:], axis=-1).min()


def test_energy_and_forces_are_smooth_when_a_neighbour_crosses_the_cutoff(tiny_model):
    """Scan water B rigidly through the cutoff of water A: E(s) and the force along the path
    change smoothly, and E is exactly E_A + E_B once every pair is beyond R_c."""
    direction = np.array([1.0, 0.0, 0.0])
    step = 2e-3
    separations = np.arange(3.5, 4.2, step)
    distances = np.array([closest_intermolecular_distance(two_waters(s)) for s in separations])
    assert distances[0] < CUTOFF - 0.3 and distances[-1] > CUTOFF  # the scan crosses R_c
    energies, slopes = [], []
    for s in separations:
        energy, _, forces, _ = evaluate(tiny_model, two_waters(s), virial=False)
        energies.append(energy)
        slopes.append(-forces[3:] @ direction)  # dE/ds = -Σ_B F · direction
    energies = np.array(energies)
    slopes = np.array([row.sum() for row in slopes])

    assert np.abs(slopes).max() > 0.1  # the molecules do interact inside the scan
    # no jump in E: each step's energy change is the integral of the force along it (trapezoid
    # rule, error ~ h³ |E'''| / 12); a hard cutoff leaves ~0.2 eV in one step, the smooth one ~1e-5
    trapezoid = np.diff(energies) - step * 0.5 * (slopes[1:] + slopes[:-1])
    assert np.abs(trapezoid).max() < 1e-4
    # no jump in F: second differences of the force along the path are ~ h × (the jump of E''
    # where the C¹ cutoff's f'' jumps) ≈ 0.04 here; a cutoff with a kink (f only C⁰) gives ~1
    assert np.abs(np.diff(slopes, 2)).max() < 0.2

    isolated = two_waters(100.0)
    alone = energy_of(tiny_model, isolated[:3]) + energy_of(tiny_model, isolated[3:])
    beyond = distances >= CUTOFF
    np.testing.assert_allclose(energies[beyond], alone, rtol=0, atol=1e-10)
    np.testing.assert_allclose(slopes[beyond], 0.0, atol=1e-12)


@pytest.mark.parametrize("distance", [CUTOFF, CUTOFF + 1e-9])
def test_an_atom_at_or_beyond_the_cutoff_contributes_nothing(tiny_model, distance):
    water = molecule("H2O")
    water.positions -= water.positions[0]  # O at the origin, both H at z < 0
    probe = Atoms("H", positions=[[0.0, 0.0, distance]])
    together = water + probe
    assert np.linalg.norm(together.positions[:3] - together.positions[3], axis=1).min() == distance
    _, energies, forces, _ = evaluate(tiny_model, together)
    _, water_energies, water_forces, _ = evaluate(tiny_model, water)
    _, probe_energies, probe_forces, _ = evaluate(tiny_model, probe)
    np.testing.assert_allclose(energies[:3], water_energies, rtol=0, atol=1e-12)
    np.testing.assert_allclose(energies[3:], probe_energies, rtol=0, atol=1e-12)
    np.testing.assert_allclose(forces[:3], water_forces, rtol=0, atol=1e-12)
    np.testing.assert_allclose(forces[3], 0.0, atol=1e-12)

    # just inside, the neighbour enters with weight f ≈ (π δ / 2Δ)² → 0: continuous from inside too
    inside = water + Atoms("H", positions=[[0.0, 0.0, CUTOFF - 1e-5]])
    _, inside_energies, _, _ = evaluate(tiny_model, inside)
    np.testing.assert_allclose(inside_energies[:3], water_energies, rtol=0, atol=1e-7)


# ---------------------------------------------------------------- periodic images and batching


def small_water_cell():
    """2 H2O in a slightly triclinic cell of side ~3.5 Å: the 4 Å cutoff spans several images."""
    water = molecule("H2O")
    water.positions -= water.positions[0]
    rng = np.random.default_rng(4)
    first = water.positions @ random_rotation(rng, improper=False).T + [0.3, 0.2, 0.1]
    second = water.positions @ random_rotation(rng, improper=False).T + [1.9, 1.7, 1.8]
    cell = [[3.5, 0.0, 0.0], [0.3, 3.6, 0.0], [0.2, -0.1, 3.4]]
    return Atoms("OH2OH2", positions=np.concatenate([first, second]), cell=cell, pbc=True)


def test_small_cell_and_its_supercell_agree_per_atom(tiny_model):
    atoms = small_water_cell()
    graph = graph_from_atoms(atoms, CUTOFF)
    self_images = (graph.centers == graph.neighbors).sum()
    assert self_images > 0 and len(torch.unique(graph.shifts, dim=0)) >= 15  # many images in range
    energy, energies, forces, virial = evaluate(tiny_model, atoms)
    supercell = atoms.repeat((2, 2, 2))
    energy8, energies8, forces8, virial8 = evaluate(tiny_model, supercell)
    assert energy8 == pytest.approx(8 * energy, rel=1e-13)
    np.testing.assert_allclose(energies8.reshape(8, len(atoms)), np.tile(energies, (8, 1)), atol=1e-10)
    np.testing.assert_allclose(forces8.reshape(8, len(atoms), 3), np.tile(forces, (8, 1, 1)), atol=1e-10)
    np.testing.assert_allclose(virial8, 8 * virial, atol=1e-9)


def test_batched_structures_equal_separate_evaluations(tiny_model, water_cell, water_cluster):
    """Several structures (different sizes, cells, padding widths) in one graph give each its own
    energy, forces and virial."""
    frames = [water_cell, water_cluster, small_water_cell()]
    batched = compute(tiny_model, graph_from_atoms(frames, CUTOFF))
    start = 0
    for index, atoms in enumerate(frames):
        energy, energies, forces, virial = evaluate(tiny_model, atoms)
        stop = start + len(atoms)
        assert float(batched.energy[index]) == pytest.approx(energy, rel=1e-14)
        np.testing.assert_allclose(batched.energies[start:stop].numpy(), energies, atol=1e-11)
        np.testing.assert_allclose(batched.forces[start:stop].numpy(), forces, atol=1e-11)
        np.testing.assert_allclose(batched.virial[index].numpy(), virial, atol=1e-10)
        start = stop


def test_energies_sum_to_the_energy_including_the_baseline(tiny_model, water_cell):
    energy, energies, _, _ = evaluate(tiny_model, water_cell)
    assert energies.sum() == pytest.approx(energy, rel=1e-15)
    # the per-species baseline enters each atom: the network part is energy_scale × (small numbers)
    baseline = tiny_model.baseline[tiny_model.species_index(torch.as_tensor(water_cell.numbers))]
    assert np.abs(energies - baseline.numpy()).max() < 10.0


def test_float32_model_agrees_with_float64(tiny_model, water_cell):
    graph = graph_from_atoms(water_cell, CUTOFF)
    double = compute(tiny_model, graph)
    single = compute(tiny_model.float(), graph.to(dtype=torch.float32))
    assert single.energy.dtype == torch.float64 and single.forces.dtype == torch.float32
    torch.testing.assert_close(single.energy.double(), double.energy, rtol=1e-6, atol=0)
    torch.testing.assert_close(single.forces.double(), double.forces, rtol=0, atol=1e-3)
    torch.testing.assert_close(single.virial.double(), double.virial, rtol=0, atol=1e-3)


def test_unknown_species_are_rejected_by_name(tiny_model):
    methane = molecule("CH4")
    with pytest.raises(ValueError, match="this model knows only H, O; the structure contains C"):
        compute(tiny_model, graph_from_atoms(methane, CUTOFF))


def test_structures_without_any_neighbour_pair(tiny_model):
    """Atoms farther apart than R_c: no edges at all; each atom gets its baseline plus its central
    heads, and no force (this once crashed the forward pass)."""
    atoms = Atoms("OH", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 10.0]])
    energy, energies, forces, _ = evaluate(tiny_model, atoms)
    np.testing.assert_array_equal(forces, 0.0)
    assert energy == pytest.approx(energies.sum(), rel=1e-15)
    assert abs(energies[0] - (-430.0)) < 10 and abs(energies[1] - (-13.6)) < 10


def test_molecule_in_a_large_periodic_box_equals_open_boundaries(tiny_model, data_dir):
    periodic = read(data_dir / "water-molecule.xyz")
    assert periodic.pbc.all() and periodic.cell.lengths().min() > 2 * CUTOFF
    isolated = periodic.copy()
    isolated.set_cell(np.zeros((3, 3)))
    isolated.pbc = False
    energy, energies, forces, virial = evaluate(tiny_model, periodic)
    energy2, energies2, forces2, virial2 = evaluate(tiny_model, isolated)
    assert energy == pytest.approx(energy2, rel=1e-15)
    np.testing.assert_allclose(forces, forces2, atol=1e-13)
    np.testing.assert_allclose(virial, virial2, atol=1e-13)


# ---------------------------------------------------------------- folded linear maps

def test_edge_tokens_equal_compress_of_the_concatenated_embedding(tiny_model):
    """GNNLayer.edge_tokens folds the geometry embedding into compress's first linear map: the same
    function as DESIGN.md's compress([W_g g + b_g ; message]), also for one message broadcast over copies."""
    torch.manual_seed(3)
    layer = tiny_model.layers[0]
    d = tiny_model.hypers.d_pet
    geometry = torch.randn(3, 11, 4, dtype=torch.float64)
    per_copy = torch.randn(3, 11, d, dtype=torch.float64)
    for message in (torch.randn(1, 11, d, dtype=torch.float64), per_copy):
        definition = concatenated_edge_tokens(layer, geometry, message)
        assert definition.shape == (3, 11, d)
        torch.testing.assert_close(layer.edge_tokens(geometry, message), definition, rtol=1e-12, atol=1e-12)
