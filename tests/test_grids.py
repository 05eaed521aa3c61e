"""Rotation grids (grids.quadrature) and rotation averages of energy models (grids.averaging)."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from grids import parse_grid_spec, random_rotation, rotation_grid
from grids.averaging import GridAverage, RandomRotation, RawModel, make_evaluator
from grids.quadrature import MAX_ORDER, GridTooLarge
from pet.compute import compute
from pet.model import GEOMETRY_INIT_SCALE
from pet.neighbors import graph_from_atoms
from rotate_atoms import rotated

CUTOFF = 4.0


def evaluate(evaluator, atoms):
    return evaluator(graph_from_atoms(atoms, CUTOFF))


# ---------------------------------------------------------------- quadrature


@pytest.mark.parametrize("spec, size", [("1", 1), ("2", 18), ("2i", 36), ("3", 75), ("3i", 150), ("4", 196)])
def test_grid_sizes_and_weights(spec, size):
    rotations, weights = rotation_grid(spec)
    assert rotations.shape == (size, 3, 3)
    assert weights.shape == (size,)
    assert np.all(weights > 0)
    assert weights.sum() == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("spec", ["1", "2", "2i", "3", "3i", "4", "4i"])
def test_grid_rotations_are_orthogonal_with_unit_determinant(spec):
    rotations, _ = rotation_grid(spec)
    eye = np.broadcast_to(np.eye(3), rotations.shape)
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), eye, atol=1e-14)
    det = np.linalg.det(rotations)
    np.testing.assert_allclose(np.abs(det), 1.0, atol=1e-13)
    if spec.endswith("i"):
        half = len(det) // 2
        np.testing.assert_allclose(det[:half], 1.0, atol=1e-13)
        np.testing.assert_allclose(det[half:], -1.0, atol=1e-13)
        np.testing.assert_allclose(rotations[half:], -rotations[:half], atol=0)
    else:
        np.testing.assert_allclose(det, 1.0, atol=1e-13)


def grid_mean(spec, degree):
    """Weighted mean over grid ``spec`` of R^{⊗degree}, shape (3, 3) * degree."""
    rotations, weights = rotation_grid(spec)
    product = np.ones((len(weights),))
    for _ in range(degree):
        product = np.einsum("k...,kab->k...ab", product, rotations)
    return np.einsum("k,k...->...", weights, product)


@pytest.mark.parametrize("spec", ["2", "2i", "3", "3i", "4"])
def test_grid_integrates_first_and_second_degree_exactly(spec):
    np.testing.assert_allclose(grid_mean(spec, 1), 0.0, atol=1e-15)
    # Haar mean of R_ab R_cd is δ_ac δ_bd / 3
    expected = np.einsum("ac,bd->abcd", np.eye(3), np.eye(3)) / 3
    np.testing.assert_allclose(grid_mean(spec, 2), expected, atol=1e-15)


@pytest.mark.parametrize("spec", ["1i", "2i", "3i"])
def test_improper_grids_cancel_odd_degrees_exactly(spec):
    np.testing.assert_allclose(grid_mean(spec, 1), 0.0, atol=1e-15)
    np.testing.assert_allclose(grid_mean(spec, 3), 0.0, atol=1e-15)


def test_grid_n_is_exact_up_to_degree_2n_minus_2():
    """Grid 3 integrates degree-4 polynomials of R exactly: it agrees with the much finer grid 6;
    grid 2 (exact only to degree 2) does not, which shows that the comparison can tell."""
    reference = grid_mean("6", 4)
    np.testing.assert_allclose(grid_mean("3", 4), reference, atol=1e-14)
    assert np.abs(grid_mean("2", 4) - reference).max() > 1e-3


@pytest.mark.parametrize(
    "spec, expected", [("3i", (3, True)), ("2", (2, False)), (4, (4, False)), (" 2i ", (2, True))]
)
def test_parse_grid_spec(spec, expected):
    assert parse_grid_spec(spec) == expected


@pytest.mark.parametrize("spec", ["0", "2x", "-1", "", "i", "i2", "2ii", "1.5", None])
def test_bad_grid_specs_say_what_is_accepted(spec):
    with pytest.raises(ValueError, match=r"positive integer N, optionally followed by 'i'"):
        rotation_grid(spec)


@pytest.mark.parametrize("spec", ["21", "21i", "1000", "99999999999999999999", "9" * 5000])
def test_grids_above_the_largest_order_are_refused_before_any_memory_is_taken(spec):
    with pytest.raises(GridTooLarge, match=r"too large: N can be at most 20 \(grid N has N\(2N-1\)² rotations"):
        parse_grid_spec(spec)
    with pytest.raises(ValueError, match="at most 20"):
        rotation_grid(spec)


def test_the_largest_grid_is_accepted():
    assert parse_grid_spec("20i") == (MAX_ORDER, True) and MAX_ORDER == 20


def test_random_rotation_is_orthogonal_proper_and_reproducible():
    rotations = [random_rotation(np.random.default_rng(seed), improper=False) for seed in range(50)]
    for rotation in rotations:
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-14)
        assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-13)
    again = random_rotation(np.random.default_rng(7), improper=False)
    np.testing.assert_array_equal(again, rotations[7])
    assert not np.allclose(rotations[7], rotations[8])


def test_random_rotations_are_roughly_uniform():
    """Haar moments: mean R ≈ 0 and mean R⊗R ≈ δδ/3 (uniform Euler angles would give
    mean R_zz² = 1/2); with improper=True about half have det -1 and the mean of R⊗R is unchanged."""
    rng = np.random.default_rng(0)
    samples = np.stack([random_rotation(rng, improper=False) for _ in range(4000)])
    tolerance = 0.04  # ~4 standard errors for 4000 samples
    np.testing.assert_allclose(samples.mean(0), 0.0, atol=tolerance)
    second = np.einsum("kab,kcd->abcd", samples, samples) / len(samples)
    expected = np.einsum("ac,bd->abcd", np.eye(3), np.eye(3)) / 3
    np.testing.assert_allclose(second, expected, atol=tolerance)

    mixed = np.stack([random_rotation(rng, improper=True) for _ in range(4000)])
    improper_fraction = np.mean(np.linalg.det(mixed) < 0)
    assert improper_fraction == pytest.approx(0.5, abs=0.04)
    np.testing.assert_allclose(np.abs(np.linalg.det(mixed)), 1.0, atol=1e-12)
    np.testing.assert_allclose(
        np.einsum("kab,kcd->abcd", mixed, mixed) / len(mixed), expected, atol=tolerance
    )


# ---------------------------------------------------------------- averaging


class QuadraticEdgeEnergy(nn.Module):
    """A test energy with low-degree rotational dependence: atom i gets Σ_j (a·r_ij + r_ijᵀ M r_ij).

    Its Wigner content is of degree 1 and 2 only, so every grid N ≥ 2 averages it exactly, to the
    invariant Σ tr(M)/3 |r_ij|² (obtained here with M → tr(M)/3 I and a → 0).
    """

    def __init__(self, linear, quadratic):
        super().__init__()
        self.register_buffer("linear", torch.as_tensor(linear, dtype=torch.float64))
        self.register_buffer("quadratic", torch.as_tensor(quadratic, dtype=torch.float64))

    def forward(self, vectors, graph):
        edge = vectors @ self.linear + torch.einsum("kea,ab,keb->ke", vectors, self.quadratic, vectors)
        energies = vectors.new_zeros(vectors.shape[0], graph.n_atoms)
        return energies.index_add(1, graph.centers, edge)


@pytest.mark.parametrize("spec", ["2", "2i", "3"])
def test_grid_average_of_a_low_degree_energy_is_exact(spec, water_cell):
    rng = np.random.default_rng(3)
    quadratic = rng.standard_normal((3, 3))
    model = QuadraticEdgeEnergy(rng.standard_normal(3), quadratic)
    invariant = QuadraticEdgeEnergy(np.zeros(3), np.trace(quadratic) / 3 * np.eye(3))
    graph = graph_from_atoms(water_cell, CUTOFF)
    averaged = GridAverage(model, spec)(graph)
    exact = compute(invariant, graph)
    raw = compute(model, graph)
    assert abs(float(raw.energy - exact.energy)) > 1.0  # the raw test energy is far from invariant
    scale = float(exact.energy.abs())
    torch.testing.assert_close(averaged.energy, exact.energy, rtol=0, atol=1e-12 * scale)
    torch.testing.assert_close(averaged.energies, exact.energies, rtol=0, atol=1e-12 * scale)
    torch.testing.assert_close(averaged.forces, exact.forces, rtol=0, atol=1e-12 * scale)
    torch.testing.assert_close(averaged.virial, exact.virial, rtol=0, atol=1e-12 * scale)


def loop_average(model, atoms, spec):
    """Ē, F̄, W̄ by an explicit loop: rotate the Atoms (positions and cell) with R_k, evaluate the
    raw model, and combine Ē = Σ w_k E(R_k A), F̄_a = Σ w_k R_kᵀ F_a(R_k A) (rows: F R_k),
    W̄ = Σ w_k R_kᵀ W(R_k A) R_k."""
    rotations, weights = rotation_grid(spec)
    energy, forces, virial = 0.0, 0.0, 0.0
    for rotation, weight in zip(rotations, weights):
        result = compute(model, graph_from_atoms(rotated(atoms, rotation), CUTOFF))
        energy = energy + weight * result.energy.numpy()
        forces = forces + weight * result.forces.numpy() @ rotation
        virial = virial + weight * rotation.T @ result.virial[0].numpy() @ rotation
    return energy, forces, virial


@pytest.mark.parametrize("structure", ["water_cell", "water_cluster"])
def test_batched_grid_average_equals_an_explicit_loop_over_rotated_copies(structure, tiny_model, request):
    atoms = request.getfixturevalue(structure)
    energy, forces, virial = loop_average(tiny_model, atoms, "2i")
    averaged = evaluate(GridAverage(tiny_model, "2i"), atoms)
    np.testing.assert_allclose(averaged.energy.numpy(), energy, rtol=1e-12)
    np.testing.assert_allclose(averaged.forces.numpy(), forces, rtol=0, atol=1e-10)
    np.testing.assert_allclose(averaged.virial[0].numpy(), virial, rtol=0, atol=1e-10)
    raw = evaluate(RawModel(tiny_model), atoms)
    assert np.abs(raw.forces.numpy() - forces).max() > 1e-3  # the average is not the raw model


def test_chunked_grid_average_equals_all_at_once(tiny_model, water_cell):
    graph = graph_from_atoms(water_cell, CUTOFF)
    one_by_one = GridAverage(tiny_model, "2i", chunk_size=1)(graph)
    all_at_once = GridAverage(tiny_model, "2i", chunk_size=36)(graph)
    uneven = GridAverage(tiny_model, "2i", chunk_size=7)(graph)
    for other in (all_at_once, uneven):
        for name in ("energy", "energies", "forces", "virial"):
            torch.testing.assert_close(
                getattr(one_by_one, name), getattr(other, name), rtol=1e-12, atol=1e-12
            )


def test_grid_average_of_a_batch_equals_separate_averages(tiny_model, water_cell, water_cluster):
    evaluator = GridAverage(tiny_model, "2", chunk_size=4)
    batched = evaluator(graph_from_atoms([water_cell, water_cluster], CUTOFF))
    start = 0
    for index, atoms in enumerate((water_cell, water_cluster)):
        alone = evaluate(evaluator, atoms)
        stop = start + len(atoms)
        torch.testing.assert_close(batched.energy[index], alone.energy[0], rtol=1e-14, atol=0)
        torch.testing.assert_close(batched.forces[start:stop], alone.forces, rtol=0, atol=1e-11)
        torch.testing.assert_close(batched.virial[index], alone.virial[0], rtol=0, atol=1e-10)
        start = stop


def invariance_errors(evaluator, atoms, n_rotations=3, seed=0):
    """Largest |E(RA) - E(A)| (eV) and |F(RA) - R F(A)| (eV/Å) over random proper rotations."""
    reference = evaluate(evaluator, atoms)
    rng = np.random.default_rng(seed)
    energy_error, force_error = 0.0, 0.0
    for _ in range(n_rotations):
        rotation = random_rotation(rng, improper=False)
        result = evaluate(evaluator, rotated(atoms, rotation))
        energy_error = max(energy_error, abs(float(result.energy - reference.energy)))
        expected_forces = reference.forces.numpy() @ rotation.T
        force_error = max(force_error, np.abs(result.forces.numpy() - expected_forces).max())
    return energy_error, force_error


def test_raw_model_is_not_rotation_invariant(tiny_model, water_cell):
    energy_error, force_error = invariance_errors(RawModel(tiny_model), water_cell)
    assert energy_error > 1e-2
    assert force_error > 1e-2


def test_rotation_error_of_the_average_falls_as_the_grid_grows(tiny_model, water_cell):
    """Invariance of Ē and equivariance of F̄ improve from grid 2 to 3 to 4 (the raw model's
    errors are of order 1 eV for this random model). How fast depends on the model's angular
    bandwidth, which grows with the scale of W_r: the test takes W_r at PyTorch's default scale
    (0.5 / GEOMETRY_INIT_SCALE of the model's), for which every step gains at least 3x."""
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for layer in model.layers:
            layer.geometry_embedding.weight.mul_(0.5 / GEOMETRY_INIT_SCALE)
    raw_energy, raw_force = invariance_errors(RawModel(model), water_cell)
    errors = [invariance_errors(GridAverage(model, spec), water_cell) for spec in ("2", "3", "4")]
    energy_errors = [raw_energy] + [e for e, _ in errors]
    force_errors = [raw_force] + [f for _, f in errors]
    assert all(a > 3 * b for a, b in zip(energy_errors, energy_errors[1:])), energy_errors
    assert all(a > 3 * b for a, b in zip(force_errors, force_errors[1:])), force_errors
    assert energy_errors[-1] < 1e-3 and force_errors[-1] < 1e-2


def test_random_rotation_evaluator_is_the_raw_model_on_a_rotated_copy(tiny_model, water_cell):
    """RandomRotation with a seed draws the rotation random_rotation(default_rng(seed)) would:
    Ẽ = E(R A), F̃ = F(R A) R (rows), and a new rotation at every call."""
    evaluator = RandomRotation(tiny_model, seed=11)
    first = evaluate(evaluator, water_cell)
    rotation = random_rotation(np.random.default_rng(11))
    direct = evaluate(RawModel(tiny_model), rotated(water_cell, rotation))
    torch.testing.assert_close(first.energy, direct.energy, rtol=1e-12, atol=0)
    np.testing.assert_allclose(first.forces.numpy(), direct.forces.numpy() @ rotation, atol=1e-10)
    np.testing.assert_allclose(
        first.virial[0].numpy(), rotation.T @ direct.virial[0].numpy() @ rotation, atol=1e-10
    )
    second = evaluate(evaluator, water_cell)
    assert abs(float(second.energy - first.energy)) > 1e-6


def test_random_rotation_draws_one_rotation_per_structure_of_a_batch(tiny_model, water_cell, water_cluster):
    evaluator = RandomRotation(tiny_model, seed=3)
    batched = evaluator(graph_from_atoms([water_cell, water_cluster], CUTOFF))
    rng = np.random.default_rng(3)
    start = 0
    for index, atoms in enumerate((water_cell, water_cluster)):
        rotation = random_rotation(rng)
        direct = evaluate(RawModel(tiny_model), rotated(atoms, rotation))
        stop = start + len(atoms)
        assert float(batched.energy[index]) == pytest.approx(float(direct.energy[0]), rel=1e-13)
        np.testing.assert_allclose(batched.forces[start:stop].numpy(), direct.forces.numpy() @ rotation, atol=1e-10)
        start = stop


def test_make_evaluator_modes(tiny_model):
    assert isinstance(make_evaluator(tiny_model, "raw"), RawModel)
    assert isinstance(make_evaluator(tiny_model, "random", seed=1), RandomRotation)
    grid = make_evaluator(tiny_model, "3i", chunk_size=5)
    assert isinstance(grid, GridAverage) and len(grid) == 150 and grid.chunk_size == 5
    with pytest.raises(ValueError, match="positive integer"):
        make_evaluator(tiny_model, "grid")
