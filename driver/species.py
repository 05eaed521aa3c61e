"""Atomic numbers of the atoms i-PI sends: the socket protocol carries positions only.

The atom order comes from a template structure (any file ASE reads, e.g. i-PI's start
structure), from a ``species`` entry in i-PI's INIT parameters, or from a repeating unit
(default ``OH2``: atoms O, H, H, molecule after molecule, as in every water input of this project).
"""

from pathlib import Path

import numpy as np
from ase.data import chemical_symbols
from ase.formula import Formula
from ase.io import read
from ase.symbols import string2symbols

DEFAULT_UNIT = "OH2"


class SpeciesError(ValueError):
    """The atoms i-PI sent cannot be given species (count mismatch, bad formula or template)."""


def _formula(numbers) -> str:
    """The chemical formula of atomic numbers ``numbers`` in Hill order, short whatever their count
    (192 water atoms: H128O64)."""
    return Formula.from_list([chemical_symbols[z] for z in numbers]).format("hill")


class Species:
    """Atomic numbers for a structure of N atoms.

    ``numbers``: the species of the whole structure (``exact``: N must equal their count) or of a
    repeating unit (N must be a multiple of it). ``source`` says where they came from (for errors).
    """

    def __init__(self, numbers, exact: bool, source: str):
        self.unit = np.asarray(numbers, dtype=np.int64)
        if self.unit.size == 0:
            raise SpeciesError(f"{source} has no atoms")
        self.exact = exact
        self.source = source

    @classmethod
    def repeating(cls, formula: str = DEFAULT_UNIT) -> "Species":
        """Species of a repeating unit such as ``OH2`` (O, H, H) or ``OHH``."""
        try:
            symbols = string2symbols(formula)
        except (KeyError, ValueError):
            symbols = []
        if not symbols or any(s not in chemical_symbols[1:] for s in symbols):
            raise SpeciesError(f"bad species formula {formula!r}: use element symbols, e.g. OH2 for O, H, H")
        numbers = [chemical_symbols.index(s) for s in symbols]
        return cls(numbers, exact=False, source=f"the repeating unit {formula}")

    @classmethod
    def from_template(cls, path) -> "Species":
        """The species, in order, of the (first) structure in ``path`` (any file ASE reads; i-PI's
        xyz files with a ``# CELL(abcABC)`` comment line read as plain xyz)."""
        path = Path(path)
        if not path.is_file():
            raise SpeciesError(f"no template file at {path}")
        try:
            numbers = read(path, index=0).numbers
        except Exception as error:
            raise SpeciesError(f"cannot read the template {path}: {error}") from None
        return cls(numbers, exact=True, source=f"the template {path}")

    @classmethod
    def given(cls, template=None, unit=None) -> "Species":
        """The species of the structure file ``template`` unless it is None, else of the repeating
        ``unit`` (:data:`DEFAULT_UNIT` if None): how pet-driver's options and an in-process
        forcefield's <parameters> name them."""
        if template is not None:
            return cls.from_template(template)
        return cls.repeating(DEFAULT_UNIT if unit is None else str(unit))

    def check_known(self, known) -> None:
        """SpeciesError naming the elements of these species that are not among the atomic numbers
        ``known`` (a model's species list)."""
        unknown = sorted(set(self.unit.tolist()) - {int(z) for z in known})
        if unknown:
            raise SpeciesError(f"{self.source}: this model knows only "
                               f"{', '.join(chemical_symbols[z] for z in sorted(known))}; "
                               f"{'the structure' if self.exact else 'the unit'} contains "
                               f"{', '.join(chemical_symbols[z] for z in unknown)}")

    def numbers(self, n_atoms: int) -> np.ndarray:
        """Atomic numbers (n_atoms,); SpeciesError if ``n_atoms`` does not fit."""
        size = self.unit.size
        if self.exact and n_atoms != size:
            raise SpeciesError(f"i-PI sent {n_atoms} atoms but {self.source} has {size} "
                               f"({_formula(self.unit)})")
        if not self.exact and n_atoms % size:
            raise SpeciesError(
                f"i-PI sent {n_atoms} atoms, not a multiple of the {size} atoms of {self.source}: "
                "give the atom order with --template FILE"
            )
        return np.tile(self.unit, n_atoms // size)

