"""The revPBE0-D3 bulk-water data set (Cheng et al., PNAS 116, 1110 (2019)): reading, download, split.

Frames are ``ase.Atoms`` with the DFT energy (eV) and forces (eV/Å) attached as a
SinglePointCalculator. Two sources:

- a local extended-XYZ file in Å/eV with ``energy`` (info) and ``forces`` (arrays), e.g.
  ``../shared/data/water-revpbe0-1396.xyz.gz`` (1396 of the 1593 frames);
- the public original, ``training-set/dataset_1593.xyz`` of the GitHub repository
  BingqingCheng/neural-network-potential-for-water-revPBE0-D3, in Bohr / Hartree with keys
  ``TotEnergy`` and ``force``: :func:`download_full_dataset` fetches it once, converts it to Å/eV
  and caches it in the user's cache directory.

:func:`read_structures` also reads unlabelled structures: any ASE-readable file, and i-PI's own
xyz trajectories (a ``# CELL(abcABC): ...`` comment line, units in the comment), read with i-PI's
reader so that the cell and the units are right; an i-PI trajectory must hold positions (not
forces or velocities). :func:`check_frame` checks that a frame is a structure: finite positions
and cell within :data:`pet.neighbors.MAX_COORDINATE` of the origin, no two atoms closer than
:data:`pet.neighbors.OVERLAP_DISTANCE` (every frame of :func:`read_frames`; pet-eval checks the
frames it evaluates).
"""

import gzip
import io
import os
import re
import shutil
import sys
import warnings
import urllib.error
import urllib.request
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from ase.io.extxyz import key_val_str_to_dict
from ase.units import Bohr, Hartree

from .compression import inner_name, opener
from .models import environment_path
from .xyz_frames import frame_layout
from .neighbors import OVERLAP_DISTANCE, check_structure, closest_pair

FULL_DATASET_URL = (
    "https://raw.githubusercontent.com/BingqingCheng/"
    "neural-network-potential-for-water-revPBE0-D3/master/training-set/dataset_1593.xyz"
)
FULL_DATASET_NAME = "water-revpbe0-1593.xyz.gz"
SHARED_DATASET = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "water-revpbe0-1396.xyz.gz"

IPI_STRUCTURES = ("positions", "x_centroid")
"""i-PI trajectory quantities that are structures (positions; the ring polymers' centroids)."""

IPI_QUANTITY = re.compile(r"(\w+)\{[^}]*\}")
"""A quantity and its units in an i-PI comment line, e.g. ``forces{atomic_unit}``."""


class DataError(ValueError):
    """A data file that is missing, unreadable or lacks energies and forces."""


def _environment_path(name: str, what: str) -> Optional[Path]:
    """:func:`pet.models.environment_path` with a DataError for a set but empty variable."""
    try:
        return environment_path(name, what)
    except ValueError as error:
        raise DataError(str(error)) from None


def cache_dir() -> Path:
    """$PET_IPI_CACHE, else $XDG_CACHE_HOME/pet-ipi (an empty one is ignored, as the XDG
    specification says), else ~/.cache/pet-ipi; DataError if $PET_IPI_CACHE is set but empty."""
    cache = _environment_path("PET_IPI_CACHE", "a folder")
    if cache is not None:
        return cache
    return Path(os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache") / "pet-ipi"


def _labelled(atoms: Atoms, energy: float, forces: np.ndarray) -> Atoms:
    frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.info.update({k: v for k, v in atoms.info.items() if k not in ("energy", "TotEnergy")})
    frame.calc = SinglePointCalculator(frame, energy=float(energy), forces=np.asarray(forces, float))
    return frame


def _read_extxyz_fast(path, text: str) -> List[Atoms]:
    """All frames of the extended-XYZ ``text`` of ``path``, parsed with numpy: ASE's reader takes
    minutes on the 1396-frame file. Columns follow each frame's ``Properties``; ``text`` holds
    whole frames (:func:`complete_frames_text`), lines split at newlines only, as there."""
    lines = text.split("\n")
    frames, line = [], 0
    while line < len(lines) and lines[line].strip():
        n_atoms = int(lines[line])
        info = key_val_str_to_dict(lines[line + 1])
        rows = [text.split() for text in lines[line + 2: line + 2 + n_atoms]]
        columns, start = {}, 0
        fields = info.pop("Properties", "species:S:1:pos:R:3").split(":")
        for name, kind, width in zip(fields[::3], fields[1::3], fields[2::3]):
            block = [row[start:start + int(width)] for row in rows]
            columns[name] = block if kind == "S" else np.array(block, dtype=float)
            start += int(width)
        periodic = "Lattice" in info  # extended XYZ: a Lattice without pbc means periodic
        atoms = Atoms(symbols=[row[0] for row in columns["species"]], positions=columns["pos"],
                      cell=info.pop("Lattice").T if periodic else None,
                      pbc=info.pop("pbc", periodic))
        energy = info.pop("energy", None)
        atoms.info.update(info)
        if energy is not None or "forces" in columns:
            atoms.calc = SinglePointCalculator(
                atoms, energy=None if energy is None else float(energy), forces=columns.get("forces"))
        for name, values in columns.items():
            if name not in ("species", "pos", "forces"):
                atoms.arrays[name] = np.asarray(values)
        frames.append(atoms)
        line += 2 + n_atoms
    return frames


def open_text(path: Path):
    """``path`` opened as text, decompressed if its name says it is compressed."""
    return (opener(path) or open)(path, "rt", errors="replace")


def complete_frames_text(path: Path, whole_file: bool = False) -> str:
    """The text of the xyz or extxyz file ``path`` (possibly compressed) up to its last complete
    frame (:func:`pet.xyz_frames.frame_layout`). An incomplete last frame (a run still writing, or
    cut short) is left out with a warning on stderr, or with ``whole_file`` is a DataError, as is
    a file whose only frame is incomplete, or a line where a frame's atom count should be and is
    not (a blank line or other text between frames: the frames after it would be lost)."""
    with open_text(path) as handle:
        lines = handle.readlines()
    layout = frame_layout(lines)
    start = layout.n_lines + 1
    if layout.malformed_line is not None:
        raise DataError(f"cannot read {path}: line {layout.malformed_line} should be the atom count of frame "
                        f"{layout.n_frames} (from 0) and is not (a blank line or other text between frames?)")
    if not layout.incomplete:
        return "".join(lines)
    if whole_file:
        raise DataError(f"{path}: frame {layout.n_frames} (from 0; line {start}) is truncated: fewer "
                        "lines than its atom count, or its last line unfinished (a file cut short?)")
    if layout.n_frames == 0:
        raise DataError(f"{path}: its only frame is incomplete (a run still writing, or cut short)")
    print(f"warning: {path}: the last frame (from line {start}) is incomplete (a run still writing, or "
          f"cut short): reading the {layout.n_frames} complete frames before it", file=sys.stderr)
    return "".join(lines[:layout.n_lines])


def _comment_line(text: str) -> str:
    """The second line of an xyz ``text`` (its first frame's comment), "" if it has none."""
    lines = text.split("\n", 2)
    return lines[1] if len(lines) > 1 else ""


def is_ipi_xyz(path) -> bool:
    """Whether ``path`` is an xyz file written by i-PI, possibly compressed (its first comment line
    names the cell)."""
    with open_text(Path(path)) as handle:
        handle.readline()
        return "CELL(" in handle.readline()


def check_ipi_quantity(comment: str, path) -> None:
    """DataError unless the i-PI ``comment`` line of ``path`` names a structure trajectory
    (:data:`IPI_STRUCTURES`, or no quantity: i-PI then reads positions), not e.g. forces."""
    quantities = [name for name in IPI_QUANTITY.findall(comment) if name != "cell"]
    if quantities and quantities[0] not in IPI_STRUCTURES:
        raise DataError(f"{path} is an i-PI trajectory of {quantities[0]}, not of positions: give "
                        "the positions trajectory (e.g. simulation.pos_0.xyz)")


def read_ipi_xyz(path, text: Optional[str] = None) -> List[Atoms]:
    """Every frame of an i-PI xyz trajectory of positions (``path``, possibly compressed, or its
    ``text``): in Å, the cell as ASE has it (rows = lattice vectors), periodic; a cell with a zero
    lattice vector (i-PI's ``CELL(abcABC): 0 0 0 ...``, no cell) gives open boundaries."""
    if text is None:
        with open_text(Path(path)) as handle:
            text = handle.read()
    check_ipi_quantity(_comment_line(text), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ipi.utils.io import iter_file
        from ipi.utils.units import unit_to_user

        frames = []
        with io.StringIO(text) as handle:
            for frame in iter_file("xyz", handle, dimension="length"):
                positions = unit_to_user("length", "angstrom", frame["atoms"].q.reshape(-1, 3))
                cell = unit_to_user("length", "angstrom", frame["cell"].h.T)
                periodic = not np.any(np.all(cell == 0, axis=1))  # i-PI reads abc = 0 with NaNs
                frames.append(Atoms(frame["atoms"].names, positions=positions,
                                    cell=cell if periodic else None, pbc=periodic))
    return frames


def check_frame(atoms: Atoms, where: str) -> None:
    """DataError unless ``atoms`` is a structure PET can evaluate (``where``: "FILE: frame K" for
    the message): finite positions and cell, within :data:`pet.neighbors.MAX_COORDINATE` Å of the
    origin, no two atoms closer than :data:`pet.neighbors.OVERLAP_DISTANCE` Å (periodic images
    included)."""
    cell = np.asarray(atoms.cell)
    try:
        check_structure(atoms.numbers, atoms.positions, cell, atoms.pbc)
        pair = closest_pair(atoms.positions, cell, atoms.pbc)
    except ValueError as error:
        raise DataError(f"{where}: {error}") from None
    if pair is not None:
        i, j, distance = pair
        raise DataError(f"{where}: atoms {i} and {j} overlap ({distance:.3f} Å apart, less than "
                        f"{OVERLAP_DISTANCE} Å): not a structure (one that blew up, or not in Å?)")


def read_structures(path, whole_file: bool = False) -> List[Atoms]:
    """Every frame of an ASE-readable file in Å/eV or of an i-PI xyz trajectory, labelled or not:
    an energy (eV) and forces (eV/Å) stored in the file are attached as a SinglePointCalculator,
    as far as they exist. DataError for an i-PI trajectory of another quantity than positions
    (the frames are not checked: see :func:`check_frame`). The incomplete last frame of an xyz
    or extxyz file is left out with a warning, or with ``whole_file`` is an error
    (:func:`complete_frames_text`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no data file at {path}")
    try:
        name = inner_name(path)
        if name.endswith((".xyz", ".extxyz")):
            text = complete_frames_text(path, whole_file)
            if name.endswith(".xyz") and "CELL(" in _comment_line(text):
                frames = read_ipi_xyz(path, text)
            else:
                frames = _read_extxyz_fast(path, text) if text else []
        else:
            frames = read(path, index=":")
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"cannot read {path}: {type(error).__name__}: {error}") from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise DataError(f"{path} holds no frames")
    check_ipi_quantity(str(frames[0].info.get("ipi_comment", "")), path)  # i-PI's extxyz ("ase")
    return frames


def missing_labels(atoms: Atoms) -> List[str]:
    """Which of "energy" and "forces" ``atoms`` does not carry (a file's stored labels)."""
    results = getattr(atoms.calc, "results", None) or {}
    return [name for name in ("energy", "forces") if results.get(name) is None]


def read_frames(path) -> List[Atoms]:
    """Labelled frames (energy in eV, forces in eV/Å) from an ASE-readable file in Å/eV; DataError
    naming the file and the frame (counted from 0) for one that is not a structure
    (:func:`check_frame`), lacks a label or is incomplete (a data set is not a run still writing)."""
    labelled = []
    for number, atoms in enumerate(read_structures(path, whole_file=True)):
        check_frame(atoms, f"{path}: frame {number}")
        missing = missing_labels(atoms)
        if missing:
            raise DataError(f"{path}: frame {number} has no {' and no '.join(missing)} "
                            "(training needs both an energy and forces)")
        labelled.append(_labelled(atoms, atoms.get_potential_energy(), atoms.get_forces()))
    return labelled


def convert_atomic_units(frames: Sequence[Atoms]) -> List[Atoms]:
    """Frames of the original file (Bohr, Hartree, Hartree/Bohr; ``TotEnergy``, ``force``) in Å/eV."""
    converted = []
    for number, atoms in enumerate(frames):
        if "TotEnergy" not in atoms.info or "force" not in atoms.arrays:
            raise DataError(f"frame {number} lacks TotEnergy or force: not the original data format")
        scaled = Atoms(numbers=atoms.numbers, positions=atoms.positions * Bohr,
                       cell=np.asarray(atoms.cell) * Bohr, pbc=True)
        scaled.info["source_index"] = number
        converted.append(_labelled(scaled, atoms.info["TotEnergy"] * Hartree,
                                   atoms.arrays["force"] * Hartree / Bohr))
    return converted


def download_full_dataset(url: str = FULL_DATASET_URL, cache: Optional[Path] = None,
                          timeout: float = 60.0) -> Path:
    """Download the 1593-frame set once, convert it to Å/eV; returns the cached file's path."""
    target = Path(cache or cache_dir()) / FULL_DATASET_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    raw = target.with_name("dataset_1593.xyz.part")
    print(f"downloading the revPBE0-D3 water data set from {url} ...", flush=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(raw, "wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError) as error:
        raw.unlink(missing_ok=True)
        raise DataError(
            f"cannot download {url} ({error}); when offline, download it elsewhere and pass its "
            f"path, or put the converted file at {target}"
        ) from None
    frames = convert_atomic_units(read(raw, index=":", format="extxyz"))
    with gzip.open(target.with_suffix(".part"), "wt") as out:
        write(out, frames, format="extxyz")
    target.with_suffix(".part").replace(target)
    raw.unlink()
    print(f"saved {len(frames)} frames in Å/eV to {target}", flush=True)
    return target


def environment_dataset() -> Optional[Path]:
    """$PET_IPI_DATA (``~`` expanded), None if it is not set; DataError if it is set but empty."""
    return _environment_path("PET_IPI_DATA", "a data file")


def default_dataset() -> Path:
    """The data set commands use by default: $PET_IPI_DATA, the 1396-frame file in ../shared/data
    next to this checkout, or the full set in the cache (downloaded if needed)."""
    chosen = environment_dataset()
    if chosen is not None:
        return chosen
    if SHARED_DATASET.is_file():
        return SHARED_DATASET
    return download_full_dataset()


def split_indices(n_frames: int, fractions=(0.9, 0.05, 0.05), seed: int = 0) -> dict:
    """Deterministic random split of ``range(n_frames)``: {"train", "validation", "test"} lists."""
    if n_frames < 3:
        raise DataError(f"need at least 3 frames to split, got {n_frames}")
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or np.any(fractions <= 0) or abs(fractions.sum() - 1) > 1e-9:
        raise DataError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(n_frames)
    n_validation = max(1, int(round(fractions[1] * n_frames)))
    n_test = max(1, int(round(fractions[2] * n_frames)))
    n_train = n_frames - n_validation - n_test
    return {
        "train": sorted(order[:n_train].tolist()),
        "validation": sorted(order[n_train:n_train + n_validation].tolist()),
        "test": sorted(order[n_train + n_validation:].tolist()),
        "seed": seed,
        "n_frames": n_frames,
    }
