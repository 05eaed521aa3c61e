"""Helpers for the tests that run i-PI and pet-driver as real processes.

Every process is started in its own session and killed (with its group) when the test ends, and
every wait has a timeout, so that a hang (e.g. i-PI 3.3.1 waiting for a vanished driver) fails the
test instead of freezing the suite.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from ase.geometry import cell_to_cellpar, cellpar_to_cell

from driver.protocol import ANGSTROM_PER_BOHR, EV_PER_HARTREE

BIN = Path(sys.executable).parent
EV_PER_ANGSTROM_IN_AU = EV_PER_HARTREE / ANGSTROM_PER_BOHR
"""Forces: one Hartree/Bohr in eV/Å, with the driver's own factors."""


def unique_name(stem: str) -> str:
    """A socket name no parallel test uses."""
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def ipi_orientation(atoms):
    """A copy of ``atoms`` with the cell turned to i-PI's orientation (a along x, b in the xy
    plane), atoms moved with it: what i-PI builds from a CELL(abcABC) line."""
    copy = atoms.copy()
    copy.set_cell(cellpar_to_cell(cell_to_cellpar(np.asarray(atoms.cell))), scale_atoms=True)
    return copy


def write_ipi_xyz(path: Path, frames) -> Path:
    """Frames (ase.Atoms, cells in i-PI's orientation) as an i-PI xyz file in Å, full precision."""
    lines = []
    for atoms in frames:
        a, b, c, alpha, beta, gamma = cell_to_cellpar(np.asarray(atoms.cell))
        lines += [str(len(atoms)),
                  f"# CELL(abcABC): {a:.15f} {b:.15f} {c:.15f} {alpha:.15f} {beta:.15f} {gamma:.15f} "
                  "Step: 0 Bead: 0 positions{angstrom} cell{angstrom}"]
        lines += [f"{s} {x:.16e} {y:.16e} {z:.16e}" for s, (x, y, z) in zip(atoms.symbols, atoms.positions)]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_properties(path: Path) -> dict:
    """i-PI properties file → {column name: values}."""
    names, rows = [], []
    for line in Path(path).read_text().splitlines():
        if line.startswith("#"):
            names.append(line.split("-->")[1].split(":")[0].strip())
        elif line.strip():
            rows.append([float(v) for v in line.split()])
    table = np.array(rows)
    return {name: table[:, k] for k, name in enumerate(names)}


def read_first_frame(path: Path) -> np.ndarray:
    """The (N, 3) values of the first frame of an i-PI trajectory written with format="bin"
    (full float64 precision; i-PI's xyz keeps 6 digits): cell (9 float64), N (int64), 3N float64."""
    with open(path, "rb") as handle:
        np.fromfile(handle, dtype=np.float64, count=9)
        n_atoms = int(np.fromfile(handle, dtype=np.int64, count=1)[0])
        return np.fromfile(handle, dtype=np.float64, count=3 * n_atoms).reshape(n_atoms, 3)


class Processes:
    """Starts processes (each in a new session) and kills whatever is left at :meth:`close`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.started = []

    def start(self, command, log_name: str, cwd: Path = None, env=None) -> subprocess.Popen:
        """``command`` in a session of its own, SIGINT at its default (as in a terminal: a test suite
        started in the background by a shell inherits SIGINT ignored, and Python would then
        ignore Ctrl-C instead of raising KeyboardInterrupt)."""
        log = open(self.folder / log_name, "w")
        process = subprocess.Popen(command, cwd=cwd or self.folder, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, env=env,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        process.log_path = self.folder / log_name
        self.started.append((process, log))
        return process

    def wait(self, process: subprocess.Popen, timeout: float) -> int:
        """The exit status; AssertionError (with the log's tail) if it runs past ``timeout``."""
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"{process.args[:3]} still running after {timeout} s:\n"
                                 f"{log_text(process)[-3000:]}") from None

    def close(self) -> None:
        for process, log in self.started:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
            log.close()


def log_text(process: subprocess.Popen) -> str:
    return Path(process.log_path).read_text(errors="replace")


def driver_command(*arguments) -> list:
    return [sys.executable, "-m", "driver.cli", *map(str, arguments)]


def ipi_command(xml_name: str) -> list:
    return [sys.executable, str(BIN / "i-pi"), xml_name]


def wait_for(condition, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(interval)


@pytest.fixture
def processes(tmp_path):
    """A :class:`Processes` in ``tmp_path``; everything it started is killed after the test."""
    started = Processes(tmp_path)
    yield started
    started.close()
