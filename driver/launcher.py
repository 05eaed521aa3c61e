"""pet-run: run an input folder, i-PI and one pet-driver together, and shut both down cleanly.

The folder holds an i-PI XML input (``input.xml``, or its only ``*.xml``) and what it reads.
pet-run writes a copy, ``pet-run-input.xml``, with socket addresses made unique to this run (and
the changes its options ask for: steps, multiple time steps, start structure, inet sockets, the
<parameters> of in-process forcefields), in the folder or in ``--run-dir`` (where the folder's
input files are copied first), starts ``i-pi`` on it there and one ``pet-driver`` serving every ``<ffsocket>`` (channel convention: see
:mod:`driver.ipi_input`), follows the progress in i-PI's properties output and waits. i-PI's
outputs, ``pet-run-ipi.log`` and ``pet-run-driver.log`` stay in the run directory. On Ctrl-C,
SIGTERM, ``--timeout`` or when either process fails, both are stopped (no processes or
/tmp/ipi_* sockets left behind) and the exit status is non-zero. ``--no-driver`` starts i-PI alone
(drivers elsewhere, e.g. on GPU nodes), ``--print-driver-command`` prepares the run directory and
prints the pet-driver command those drivers run.
"""

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

from pet.arguments import OneLineParser, finite_float, positive_int
from pet.calculator import load_model, resolve_device
from pet.compilation import compile_problem
from pet.models import default_model_path
from pet.output_paths import writable_folder

from .cli import default_model_text
from .ipi_input import TEMPLATE_MODES, InputError, IPIInput, SocketChannel
from .protocol import SOCKETS_PREFIX
from .runner import signals_ignored
from .species import Species
from .start_structure import atom_count, pick_frame, read_frames, write_start

COPY_NAME = "pet-run-input.xml"
START_NAME = "pet-run-init.xyz"
"""The start structure pet-run writes for --structure / --frame (extended XYZ)."""
CONNECT_TIMEOUT = 300
"""How long (s) the driver waits for i-PI's sockets."""
GRACE_SECONDS = 10.0
"""How long a process may take to stop after SIGINT/SIGTERM before it is killed."""

EPILOG = """\
examples:
  pet-run inputs/mts-example                     the MTS example on the shipped model
  pet-run inputs/mts-example --steps 20 --model runs/small/best.pt --dtype float32
  pet-run inputs/mts-example --grid 3i           average over 3i in every averaged channel
  pet-run inputs/gas-nve --mts 1 --run-dir runs/nve-2i    the 2i average at every step, elsewhere
  pet-run inputs/bulk-nvt --grid random --mts 1   a random rotation at every step
  pet-run inputs/bulk-nvt --structure ../shared/data/water-512.xyz
  pet-run inputs/ice-relax --frame 3 --grid raw  relax ice cell 3 with the raw model
  pet-run inputs/bulk-nvt --inet node1:31415 --no-driver --device cuda
                                                 i-PI alone; prints the pet-driver command

An input with only in-process forcefields (<ffdirect> running pet-ipi's PES, e.g.
inputs/mts-inprocess) runs i-PI alone; --grid, --model, --device, --dtype and the start structure
(as template) then go into their <parameters>. Every model (in-process, or the one pet-driver is to
serve here) is loaded once before i-PI starts, to check it and the species it is given. A
<simulation sockets_prefix> is passed on to pet-driver (its folder is made if missing). --mts N must
split every output stride and <total_steps> into whole steps (the error names the N that do). File
names in the input may start with $PET_IPI_SHARED (default: shared/data beside the checkout).
exit status: 0 when i-PI finished and the driver ended on i-PI's EXIT, 1 on a failure of either
(the last lines of its log are shown), 2 on a mistake found before anything starts (options, input,
model), 130 when interrupted."""


class Stop(Exception):
    """SIGTERM received."""


def frame_number(text: str) -> int:
    """The argparse type of --frame: an integer, from 0 (negative: from the end, -1 the last)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer (0: the first structure, -1: the last), "
                                         f"got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="pet-run", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Run an i-PI input folder with pet-driver: start both, show the progress, "
                    "stop both cleanly.")
    parser.add_argument("folder", help="folder with the i-PI input (input.xml) and its files")
    parser.add_argument("--steps", type=positive_int, metavar="N", help="number of (outer) MD steps, "
                        "replacing the input's <total_steps>")
    parser.add_argument("--grid", metavar="G", help="serve every averaged channel with G instead "
                        "of the grid its ffsocket names: a grid (e.g. 3i), raw or random")
    parser.add_argument("--mts", type=positive_int, metavar="N", help="split each outer step into N "
                        "inner steps (input with <nmts>[1, M]</nmts>; 1: every force at every step), "
                        "keeping the inner step, the simulated time and the output times (N must "
                        "split every output stride and <total_steps> exactly)")
    parser.add_argument("--structure", metavar="FILE", help="start from this structure (any file "
                        "ASE reads, or i-PI's xyz) instead of the input's <file>")
    parser.add_argument("--frame", type=frame_number, metavar="K", help="start from structure K (from 0; "
                        "-1: the last) of a file holding several (the ice cells, a trajectory)")
    parser.add_argument("--run-dir", metavar="DIR", help="run in DIR (created; the folder's input "
                        "files are copied there) instead of the folder itself")
    parser.add_argument("--inet", metavar="HOST:PORT", help="make every socket inet on HOST, "
                        "ports PORT, PORT+1, ... (drivers on other machines)")
    parser.add_argument("--no-driver", action="store_true", help="start i-PI only; pet-drivers are "
                        "started elsewhere (the command they need is printed)")
    parser.add_argument("--print-driver-command", action="store_true", help="prepare the run "
                        "directory, print the pet-driver command serving it and exit")
    parser.add_argument("--model", metavar="PATH", help="PET checkpoint (default: $PET_IPI_MODEL "
                        f"or the shipped model, now {default_model_text()})")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="where the model runs, in "
                        "pet-driver or inside i-PI (default: cpu; for in-process forcefields, the "
                        "device of their <parameters>)")
    parser.add_argument("--dtype", choices=["float32", "float64"], help="floating-point precision "
                        "of the model (default: float64; for in-process forcefields, the dtype of "
                        "their <parameters>)")
    parser.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads of each pet-driver "
                        "(default: torch's, one per core; 1 when other jobs share the cores)")
    parser.add_argument("--compile", action="store_true",
                        help="pet-driver --compile: torch.compile of the model's transformers (faster "
                             "steps after a first one that waits tens of seconds for the compiler; "
                             "for the pet-driver sockets, not the in-process forcefields)")
    parser.add_argument("--timeout", type=finite_float(0.0, low_allowed=False, unit=" s"),
                        metavar="SECONDS",
                        help="stop both processes and fail after this long (default: no limit)")
    return parser


def check_run_dir(run_dir: Path) -> None:
    """InputError if ``run_dir`` exists and is not a directory."""
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"--run-dir {run_dir} is a file, not a directory: give a directory "
                         "(it is created if missing)")


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


def parse_inet(text: str):
    """(host, port) from ``HOST:PORT``; InputError otherwise."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"bad --inet {text!r}: use HOST:PORT, e.g. node12:31415")
    return host, int(port)


def is_output(name: str, prefix: str) -> bool:
    """Whether a file of an input folder is an output of i-PI or pet-run, not an input."""
    return name.startswith(("pet-run-", "#", f"{prefix}.")) or name == "RESTART"


def copy_inputs(folder: Path, run_dir: Path, prefix: str) -> None:
    """Copy the input files of ``folder`` (not i-PI's or pet-run's outputs) into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.is_file() and not is_output(path.name, prefix):
            shutil.copy2(path, run_dir / path.name)


def set_start(xml: IPIInput, folder: Path, run_dir: Path, structure: Optional[str],
              frame: Optional[int]) -> None:
    """Apply --structure / --frame: write the chosen frame to ``run_dir/START_NAME`` and point
    the input there. Without them, check that a start file does not hold more structures than
    the system has beads."""
    element = xml.start_file()
    if structure is None and frame is None:
        if element is not None and element.get("mode", "chk") in TEMPLATE_MODES:
            path = folder / (element.text or "").strip()
            count = len(read_frames(path))
            if count > xml.beads:
                raise InputError(f"{path} holds {count} structures: choose one with --frame K "
                                 f"(0 to {count - 1})")
        return
    if element is None:
        raise InputError(f"{xml.path.name} has no <initialize><file> for --structure/--frame to replace")
    path = Path(structure).resolve() if structure is not None else folder / (element.text or "").strip()
    atoms = pick_frame(read_frames(path), frame, path)
    check_per_atom_files(xml, folder, len(atoms))
    write_start(atoms, run_dir / START_NAME)
    element.text = START_NAME
    element.set("mode", "ase")
    for attribute in ("units", "cell_units"):
        element.attrib.pop(attribute, None)


def check_per_atom_files(xml: IPIInput, folder: Path, n_atoms: int) -> None:
    """InputError if a per-atom file of the input (e.g. its <velocities> file) has another number
    of atoms than the new start structure's ``n_atoms``."""
    for tag, name in xml.per_atom_files():
        count = atom_count(folder / name)
        if count != n_atoms:
            raise InputError(f"the new start structure has {n_atoms} atoms, but {xml.path.name} reads "
                             f"<{tag}> from {name}, with {count}: give a structure of {count} atoms, "
                             f"or use an input whose <{tag}> is not read from a file")


def check_local_device(device: Optional[str]) -> None:
    """InputError if ``device`` is not on this machine, where pet-driver is to run
    (:func:`pet.calculator.resolve_device`)."""
    try:
        resolve_device(device or "cpu")
    except ValueError as error:
        raise InputError(f"{error}, where pet-driver would run: use --device cpu, or --no-driver to "
                         "run the drivers elsewhere") from None


def set_in_process(xml: IPIInput, args, run_dir: Path) -> None:
    """Apply --model, --device, --dtype and the start structure in ``run_dir`` (as template) to
    the in-process forcefields."""
    xml.set_in_process(model=None if args.model is None else Path(args.model).resolve(),
                       device=args.device, dtype=args.dtype, template=xml.template(run_dir))


def load_checked(path: Path, dtype: str):
    """The model at ``path``, loaded on the CPU as ``dtype``; InputError if it does not load."""
    try:
        return load_model(path, "cpu", dtype)
    except ValueError as error:
        raise InputError(f"cannot load the model: {error}") from None


def check_in_process(xml: IPIInput, run_dir: Path) -> None:
    """InputError if an in-process forcefield asks for a device this machine lacks, names a model
    that does not load (each model loaded once, on the CPU; paths taken in ``run_dir``, where i-PI
    runs) or species that model does not know, so that i-PI does not start only to fail."""
    models = {}
    for element in xml.in_process():
        parameters = xml.in_process_parameters(element)
        name = element.get("name", "")
        try:
            resolve_device(parameters.get("device", "cpu"))
        except ValueError as error:
            raise InputError(f"ffdirect {name!r}: {error}: give it a device this machine has "
                             "(pet-run --device cpu, or cuda where torch sees one)") from None
        model = parameters.get("model")
        key = (default_model_path() if model is None else run_dir / str(model),
               str(parameters.get("dtype", "float64")))
        try:
            if key not in models:
                models[key] = load_checked(*key)
            in_process_species(parameters, run_dir).check_known(models[key].species)
        except ValueError as error:
            raise InputError(f"ffdirect {name!r}: {error}") from None


def in_process_species(parameters: dict, run_dir: Path) -> Species:
    """The species an in-process forcefield with ``parameters`` gives its atoms: its ``template``
    (taken in ``run_dir``), else its ``species`` (default OH2), as :mod:`driver.ipi_pes` does."""
    template = parameters.get("template")
    return Species.given(run_dir / str(template) if template else None, parameters.get("species"))


def check_driver_model(args, template: Optional[Path]) -> None:
    """InputError if the model pet-driver is to serve (--model, loaded here on the CPU) does not
    load or does not know the elements of its ``template`` (the start structure), so that i-PI
    does not start only to lose its driver."""
    model = load_checked(args.model or default_model_path(), args.dtype or "float64")
    if template is not None:
        Species.from_template(template).check_known(model.species)


def driver_command(channels: List[SocketChannel], args, template: Optional[Path],
                   sockets_prefix: str = SOCKETS_PREFIX) -> List[str]:
    """The pet-driver command serving ``channels`` (with pet-run's --device, --dtype, --threads, --compile,
    the input's sockets prefix and --model, else the default model, as an absolute path: the
    driver runs in the run directory)."""
    command = [executable("pet-driver"), "--retry", "--connect-timeout", str(CONNECT_TIMEOUT),
               "--device", args.device or "cpu", "--dtype", args.dtype or "float64"]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    if args.compile:
        command.append("--compile")
    if sockets_prefix != SOCKETS_PREFIX:
        command += ["--sockets-prefix", sockets_prefix]
    for channel in channels:
        command += ["--channel", f"{channel.mode}={channel.address}"]
    command += ["--model", str(Path(args.model or default_model_path()).resolve())]
    if template is not None:
        command += ["--template", str(template.resolve())]
    return command


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

    def __init__(self, path: Optional[Path], total: Optional[int], interval: float = 3.0,
                 at_most: bool = False):
        """``at_most``: ``total`` is a limit, not the length (a minimisation): no time left."""
        self.path, self.total, self.interval, self.at_most = path, total, interval, at_most
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
        message = f"pet-run: step {step}"
        if self.total:
            message += f" (at most {self.total})" if self.at_most else f"/{self.total}"
        elapsed_steps = step - self.first[1]
        if elapsed_steps > 0:
            per_step = (now - self.first[0]) / elapsed_steps
            message += f", {per_step:.3g} s/step"
            if self.total and not final and not self.at_most:
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
    """pet-run with the command line ``argv``: the exit status. Ctrl-C or SIGTERM, also while the
    input is prepared and its models load, stops everything with one line and status 130."""
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        return launch(argv)
    except (KeyboardInterrupt, Stop):
        print("pet-run: interrupted", file=sys.stderr, flush=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def launch(argv: Optional[List[str]]) -> int:
    """Prepare the run directory for the command line ``argv``, run i-PI and pet-driver there and
    stop both: the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    folder = Path(args.folder).resolve()
    run_dir = Path(args.run_dir).resolve() if args.run_dir is not None else folder
    try:
        check_run_dir(run_dir)
        source = find_input(folder)
        xml = IPIInput(source)
        xml.expand_shared()
        xml.anchor_sockets_prefix(run_dir)
        if args.grid is not None:
            xml.set_grid(args.grid)
        if args.mts is not None:
            xml.set_mts(args.mts, args.steps)
        elif args.steps is not None:
            xml.total_steps = args.steps
        if args.inet is not None:
            xml.use_inet(*parse_inet(args.inet))
        else:
            xml.make_addresses_unique(f"{os.getpid()}")
        channels = xml.channels()
        if args.print_driver_command and not channels:
            raise InputError(f"{source.name} has no <ffsocket>: there is no driver to start")
        if args.compile and not channels:
            raise InputError(f"--compile is an option of pet-driver, and {source.name} has no "
                             "<ffsocket> (its in-process forcefields run as they are)")
        local_driver = bool(channels) and not (args.no_driver or args.print_driver_command)
        if local_driver:
            check_local_device(args.device)
            problem = compile_problem(args.device or "cpu") if args.compile else None
            if problem:
                raise InputError(f"--compile: {problem}, on this machine, where pet-driver would run")
        if run_dir != folder:
            copy_inputs(folder, run_dir, xml.output_prefix)
        set_start(xml, folder, run_dir, args.structure, args.frame)
        set_in_process(xml, args, run_dir)
        check_in_process(xml, run_dir)
        if local_driver:
            check_driver_model(args, xml.template(run_dir))
        if any(channel.address.kind == "unix" for channel in channels):
            writable_folder(Path(os.path.dirname(xml.sockets_prefix)),
                            f"the <simulation sockets_prefix> of {source.name}")
        command = driver_command(channels, args, xml.template(run_dir), xml.sockets_prefix) if channels else []
    except (InputError, ValueError, OSError) as error:
        print(f"pet-run: error: {error}", file=sys.stderr)
        return 2
    copy = xml.write(run_dir / COPY_NAME)
    if args.print_driver_command:
        print(shlex.join(command), flush=True)
        return 0
    environment = dict(os.environ)
    if environment.get("PET_IPI_MODEL", "").strip():  # i-PI and the driver run in run_dir
        environment["PET_IPI_MODEL"] = str(default_model_path().resolve())
    if args.threads is not None and xml.in_process():  # torch inside i-PI takes its threads from it
        environment["OMP_NUM_THREADS"] = str(args.threads)

    ipi = driver = None
    ipi_log, driver_log = run_dir / "pet-run-ipi.log", run_dir / "pet-run-driver.log"
    properties = xml.properties_file()
    progress = Progress(run_dir / properties.name if properties is not None else None,
                        xml.total_steps, at_most=xml.minimization)
    status = 0
    print(f"pet-run: {source} ({len(channels)} socket channel(s): "
          f"{', '.join(c.name for c in channels) or 'none'}); logs in {run_dir}", flush=True)
    if args.no_driver and channels:
        print(f"pet-run: i-PI only; start the drivers with:\n{shlex.join(command)}", flush=True)
    try:
        with open(ipi_log, "w") as ipi_out, open(driver_log, "w") as driver_out:
            if channels and not args.no_driver:
                driver = subprocess.Popen(command, cwd=run_dir, stdout=driver_out, env=environment,
                                          stderr=subprocess.STDOUT, start_new_session=True)
            ipi = subprocess.Popen([executable("i-pi"), copy.name], cwd=run_dir, stdout=ipi_out,
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
        with signals_ignored():  # a second Ctrl-C must not leave the driver or i-PI running
            stop(ipi, signal.SIGINT)
            stop(driver)
            for channel in channels:
                if channel.address.kind == "unix" and os.path.exists(channel.address.path):
                    os.unlink(channel.address.path)
    if status == 0:
        progress.update(final=True)
        print(f"pet-run: done; i-PI's outputs are in {run_dir}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
