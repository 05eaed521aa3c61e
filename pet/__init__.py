"""PET: the Point Edge Transformer, its neighbour lists, checkpoints, data, training and ASE calculator."""

from .hypers import PETHypers
from .model import PET

__all__ = ["PET", "PETHypers"]
