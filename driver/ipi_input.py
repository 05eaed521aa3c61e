"""Read and adapt an i-PI XML input for pet-run: its sockets, steps, start structure and outputs.

Channel convention: an ``<ffsocket>`` is served in the mode named by its ``<parameters>{mode: M}``
if it has one, else by its ``name`` (``raw``, ``random``, or a rotation grid such as ``2i``).
"""

import socket
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from ipi.utils.io.inputs.io_xml import read_dict

from .channels import parse_mode
from .protocol import Address

TEMPLATE_MODES = ("xyz", "pdb", "ase")
"""<initialize><file mode=...> formats that ASE reads too (the driver's --template)."""


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
"""inet hosts for which pet-run picks a free port."""


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

    def template(self) -> Optional[Path]:
        """The start structure of the (single) system, if in a format ASE reads, else None."""
        files = self.root.findall("./system/initialize/file")
        if len(files) != 1 or files[0].get("mode", "chk") not in TEMPLATE_MODES:
            return None
        path = self.path.parent / (files[0].text or "").strip()
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
