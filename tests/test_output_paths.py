"""Output folders of pet-train, pet-eval and pet-analyze: unusable ones are refused in one line
before any work, whatever makes them unusable (a file in the way, no write permission, a read-only
filesystem: simulated by os.access, since the tests may run as root, which ignores permissions)."""

import os
from pathlib import Path

import pytest

from pet import output_paths
from pet.output_paths import output_prefix, writable_folder


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder tmp_path/ro that os.access reports as not writable (as on a read-only mount)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and Path(path).resolve().is_relative_to(folder):
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(output_paths.os, "access", access)
    return folder


def test_prefix_is_the_text_or_a_default_name_inside_a_folder(tmp_path):
    assert output_prefix(str(tmp_path / "a" / "b"), "gofr") == tmp_path / "a" / "b"
    assert (tmp_path / "a").is_dir()
    assert output_prefix(str(tmp_path / "a"), "gofr") == tmp_path / "a" / "gofr"
    assert output_prefix(f"{tmp_path / 'c'}/", "gofr") == tmp_path / "c" / "gofr"
    assert (tmp_path / "c").is_dir()


def test_unusable_folders_are_refused(tmp_path, read_only):
    with pytest.raises(ValueError, match="the output prefix is empty"):
        output_prefix(" ", "gofr")
    (tmp_path / "file").write_text("x\n")
    with pytest.raises(ValueError, match=f"--out {tmp_path / 'file'}/x: {tmp_path / 'file'} is a file, not a folder"):
        output_prefix(str(tmp_path / "file" / "x"), "gofr")
    with pytest.raises(ValueError, match=f"output: the folder {read_only} is not writable"):
        writable_folder(read_only, "output")
    with pytest.raises(ValueError, match=f"--out {read_only}/g: the folder {read_only} is not writable"):
        output_prefix(str(read_only / "g"), "gofr")


def test_pet_train_refuses_an_unwritable_output_before_reading_data(tmp_path, read_only, capsys, monkeypatch):
    from pet.train import main
    monkeypatch.setattr("pet.train.read_frames", lambda path: pytest.fail("data read before the checks"))
    config = tmp_path / "config.yaml"
    config.write_text("model: {cutoff: 3.0}\noutput: run\n")
    assert main([str(config), "--output", str(read_only)]) == 2
    assert capsys.readouterr().err == f"pet-train: error: output: the folder {read_only} is not writable\n"


def test_pet_analyze_refuses_an_unwritable_out_before_the_analysis(tmp_path, read_only, capsys, monkeypatch):
    from analysis import cli, drift
    monkeypatch.setattr(drift, "run", lambda args: pytest.fail("analysis run before the --out check"))
    properties = tmp_path / "simulation.out"
    properties.write_text("# column 1 --> time{picosecond}\n# column 2 --> conserved{electronvolt}\n0 1\n1 1\n")
    assert cli.main(["drift", str(properties), "--molecules", "64", "--out", str(read_only / "drift")]) == 2
    assert capsys.readouterr().err == (f"pet-analyze drift: error: --out {read_only / 'drift'}: "
                                       f"the folder {read_only} is not writable\n")
