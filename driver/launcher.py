"""pet-run: run an input folder, i-PI and one pet-driver together, and shut both down cleanly.

The folder holds an i-PI XML input (``input.xml``, or its only ``*.xml``) and what it reads.
pet-run writes a copy, ``pet-run-input.xml``, with socket addresses made unique to this run (and
the steps of ``--steps``), starts ``i-pi`` on it in the folder and one ``pet-driver`` serving every
``<ffsocket>`` (channel convention: see :mod:`driver.ipi_input`), follows the progress in i-PI's
properties output and waits. i-PI's outputs, ``pet-run-ipi.log`` and ``pet-run-driver.log`` stay in
the folder. On Ctrl-C, SIGTERM, ``--timeout`` or when either process fails, both are stopped (no
processes or /tmp/ipi_* sockets left behind) and the exit status is non-zero.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

from pet.models import default_model_path

from .channels import parse_mode
from .ipi_input import InputError, IPIInput

COPY_NAME = "pet-run-input.xml"
GRACE_SECONDS = 10.0
"""How long a process may take to stop after SIGINT/SIGTERM before it is killed."""

EPILOG = """\
examples:
  pet-run inputs/mts-example                     the MTS example on the shipped model
  pet-run inputs/mts-example --steps 20 --model runs/small/best.pt --dtype float32
  pet-run inputs/mts-example --grid 3i           average over 3i in every averaged channel

An input with only in-process forcefields (<ffdirect>, e.g. inputs/mts-inprocess) runs i-PI
alone; --model then reaches them as $PET_IPI_MODEL.
exit status: 0 when i-PI finished and the driver ended on i-PI's EXIT, 1 on a failure of either
(the last lines of its log are shown), 2 on a command-line mistake, 130 when interrupted."""


class Stop(Exception):
    """SIGTERM received."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pet-run", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Run an i-PI input folder with pet-driver: start both, show the progress, "
                    "stop both cleanly.")
    parser.add_argument("folder", help="folder with the i-PI input (input.xml) and its files")
    parser.add_argument("--steps", type=int, metavar="N", help="number of (outer) MD steps, "
                        "replacing the input's <total_steps>")
    parser.add_argument("--grid", metavar="G", help="serve every averaged channel with grid G "
                        "instead of the grid its ffsocket names (e.g. 3i)")
    parser.add_argument("--model", metavar="PATH", help="PET checkpoint (default: $PET_IPI_MODEL "
                        f"or the shipped model, now {default_model_path()})")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="stop both processes and fail after this long (default: no limit)")
    return parser


def find_input(folder: Path) -> Path:
    """``folder/input.xml``, else the folder's only XML file (pet-run's own copy aside)."""
    if not folder.is_dir():
        raise InputError(f"no folder {folder}")
    if (folder / "input.xml").is_file():
        return folder / "input.xml"
    candidates = [p for p in folder.glob("*.xml") if p.name != COPY_NAME]
    if len(candidates) != 1:
        raise InputError(f"{folder} must hold input.xml or exactly one *.xml file "
                         f"(found {len(candidates)})")
    return candidates[0]


def executable(name: str) -> str:
    """The console script ``name`` installed next to this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Progress:
    """Prints the step reached in i-PI's properties output, the time per step and the time left."""

    def __init__(self, path: Optional[Path], total: Optional[int], interval: float = 3.0):
        self.path, self.total, self.interval = path, total, interval
        self.start = time.monotonic()
        self.last_print = self.start
        self.first = None  # (time, step) of the first step seen, to time steps after start-up
        self.step = None

    def current_step(self) -> Optional[int]:
        """The step of the last complete line of the properties file, or None."""
        if self.path is None or not self.path.is_file():
            return None
        with open(self.path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4096))
            text = handle.read().decode(errors="replace")
        for line in reversed(text[:text.rfind("\n") + 1].splitlines()):
            fields = line.split()
            if fields and not fields[0].startswith("#"):
                try:
                    return int(float(fields[0]))
                except ValueError:
                    return None
        return None

    def update(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last_print < self.interval:
            return
        step = self.current_step()
        if step is None or (step == self.step and not final):
            return
        if self.first is None:
            self.first = (now, step)
        self.step, self.last_print = step, now
        message = f"pet-run: step {step}" + (f"/{self.total}" if self.total else "")
        elapsed_steps = step - self.first[1]
        if elapsed_steps > 0:
            per_step = (now - self.first[0]) / elapsed_steps
            message += f", {per_step:.3g} s/step"
            if self.total and not final:
                message += f", about {per_step * max(self.total - step, 0):.0f} s left"
        print(message + f" ({now - self.start:.0f} s)", flush=True)


def stop(process: Optional[subprocess.Popen], first_signal=signal.SIGTERM) -> None:
    """Stop ``process`` (and its process group): ``first_signal``, then SIGKILL after a grace time."""
    if process is None or process.poll() is not None:
        return
    for sig in (first_signal, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(GRACE_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def _raise_stop(signum, frame):
    raise Stop


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    folder = Path(args.folder).resolve()
    try:
        source = find_input(folder)
        xml = IPIInput(source)
        if args.grid is not None and parse_mode(args.grid) in ("raw", "random"):
            raise InputError(f"--grid takes a rotation grid such as 2i, not {args.grid!r}")
        grid = parse_mode(args.grid) if args.grid is not None else None
        if args.steps is not None:
            if args.steps < 1:
                raise InputError("--steps must be at least 1")
            xml.total_steps = args.steps
        xml.make_addresses_unique(f"{os.getpid()}")
        channels = xml.channels()
    except (InputError, ValueError) as error:
        print(f"pet-run: error: {error}", file=sys.stderr)
        return 2
    copy = xml.write(folder / COPY_NAME)

    driver_command = [executable("pet-driver"), "--retry", "--connect-timeout", "120",
                      "--device", args.device, "--dtype", args.dtype]
    for channel in channels:
        mode = grid if grid is not None and channel.mode not in ("raw", "random") else channel.mode
        driver_command += ["--channel", f"{mode}={channel.address}"]
    environment = dict(os.environ)
    if args.model is not None:  # also for in-process (<ffdirect>) forcefields without a model
        environment["PET_IPI_MODEL"] = str(Path(args.model).resolve())
        driver_command += ["--model", environment["PET_IPI_MODEL"]]
    template = xml.template()
    if template is not None:
        driver_command += ["--template", str(template)]

    signal.signal(signal.SIGTERM, _raise_stop)
    ipi = driver = None
    ipi_log, driver_log = folder / "pet-run-ipi.log", folder / "pet-run-driver.log"
    progress = Progress(xml.properties_file(), xml.total_steps)
    status = 0
    print(f"pet-run: {source} ({len(channels)} socket channel(s): "
          f"{', '.join(c.name for c in channels) or 'none'}); logs in {folder}", flush=True)
    try:
        with open(ipi_log, "w") as ipi_out, open(driver_log, "w") as driver_out:
            if channels:
                driver = subprocess.Popen(driver_command, cwd=folder, stdout=driver_out, env=environment,
                                          stderr=subprocess.STDOUT, start_new_session=True)
            ipi = subprocess.Popen([executable("i-pi"), copy.name], cwd=folder, stdout=ipi_out,
                                   env=environment, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = None if args.timeout is None else time.monotonic() + args.timeout
            while True:
                progress.update()
                if ipi.poll() is not None:
                    break
                if driver is not None and driver.poll() is not None and driver.returncode != 0:
                    print(f"pet-run: pet-driver failed:\n{tail(driver_log)}", file=sys.stderr)
                    status = 1
                    break
                if deadline is not None and time.monotonic() > deadline:
                    print(f"pet-run: no end after {args.timeout:g} s: stopping", file=sys.stderr)
                    status = 1
                    break
                time.sleep(0.2)
            if status == 0 and ipi.returncode != 0:
                print(f"pet-run: i-PI failed (status {ipi.returncode}):\n{tail(ipi_log)}", file=sys.stderr)
                status = 1
            if status == 0 and driver is not None:
                try:
                    driver.wait(GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    print("pet-run: pet-driver did not end after i-PI: stopping it", file=sys.stderr)
                if driver.returncode not in (0, None):
                    print(f"pet-run: pet-driver failed:\n{tail(driver_log)}", file=sys.stderr)
                    status = 1
    except (KeyboardInterrupt, Stop):
        print("pet-run: interrupted: stopping i-PI and pet-driver", file=sys.stderr)
        status = 130
    finally:
        stop(ipi, signal.SIGINT)
        stop(driver)
        for channel in channels:
            if channel.address.kind == "unix" and os.path.exists(channel.address.path):
                os.unlink(channel.address.path)
    if status == 0:
        progress.update(final=True)
        print(f"pet-run: done; i-PI's outputs are in {folder}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
