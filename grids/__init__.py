"""Rotation quadratures on O(3) and rotation averaging of energy models (DESIGN.md section 4)."""

from .quadrature import parse_grid_spec, random_rotation, rotation_grid

__all__ = ["parse_grid_spec", "random_rotation", "rotation_grid"]
