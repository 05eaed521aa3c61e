"""Gauss-Legendre Euler-angle grids on SO(3) (Khalid et al. 2016) and random rotations.

Grid ``N``: Euler angles (ZYZ) α and γ on 2N-1 equispaced values in [0, 2π), β = arccos of the
N Gauss-Legendre nodes, weight GL(β) / (2 (2N-1)²): N (2N-1)² rotations whose weights sum to 1.
``Ni`` adds the improper rotation -R for every R, all weights halved. Grid N integrates every
Wigner-D function of degree ≤ 2N-2 exactly (the average of R and of R⊗R already for N = 2).
"""

import re

import numpy as np

_SPEC = re.compile(r"^([1-9][0-9]*)(i?)$")

MAX_ORDER = 20
"""The largest grid order N: grid N has N (2N-1)² rotations (30420 for N = 20, twice as many
with ``i``), each one a copy of the structure through the model."""


class GridTooLarge(ValueError):
    """A grid spec of the right form whose order N exceeds :data:`MAX_ORDER`."""


def grid_size(order: int, improper: bool) -> int:
    """The number of rotations of grid ``order`` (doubled with improper rotations)."""
    return order * (2 * order - 1) ** 2 * (2 if improper else 1)


def parse_grid_spec(spec) -> tuple:
    """``"3i"`` → (3, True); a bad spec raises ValueError saying what is accepted (GridTooLarge,
    a ValueError, for an order above :data:`MAX_ORDER`)."""
    match = _SPEC.match(str(spec).strip())
    if match is None:
        raise ValueError(
            f"bad rotation grid {spec!r}: use a positive integer N, optionally followed by 'i' "
            "for improper rotations (e.g. 1, 2, 2i, 3, 3i)"
        )
    digits, improper = match.group(1), bool(match.group(2))
    if len(digits) > len(str(MAX_ORDER)) or int(digits) > MAX_ORDER:
        raise GridTooLarge(
            f"rotation grid {str(spec).strip()!r} is too large: N can be at most {MAX_ORDER} "
            f"(grid N has N(2N-1)² rotations, {grid_size(MAX_ORDER, False)} for N = {MAX_ORDER}, "
            "twice as many with 'i')"
        )
    return int(digits), improper


def euler_zyz(alpha, beta, gamma) -> np.ndarray:
    """Rotation matrices Rz(α) Ry(β) Rz(γ) of arrays of angles (radians): shape (..., 3, 3)."""
    ca, sa, cb, sb, cg, sg = (np.cos(alpha), np.sin(alpha), np.cos(beta), np.sin(beta),
                              np.cos(gamma), np.sin(gamma))
    return np.stack([
        np.stack([ca * cb * cg - sa * sg, -ca * cb * sg - sa * cg, ca * sb], axis=-1),
        np.stack([sa * cb * cg + ca * sg, -sa * cb * sg + ca * cg, sa * sb], axis=-1),
        np.stack([-sb * cg, sb * sg, cb], axis=-1),
    ], axis=-2)


def rotation_grid(spec) -> tuple:
    """Rotations ``R`` (M, 3, 3) and weights ``w`` (M,) summing to 1 of grid ``spec`` (e.g. "2i")."""
    order, improper = parse_grid_spec(spec)
    nodes, gl_weights = np.polynomial.legendre.leggauss(order)
    n_angles = 2 * order - 1
    angles = 2 * np.pi * np.arange(n_angles) / n_angles
    alpha, beta_index, gamma = np.meshgrid(angles, np.arange(order), angles, indexing="ij")
    beta = np.arccos(nodes)[beta_index]
    rotations = euler_zyz(alpha, beta, gamma).reshape(-1, 3, 3)
    weights = (gl_weights[beta_index] / (2 * n_angles**2)).reshape(-1)
    if improper:
        rotations = np.concatenate([rotations, -rotations])
        weights = np.concatenate([weights, weights]) / 2
    return rotations, weights


def random_rotation(rng: np.random.Generator, improper: bool = True) -> np.ndarray:
    """A rotation (3, 3) uniform on SO(3) (Haar), times -1 with probability ½ if ``improper``."""
    quaternion = rng.standard_normal(4)
    w, x, y, z = quaternion / np.linalg.norm(quaternion)
    rotation = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    if improper and rng.random() < 0.5:
        rotation = -rotation
    return rotation
