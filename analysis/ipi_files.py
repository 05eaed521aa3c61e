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

Files compressed with gzip, bzip2 or xz (``.gz``, ``.bz2``, ``.xz``) are read as the file they
hold (``pos.extxyz.gz`` as extxyz), decompressed into a temporary copy for i-PI's parsers.

The readers check what every analysis needs: a file that ends in an incomplete frame or row (a
run still writing, or cut short) is read without it, with a warning on stderr; every frame of a
trajectory must hold the atoms of the first (frames of different sizes are an error naming the
first that differs); a trajectory with a NaN or infinite value (a run that blew up) is an error
naming the first such frame (unless the caller asks for it as it is), a properties column is
checked when :func:`column` takes it; a trajectory without a periodic cell (extxyz without
``Lattice=``, i-PI's ``CELL(abcABC): 0 0 0``) has cells of zeros, which the minimum-image
functions take as open boundaries.
"""

import contextlib
import functools
import io
import itertools
import lzma
import re
import shutil
import sys
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import ase.io
import ase.units
import numpy as np

from pet.compression import opener
from pet.xyz_frames import frame_layout

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

PROJECT_UNIT_NAMES = {"energy": "eV", "time": "ps", "length": "angstrom", "temperature": "K",
                      "force": "eV/angstrom"}
"""How the results name the project's units, per i-PI dimension."""

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


def existing_file(path) -> Path:
    """``path`` as a Path, or an AnalysisError if it is a directory, does not exist or is empty."""
    path = Path(path)
    if path.is_dir():
        raise AnalysisError(f"{path} is a directory, not a file")
    if not path.is_file():
        raise AnalysisError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AnalysisError(f"{path}: the file is empty")
    return path


@contextlib.contextmanager
def decompressed(path: Path):
    """``path`` itself, or for a ``.gz``, ``.bz2`` or ``.xz`` file a temporary decompressed copy
    named without that suffix (``pos.extxyz.gz`` → ``pos.extxyz``); AnalysisError if it cannot be
    decompressed or holds nothing."""
    open_decompressed = opener(path)
    if open_decompressed is None:
        yield path
        return
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / path.stem
        try:
            with open_decompressed(path, "rb") as source, open(copy, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as error:
            raise AnalysisError(f"{path}: cannot decompress it as {path.suffix} ({error})") from None
        if copy.stat().st_size == 0:
            raise AnalysisError(f"{path}: the file it holds is empty")
        yield copy


def read_text(path) -> str:
    """The text of a (possibly compressed) file; AnalysisError if it is not text (binary data)."""
    path = existing_file(path)
    with decompressed(path) as readable:
        try:
            return readable.read_text()
        except UnicodeDecodeError:
            raise AnalysisError(f"{path}: not a text file (binary data)") from None


def _warn(message: str) -> None:
    """A warning on stderr (the analysis goes on)."""
    print(f"warning: {message}", file=sys.stderr)


def require_count(count: int, minimum: int, what: str, path) -> None:
    """AnalysisError unless ``count`` ≥ ``minimum`` (``what``: "frames", "data rows")."""
    if count < minimum:
        raise AnalysisError(f"{path}: this analysis needs at least {minimum} {what}, the file has {count}")


def check_increasing(values: np.ndarray, what: str, where: str, path) -> None:
    """AnalysisError naming the first ``where`` (e.g. "frame") at which ``values`` (e.g. the time
    column) does not increase: a restart appended to the file, or no time recorded."""
    stalls = np.flatnonzero(np.diff(values) <= 0)
    if stalls.size:
        k = stalls[0] + 1
        raise AnalysisError(f"{path}: {what} does not increase at {where} {k} (counted from 0; "
                            f"{values[k - 1]:g} then {values[k]:g}): a restart appended to the file?")


@contextlib.contextmanager
def _quiet():
    """i-PI's and ASE's parsers without their warnings and prints (i-PI prints its table of units
    before it raises on an unknown one)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _first_lines(path: Path, n_lines):
    """``path`` itself if ``n_lines`` is None, else a temporary copy of its first ``n_lines`` lines
    (for i-PI's and ASE's parsers, which read whole files)."""
    if n_lines is None:
        yield path
        return
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / path.name
        with open(path, "rb") as source, open(copy, "wb") as target:
            target.writelines(itertools.islice(source, n_lines))
        yield copy


IPI_COLUMN_HEADER = re.compile(r"^#\s*(?:column\s+\d+|cols\.\s+\d+-\d+)\s+-->", re.MULTILINE)
"""A header line of an i-PI properties file (``# column   3     --> conserved{electronvolt}``,
``#cols.    4-6   --> ...`` for a vector)."""


def is_properties_text(text: str) -> bool:
    """Whether ``text`` has the header lines of an i-PI properties file."""
    return IPI_COLUMN_HEADER.search(text) is not None


def _complete_rows(readable: Path, path: Path):
    """The number of lines before the last data row of a properties file if that row is
    incomplete (fewer fields than the first row, or no end of line), else None (also for a file
    without i-PI's '# column N -->' header, left to the parser to report); ``readable``: the file
    to read, ``path``: its name for the warning."""
    text = readable.read_text()
    lines = text.splitlines(keepends=True)
    rows = [k for k, line in enumerate(lines) if line.strip() and not line.startswith("#")]
    if not rows or not is_properties_text(text):
        return None
    last = lines[rows[-1]]
    if last.endswith("\n") and len(last.split()) == len(lines[rows[0]].split()):
        return None
    _warn(f"{path}: the last data row is incomplete (a run still writing, or cut short): it is left out")
    return rows[-1]


def _unit_name(dimension: str, units) -> str:
    """The unit of a column's values after :func:`read_properties`: the project's for the
    dimensions it converts, else as written ('atomic_unit' if not written, '' for numbers)."""
    if dimension in PROJECT_UNIT_NAMES:
        return PROJECT_UNIT_NAMES[dimension]
    if units:
        return units
    return "" if dimension in ("number", "undefined") else "atomic_unit"


def _to_project_units(data: np.ndarray, name: str, dimension: str, units, path) -> np.ndarray:
    """A column's values in the project's unit of its dimension (as read for other dimensions)."""
    if dimension not in PROJECT_UNITS:
        return data
    try:
        with _quiet():
            return unit_to_user(dimension, PROJECT_UNITS[dimension],
                                unit_to_internal(dimension, units or "atomic_unit", data))
    except (TypeError, ValueError, KeyError, IndexError):
        raise AnalysisError(f"{path}: column '{name}': '{units}' is not an i-PI unit of {dimension}") from None


class Columns(dict):
    """The columns of a properties file, {name: (n_rows,) or (n_rows, k) array}, and ``units``,
    {name: unit of the values} (eV, ps, angstrom, K, eV/angstrom, else as written)."""

    def __init__(self, values: dict, units: dict):
        super().__init__(values)
        self.units = units


def read_properties(path) -> Columns:
    """Columns of an i-PI properties file in project units (:class:`Columns`).

    Names are i-PI's, arguments included (``time``, ``conserved``, ``pot_component_raw(1)``). An
    incomplete last row (a run still writing) is left out, with a warning on stderr. A ``.gz``,
    ``.bz2`` or ``.xz`` file is decompressed first.
    """
    path = existing_file(path)
    try:
        with decompressed(path) as readable, _quiet(), \
                _first_lines(readable, _complete_rows(readable, path)) as complete:
            values, info = read_output(str(complete))
    except UnicodeDecodeError:
        raise AnalysisError(f"{path}: not a text file (binary data): not an i-PI properties file") from None
    except (ValueError, IndexError) as error:
        raise AnalysisError(f"{path}: cannot read as an i-PI properties file ({error})") from None
    if not values:
        raise AnalysisError(f"{path}: no '# column N --> name' header lines: not an i-PI properties file")
    columns, units = {}, {}
    for name, data in values.items():
        data = np.asarray(data, dtype=float)
        if data.ndim == 0:
            data = data.reshape(1)
        dimension = _property_dimensions().get(name.split("(")[0], "undefined")
        columns[name] = _to_project_units(data, name, dimension, info[name][0], path)
        units[name] = _unit_name(dimension, info[name][0])
    if len(next(iter(columns.values()))) == 0:
        raise AnalysisError(f"{path}: the properties file has a header but no complete data rows")
    return Columns(columns, units)


def column(columns: dict, name: str, path) -> np.ndarray:
    """``columns[name]`` as a (T,) series, or an AnalysisError naming the file: no such column
    (the columns it does have are listed), several values per row, or a NaN or infinite value
    (a run that blew up; the first such data row is named)."""
    if name not in columns:
        raise AnalysisError(f"{path}: no column '{name}' (columns: {', '.join(columns)})")
    values = columns[name]
    if values.ndim != 1:
        raise AnalysisError(f"{path}: column '{name}' has several values per row")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise AnalysisError(f"{path}: column '{name}' is {values[bad[0]]} in data row {bad[0]} "
                            "(counted from 0): a run that blew up?")
    return values


def time_column(columns: dict, path, min_rows: int) -> np.ndarray:
    """The ``time`` column (ps): at least ``min_rows`` rows, strictly increasing."""
    time = column(columns, "time", path)
    require_count(len(time), min_rows, "data rows", path)
    check_increasing(time, "the time column", "data row", path)
    return time


@dataclass
class Trajectory:
    """One i-PI trajectory file.

    ``quantity``: i-PI's name of what the file holds (positions, velocities, forces,
    forces_component_raw, ...); ``dimension``: its i-PI dimension (length, velocity, force);
    ``symbols`` (N,); ``masses`` (N,) amu; ``steps`` (F,) MD steps; ``cells`` (F, 3, 3) Å,
    rows = lattice vectors, all zeros without a periodic cell; ``values`` (F, N, 3) in Å, Å/ps
    or eV/Å.
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

    @property
    def periodic(self) -> bool:
        """Whether the frames have a periodic cell (the reader allows all or none)."""
        return bool(np.any(self.cells))

    def require_cell(self, need: str) -> None:
        """AnalysisError unless the frames have a periodic cell; ``need`` says what needs it."""
        if not self.periodic:
            raise AnalysisError(f"{self.path}: no periodic cell (an extxyz without Lattice=, or "
                                f"CELL(abcABC): 0 0 0 ...): {need}")

    def first_non_finite_frame(self):
        """Index of the first frame with a NaN or infinite value or cell entry, or None."""
        finite = np.isfinite(self.values).all(axis=(1, 2)) & np.isfinite(self.cells).all(axis=(1, 2))
        return None if finite.all() else int(np.argmin(finite))


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


def _read_xyz(readable: Path, comment: str, path: Path):
    """Values in ASE units via i-PI's reader, told the units named in the first comment line;
    ``readable``: the file to parse, ``path``: the name for messages."""
    quantity, units = _comment_quantity(comment, path)
    dimension = _trajectory_dimensions()[quantity]
    keywords = {"dimension": dimension, "units": units} if units else {}
    frames = ipi_read_trajectory(str(readable), format="xyz", **keywords)
    steps = _comment_steps(readable, len(frames))
    if dimension == "length":
        values = [frame.positions for frame in frames]
    else:
        values = [frame.arrays[quantity] for frame in frames]
    return quantity, dimension, frames, steps, values


def _read_extxyz(readable: Path, path: Path):
    """Values in ASE units from the units of the ipi_comment (i-PI writes 'ase'); cells in Å."""
    frames = ase.io.read(str(readable), ":", format="extxyz")
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
        values = [scale * _per_atom_column(frame, quantity, index, path) for index, frame in enumerate(frames)]
    return quantity, dimension, frames, steps, values


def _per_atom_column(frame, quantity: str, index: int, path: Path) -> np.ndarray:
    """The (n_atoms, 3) column ``quantity`` of an extxyz frame: ASE's reader keeps most columns in
    ``frame.arrays`` but moves ``forces`` (how i-PI's format="ase" writes a forces trajectory) into
    a SinglePointCalculator."""
    if quantity in frame.arrays:
        return frame.arrays[quantity]
    if frame.calc is not None and quantity in frame.calc.results:
        return frame.calc.results[quantity]
    raise AnalysisError(f"{path}: frame {index} has no {quantity} column, which its ipi_comment names")


def _complete_frames(readable: Path, path: Path):
    """The number of lines of the complete frames of an xyz file whose last frame is incomplete
    (:func:`pet.xyz_frames.frame_layout`), with a warning on stderr naming ``path``; None if the
    file ends with a whole frame or is not laid out as xyz frames (left to the parser to report)."""
    with open(readable, "rb") as handle:
        layout = frame_layout(handle)
    if layout.malformed_line is not None or not layout.incomplete:
        return None
    n_lines, complete = layout.n_lines, layout.n_frames
    if complete == 0:
        raise AnalysisError(f"{path}: its only frame is incomplete (a run still writing, or cut short)")
    _warn(f"{path}: the last frame is incomplete (a run still writing, or cut short): "
          f"reading the {complete} complete frames")
    return n_lines


def _cells(frames, path: Path) -> np.ndarray:
    """(F, 3, 3) cells in Å, zeros in a frame without a periodic cell (a lattice vector of zero
    length: extxyz without Lattice=, i-PI's CELL(abcABC): 0 0 0 ..., which i-PI reads with NaN);
    AnalysisError if some frames have a cell and others not."""
    cells = np.asarray([np.asarray(frame.cell) for frame in frames], dtype=float)
    empty = np.any(np.all(cells == 0, axis=-1), axis=-1)
    if empty.any() and not empty.all():
        raise AnalysisError(f"{path}: frame {np.argmax(empty)} has no periodic cell but frame "
                            f"{np.argmin(empty)} has one")
    cells[empty] = 0.0
    return cells


def _same_atoms(frames, path: Path) -> None:
    """AnalysisError naming the first frame whose atoms (their number, elements or order) differ
    from frame 0's: every analysis of a trajectory follows the same atoms through it."""
    first = frames[0]
    for index, frame in enumerate(frames):
        if len(frame) != len(first):
            raise AnalysisError(f"{path}: frames have different atom counts (frame {index} has {len(frame)} "
                                f"atoms, frame 0 has {len(first)}): a trajectory must hold the same atoms in "
                                "every frame")
        if not np.array_equal(frame.numbers, first.numbers):
            raise AnalysisError(f"{path}: frame {index} holds other elements, or the same in another order, "
                                "than frame 0: a trajectory must hold the same atoms in every frame")


def _parse_trajectory(readable: Path, path: Path):
    """(quantity, dimension, ASE frames, steps, values in ASE units) of an xyz or extxyz file,
    without its incomplete last frame; ``readable``: the (decompressed) file, ``path``: its name."""
    with open(readable) as handle:
        handle.readline()
        comment = handle.readline()
    extended = readable.suffix == ".extxyz" or "Lattice=" in comment
    if not extended and "CELL" not in comment:
        raise AnalysisError(f"{path}: neither an i-PI xyz (no CELL in the comment line) nor an extended XYZ file")
    with _quiet(), _first_lines(readable, _complete_frames(readable, path)) as complete:
        if extended:
            return _read_extxyz(complete, path)
        return _read_xyz(complete, comment, path)


def read_trajectory(path, dimension: str = None, finite: bool = True) -> Trajectory:
    """An i-PI trajectory: ``.xyz`` in i-PI's format (CELL in the comment line), or extended XYZ
    (i-PI's ``format="ase"``, or any extxyz with a Lattice: positions in Å), either of them possibly
    compressed (``.gz``, ``.bz2``, ``.xz``). An incomplete last frame (a run still writing) is left
    out, with a warning on stderr; every frame must hold the atoms of the first.

    ``dimension``: "length", "velocity" or "force" to insist on what the file holds;
    ``finite``: an AnalysisError naming the first frame with a NaN or infinite value (a run that
    blew up); False: the values as they are (see :meth:`Trajectory.first_non_finite_frame`).
    """
    path = existing_file(path)
    try:
        with decompressed(path) as readable:
            quantity, found, frames, steps, values = _parse_trajectory(readable, path)
    except AnalysisError:
        raise
    except UnicodeDecodeError:
        raise AnalysisError(f"{path}: not a text file (binary data): not an i-PI trajectory") from None
    except Exception as error:  # i-PI's and ASE's parsers raise many kinds on a malformed file
        raise AnalysisError(f"{path}: cannot read as an i-PI trajectory ({type(error).__name__}: {error})") from None
    if not frames:
        raise AnalysisError(f"{path}: no frames")
    _same_atoms(frames, path)
    if dimension is not None and found != dimension:
        raise AnalysisError(f"{path} holds {quantity} ({found}), expected a {dimension} trajectory")
    values = np.asarray(values, dtype=float)
    if found == "velocity":
        values = values * ASE_VELOCITY_TO_A_PER_PS
    elif found not in ("length", "force"):
        raise AnalysisError(f"{path}: {quantity} ({found}) is not positions, velocities or forces")
    trajectory = Trajectory(
        path=path, quantity=quantity, dimension=found,
        symbols=list(frames[0].get_chemical_symbols()),
        masses=np.asarray(frames[0].get_masses(), dtype=float),
        steps=np.asarray(steps, dtype=int),
        cells=_cells(frames, path),
        values=values,
    )
    bad = trajectory.first_non_finite_frame()
    if finite and bad is not None:
        raise AnalysisError(f"{path}: frame {bad} (step {trajectory.steps[bad]}) holds NaN or infinite "
                            f"{quantity}: a run that blew up?")
    return trajectory


def frame_interval(trajectory: Trajectory, dt_fs: float, min_frames: int = 2) -> float:
    """ps between the frames of ``trajectory`` (at least ``min_frames``, saved at a uniform
    stride), given i-PI's ``<timestep>`` in fs."""
    require_count(len(trajectory), min_frames, "frames", trajectory.path)
    check_increasing(trajectory.steps, "the step", "frame", trajectory.path)
    spacing = np.diff(step_times(trajectory.steps, dt_fs))
    if np.ptp(spacing) > 1e-6 * spacing.mean():
        raise AnalysisError(f"{trajectory.path}: frames must be saved at a uniform stride (steps "
                            f"{', '.join(map(str, trajectory.steps[:4]))}, ...)")
    return float(spacing.mean())


def common_frames(first: Trajectory, second: Trajectory):
    """Indices (into first, into second) of the MD steps both trajectories hold, in order."""
    if first.symbols != second.symbols:
        raise AnalysisError(f"{first.path} and {second.path} hold different atoms")
    steps, in_first, in_second = np.intersect1d(first.steps, second.steps, return_indices=True)
    if len(steps) == 0:
        raise AnalysisError(f"{first.path} and {second.path} share no MD step")
    return in_first, in_second


def two_columns(text: str, path, length_unit: str = "angstrom") -> np.ndarray:
    """(n, 2) numbers from the ``text`` of the table ``path`` (named in errors), first column in Å.

    Lines that do not start with two numbers (comments, quoted headers) are skipped;
    ``length_unit``: "angstrom" or "bohr".
    """
    scale = {"angstrom": 1.0, "bohr": ase.units.Bohr}.get(length_unit)
    if scale is None:
        raise AnalysisError(f"unknown length unit '{length_unit}' for {path} (angstrom or bohr)")
    rows = []
    for line in text.splitlines():
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
    return np.asarray(steps, dtype=float) * dt_fs * 1e-3
