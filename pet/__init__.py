"""PET: the Point Edge Transformer, its neighbour lists, checkpoints, data, training and ASE calculator.

``PET`` and ``PETHypers`` are imported on first use (PEP 562), so that importing a light module of
the package (:mod:`pet.entry`, the console entry points) does not import torch.
"""

import importlib

__all__ = ["PET", "PETHypers"]
_LAZY = {"PET": "model", "PETHypers": "hypers"}
"""Attribute name -> module of the package that defines it."""


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
