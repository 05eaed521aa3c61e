"""The i-PI socket protocol, client side, as the server in i-PI 3.3.1 speaks it.

Messages start with a 12-byte ASCII header (``STATUS``, ``READY``, ``NEEDINIT``, ``HAVEDATA``,
``INIT``, ``POSDATA``, ``GETFORCE``, ``FORCEREADY``, ``EXIT``, space-padded); numbers are native
float64 / int32, as i-PI sends them (``ipi/interfaces/sockets.py``):

- ``INIT``: int32 request id, int32 length, that many bytes of parameters
  (``" key : value , ..."``, with ``batch_size:N`` appended when i-PI batches requests);
- ``POSDATA``: cell h (9, C order; the COLUMNS of h are the lattice vectors), inverse cell (9),
  int32 atom count N, positions (3N), all in Bohr. Batched (``batch_size`` B > 1): int32 N, then
  B × (h, h⁻¹), then B × 3N positions;
- ``FORCEREADY``: energy, int32 N, forces (3N), virial (9), int32 length + extras string;
  batched: B energies, int32 N, B × 3N forces, B × 9 virials, then B × (int32 length + string).

This module is also the ONE place where units change: i-PI speaks atomic units (Bohr, Hartree),
the rest of the project Å and eV. The factors are i-PI's own (``ipi.utils.units``), so that a
structure i-PI read in Å arrives here with the same numbers and energies that i-PI prints in eV are
the ones computed here.
"""

import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np
from ipi.utils.units import unit_to_internal

HEADER_LENGTH = 12
SOCKETS_PREFIX = "/tmp/ipi_"
"""i-PI's default prefix of unix socket files: address NAME is the file /tmp/ipi_NAME."""
UNIX_PATH_MAX = 107
"""The longest unix socket path the OS takes, in bytes (Linux: 108 with the final NUL)."""

ANGSTROM_PER_BOHR = 1.0 / unit_to_internal("length", "angstrom", 1.0)
EV_PER_HARTREE = 1.0 / unit_to_internal("energy", "electronvolt", 1.0)


def header(word: str) -> bytes:
    """The 12-byte header of message ``word``."""
    return word.upper().ljust(HEADER_LENGTH).encode("ascii")


class ProtocolError(RuntimeError):
    """i-PI sent something this client cannot read (an unknown header, a bad payload)."""


class Disconnected(ConnectionError):
    """The connection ended in the middle of a message."""


# ---------------------------------------------------------------------------------------------
# units: the only conversions between i-PI's atomic units and the project's Å / eV

@dataclass
class Structure:
    """One structure as the project sees it: ``positions`` (N, 3) Å, ``cell`` (3, 3) Å with lattice
    vectors as ROWS (ASE); an all-zero cell means open boundaries, any other cell is periodic."""

    positions: np.ndarray
    cell: np.ndarray


@dataclass
class Answer:
    """The model's answer for one structure: ``energy`` eV, ``forces`` (N, 3) eV/Å, ``virial``
    (3, 3) eV (W = -∂E/∂ε, full tensor), ``extras`` a JSON-serialisable dict."""

    energy: float
    forces: np.ndarray
    virial: np.ndarray
    extras: dict


def structure_from_ipi(h: np.ndarray, positions: np.ndarray) -> Structure:
    """i-PI's cell ``h`` (3, 3) Bohr, lattice vectors as columns, and ``positions`` (3N,) or (N, 3)
    Bohr → a :class:`Structure` in Å (cell = hᵀ)."""
    h = np.asarray(h, dtype=np.float64).reshape(3, 3)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    return Structure(positions=positions * ANGSTROM_PER_BOHR, cell=h.T * ANGSTROM_PER_BOHR)


def answer_to_ipi(answer: Answer) -> Tuple[float, np.ndarray, np.ndarray, str]:
    """(energy Ha, forces (N, 3) Ha/Bohr, virial (3, 3) Ha, extras JSON string) for i-PI.

    The virial sent is the symmetric part of W: i-PI uses it for the pressure and the cell
    dynamics. (The antisymmetric part of a non-invariant model is reported in the extras.)
    """
    virial = np.asarray(answer.virial, dtype=np.float64)
    symmetric = 0.5 * (virial + virial.T)
    return (
        float(answer.energy) / EV_PER_HARTREE,
        np.asarray(answer.forces, dtype=np.float64) * (ANGSTROM_PER_BOHR / EV_PER_HARTREE),
        symmetric / EV_PER_HARTREE,
        json.dumps(answer.extras),
    )


# ---------------------------------------------------------------------------------------------
# addresses and connecting

def check_socket_path(path: str) -> None:
    """ValueError if the unix socket file ``path`` is longer than the OS allows."""
    length = len(os.fsencode(path))
    if length > UNIX_PATH_MAX:
        raise ValueError(f"the socket file {path} is {length} bytes long, more than the "
                         f"{UNIX_PATH_MAX} the OS allows")


@dataclass(frozen=True)
class Address:
    """Where i-PI listens: ``unix:NAME`` (the file ``prefix`` + NAME, by default /tmp/ipi_NAME,
    as i-PI's <simulation sockets_prefix>) or ``inet:HOST:PORT``."""

    kind: str
    name: str
    port: int = 0
    prefix: str = SOCKETS_PREFIX

    def __str__(self) -> str:
        return f"unix:{self.name}" if self.kind == "unix" else f"inet:{self.name}:{self.port}"

    @property
    def path(self) -> str:
        """The unix socket file."""
        return self.prefix + self.name

    @classmethod
    def parse(cls, spec: str, prefix: str = SOCKETS_PREFIX) -> "Address":
        """``unix:NAME`` (the socket file ``prefix`` + NAME) or ``inet:HOST:PORT``; ValueError
        saying what is accepted otherwise, or that the socket file's name is too long."""
        kind, _, rest = str(spec).partition(":")
        if kind == "unix" and rest and "/" not in rest:
            address = cls("unix", rest, prefix=prefix)
            try:
                check_socket_path(address.path)
            except ValueError as error:
                raise ValueError(f"bad address {spec!r}: {error} (use a shorter NAME)") from None
            return address
        if kind == "inet":
            host, _, port = rest.rpartition(":")
            if host and port.isdigit() and 0 < int(port) < 65536:
                return cls("inet", host, int(port))
        raise ValueError(
            f"bad address {spec!r}: use unix:NAME (the socket /tmp/ipi_NAME, as i-PI's "
            "<ffsocket mode='unix'><address>NAME</address>) or inet:HOST:PORT"
        )


def connect(address: Address, timeout: float = 60.0, retry: bool = False,
            interval: float = 0.2, stopped: Callable[[], bool] = lambda: False) -> socket.socket:
    """An open socket to i-PI at ``address``.

    ``retry``: keep trying every ``interval`` seconds until ``timeout`` seconds have passed (for a
    driver started before i-PI), or until ``stopped()`` is true (the driver is stopping); else one
    attempt. Raises ConnectionError with a clear message.
    """
    deadline = time.monotonic() + timeout
    while True:
        if address.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = address.path
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            target = (address.name, address.port)
        try:
            sock.settimeout(max(1.0, min(10.0, deadline - time.monotonic())))
            sock.connect(target)
            sock.settimeout(None)
            return sock
        except OSError as error:
            sock.close()
            reason = error.strerror or type(error).__name__
            if not retry or time.monotonic() + interval > deadline:
                waited = f" after trying for {timeout:g} s" if retry else " (use --retry to wait for it)"
                raise ConnectionError(f"i-PI is not reachable at {address} ({reason}){waited}") from None
            if stopped():
                raise ConnectionError(f"stopped while waiting for i-PI at {address}") from None
            time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# messages

def parse_init(text: str) -> dict:
    """The ``key : value`` pairs of an INIT string (i-PI's ``<parameters>`` plus ``batch_size``)."""
    parameters = {}
    for token in text.replace("\x00", "").split(","):
        key, separator, value = token.partition(":")
        if separator and key.strip():
            parameters[key.strip()] = value.strip()
    return parameters


class Connection:
    """One socket to i-PI, with the reads and writes of the protocol."""

    def __init__(self, sock: socket.socket, address: Address):
        self.sock = sock
        self.address = address

    def stop_sending(self) -> None:
        """Tell i-PI this client is done (end of stream); i-PI then drops it and closes its side,
        which also ends a read another thread may be waiting in. Safe from any thread."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def finish(self, timeout: float = 2.0) -> None:
        """Close gracefully: end of stream, then read what i-PI still sends until it closes (at most
        ``timeout`` s). Closing with unread data would reset the connection, and i-PI 3.3.1's
        consolidated-message loop hangs on a reset instead of dropping the client."""
        self.stop_sending()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                if not self.sock.recv(65536):
                    break
        except OSError:
            pass
        self.sock.close()

    def _read(self, n_bytes: int, what: str) -> bytes:
        buffer = bytearray(n_bytes)
        view = memoryview(buffer)
        received = 0
        while received < n_bytes:
            try:
                count = self.sock.recv_into(view[received:], n_bytes - received)
            except OSError as error:
                raise Disconnected(f"lost the connection to i-PI at {self.address} while reading "
                                   f"{what} ({error.strerror or error})") from None
            if count == 0:
                raise Disconnected(f"i-PI at {self.address} closed the connection in the middle "
                                   f"of {what} ({received} of {n_bytes} bytes)")
            received += count
        return bytes(buffer)

    def _array(self, dtype, count: int, what: str) -> np.ndarray:
        dtype = np.dtype(dtype)
        return np.frombuffer(self._read(dtype.itemsize * count, what), dtype=dtype).copy()

    def read_header(self) -> Optional[str]:
        """The next header word, or None if i-PI closed the connection between messages."""
        first = b""
        try:
            first = self.sock.recv(HEADER_LENGTH)
        except OSError as error:
            raise Disconnected(f"lost the connection to i-PI at {self.address} "
                               f"({error.strerror or error})") from None
        if not first:
            return None
        raw = first + (self._read(HEADER_LENGTH - len(first), "a header")
                       if len(first) < HEADER_LENGTH else b"")
        try:
            return raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise ProtocolError(f"i-PI sent a header that is not ASCII: {raw!r}") from None

    def read_init(self) -> Tuple[int, dict]:
        """The request id and parameters of an INIT message (after its header)."""
        request_id = int(self._array(np.int32, 1, "INIT")[0])
        length = int(self._array(np.int32, 1, "INIT")[0])
        if length < 0 or length > 1 << 20:
            raise ProtocolError(f"INIT announced a parameter string of {length} bytes")
        text = self._read(length, "INIT").decode("utf-8", errors="replace")
        return request_id, parse_init(text)

    def read_posdata(self, batch_size: int = 1) -> List[Structure]:
        """The structures of a POSDATA message (after its header), converted to Å."""
        if batch_size == 1:
            cells = self._array(np.float64, 18, "POSDATA").reshape(1, 2, 3, 3)
            n_atoms = self._read_atom_count()
            positions = self._array(np.float64, 3 * n_atoms, "POSDATA").reshape(1, n_atoms, 3)
        else:
            n_atoms = self._read_atom_count()
            cells = self._array(np.float64, 18 * batch_size, "POSDATA").reshape(batch_size, 2, 3, 3)
            positions = self._array(np.float64, 3 * n_atoms * batch_size, "POSDATA")
            positions = positions.reshape(batch_size, n_atoms, 3)
        return [structure_from_ipi(c[0], p) for c, p in zip(cells, positions)]

    def _read_atom_count(self) -> int:
        n_atoms = int(self._array(np.int32, 1, "POSDATA")[0])
        if n_atoms < 0 or n_atoms > 100_000_000:
            raise ProtocolError(f"POSDATA announced {n_atoms} atoms")
        return n_atoms

    def _send(self, data: bytes, what: str) -> None:
        try:
            self.sock.sendall(data)
        except OSError as error:
            raise Disconnected(f"lost the connection to i-PI at {self.address} while sending "
                               f"{what} ({error.strerror or error})") from None

    def send_status(self, initialized: bool, has_data: bool) -> None:
        """Answer STATUS: NEEDINIT before INIT, HAVEDATA with forces waiting, else READY."""
        word = "NEEDINIT" if not initialized else ("HAVEDATA" if has_data else "READY")
        self._send(header(word), word)

    def send_forces(self, answers: List[Answer], batched: bool) -> None:
        """FORCEREADY with ``answers`` (one, or the batch), converted to atomic units, in one send."""
        converted = [answer_to_ipi(a) for a in answers]
        n_atoms = converted[0][1].shape[0]
        parts = [header("FORCEREADY")]
        if batched:
            parts.append(np.array([c[0] for c in converted], np.float64).tobytes())
            parts.append(np.int32(n_atoms).tobytes())
            parts.extend(c[1].astype(np.float64).tobytes() for c in converted)
            parts.extend(c[2].astype(np.float64).tobytes() for c in converted)
        else:
            (energy, forces, virial, _), = converted
            parts += [np.float64(energy).tobytes(), np.int32(n_atoms).tobytes(),
                      forces.astype(np.float64).tobytes(), virial.astype(np.float64).tobytes()]
        for c in converted:
            extras = c[3].encode("utf-8")
            parts += [np.int32(len(extras)).tobytes(), extras]
        self._send(b"".join(parts), "FORCEREADY")
