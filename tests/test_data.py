"""pet.data: reading the shared data set, splitting, the original format's units, download and cache."""

import bz2
import gzip
import lzma
import re
from io import BytesIO, StringIO

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read
from ase.io import write as ase_write
from ase.units import Bohr, Hartree

from pet import data
from pet.data import DataError, convert_atomic_units, download_full_dataset, read_frames, split_indices
from pet.xyz_frames import frame_layout

DATASET = "water-revpbe0-1396.xyz.gz"

ORIGINAL_FORMAT = """3
Lattice="10.0 0.0 0.0 0.0 11.0 0.0 0.0 0.0 12.0" Properties=species:S:1:pos:R:3:force:R:3 TotEnergy=-17.25
O 1.0 2.0 3.0 0.01 -0.02 0.03
H 2.8 2.0 3.0 -0.01 0.02 0.0
H 1.0 3.8 3.0 0.0 0.0 -0.03
3
Lattice="10.0 0.0 0.0 0.0 11.0 0.0 0.0 0.0 12.0" Properties=species:S:1:pos:R:3:force:R:3 TotEnergy=-17.5
O 1.1 2.0 3.0 0.02 -0.01 0.0
H 2.9 2.1 3.0 -0.02 0.01 0.01
H 1.1 3.7 3.1 0.0 0.0 -0.01
"""
"""Two frames in the format of the public original (extended XYZ in Bohr, Hartree, Hartree/Bohr)."""


@pytest.fixture(scope="module")
def shared_frames(data_dir):
    return read_frames(data_dir / DATASET)


def test_read_frames_matches_ase_reader(shared_frames, data_dir):
    assert len(shared_frames) == 1396
    reference = read(data_dir / DATASET, index="0:3")  # ASE is slow on the whole file: a few frames
    for ours, theirs in zip(shared_frames, reference):
        assert np.array_equal(ours.numbers, theirs.numbers)
        np.testing.assert_allclose(ours.positions, theirs.positions, rtol=0, atol=1e-12)
        np.testing.assert_allclose(ours.cell[:], theirs.cell[:], rtol=0, atol=1e-12)
        assert list(ours.pbc) == list(theirs.pbc) == [True, True, True]
        assert ours.get_potential_energy() == pytest.approx(theirs.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(ours.get_forces(), theirs.get_forces(), rtol=0, atol=1e-12)
        assert ours.info["source_index"] == theirs.info["source_index"]
    assert all(len(a) == 192 for a in shared_frames)
    assert len({int(a.info["source_index"]) for a in shared_frames}) == 1396


def test_split_is_reproducible_disjoint_and_covering():
    split = split_indices(200, (0.8, 0.1, 0.1), seed=7)
    assert split == split_indices(200, (0.8, 0.1, 0.1), seed=7)
    parts = [set(split[k]) for k in ("train", "validation", "test")]
    assert [len(p) for p in parts] == [160, 20, 20]
    assert set().union(*parts) == set(range(200))
    assert sum(len(p) for p in parts) == 200
    assert split["seed"] == 7 and split["n_frames"] == 200
    assert split_indices(200, (0.8, 0.1, 0.1), seed=8)["test"] != split["test"]
    small = split_indices(3, (0.9, 0.05, 0.05), seed=0)  # every part gets at least one frame
    assert all(len(small[k]) == 1 for k in ("train", "validation", "test"))


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.9, 0.1, 0.0), (0.6, 0.3, 0.3), (1.2, -0.1, -0.1)])
def test_bad_split_fractions(fractions):
    with pytest.raises(DataError, match="fractions"):
        split_indices(100, fractions)


def test_too_few_frames_to_split():
    with pytest.raises(DataError, match="at least 3"):
        split_indices(2)


def test_missing_corrupt_and_unlabelled_files(tmp_path):
    with pytest.raises(DataError, match="no data file"):
        read_frames(tmp_path / "absent.xyz")
    corrupt = tmp_path / "corrupt.xyz"
    corrupt.write_text("this is not\nan xyz file\n")
    with pytest.raises(DataError, match="cannot read"):
        read_frames(corrupt)
    truncated = tmp_path / "truncated.xyz"
    truncated.write_text("3\nProperties=species:S:1:pos:R:3 energy=1.0\nO 0 0 0\nH 1 0 0\n")
    with pytest.raises(DataError, match="truncated"):
        read_frames(truncated)
    gap = tmp_path / "gap.xyz"  # the parser stopped at the blank line: frames after it were lost
    frame = "3\nProperties=species:S:1:pos:R:3 energy=1.0\nO 0 0 0\nH 0.96 0 0\nH 0 0.96 0\n"
    gap.write_text(frame + "\n" + frame)
    with pytest.raises(DataError, match="line 6 should be the atom count of frame 1 \\(from 0\\) and is not"):
        data.read_structures(gap)
    broken_gz = tmp_path / "broken.xyz.gz"
    broken_gz.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="cannot read"):
        read_frames(broken_gz)
    unlabelled = tmp_path / "unlabelled.xyz"
    unlabelled.write_text("3\nProperties=species:S:1:pos:R:3\nO 0 0 0\nH 0.96 0 0\nH 0 0.96 0\n")
    with pytest.raises(DataError, match="frame 0 has no energy and no forces"):
        read_frames(unlabelled)
    (frame,) = data.read_structures(unlabelled)  # pet-eval reads frames without labels
    assert frame.calc is None and not frame.pbc.any()


@pytest.mark.parametrize("properties, values, missing", [
    ("species:S:1:pos:R:3 energy=-1.5", "", "has no forces"),
    ("species:S:1:pos:R:3:forces:R:3", " 0.1 0 0", "has no energy"),
])
def test_frame_with_one_label_says_which_is_missing(tmp_path, properties, values, missing):
    path = tmp_path / "half-labelled.xyz"
    path.write_text(f"1\nProperties={properties}\nH 0 0 0{values}\n")
    with pytest.raises(DataError) as error:
        read_frames(path)
    assert f"frame 0 {missing} (training needs both" in str(error.value)
    assert "and no" not in str(error.value)


def test_lattice_without_pbc_is_periodic(tmp_path):
    path = tmp_path / "cell.xyz"
    path.write_text('3\nLattice="5 0 0 0 6 0 0 0 7" Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.5\n'
                    "O 0 0 0 0.1 0 0\nH 0.96 0 0 -0.1 0 0\nH 0 0.96 0 0 0 0\n")
    (ours,) = read_frames(path)
    theirs = read(path)
    assert list(ours.pbc) == list(theirs.pbc) == [True, True, True]
    np.testing.assert_allclose(ours.cell[:], np.diag([5.0, 6.0, 7.0]))


def read_text(text):
    """Frames of extended-XYZ ``text``, as ASE reads them."""
    return read(StringIO(text), index=":", format="extxyz")


def _check_converted(frames, rtol=1e-12):
    """``frames`` are :data:`ORIGINAL_FORMAT` in Å/eV (``rtol``: the cached file keeps 8 decimals)."""
    original = read_text(ORIGINAL_FORMAT)
    assert len(frames) == 2
    for number, (atoms, source) in enumerate(zip(frames, original)):
        np.testing.assert_allclose(atoms.positions, source.positions * Bohr, rtol=rtol)
        np.testing.assert_allclose(atoms.cell[:], np.diag([10.0, 11.0, 12.0]) * Bohr, rtol=rtol)
        assert atoms.pbc.all()
        assert atoms.get_potential_energy() == pytest.approx(source.info["TotEnergy"] * Hartree, rel=rtol)
        np.testing.assert_allclose(atoms.get_forces(), source.arrays["force"] * Hartree / Bohr, rtol=rtol)
        assert atoms.info["source_index"] == number


def test_convert_atomic_units():
    frames = convert_atomic_units(read_text(ORIGINAL_FORMAT))
    _check_converted(frames)
    # the factors of ../shared/data/README.md (CODATA 2018; ase.units is CODATA 2014, 1e-8 apart)
    assert frames[0].get_potential_energy() == pytest.approx(-17.25 * 27.211386245988, rel=1e-7)
    assert frames[0].positions[1, 0] == pytest.approx(2.8 * 0.529177210903, rel=1e-7)
    assert frames[0].get_forces()[0, 1] == pytest.approx(-0.02 * 27.211386245988 / 0.529177210903, rel=1e-7)
    labelled_in_ev = read_text("1\nProperties=species:S:1:pos:R:3:forces:R:3 energy=1.0\nH 0 0 0 0 0 0\n")
    with pytest.raises(DataError, match="not the original data format"):
        convert_atomic_units(labelled_in_ev)


def test_download_converts_and_caches(tmp_path, monkeypatch):
    source = tmp_path / "dataset_1593.xyz"
    source.write_text(ORIGINAL_FORMAT)
    cache = tmp_path / "cache"
    monkeypatch.setenv("PET_IPI_CACHE", str(cache))
    path = download_full_dataset(url=source.as_uri())
    assert path == cache / data.FULL_DATASET_NAME and path.is_file()
    with gzip.open(path, "rt") as handle:
        assert "TotEnergy" not in handle.read()
    _check_converted(read_frames(path), rtol=1e-7)
    assert sorted(p.name for p in cache.iterdir()) == [data.FULL_DATASET_NAME]  # no partial files left
    source.unlink()
    assert download_full_dataset(url=source.as_uri()) == path  # cached: no second download


def test_download_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("PET_IPI_CACHE", str(tmp_path / "cache"))
    unreachable = (tmp_path / "nowhere" / "dataset_1593.xyz").as_uri()
    with pytest.raises(DataError, match="when offline") as error:
        download_full_dataset(url=unreachable)
    assert "cannot download" in str(error.value) and "\n" not in str(error.value)
    assert not any((tmp_path / "cache").iterdir())


def test_default_dataset_follows_environment(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("PET_IPI_DATA", str(tmp_path / "mine.xyz"))
    assert data.default_dataset() == tmp_path / "mine.xyz"
    monkeypatch.delenv("PET_IPI_DATA")
    assert data.default_dataset() == data_dir / DATASET


@pytest.mark.parametrize("name, what", [("PET_IPI_DATA", "a data file"), ("PET_IPI_CACHE", "a folder")])
def test_empty_environment_variables_are_errors_naming_them(monkeypatch, name, what):
    """An empty (or blank) value would be the current directory: an error naming the variable."""
    for value in ("", " "):
        monkeypatch.setenv(name, value)
        with pytest.raises(DataError) as error:
            data.default_dataset() if name == "PET_IPI_DATA" else data.cache_dir()
        assert str(error.value) == f"{name} is set but empty: unset it or give {what}"


def test_environment_paths_expand_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PET_IPI_DATA", "~/mine.xyz")
    monkeypatch.setenv("PET_IPI_CACHE", "~/cache")
    assert data.default_dataset() == tmp_path / "mine.xyz" and data.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("PET_IPI_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # the XDG specification: empty means unset
    assert data.cache_dir() == tmp_path / ".cache" / "pet-ipi"


def _frames_file(tmp_path, *frames):
    path = tmp_path / "frames.xyz"
    ase_write(path, list(frames), format="extxyz")
    return path


WATER = [[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]]


@pytest.mark.parametrize("atoms, message", [
    (Atoms("OH2", positions=[[0, 0, 0], [0.1, 0, 0], [1, 0, 0]]),
     "frame 1: atoms 0 and 1 overlap (0.100 Å apart, less than 0.3 Å)"),
    (Atoms("OH2", positions=[[0.05, 5, 5], [5, 5, 5], [9.9, 5, 5]], cell=[10, 10, 10], pbc=True),
     "frame 1: atoms 0 and 2 overlap (0.150 Å apart, less than 0.3 Å)"),  # across the boundary
    (Atoms("OH2", positions=WATER, cell=[0.2, 10, 10], pbc=True), "frame 1: atoms "),
    (Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-3e4, 0, 0]]),
     "frame 1: the atoms span 30000.96 Å along x, more than 10000 Å (a structure that blew up, or not in Å?)"),
    (Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-3e6, 0, 0]], cell=[10, 10, 10], pbc=True),
     "frame 1: a coordinate is 3000000 Å, more than 1e+06 Å from 0 (a structure that blew up, or not in Å?)"),
    (Atoms("OH2", positions=WATER, cell=[2e6, 10, 10], pbc=True),
     "frame 1: a cell vector component is 2000000 Å, more than 1e+06 Å from 0"),
])
def test_frames_that_are_not_structures_are_refused(tmp_path, atoms, message):
    good = Atoms("OH2", positions=WATER)
    for frame in (good, atoms):
        frame.calc = SinglePointCalculator(frame, energy=-470.0, forces=np.zeros((3, 3)))
    path = _frames_file(tmp_path, good, atoms)
    with pytest.raises(DataError) as error:
        read_frames(path)
    assert str(error.value).startswith(f"{path}: {message}")
    first, second = data.read_structures(path)  # read as they are: pet-eval checks those it evaluates
    data.check_frame(first, "first")
    with pytest.raises(DataError, match="^second: " + re.escape(message[len("frame 1: "):])):
        data.check_frame(second, "second")


def test_ipi_trajectory_kind_and_a_missing_cell(tmp_path):
    """An i-PI trajectory of forces is not a structure; one without a cell (CELL(abcABC): 0 ...,
    which i-PI reads with NaNs) has open boundaries."""
    comment = "# CELL(abcABC): 0.0 0.0 0.0 0.0 0.0 0.0  Step: 0  Bead: 0 {}{{angstrom}}  cell{{angstrom}}\n"
    body = "".join(f"{s} {x} {y} {z}\n" for s, (x, y, z) in zip("OHH", WATER))
    forces = tmp_path / "simulation.for_0.xyz"
    forces.write_text("3\n" + comment.format("forces") + body)
    with pytest.raises(DataError, match="is an i-PI trajectory of forces, not of positions"):
        data.read_structures(forces)
    positions = tmp_path / "simulation.pos_0.xyz"
    positions.write_text("3\n" + comment.format("positions") + body)
    (atoms,) = data.read_structures(positions)
    assert not atoms.pbc.any() and not np.any(atoms.cell[:])
    np.testing.assert_allclose(atoms.positions, WATER, atol=1e-10)


def test_compressed_and_unfinished_ipi_trajectories(tmp_path, capsys):
    """A gzipped i-PI trajectory is read as i-PI's (with its cell; it was read as extxyz without
    one), a gzipped velocity file is refused as such, and a trajectory still being written (its
    last line cut in a number, or its last frame short of an atom line) is read without its last
    frame, with a warning, as pet-analyze reads it."""
    comment = "# CELL(abcABC): 12.0 12.0 12.0 90.0 90.0 90.0  Step: {}  Bead: 0 {}{{angstrom}}  cell{{angstrom}}\n"
    body = "".join(f"{s} {x} {y} {z + 5}\n" for s, (x, y, z) in zip("OHH", WATER))
    frames = "".join("3\n" + comment.format(step, "positions") + body for step in range(2))
    packed = tmp_path / "simulation.pos_0.xyz.gz"
    packed.write_bytes(gzip.compress(frames.encode()))
    atoms = data.read_structures(packed)
    assert len(atoms) == 2 and atoms[0].pbc.all() and np.allclose(atoms[0].cell.lengths(), 12.0)
    velocities = tmp_path / "simulation.vel_0.xyz.gz"
    velocities.write_bytes(gzip.compress(frames.replace("positions", "velocities").encode()))
    with pytest.raises(DataError, match="is an i-PI trajectory of velocities, not of positions"):
        data.read_structures(velocities)
    unfinished = tmp_path / "running.pos_0.xyz"
    unfinished.write_text(frames[:-6])  # the last line cut inside its z
    capsys.readouterr()
    assert len(data.read_structures(unfinished)) == 1
    assert capsys.readouterr().err == (f"warning: {unfinished}: the last frame (from line 6) is incomplete "
                                       "(a run still writing, or cut short): reading the 1 complete frames "
                                       "before it\n")
    short = tmp_path / "flushed.pos_0.xyz"  # written up to a whole line, not yet a whole frame
    short.write_text(frames[:frames.rindex("H ")])
    assert len(data.read_structures(short)) == 1
    assert "flushed.pos_0.xyz: the last frame (from line 6) is incomplete" in capsys.readouterr().err
    alone = tmp_path / "alone.pos_0.xyz"
    alone.write_text(frames[:frames.index("H ")])
    with pytest.raises(DataError, match="its only frame is incomplete"):
        data.read_structures(alone)


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".GZ"])
def test_every_compression_the_analysis_reads_is_read(tmp_path, suffix):
    """pet-eval and pet-train take the compressed files pet-analyze takes (pet.compression): gzip,
    bzip2 and xz, the suffix in any case; the extxyz they hold is read as the plain file."""
    atoms = Atoms("OH2", positions=WATER, cell=[10.0, 10.0, 10.0], pbc=True)
    atoms.calc = SinglePointCalculator(atoms, energy=-14.5, forces=np.full((3, 3), 0.25))
    plain = tmp_path / "water.extxyz"
    ase_write(plain, [atoms, atoms], format="extxyz")
    packed = tmp_path / f"water.extxyz{suffix}"
    compress = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}[suffix.lower()]
    packed.write_bytes(compress(plain.read_bytes()))
    read_back = data.read_structures(packed)
    assert len(read_back) == 2 and read_back[1].get_potential_energy() == pytest.approx(-14.5)
    np.testing.assert_allclose(read_back[0].get_forces(), 0.25)


@pytest.mark.parametrize("text, layout", [
    ("1\nc\nH 0 0 0\n2\nc\nH 0 0 0\nH 1 0 0\n", (7, 2, False, None)),  # frames of different sizes
    ("1\nc\nH 0 0 0\n\n\n", (3, 1, False, None)),  # blank lines after the last frame
    ("1\nc\nH 0 0 0\n2\nc\nH 0 0 0\n", (3, 1, True, None)),  # short of an atom line
    ("1\nc\nH 0 0 0\n1\nc\nH 0 0", (3, 1, True, None)),  # the last line without its newline
    ("1\nc\nH 0 0 0\nnot a count\n", (3, 1, False, 4)),  # not xyz frames from line 4
    ("1\nc\nH 0 0 0\n\n1\nc\nH 0 0 0\n", (3, 1, False, 4)),  # a blank line between frames
    ("-1\nc\n", (0, 0, False, 1)),
])
def test_frame_layout_of_text_and_bytes(text, layout):
    """pet.xyz_frames.frame_layout, which pet.data and analysis.ipi_files share: the same answer
    for the lines of a text file and of a binary one."""
    assert frame_layout(StringIO(text)) == layout
    assert frame_layout(BytesIO(text.encode())) == layout
