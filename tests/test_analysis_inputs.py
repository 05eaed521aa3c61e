"""pet-analyze on inputs that do not fit: frames of different sizes, compressed files, columns of
the wrong dimension, bins and cutoffs too large, undefined statistics, the ice analysis's --grid
and --seed, and files of the wrong kind (empty, binary, a folder)."""

import bz2
import gzip
import json
import lzma

import ase
import ase.io
import numpy as np
import pytest

from analysis.cli import main
from analysis.gofr import read_reference
from analysis.ipi_files import read_properties, read_trajectory
from ipi_outputs import WATER, rotation_about, write_ipi_properties, write_ipi_xyz

BOX = 10 * np.eye(3)


def two_molecules(n_frames):
    """(F, 6, 3) two water molecules 4 Å apart, the first shifted a little each frame."""
    return np.array([np.concatenate([WATER + [2.0 + 0.01 * k, 2.0, 2.0], WATER + [6.0, 2.0, 2.0]])
                     for k in range(n_frames)])


def run_errors(capsys, *commands):
    """Run each pet-analyze command (a list of words), expecting exit status 2; its stderr lines."""
    for words in commands:
        assert main(words) == 2, words
    return capsys.readouterr().err.strip().splitlines()


def test_frames_of_different_sizes_are_named_not_cut_as_incomplete(tmp_path, data_dir, capsys):
    """The ice cells (288, then 576 atoms from frame 3) and i-PI xyz files whose later frames are
    smaller or larger: no 'incomplete' warning, one error naming the first frame that differs."""
    small = write_ipi_xyz(tmp_path / "small.xyz", ["O", "H", "H"], WATER[None] + 2.0, BOX).read_text()
    large = write_ipi_xyz(tmp_path / "large.xyz", ["O", "H", "H"] * 2, two_molecules(2), BOX).read_text()
    (tmp_path / "shrinks.xyz").write_text(large + small)
    (tmp_path / "grows.xyz").write_text(small + large)
    ase.io.write(tmp_path / "grows.extxyz", [ase.Atoms("OH2", positions=WATER + 2.0, cell=BOX, pbc=True),
                                             ase.Atoms("OH2OH2", positions=two_molecules(1)[0], cell=BOX, pbc=True)])
    out = ["--out", str(tmp_path / "x")]
    errors = run_errors(capsys, ["gofr", str(data_dir / "ice-ih-hayward-reimers.xyz"), *out],
                        ["intact", str(tmp_path / "shrinks.xyz"), *out], ["intact", str(tmp_path / "grows.xyz"), *out],
                        ["orientation", str(tmp_path / "grows.extxyz"), *out])
    assert errors == [
        f"pet-analyze gofr: error: {data_dir}/ice-ih-hayward-reimers.xyz: frames have different atom counts "
        "(frame 3 has 576 atoms, frame 0 has 288): a trajectory must hold the same atoms in every frame",
        f"pet-analyze intact: error: {tmp_path}/shrinks.xyz: frames have different atom counts (frame 2 has 3 "
        "atoms, frame 0 has 6): a trajectory must hold the same atoms in every frame",
        f"pet-analyze intact: error: {tmp_path}/grows.xyz: frames have different atom counts (frame 1 has 6 "
        "atoms, frame 0 has 3): a trajectory must hold the same atoms in every frame",
        f"pet-analyze orientation: error: {tmp_path}/grows.extxyz: frames have different atom counts (frame 1 "
        "has 6 atoms, frame 0 has 3): a trajectory must hold the same atoms in every frame"]
    # an incomplete last frame after frames of another size is still found, and counted right (1 + 2 + 1)
    (tmp_path / "cut.xyz").write_text(small + large + large[:-30])
    with pytest.raises(Exception, match="frame 1 has 6 atoms"):
        read_trajectory(tmp_path / "cut.xyz")
    assert "the last frame is incomplete (a run still writing, or cut short): reading the 4 complete frames" \
        in capsys.readouterr().err
    swapped = write_ipi_xyz(tmp_path / "swapped.xyz", ["O", "H", "H"], WATER[None] + 2.0, BOX,
                            steps=[1]).read_text().replace("    O ", "    X ", 1)
    (tmp_path / "elements.xyz").write_text(small + swapped)
    errors = run_errors(capsys, ["intact", str(tmp_path / "elements.xyz"), *out])
    assert errors == [f"pet-analyze intact: error: {tmp_path}/elements.xyz: frame 1 holds other elements, or the "
                      "same in another order, than frame 0: a trajectory must hold the same atoms in every frame"]


def compress(path, suffix):
    """A copy of ``path`` compressed as ``suffix`` (.gz, .bz2 or .xz), named PATH.SUFFIX."""
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[suffix]
    target = path.with_name(path.name + suffix)
    with opener(target, "wb") as handle:
        handle.write(path.read_bytes())
    return target


def test_compressed_trajectories_properties_and_references_are_read(tmp_path, data_dir, capsys):
    xyz = write_ipi_xyz(tmp_path / "pos.xyz", ["O", "H", "H"] * 2, two_molecules(4), BOX)
    ase.io.write(tmp_path / "pos.extxyz", [ase.Atoms("OH2OH2", positions=frame, cell=BOX, pbc=True)
                                           for frame in two_molecules(4)])
    plain = read_trajectory(xyz)
    extxyz = tmp_path / "pos.extxyz"
    for path, suffix in ((xyz, ".gz"), (xyz, ".bz2"), (extxyz, ".xz"), (extxyz, ".gz")):
        trajectory = read_trajectory(compress(path, suffix), "length")
        assert np.allclose(trajectory.values, plain.values, atol=1e-8) and np.allclose(trajectory.cells, BOX)
        assert list(trajectory.steps) == [0, 1, 2, 3]
    # an incomplete last frame inside a compressed file is left out too, named by the compressed file
    cut = tmp_path / "cut.xyz"
    cut.write_text(xyz.read_text()[:-20])
    assert len(read_trajectory(compress(cut, ".gz"))) == 3
    assert f"{cut}.gz: the last frame is incomplete" in capsys.readouterr().err
    time = np.arange(5) * 0.1
    properties = write_ipi_properties(tmp_path / "sim.out", [("time{picosecond}", time),
                                                             ("conserved{electronvolt}", 0.002 * time)])
    assert main(["drift", str(compress(properties, ".gz")), "--molecules", "2", "--out", str(tmp_path / "d")]) == 0
    assert json.loads((tmp_path / "d.json").read_text())["drift_meV_per_molecule_per_ns"] == pytest.approx(1e3)
    assert np.allclose(read_properties(compress(properties, ".xz"))["conserved"], 0.002 * time)
    reference = data_dir / "goo-experiment-295K.dat"
    copy = tmp_path / reference.name
    copy.write_bytes(reference.read_bytes())
    assert np.array_equal(read_reference(str(compress(copy, ".bz2")), "angstrom"),
                          read_reference(str(reference), "angstrom"))
    (tmp_path / "fake.xyz.gz").write_text(xyz.read_text())  # not compressed at all
    errors = run_errors(capsys, ["intact", str(tmp_path / "fake.xyz.gz"), "--out", str(tmp_path / "x")])
    assert errors == [f"pet-analyze intact: error: {tmp_path}/fake.xyz.gz: cannot decompress it as .gz "
                      "(Not a gzipped file (b'6\\n'))"]


def test_drift_refuses_a_column_that_is_not_an_energy(tmp_path, capsys):
    time = np.arange(5) * 0.1
    path = write_ipi_properties(tmp_path / "sim.out", [("time{picosecond}", time), ("conserved{electronvolt}", time),
                                                       ("temperature{kelvin}", 300 + time), ("step", time),
                                                       ("potential{electronvolt}", 2 * time)])
    out = ["--out", str(tmp_path / "x")]
    errors = run_errors(capsys, ["drift", str(path), "--molecules", "2", "--column", "temperature", *out],
                        ["drift", str(path), "--molecules", "2", "--column", "step", *out])
    assert errors == [
        f"pet-analyze drift: error: {path}: --column temperature is in K, not an energy: drift gives the slope of "
        "an energy column in meV/molecule/ns (energy columns here: conserved, potential)",
        f"pet-analyze drift: error: {path}: --column step is in no unit, not an energy: drift gives the slope of "
        "an energy column in meV/molecule/ns (energy columns here: conserved, potential)"]
    assert main(["drift", str(path), "--molecules", "2", "--column", "potential", *out]) == 0
    assert json.loads((tmp_path / "x.json").read_text())["drift_meV_per_molecule_per_ns"] == pytest.approx(1e6)


def test_too_many_bins_or_pairs_are_refused_before_the_work(tmp_path, capsys):
    path = str(write_ipi_xyz(tmp_path / "pos.xyz", ["O", "H", "H"] * 2, two_molecules(4), BOX))
    out = ["--blocks", "2", "--out", str(tmp_path / "x")]
    errors = run_errors(capsys, ["gofr", path, "--bin", "1e-9", *out],
                        ["orientation-correlation", path, "--r-max", "1e6", *out],
                        ["gofr", path, "--r-max", "2000", "--bin", "1", *out],
                        ["orientation", path, "--bins-cos", "100000000", *out])
    assert errors == [
        "pet-analyze gofr: error: --r-max 6 Å with --bin 1e-09 Å makes 6000000000 bins: at most 10000 "
        "(--bin at least 0.0006 Å)",
        "pet-analyze orientation-correlation: error: --r-max 1e+06 Å with --bin 0.25 Å makes 4000000 bins: "
        "at most 10000 (--bin at least 100 Å)",
        "pet-analyze gofr: error: --r-max 2000 Å: about 6.7e+07 pairs per frame (2 atoms in 1000 Å³), at most "
        "1e+07: --r-max at most 1.06e+03 Å here",
        "pet-analyze orientation: error: --bins-cos 100000000 × --bins-phi 12 = 1200000000 bins: at most 100000"]
    assert not (tmp_path / "x.json").exists()


def test_a_cutoff_beyond_half_the_cell_is_warned_about(tmp_path, capsys):
    """The pairs are counted with every periodic image, so g(r) beyond half the cell is that of the
    periodic copies: 4 Å apart in a 10 Å cell, the pair also appears at 6 Å (its next image)."""
    path = str(write_ipi_xyz(tmp_path / "pos.xyz", ["O", "H", "H"] * 2, two_molecules(4), BOX))
    for command in ("gofr", "orientation-correlation"):
        options = ["--bin", "1", "--blocks", "2", "--out"]
        assert main([command, path, "--r-max", "4.9", *options, str(tmp_path / "near")]) == 0
        assert capsys.readouterr().err == ""
        assert main([command, path, "--r-max", "6.5", *options, str(tmp_path / "far")]) == 0
        assert capsys.readouterr().err == (
            f"warning: {path}: --r-max 6.5 Å exceeds half the cell's smallest width (5 Å, frame 0): beyond 5 Å "
            "pairs are counted with several periodic images, the distribution of the periodic copies of the cell "
            "(finite-size artefacts)\n")
    far = json.loads((tmp_path / "far.json").read_text())
    pairs, outer = np.array(far["pairs"]), np.array(far["r_edges"][1:])
    assert pairs.sum() == 8 and pairs[outer > 5.5].sum() == 4  # 4 frames: the pair at ~4 Å and ~6 Å


def test_g_of_r_without_pairs_has_no_peak(tmp_path, capsys):
    path = str(write_ipi_xyz(tmp_path / "pos.xyz", ["O", "H", "H"] * 2, two_molecules(4), BOX))
    assert main(["gofr", path, "--r-max", "3", "--blocks", "2", "--out", str(tmp_path / "g")]) == 0
    result = json.loads((tmp_path / "g.json").read_text())
    assert result["peak_r"] is None and result["peak_g"] is None
    assert "g(r) O-O from 4 frames: no pair within --r-max" in capsys.readouterr().out


def test_orientation_chi2_is_undefined_for_molecules_that_do_not_turn(tmp_path, capsys):
    """Seven molecules in fixed orientations: every block has the same densities, so the block
    errors are zero and χ² against flat is undefined (it was 1e32 from round-off)."""
    rng = np.random.default_rng(1)
    molecules = [WATER @ rotation_about(rng.normal(size=3), rng.uniform(0, 3)).T + rng.uniform(0, 20, 3)
                 for _ in range(7)]
    frames = np.array([np.concatenate(molecules) + 0.001 * k for k in range(50)])
    path = str(write_ipi_xyz(tmp_path / "still.xyz", ["O", "H", "H"] * 7, frames, 30 * np.eye(3)))
    for blocks in ("3", "7", "10"):
        assert main(["orientation", path, "--blocks", blocks, "--out", str(tmp_path / "F")]) == 0
        result = json.loads((tmp_path / "F.json").read_text())
        assert result["chi2_per_bin_vs_flat"] is None
        assert result["chi2_per_bin_profiles"] == {"cos_theta": None, "phi": None}
        occupied = np.isfinite(np.array(result["F"], dtype=float))
        assert result["bins_without_spread"] == occupied.sum() > 0
        assert np.all(np.array(result["F_error"], dtype=float)[occupied] == 0.0)
        assert "χ²/bin against flat n/a (no bin has a spread between blocks)" in capsys.readouterr().out


def test_ice_grid_must_differ_from_raw_and_random_is_seeded(tmp_path, data_dir, tiny_checkpoint, capsys):
    cells = str(data_dir / "ice-ih-hayward-reimers.xyz")
    common = [cells, "--model", str(tiny_checkpoint)]
    errors = run_errors(capsys, ["ice", *common, "--grid", "raw", "--out", str(tmp_path / "x")],
                        ["ice", *common, "--seed", "3", "--out", str(tmp_path / "x")])
    assert errors == [
        "pet-analyze ice: error: argument --grid: 'raw' would compare the raw model with itself (every "
        "difference zero): give the model to compare with raw, a rotation grid N or Ni (e.g. 2i) or random "
        "(see pet-analyze ice --help)",
        "pet-analyze ice: error: --seed applies to --grid random only (grid 2i has no randomness)"]
    results = {}
    for name, seed, index in (("a", "7", "2:4"), ("b", "7", "2:4"), ("c", "8", "2")):  # 288 and 576 atoms
        assert main(["ice", *common, "--index", index, "--grid", "random", "--seed", seed,
                     "--out", str(tmp_path / name)]) == 0
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert "ice: cell 2/2 (576 atoms): raw and randomly rotated model" in capsys.readouterr().err
    assert results["a"]["n_molecules"] == [96, 192] and results["a"]["seed"] == 7
    for key in ("mae", "rms", "max_atom"):
        same = [(a[key], b[key]) for a, b in zip(results["a"]["forces_initial"], results["b"]["forces_initial"])]
        other = [(a[key], c[key]) for a, c in zip(results["a"]["forces_initial"], results["c"]["forces_initial"])]
        assert all(first == pytest.approx(second, rel=1e-9) for first, second in same)
        assert all(first != pytest.approx(second, rel=1e-3) for first, second in other)
    assert main(["ice", "--help"]) == 0
    assert "DESIGN.md" not in capsys.readouterr().out


def test_empty_binary_and_wrong_kinds_of_files_are_one_line_errors(tmp_path, capsys):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    binary = tmp_path / "model.pt"
    binary.write_bytes(bytes(range(256)) * 4)
    folder = tmp_path / "folder"
    folder.mkdir()
    positions = str(write_ipi_xyz(tmp_path / "pos.xyz", ["O", "H", "H"] * 2, two_molecules(4), BOX))
    properties = str(write_ipi_properties(tmp_path / "sim.out", [("time{picosecond}", [0.0, 0.1, 0.2]),
                                                                 ("conserved{electronvolt}", [0.0, 0.1, 0.2])]))
    out = ["--out", str(tmp_path / "x")]
    errors = run_errors(capsys, ["orientation", str(empty), *out], ["drift", str(empty), "--molecules", "1", *out],
                        ["intact", str(binary), *out], ["spectrum", str(binary), *out],
                        ["gofr", positions, "--reference", str(binary), *out],
                        ["diffusion", str(folder), "--dt", "1", *out], ["drift", positions, "--molecules", "1", *out],
                        ["ice", properties, *out], ["ice", str(empty), *out])
    assert errors == [
        f"pet-analyze orientation: error: {empty}: the file is empty",
        f"pet-analyze drift: error: {empty}: the file is empty",
        f"pet-analyze intact: error: {binary}: not a text file (binary data): not an i-PI trajectory",
        f"pet-analyze spectrum: error: {binary}: not a text file (binary data): not an i-PI properties file",
        f"pet-analyze gofr: error: {binary}: not a text file (binary data)",
        f"pet-analyze diffusion: error: {folder} is a directory, not a file",
        f"pet-analyze drift: error: {positions}: no '# column N --> name' header lines: not an i-PI properties file",
        f"pet-analyze ice: error: {properties}: no structures in it (the cells must be extended XYZ frames)",
        f"pet-analyze ice: error: {empty}: the file is empty"]


def test_a_reference_that_is_not_a_gofr_table_is_refused(tmp_path, capsys):
    """gofr --reference: an i-PI properties file (its step and time columns plotted as a g(r)
    before), a first column that does not increase, a NaN: one line each, naming the file; a
    table whose comments merely mention columns is read."""
    positions = str(write_ipi_xyz(tmp_path / "pos.xyz", ["O", "H", "H"] * 2, two_molecules(4), BOX))
    properties = write_ipi_properties(tmp_path / "sim.out", [("time{picosecond}", [0.0, 0.1, 0.2]),
                                                             ("conserved{electronvolt}", [0.0, 0.1, 0.2])])
    unordered = tmp_path / "unordered.dat"
    unordered.write_text("2.0 1.0\n1.0 0.5\n")
    missing = tmp_path / "nan.dat"
    missing.write_text("1.0 0.5\n2.0 nan\n")
    out = ["--out", str(tmp_path / "g")]
    errors = run_errors(capsys, *(["gofr", positions, "--reference", str(path), *out]
                                  for path in (properties, unordered, missing)))
    assert errors == [
        f"pet-analyze gofr: error: --reference {properties}: an i-PI properties file, not a g(r) table (columns r, g)",
        f"pet-analyze gofr: error: --reference {unordered}: its first column does not increase from r >= 0: "
        "not a g(r) table (columns r, g)",
        f"pet-analyze gofr: error: --reference {missing}: a value that is not a finite number: not a g(r) table "
        "(columns r, g)"]
    commented = tmp_path / "commented.dat"  # a header that only looks like i-PI's
    commented.write_text("# column 1: r (Angstrom), column 2: g(r)\n#cols. 1 and 2\n1.0 0.5\n2.0 1.0\n")
    assert main(["gofr", positions, "--reference", str(commented), "--blocks", "2", *out]) == 0


def test_a_forces_trajectory_in_ipis_ase_format_is_read(tmp_path):
    """i-PI's format="ase" writes a forces trajectory as an extxyz 'forces' column, which ASE's
    reader moves into a calculator (reading it failed with KeyError: 'forces'); eV/Å as written."""
    path = tmp_path / "simulation.for_0.extxyz"
    frames = []
    for step in range(2):
        atoms = ase.Atoms("OH2", cell=np.eye(3) * 20.0, pbc=True)
        atoms.arrays["forces"] = WATER * (step + 1)
        atoms.info["ipi_comment"] = f"Step: {step} Bead: 0 forces{{ev/ang}}  cell{{angstrom}}"
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    trajectory = read_trajectory(path)
    assert trajectory.quantity == "forces" and trajectory.steps.tolist() == [0, 1]
    np.testing.assert_allclose(trajectory.values, [WATER, 2 * WATER], atol=1e-6)
