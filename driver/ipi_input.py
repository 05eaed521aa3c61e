"""Read and adapt an i-PI XML input for pet-run: its sockets, steps, start structure and outputs.

Channel convention: an ``<ffsocket>`` is served in the mode named by its ``<parameters>{mode: M}``
if it has one, else by its ``name`` (``raw``, ``random``, or a rotation grid such as ``2i``).
In-process forcefields (``<ffdirect>`` with ``<pes>custom</pes>`` loading :mod:`driver.ipi_pes`)
take their mode, model, device, dtype and template from their ``<parameters>``, which pet-run's
options rewrite.

File names in the input may start with ``$PET_IPI_SHARED`` (the project's shared data folder:
``$PET_IPI_SHARED`` if set, else ``shared/data`` beside the checkout); :meth:`IPIInput.expand_shared`
replaces it, so that inputs name data files without copying them.
"""

import math
import os
import socket
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from ipi.utils.io.inputs.io_xml import read_dict, read_list

from grids.quadrature import GridTooLarge

from .channels import parse_mode
from .protocol import SOCKETS_PREFIX, Address, check_socket_path

TEMPLATE_MODES = ("xyz", "pdb", "ase")
"""<initialize><file mode=...> formats that ASE reads too (the driver's --template)."""


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
"""inet hosts for which pet-run picks a free port."""

SHARED_VARIABLE = "$PET_IPI_SHARED"
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The shared data folder when $PET_IPI_SHARED is not set: ``shared/data`` beside the checkout."""

OUTPUT_ELEMENTS = ("properties", "trajectory", "checkpoint")
"""<output> children with a stride (in steps)."""
TOTAL_STEPS = "<total_steps>"
"""How --mts errors name the input's number of steps."""

PES_MODULE = "driver.ipi_pes"
PES_FILE = Path(__file__).resolve().with_name("ipi_pes.py")
"""pet-ipi's i-PI PES: an <ffdirect> whose <pes_path> is this file, or a file importing the module."""

PER_ATOM_FILES = ("velocities", "momenta", "masses", "labels")
"""<initialize> children that may be read from a structure file holding one entry per atom."""

MAX_PORT = 65535
"""The largest TCP port (also i-PI's default <port>)."""


class InputError(ValueError):
    """An i-PI input pet-run cannot run."""


@dataclass
class SocketChannel:
    """An <ffsocket> of the input: its name, the channel mode serving it, and its address."""

    name: str
    mode: str
    address: Address


class IPIInput:
    """The XML input at ``path`` (parsed; change it, then :meth:`write` a copy)."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.tree = ElementTree.parse(self.path)
        except (ElementTree.ParseError, OSError) as error:
            raise InputError(f"cannot read the i-PI input {self.path}: {error}") from None
        self.root = self.tree.getroot()
        if self.root.tag != "simulation":
            raise InputError(f"{self.path} is not an i-PI input (no <simulation> root)")

    def _ffsockets(self):
        return self.root.findall(".//ffsocket")

    def in_process(self) -> list:
        """The <ffdirect> elements that run pet-ipi's PES (:mod:`driver.ipi_pes`) inside i-PI."""
        return [element for element in self.root.findall(".//ffdirect") if self._runs_pet(element)]

    def _runs_pet(self, element) -> bool:
        """Whether <ffdirect> ``element`` loads pet-ipi's PES (<pes>custom</pes>, its <pes_path>
        taken in the input's folder)."""
        if _text(element, "pes") != "custom":
            return False
        path = self.path.parent / _text(element, "pes_path")
        try:
            return path.resolve() == PES_FILE or PES_MODULE in path.read_text(errors="replace")
        except OSError:
            return False

    @property
    def sockets_prefix(self) -> str:
        """Where i-PI puts its unix socket files: <simulation sockets_prefix>, default /tmp/ipi_."""
        return self.root.get("sockets_prefix", SOCKETS_PREFIX)

    def anchor_sockets_prefix(self, folder) -> None:
        """Make a relative <simulation sockets_prefix> absolute, relative to ``folder`` (where i-PI
        runs), so that i-PI, pet-driver and pet-run name the same socket files."""
        if "sockets_prefix" in self.root.attrib:
            self.root.set("sockets_prefix", os.path.join(folder, self.sockets_prefix))

    def channels(self) -> List[SocketChannel]:
        """The channels to serve, one per <ffsocket>."""
        found = []
        for element in self._ffsockets():
            name = element.get("name", "")
            kind = element.get("mode", "inet")
            if kind not in ("unix", "inet"):
                raise InputError(f"ffsocket {name!r}: mode {kind!r} is not supported by pet-driver "
                                 "(use unix or inet)")
            mode = self._socket_mode(element, name)
            address = _text(element, "address") or "localhost"
            if kind == "unix":
                self._check_socket_path(name, address, address)
                found.append(SocketChannel(name, mode, Address("unix", address, prefix=self.sockets_prefix)))
            else:
                found.append(SocketChannel(name, mode, Address("inet", address, self._port(element, name))))
        return found

    def _socket_mode(self, element, name: str) -> str:
        """The mode serving an <ffsocket>: its <parameters>' ``mode``, else its name."""
        wanted = self._parameters(element, f"ffsocket {name!r}").get("mode")
        if wanted is None:
            try:
                return parse_mode(name)
            except ValueError:
                raise InputError(
                    f"ffsocket {name!r}: name it raw, random or a rotation grid such as 2i, or give "
                    "<parameters>{mode: 2i}</parameters>"
                ) from None
        return self._parameter_mode(wanted, f"ffsocket {name!r}")

    def _parameter_mode(self, wanted, owner: str) -> str:
        """The canonical ``mode`` of the <parameters> of ``owner``; InputError naming it if bad."""
        try:
            return parse_mode(str(wanted))
        except ValueError as error:
            allowed = str(error) if isinstance(error, GridTooLarge) else \
                "use raw, random or a rotation grid N or Ni (e.g. 2i)"
            raise InputError(f"bad mode {str(wanted)!r} in the <parameters> of {owner} in "
                             f"{self.path.name}: {allowed}") from None

    def _port(self, element, name: str) -> int:
        """The <port> of an inet <ffsocket> (i-PI's default 65535); InputError if not a port."""
        text = _text(element, "port") or str(MAX_PORT)
        if not text.isdigit() or not 0 < int(text) <= MAX_PORT:
            raise InputError(f"ffsocket {name!r} in {self.path.name}: bad <port> {text!r}: use a "
                             f"port from 1 to {MAX_PORT}")
        return int(text)

    def _check_socket_path(self, name: str, address: str, final: str) -> None:
        """InputError naming the <address> of ffsocket ``name`` if the socket file of ``final``
        (the address as i-PI gets it) is longer than the OS allows."""
        try:
            check_socket_path(self.sockets_prefix + final)
        except ValueError as error:
            made = "" if final == address else f" (pet-run makes it {final})"
            raise InputError(f"ffsocket {name!r} in {self.path.name}: <address>{address}</address> "
                             f"is too long{made}: {error}") from None

    def _parameters(self, element, owner: str) -> dict:
        """The <parameters> dict of a forcefield; InputError naming ``owner`` if unreadable."""
        text = _text(element, "parameters")
        try:
            return read_dict(text) if text else {}
        except ValueError:
            raise InputError(f"the <parameters> of {owner} in {self.path.name} are not a dict such "
                             f"as {{mode: 2i}}: {text!r}") from None

    def _set_parameters(self, element, owner: str, **values) -> None:
        """Set ``values`` in the <parameters> dict of a forcefield (written as i-PI reads it)."""
        merged = {**self._parameters(element, owner), **values}
        for key, value in values.items():
            if any(c in str(value) for c in ",{}"):
                raise InputError(f"cannot give {key} {value} to {owner}: i-PI's <parameters> take "
                                 "no ',', '{' or '}' in a value")
        _child(element, "parameters").text = "{" + ", ".join(f"{k}: {v}" for k, v in merged.items()) + "}"

    def in_process_mode(self, element) -> str:
        """The mode of an in-process forcefield: its <parameters>' ``mode``, default raw."""
        return self._parameter_mode(self.in_process_parameters(element).get("mode", "raw"),
                                    _ffdirect(element))

    def in_process_parameters(self, element) -> dict:
        """The <parameters> of an in-process forcefield."""
        return self._parameters(element, _ffdirect(element))

    def set_in_process(self, **values) -> None:
        """Set ``values`` (those not None: model, device, dtype, template) in the <parameters> of
        every in-process forcefield."""
        given = {key: value for key, value in values.items() if value is not None}
        for element in self.in_process():
            self._set_parameters(element, _ffdirect(element), **given)

    def set_grid(self, mode: str) -> None:
        """Serve every averaged (grid) channel, socket or in-process, in ``mode`` instead (a grid,
        raw or random): its <parameters> get ``mode: M``, which i-PI also passes to pet-driver in
        INIT. InputError if the input has no averaged channel."""
        mode = parse_mode(mode)
        averaged = [(element, f"ffsocket {channel.name!r}")
                    for channel, element in zip(self.channels(), self._ffsockets())
                    if channel.mode not in ("raw", "random")]
        averaged += [(element, _ffdirect(element)) for element in self.in_process()
                     if self.in_process_mode(element) not in ("raw", "random")]
        if not averaged:
            raise InputError(f"--grid {mode}: {self.path.name} has no averaged channel (a forcefield "
                             "in a rotation-grid mode such as 2i), only raw or random ones")
        for element, owner in averaged:
            self._set_parameters(element, owner, mode=mode)

    def make_addresses_unique(self, tag: str) -> None:
        """Append ``-tag`` to every unix address and give every inet socket on this machine a free
        port, so that runs side by side do not collide."""
        self.channels()  # checks every ffsocket first
        for element in self._ffsockets():
            address = _child(element, "address")
            host = (address.text or "localhost").strip()
            if element.get("mode", "inet") == "unix":
                self._check_socket_path(element.get("name", ""), host, f"{host}-{tag}")
                address.text = f"{host}-{tag}"
            elif host in LOCAL_HOSTS:
                _child(element, "port").text = str(free_port(host))

    @property
    def total_steps(self) -> Optional[int]:
        text = _text(self.root, "total_steps")
        return int(text) if text else None

    @total_steps.setter
    def total_steps(self, steps: int) -> None:
        _child(self.root, "total_steps").text = str(int(steps))

    def use_inet(self, host: str, port: int) -> None:
        """Make every <ffsocket> an inet socket on ``host``, on ports ``port``, ``port + 1``, ...;
        InputError if the last one is beyond 65535."""
        self.channels()
        sockets = self._ffsockets()
        if sockets and port + len(sockets) - 1 > MAX_PORT:
            raise InputError(f"--inet {host}:{port}: the {len(sockets)} sockets of {self.path.name} "
                             f"need ports {port} to {port + len(sockets) - 1}, beyond {MAX_PORT}: "
                             f"give a port up to {MAX_PORT - len(sockets) + 1}")
        for k, element in enumerate(sockets):
            element.set("mode", "inet")
            _child(element, "address").text = host
            _child(element, "port").text = str(port + k)

    def expand_shared(self) -> None:
        """Replace ``$PET_IPI_SHARED`` in file names by the shared data folder; InputError if such
        a file is missing."""
        folder = shared_data_dir()
        for element in self.root.iter():
            text = (element.text or "").strip()
            if SHARED_VARIABLE not in text:
                continue
            path = Path(text.replace(SHARED_VARIABLE, str(folder)))
            if not path.exists():
                raise InputError(f"{path} (named {text} in {self.path.name}) does not exist: set "
                                 f"PET_IPI_SHARED to the folder with the project's shared data "
                                 f"(default {DEFAULT_SHARED_DATA})")
            element.text = str(path)

    @property
    def minimization(self) -> bool:
        """Whether the system is relaxed (<motion mode="minimize">): <total_steps> is then at most."""
        motion = self.root.find("./system/motion")
        return motion is not None and motion.get("mode") == "minimize"

    def set_mts(self, inner_steps: int, steps: Optional[int] = None) -> None:
        """Split each outer step into ``inner_steps`` MTS steps (1: no MTS, every force at every
        step), keeping the inner time step, the simulated time and the output times.

        The input must have two MTS levels (``<nmts>[1, N]</nmts>``). With 1 the forces get the sum
        of their ``mts_weights`` as their weight (raw [-1, 1] becomes weight 0: evaluated only for
        the outputs that name it). The output strides, and <total_steps> unless ``steps`` replaces
        it (outer steps of the new split: pet-run's --steps), scale by N / ``inner_steps``;
        InputError if one of them would then not be a whole number of steps (the error names it
        and the values of ``inner_steps`` that keep them all).
        """
        if inner_steps < 1:
            raise InputError("--mts must be at least 1")
        dynamics = self.root.find("./system/motion/dynamics")
        nmts = dynamics.find("nmts") if dynamics is not None else None
        levels = [int(v) for v in read_list(nmts.text)] if nmts is not None else []
        if len(levels) != 2 or levels[0] != 1:
            raise InputError(f"{self.path.name} has no two-level multiple time stepping "
                             "(<nmts>[1, N]</nmts>): --mts needs one")
        old = levels[1]
        intervals = self._step_counts(with_total=steps is None)
        _check_mts_split(intervals, old, inner_steps)
        timestep = dynamics.find("timestep")
        timestep.text = repr(float(timestep.text) / old * inner_steps)
        if inner_steps == 1:
            dynamics.remove(nmts)
            for force in self.root.findall("./system/forces/force"):
                weights = force.find("mts_weights")
                if weights is not None:
                    total = sum(float(v) for v in read_list(weights.text))
                    force.remove(weights)
                    force.set("weight", f"{float(force.get('weight', 1.0)) * total:g}")
        else:
            nmts.text = f"[1, {inner_steps}]"
        for element, _, count in intervals:
            if element is self.root:
                self.total_steps = count * old // inner_steps
            else:
                element.set("stride", str(count * old // inner_steps))
        if steps is not None:
            self.total_steps = steps

    def _step_counts(self, with_total: bool) -> list:
        """(element, what, count) of every count of (outer) steps the input sets: the stride of
        each output (i-PI's default 1) and, if ``with_total``, <total_steps> (element: the root);
        InputError if one is not a positive integer."""
        output = self.root.find("output")
        found = []
        for element in output.iter() if output is not None else []:
            if element.tag in OUTPUT_ELEMENTS:
                name = element.get("filename")
                what = f"the stride of <{element.tag}{f' filename={name!r}' if name else ''}>"
                found.append((element, what, element.get("stride", "1")))
        if with_total and self.total_steps is not None:
            found.append((self.root, TOTAL_STEPS, str(self.total_steps)))
        for element, what, text in found:
            if not text.strip().isdigit() or int(text) < 1:
                raise InputError(f"{what} in {self.path.name} is {text!r}: it must be a positive integer")
        return [(element, what, int(text)) for element, what, text in found]

    def per_atom_files(self) -> list:
        """(tag, file name) of the <initialize> children read from a structure file with one entry
        per atom (<velocities mode="xyz">v.xyz</velocities>, momenta, masses, labels)."""
        initialize = self.root.find("./system/initialize")
        return [(element.tag, (element.text or "").strip())
                for element in (initialize if initialize is not None else [])
                if element.tag in PER_ATOM_FILES and element.get("mode") in TEMPLATE_MODES]

    def start_file(self):
        """The <initialize><file> element of the (single) system, or None."""
        files = self.root.findall("./system/initialize/file")
        return files[0] if len(files) == 1 else None

    @property
    def beads(self) -> int:
        """The number of beads (replicas) of the system: <initialize nbeads>."""
        initialize = self.root.find("./system/initialize")
        return int(initialize.get("nbeads", 1)) if initialize is not None else 1

    @property
    def output_prefix(self) -> str:
        """The prefix of i-PI's output files (<output prefix>, default i-pi)."""
        output = self.root.find("output")
        return output.get("prefix", "i-pi") if output is not None else "i-pi"

    def template(self, folder=None) -> Optional[Path]:
        """The start structure of the (single) system, if in a format ASE reads, else None;
        a relative file name is taken in ``folder`` (default: the input's folder)."""
        element = self.start_file()
        if element is None or element.get("mode", "chk") not in TEMPLATE_MODES:
            return None
        path = Path(folder or self.path.parent) / (element.text or "").strip()
        return path if path.is_file() else None

    def properties_file(self) -> Optional[Path]:
        """The properties output that records ``step`` (to follow the progress), if any."""
        output = self.root.find("output")
        if output is None:
            return None
        prefix = output.get("prefix", "i-pi")
        for element in output.findall("properties"):
            if "step" in (element.text or ""):
                return self.path.parent / f"{prefix}.{element.get('filename', 'out')}"
        return None

    def write(self, path) -> Path:
        path = Path(path)
        self.tree.write(path)
        return path


def _check_mts_split(counts: list, old: int, inner_steps: int) -> None:
    """InputError if a count of outer steps of ``old`` inner steps (``counts``: (element, what,
    count)) is not a whole number of outer steps of ``inner_steps`` inner steps, naming it and
    the values of ``inner_steps`` that keep every count (the divisors of their common divisor)."""
    wrong = [(what, count) for _, what, count in counts if count * old % inner_steps]
    if not wrong:
        return
    what, count = wrong[0]
    common = math.gcd(*(count * old for _, _, count in counts))
    allowed = [str(n) for n in _divisors(common)]
    shown = ", ".join(allowed[:-1]) + f" or {allowed[-1]}" if len(allowed) > 1 else allowed[0]
    total = any(what == TOTAL_STEPS for _, what, _ in counts)
    kept = "every output time" + (" and the simulated time" if total else "")
    raise InputError(f"--mts {inner_steps}: {what} is {count} outer step{'s' * (count != 1)} of {old} "
                     f"inner steps ({count * old} inner steps), not a whole number of outer steps of "
                     f"{inner_steps} inner steps: use --mts {shown}, which keep {kept} exactly")


def _divisors(number: int) -> List[int]:
    """The divisors of the positive integer ``number``, in increasing order."""
    small = [n for n in range(1, math.isqrt(number) + 1) if number % n == 0]
    return small + [number // n for n in reversed(small) if n * n != number]


def shared_data_dir() -> Path:
    """The project's shared data folder: $PET_IPI_SHARED, else ``shared/data`` beside the checkout."""
    return Path(os.environ.get("PET_IPI_SHARED") or DEFAULT_SHARED_DATA)


def free_port(host: str) -> int:
    """A TCP port that is free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _ffdirect(element) -> str:
    """How errors name an <ffdirect>: ``ffdirect 'NAME'``."""
    return f"ffdirect {element.get('name', '')!r}"


def _text(element, tag: str) -> str:
    child = element.find(tag)
    return (child.text or "").strip() if child is not None else ""


def _child(element, tag: str):
    child = element.find(tag)
    if child is None:
        child = ElementTree.SubElement(element, tag)
    return child
