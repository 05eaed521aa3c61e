"""Smooth radial cutoff of PET (DESIGN.md section 3).

f(r) = 1 for r < R_c - Δ, ½ + ½ cos(π (r - R_c + Δ) / Δ) for R_c - Δ ≤ r < R_c, and 0 beyond.
f and its first derivative are continuous at both ends of the switching interval.
"""

import math

import torch


def smooth_cutoff(distances: torch.Tensor, cutoff: float, width: float) -> torch.Tensor:
    """Cutoff weights of ``distances`` (Å, any shape): values in [0, 1], same shape."""
    scaled = (distances - (cutoff - width)) / width
    inside = 0.5 + 0.5 * torch.cos(math.pi * scaled.clamp(0.0, 1.0))
    return torch.where(distances < cutoff, inside, torch.zeros_like(distances))
