"""The console entry points (pet.entry, named in pyproject.toml): light to import, and a Ctrl-C
(or SIGTERM) while a command imports torch is one line and exit status 130, never a traceback."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]


def test_importing_the_entry_points_does_not_import_torch_but_pet_still_has_the_network():
    code = ("import sys, pet.entry; print('torch' in sys.modules); "
            "from pet import PET, PETHypers; print(PET.__module__, PETHypers.__module__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True)
    assert result.stdout == "False\npet.model pet.hypers\n", result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("function, prog, arguments", [
    ("pet_train", "pet-train", [str(REPOSITORY / "inputs/training/small.yaml"), "--output", "run"]),
    ("pet_eval", "pet-eval", ["--grids", "none"]),
    ("pet_analyze", "pet-analyze", ["intact", "absent.xyz"]),
    ("pet_driver", "pet-driver", ["--channel", "raw=unix:x"]),
    ("pet_run", "pet-run", [str(REPOSITORY / "inputs" / "mts-example"), "--run-dir", "run"]),
])
def test_ctrl_c_while_the_command_is_imported_is_one_line(function, prog, arguments, tmp_path, sig):
    process = subprocess.Popen(
        [sys.executable, "-c", f"import sys; from pet.entry import {function}; sys.exit({function}())",
         *arguments], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # importing torch takes seconds
        process.send_signal(sig)
        out, err = process.communicate(timeout=60)
    finally:  # a command that missed the signal (a training, say) must not outlive the test
        process.kill()
        process.wait()
    assert (process.returncode, err) == (130, f"{prog}: interrupted\n"), (out, err)
