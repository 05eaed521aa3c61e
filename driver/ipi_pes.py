"""PET as an i-PI Python potential: the model runs inside i-PI's own process, with no socket.

In an i-PI input (``pes_path`` relative to where i-PI runs)::

    <ffdirect name="2i">
      <pes>custom</pes>
      <pes_path>../../driver/ipi_pes.py</pes_path>
      <parameters>{mode: 2i, model: ../../models/pet-water-small.pt, dtype: float64}</parameters>
    </ffdirect>

or as a socket client through i-PI's own driver::

    i-pi-py_driver -m custom -P driver/ipi_pes.py -o mode=2i,model=my.pt -u -a pet-2i

Parameters: ``mode`` (raw, random, N or Ni; default raw), ``model`` (checkpoint; default the
shipped one), ``device``, ``dtype`` (default float64), ``template`` (structure file giving the
species in i-PI's atom order) or ``species`` (repeating unit, default OH2), ``seed``,
``chunk_size``. Forcefields in one i-PI process that name the same model, device and dtype share
one copy of it (and the last raw result, see :class:`driver.channels.LastRaw`). i-PI's
``batch_size`` gives this potential lists of structures: they are evaluated in one model call.
The extras are those of :mod:`driver.channels`.
"""

import functools
import threading

from ipi.pes.dummy import Dummy_driver

from driver.channels import Channel, LastRaw
from driver.protocol import answer_to_ipi, structure_from_ipi
from driver.species import DEFAULT_UNIT, Species
from pet.calculator import load_model

__DRIVER_NAME__ = "pet-ipi"
__DRIVER_CLASS__ = "PETPotential"


@functools.lru_cache(maxsize=None)
def shared_model(model, device: str, dtype: str):
    """(model, lock, last raw result) loaded once per (checkpoint, device, dtype) in this process."""
    return load_model(model, device, dtype), threading.Lock(), LastRaw()


class PETPotential(Dummy_driver):
    """The i-PI PES: ``compute(cell, pos)`` with i-PI's h and positions in Bohr (or lists of them)."""

    def __init__(self, mode="raw", model=None, device="cpu", dtype="float64", template=None,
                 species=DEFAULT_UNIT, seed=None, chunk_size=None, verbosity=None, verbose=False):
        network, lock, last_raw = shared_model(None if model is None else str(model), str(device),
                                               str(dtype))
        self.channel = Channel(network, str(mode), lock, seed=seed, chunk_size=chunk_size,
                               last_raw=last_raw)
        self.species = Species.given(template or None, species)
        self.numbers = None
        super().__init__(verbose=verbose)

    def compute(self, cell, pos):
        """(energy Ha, forces (N, 3) Ha/Bohr, virial Ha, extras JSON) for one structure, or a list
        of such tuples when ``cell`` and ``pos`` are lists (i-PI's batched evaluation)."""
        batched = isinstance(cell, list)
        cells, positions = (cell, pos) if batched else ([cell], [pos])
        structures = [structure_from_ipi(c, p) for c, p in zip(cells, positions)]
        n_atoms = len(structures[0].positions)
        if self.numbers is None or len(self.numbers) != n_atoms:
            numbers = self.species.numbers(n_atoms)
            self.channel.check_species(numbers)
            self.numbers = numbers
        answers = [answer_to_ipi(a) for a in self.channel.evaluate(self.numbers, structures)]
        return answers if batched else answers[0]
