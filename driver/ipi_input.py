"""Read and adapt an i-PI XML input for pet-run: its sockets, steps, start structure and outputs.

Channel convention: an ``<ffsocket>`` is served in the mode named by its ``<parameters>{mode: M}``
if it has one, else by its ``name`` (``raw``, ``random``, or a rotation grid such as ``2i``).

File names in the input may start with ``$PET_IPI_SHARED`` (the project's shared data folder:
``$PET_IPI_SHARED`` if set, else ``shared/data`` beside the checkout); :meth:`IPIInput.expand_shared`
replaces it, so that inputs name data files without copying them.
"""

import os
import socket
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from ipi.utils.io.inputs.io_xml import read_dict, read_list

from .channels import parse_mode
from .protocol import Address

TEMPLATE_MODES = ("xyz", "pdb", "ase")
"""<initialize><file mode=...> formats that ASE reads too (the driver's --template)."""


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
"""inet hosts for which pet-run picks a free port."""

SHARED_VARIABLE = "$PET_IPI_SHARED"
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The shared data folder when $PET_IPI_SHARED is not set: ``shared/data`` beside the checkout."""

OUTPUT_ELEMENTS = ("properties", "trajectory", "checkpoint")
"""<output> children with a stride (in steps)."""


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

    def channels(self) -> List[SocketChannel]:
        """The channels to serve, one per <ffsocket>."""
        found = []
        for element in self._ffsockets():
            name = element.get("name", "")
            kind = element.get("mode", "inet")
            if kind not in ("unix", "inet"):
                raise InputError(f"ffsocket {name!r}: mode {kind!r} is not supported by pet-driver "
                                 "(use unix or inet)")
            parameters = _text(element, "parameters")
            wanted = read_dict(parameters).get("mode") if parameters else None
            try:
                mode = parse_mode(name if wanted is None else str(wanted))
            except ValueError:
                raise InputError(
                    f"ffsocket {name!r}: name it raw, random or a rotation grid such as 2i, or give "
                    "<parameters>{mode: 2i}</parameters>"
                ) from None
            address = _text(element, "address") or "localhost"
            if kind == "unix":
                found.append(SocketChannel(name, mode, Address("unix", address)))
            else:
                found.append(SocketChannel(name, mode, Address("inet", address, int(_text(element, "port") or 65535))))
        return found

    def set_grid(self, mode: str) -> None:
        """Serve every averaged (grid) channel in ``mode`` instead (a grid, raw or random): its
        <parameters> get ``mode: M``, which i-PI also passes to the driver in INIT."""
        mode = parse_mode(mode)
        for channel, element in zip(self.channels(), self._ffsockets()):
            if channel.mode in ("raw", "random"):
                continue
            parameters = _child(element, "parameters")
            values = read_dict(parameters.text) if (parameters.text or "").strip() else {}
            values["mode"] = mode
            parameters.text = "{" + ", ".join(f"{key}: {value}" for key, value in values.items()) + "}"

    def make_addresses_unique(self, tag: str) -> None:
        """Append ``-tag`` to every unix address and give every inet socket on this machine a free
        port, so that runs side by side do not collide."""
        self.channels()  # checks every ffsocket first
        for element in self._ffsockets():
            address = _child(element, "address")
            host = (address.text or "localhost").strip()
            if element.get("mode", "inet") == "unix":
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
        """Make every <ffsocket> an inet socket on ``host``, on ports ``port``, ``port + 1``, ..."""
        self.channels()
        for k, element in enumerate(self._ffsockets()):
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

    def set_mts(self, inner_steps: int) -> None:
        """Split each outer step into ``inner_steps`` MTS steps (1: no MTS, every force at every
        step), keeping the inner time step, the simulated time and the output times.

        The input must have two MTS levels (``<nmts>[1, N]</nmts>``). With 1 the forces get the sum
        of their ``mts_weights`` as their weight (raw [-1, 1] becomes weight 0: evaluated only for
        the outputs that name it). <total_steps> and output strides scale by N / ``inner_steps``
        (strides rounded, at least 1).
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
        if self.total_steps is not None:
            self.total_steps = max(1, round(self.total_steps * old / inner_steps))
        output = self.root.find("output")
        for element in output.iter() if output is not None else []:
            if element.tag in OUTPUT_ELEMENTS:
                stride = int(element.get("stride", 1))
                element.set("stride", str(max(1, round(stride * old / inner_steps))))

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


def shared_data_dir() -> Path:
    """The project's shared data folder: $PET_IPI_SHARED, else ``shared/data`` beside the checkout."""
    return Path(os.environ.get("PET_IPI_SHARED") or DEFAULT_SHARED_DATA)


def free_port(host: str) -> int:
    """A TCP port that is free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _text(element, tag: str) -> str:
    child = element.find(tag)
    return (child.text or "").strip() if child is not None else ""


def _child(element, tag: str):
    child = element.find(tag)
    if child is None:
        child = ElementTree.SubElement(element, tag)
    return child
