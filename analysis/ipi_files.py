"""Readers for i-PI 3.x output files, returning numbers in the project's units.

Properties files (``<properties>`` outputs) are parsed by i-PI's own ``read_output``; every column
with a physical dimension is converted to Å, eV, ps, K or eV/Å (a column written without units is in
i-PI's atomic units). Trajectories (``<trajectory>`` outputs, ``xyz`` or ``ase``/extxyz format) are
parsed by i-PI's ``read_trajectory``; values come back as positions in Å, velocities in Å/ps and
forces in eV/Å, cells in Å (rows = lattice vectors), masses in amu.

i-PI 3.3.1's automatic unit detection only recognises unit names made of letters and ``_``: a
trajectory written as ``forces{ev/ang}`` would be read as atomic units. :func:`read_trajectory`
therefore reads the quantity and its units from the comment line itself and passes them on. Its
``read_trajectory`` also keeps only the first digit of the step number (step 12 reads as 1), so
steps are read from the comment lines here too.
"""

import functools
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import ase.io
import ase.units
import numpy as np

from .errors import AnalysisError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from ipi.engine.properties import Properties, Trajectories
    from ipi.scripting.parsing import read_output, read_trajectory as ipi_read_trajectory
    from ipi.utils.units import unit_to_internal, unit_to_user

PROJECT_UNITS = {
    "energy": "electronvolt",
    "time": "picosecond",
    "length": "angstrom",
    "temperature": "kelvin",
    "force": "ev/ang",
}
"""i-PI unit names of the project's units, per i-PI dimension; other dimensions are left as read."""

ASE_VELOCITY_TO_A_PER_PS = 1000.0 * ase.units.fs
"""Å/ps per ASE velocity unit (Å per ASE time unit)."""

_QUANTITY_RE = re.compile(r"(\w+)\{([^}]+)\}")
_STEP_RE = re.compile(r"Step:\s+(\d+)")


@functools.lru_cache(maxsize=None)
def _property_dimensions() -> dict:
    return {name: entry.get("dimension", "undefined") for name, entry in Properties().property_dict.items()}


@functools.lru_cache(maxsize=None)
def _trajectory_dimensions() -> dict:
    return {name: entry.get("dimension", "undefined") for name, entry in Trajectories().traj_dict.items()}


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"{path}: no such file")
    return path


def read_properties(path) -> dict:
    """Columns of an i-PI properties file: {name: (n_rows,) or (n_rows, k) array}, project units.

    Names are i-PI's, arguments included (``time``, ``conserved``, ``pot_component_raw(1)``).
    """
    path = _existing(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values, info = read_output(str(path))
    except (ValueError, IndexError) as error:
        raise AnalysisError(f"{path}: cannot read as an i-PI properties file ({error})") from None
    if not values:
        raise AnalysisError(f"{path}: no '# column N --> name' header lines: not an i-PI properties file")
    columns = {}
    for name, data in values.items():
        data = np.asarray(data, dtype=float)
        if data.ndim == 0:
            data = data.reshape(1)
        dimension = _property_dimensions().get(name.split("(")[0], "undefined")
        units = info[name][0]
        if dimension in PROJECT_UNITS:
            data = unit_to_user(dimension, PROJECT_UNITS[dimension],
                                unit_to_internal(dimension, units or "atomic_unit", data))
        columns[name] = data
    if len(next(iter(columns.values()))) == 0:
        raise AnalysisError(f"{path}: the properties file has a header but no data rows")
    return columns


def column(columns: dict, name: str, path) -> np.ndarray:
    """``columns[name]``, or an AnalysisError naming the file and the columns it does have."""
    if name not in columns:
        raise AnalysisError(f"{path}: no column '{name}' (columns: {', '.join(columns)})")
    return columns[name]


@dataclass
class Trajectory:
    """One i-PI trajectory file.

    ``quantity``: i-PI's name of what the file holds (positions, velocities, forces,
    forces_component_raw, ...); ``dimension``: its i-PI dimension (length, velocity, force);
    ``symbols`` (N,); ``masses`` (N,) amu; ``steps`` (F,) MD steps; ``cells`` (F, 3, 3) Å,
    rows = lattice vectors; ``values`` (F, N, 3) in Å, Å/ps or eV/Å.
    """

    path: Path
    quantity: str
    dimension: str
    symbols: list
    masses: np.ndarray
    steps: np.ndarray
    cells: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)


def _comment_quantity(comment: str, path: Path):
    """(quantity, units) named in an i-PI comment line, e.g. ('forces', 'ev/ang')."""
    for name, units in _QUANTITY_RE.findall(comment):
        if name != "cell":
            if name not in _trajectory_dimensions():
                raise AnalysisError(f"{path}: '{name}' is not an i-PI trajectory quantity")
            return name, units
    return "positions", None


def _comment_steps(path: Path, n_frames: int) -> list:
    """MD steps from the "Step: N" of each comment line (i-PI 3.3.1's reader keeps only N's first
    digit); frame indices if the comments carry no step."""
    with open(path) as handle:
        steps = [int(match.group(1)) for line in handle if line.startswith("#")
                 for match in [_STEP_RE.search(line)] if match]
    return steps if len(steps) == n_frames else list(range(n_frames))


def _read_xyz(path: Path, comment: str):
    """Values in ASE units via i-PI's reader, told the units named in the first comment line."""
    quantity, units = _comment_quantity(comment, path)
    dimension = _trajectory_dimensions()[quantity]
    keywords = {"dimension": dimension, "units": units} if units else {}
    frames = ipi_read_trajectory(str(path), format="xyz", **keywords)
    steps = _comment_steps(path, len(frames))
    if dimension == "length":
        values = [frame.positions for frame in frames]
    else:
        values = [frame.arrays[quantity] for frame in frames]
    return quantity, dimension, frames, steps, values


def _read_extxyz(path: Path):
    """Values in ASE units from the units of the ipi_comment (i-PI writes 'ase'); cells in Å."""
    frames = ase.io.read(str(path), ":", format="extxyz")
    comment = frames[0].info.get("ipi_comment", "") if frames else ""
    quantity, units = _comment_quantity(comment, path)
    dimension = _trajectory_dimensions()[quantity]
    scale = unit_to_user(dimension, "ase", unit_to_internal(dimension, units or "ase", 1.0))
    steps = []
    for index, frame in enumerate(frames):
        match = _STEP_RE.search(frame.info.get("ipi_comment", ""))
        steps.append(int(match.group(1)) if match else index)
    if dimension == "length":
        values = [scale * frame.positions for frame in frames]
    else:
        values = [scale * frame.arrays[quantity] for frame in frames]
    return quantity, dimension, frames, steps, values


def read_trajectory(path, dimension: str = None) -> Trajectory:
    """An i-PI trajectory: ``.xyz`` in i-PI's format (CELL in the comment line), or extended XYZ
    (i-PI's ``format="ase"``, or any extxyz with a Lattice: positions in Å).

    ``dimension``: "length", "velocity" or "force" to insist on what the file holds.
    """
    path = _existing(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open(path) as handle:
                handle.readline()
                comment = handle.readline()
            if path.suffix == ".extxyz" or "Lattice=" in comment:
                quantity, found, frames, steps, values = _read_extxyz(path)
            elif "CELL" in comment:
                quantity, found, frames, steps, values = _read_xyz(path, comment)
            else:
                raise AnalysisError(f"{path}: neither an i-PI xyz (no CELL in the comment line) nor an extended XYZ file")
    except AnalysisError:
        raise
    except Exception as error:  # i-PI's and ASE's parsers raise many kinds on a malformed file
        raise AnalysisError(f"{path}: cannot read as an i-PI trajectory ({type(error).__name__}: {error})") from None
    if not frames:
        raise AnalysisError(f"{path}: no frames")
    if dimension is not None and found != dimension:
        raise AnalysisError(f"{path} holds {quantity} ({found}), expected a {dimension} trajectory")
    values = np.asarray(values, dtype=float)
    if found == "velocity":
        values = values * ASE_VELOCITY_TO_A_PER_PS
    elif found not in ("length", "force"):
        raise AnalysisError(f"{path}: {quantity} ({found}) is not positions, velocities or forces")
    return Trajectory(
        path=path, quantity=quantity, dimension=found,
        symbols=list(frames[0].get_chemical_symbols()),
        masses=np.asarray(frames[0].get_masses(), dtype=float),
        steps=np.asarray(steps, dtype=int),
        cells=np.asarray([np.asarray(frame.cell) for frame in frames], dtype=float),
        values=values,
    )


def common_frames(first: Trajectory, second: Trajectory):
    """Indices (into first, into second) of the MD steps both trajectories hold, in order."""
    if first.symbols != second.symbols:
        raise AnalysisError(f"{first.path} and {second.path} hold different atoms")
    steps, in_first, in_second = np.intersect1d(first.steps, second.steps, return_indices=True)
    if len(steps) == 0:
        raise AnalysisError(f"{first.path} and {second.path} share no MD step")
    return in_first, in_second


def read_two_columns(path, length_unit: str = "angstrom") -> np.ndarray:
    """(n, 2) numbers from a text table (e.g. a reference g(r)), first column converted to Å.

    Lines that do not start with two numbers (comments, quoted headers) are skipped;
    ``length_unit``: "angstrom" or "bohr".
    """
    path = _existing(path)
    scale = {"angstrom": 1.0, "bohr": ase.units.Bohr}.get(length_unit)
    if scale is None:
        raise AnalysisError(f"unknown length unit '{length_unit}' for {path} (angstrom or bohr)")
    rows = []
    for line in path.read_text().splitlines():
        fields = line.split()
        try:
            rows.append((float(fields[0]), float(fields[1])))
        except (ValueError, IndexError):
            continue
    if not rows:
        raise AnalysisError(f"{path}: no lines with two numbers")
    table = np.asarray(rows)
    table[:, 0] *= scale
    return table


def step_times(steps: np.ndarray, dt_fs: float) -> np.ndarray:
    """Times in ps of MD steps, given i-PI's ``<timestep>`` (the outer step under MTS) in fs."""
    if not dt_fs > 0:
        raise AnalysisError(f"--dt must be a positive time step in fs, got {dt_fs}")
    return np.asarray(steps, dtype=float) * dt_fs * 1e-3
