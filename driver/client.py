"""The client loop of one socket: answer i-PI's messages with one channel until EXIT.

Both message orders of i-PI 3.3.1 work: the default consolidated one (POSDATA and GETFORCE back to
back, no STATUS in between: the forces are computed on POSDATA and sent at once on GETFORCE) and
the legacy one (STATUS → READY, POSDATA, STATUS → HAVEDATA, GETFORCE). The first STATUS is
answered NEEDINIT so that i-PI sends INIT, whose ``batch_size:N`` switches to batched POSDATA.
"""

import logging
from dataclasses import dataclass
from typing import Optional

from .channels import Channel, parse_mode
from .protocol import Connection, ProtocolError
from .species import Species

log = logging.getLogger("pet-driver")


class InitError(ValueError):
    """i-PI's INIT parameters do not fit the channel serving the socket."""


@dataclass
class Ending:
    """How a client loop ended: ``exit`` (i-PI sent EXIT) or ``closed`` (i-PI closed the socket
    between messages, without EXIT)."""

    how: str


def serve(connection: Connection, channel: Channel, species: Species) -> Ending:
    """Answer i-PI on ``connection`` with ``channel`` until EXIT or the end of the connection.

    ``species`` gives the atomic numbers unless i-PI's INIT carries ``species: FORMULA``.
    Raises StructureError / SpeciesError (a structure the model cannot evaluate), InitError (i-PI's
    INIT parameters do not fit this channel), ProtocolError or Disconnected (i-PI died mid-message).
    """
    initialized = False
    batch_size = 1
    pending = None
    numbers = None
    while True:
        word = connection.read_header()
        if word is None:
            return Ending("closed")
        if word == "STATUS":
            connection.send_status(initialized, pending is not None)
        elif word == "INIT":
            request_id, parameters = connection.read_init()
            batch_size = _batch_size(parameters)
            species = _init_species(parameters, species)
            _check_init_mode(parameters, channel)
            initialized, numbers = True, None
            log.info("%s: INIT (request id %d, parameters %s)", connection.address, request_id,
                     parameters or "none")
        elif word == "POSDATA":
            if not initialized:
                raise ProtocolError("i-PI sent POSDATA before INIT")
            structures = connection.read_posdata(batch_size)
            n_atoms = len(structures[0].positions)
            if numbers is None or len(numbers) != n_atoms:
                numbers = species.numbers(n_atoms)
                channel.check_species(numbers)
            pending = channel.evaluate(numbers, structures)
        elif word == "GETFORCE":
            if pending is None:
                raise ProtocolError("i-PI asked for forces (GETFORCE) before sending positions")
            connection.send_forces(pending, batched=batch_size > 1)
            pending = None
        elif word == "EXIT":
            return Ending("exit")
        else:
            raise ProtocolError(f"i-PI sent an unknown message {word!r}")


def _batch_size(parameters: dict) -> int:
    value = parameters.get("batch_size", "1")
    if not value.isdigit() or int(value) < 1:
        raise ProtocolError(f"INIT carries a bad batch_size {value!r}")
    return int(value)


def _init_species(parameters: dict, species: Species) -> Species:
    """INIT's ``species: FORMULA`` (a repeating unit) unless the species came from a template."""
    formula: Optional[str] = parameters.get("species")
    if formula is None or species.exact:
        return species
    return Species.repeating(formula)


def _check_init_mode(parameters: dict, channel: Channel) -> None:
    """INIT's ``mode: M`` (the ffsocket's <parameters>), if any, must be this channel's mode."""
    if "mode" not in parameters:
        return
    try:
        wanted = parse_mode(parameters["mode"])
    except ValueError as error:
        raise InitError(f"i-PI's INIT parameters: {error}") from None
    if wanted != channel.mode:
        raise InitError(f"i-PI's INIT asks for mode {wanted} on a socket this driver serves "
                             f"in mode {channel.mode}: check the addresses")
