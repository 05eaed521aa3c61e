"""Shared pieces of the benchmarks ``scripts/bench_*.py``: options, models, structures, interleaved
timing, tables, and real i-PI simulations driven from Python with pet-driver serving them.

Timings are wall-clock seconds (``time.perf_counter``; CUDA synchronised). The variants of one
benchmark run side by side, interleaved (A B C A B C ...), and the tables give medians over the
repeats, so that a load that changes during the run hits every variant alike.
"""

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule
from ase.geometry import cell_to_cellpar, cellpar_to_cell

from driver.protocol import ANGSTROM_PER_BOHR, EV_PER_HARTREE, SOCKETS_PREFIX
from pet import PET, PETHypers, checkpoint
from pet.allocator import retain_freed_memory
from pet.arguments import OneLineParser
from pet.calculator import load_model, resolve_device
from pet.checkpoint import CheckpointError
from pet.structures import water_box

SIZES = {
    "small": PETHypers(n_gnn=2, d_pet=64, n_tl=1, n_heads=4, d_feedforward=128, d_head=64),
    "paper": PETHypers(),
}
"""Random models: ``small`` is the shipped model's size (inputs/training/small.yaml), ``paper``
the paper's water model."""

RANDOM_ENERGY_SCALE = 1e-3
"""Energy scale of the random models: small forces, so that MD with them stays near its start
(a random PET binds nothing). Timings do not depend on it."""

BOX = 100.0
"""Box of the single molecule (Å): periodic, but larger than twice the cutoff (gas phase)."""


class BenchError(Exception):
    """A problem the user can fix (bad option, missing CUDA): one line on stderr, exit status 2."""


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    result = OneLineParser(description=description)
    result.add_argument("--size", choices=sorted(SIZES), default="small",
                        help="random model of this size (default small, the shipped model's size)")
    result.add_argument("--model", metavar="PATH", help="a checkpoint instead of a random model")
    result.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    result.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    result.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads of this process and of the drivers it starts "
                             "(default: torch's default here, %(default)s)")
    result.add_argument("--repeats", type=int, default=None, metavar="N",
                        help="timed repeats of every variant (default per benchmark)")
    result.add_argument("--quick", action="store_true",
                        help="small sizes and few repeats: checks that the benchmark runs")
    return result


def setup(args, retain_memory: bool = True) -> None:
    """Check the common options, set the threads and (``retain_memory``) the allocator as
    pet-driver does."""
    try:
        resolve_device(args.device)
    except ValueError as error:
        raise BenchError(str(error)) from None
    if args.threads < 1:
        raise BenchError("--threads must be at least 1")
    if args.repeats is not None and args.repeats < 1:
        raise BenchError("--repeats must be at least 1")
    if args.model is not None and not Path(args.model).is_file():
        raise BenchError(f"no checkpoint {args.model}")
    torch.set_num_threads(args.threads)
    if retain_memory:
        retain_freed_memory()


def main(run: Callable[[], int]) -> None:
    """Run a benchmark's ``run`` with one-line errors (exit status 2) and Ctrl-C (130)."""
    try:
        sys.exit(run())
    except BenchError as error:
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def random_model(size: str) -> PET:
    """The seeded random PET of ``size`` (species H, O; energy scale :data:`RANDOM_ENERGY_SCALE`)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = PET(SIZES[size], species=[1, 8])
    with torch.no_grad():
        model.energy_scale.fill_(RANDOM_ENERGY_SCALE)
    return model


def benchmark_model(args) -> PET:
    """The model of the options, on their device and dtype, for evaluation (no parameter
    gradients, as pet-driver loads it)."""
    source = args.model if args.model is not None else random_model(args.size)
    try:
        return load_model(source, args.device, args.dtype).requires_grad_(False)
    except (CheckpointError, ValueError) as error:
        raise BenchError(f"cannot load the model: {error}") from None


def model_checkpoint(args, folder: Path) -> Path:
    """A checkpoint file of the options' model (for drivers started as processes)."""
    if args.model is not None:
        return Path(args.model).resolve()
    return checkpoint.save(folder / f"random-{args.size}.pt", random_model(args.size),
                           metadata={"note": f"seeded random {args.size} PET for benchmarks"})


def model_name(args) -> str:
    return args.model if args.model is not None else f"random PET, {args.size} size (seed 0)"


def structure(n_molecules: int) -> Atoms:
    """``n_molecules`` water: one molecule in a periodic :data:`BOX` Å box (gas phase), or a
    periodic liquid-density box from :func:`pet.structures.water_box` (seed 0)."""
    if n_molecules == 1:
        atoms = molecule("H2O")
        atoms.set_cell([BOX] * 3)
        atoms.center()
        atoms.pbc = True
        return atoms
    return water_box(n_molecules, seed=0)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def interleaved(variants: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                device: str = "cpu", progress: str = "") -> Dict[str, List[float]]:
    """Seconds of every call of every variant: ``warmup`` untimed rounds, then ``repeats`` timed
    rounds, each round calling every variant once in turn."""
    times = {name: [] for name in variants}
    for round_index in range(warmup + repeats):
        for name, function in variants.items():
            synchronize(device)
            start = time.perf_counter()
            function()
            synchronize(device)
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
        if progress:
            label = "warm-up" if round_index < warmup else f"repeat {round_index - warmup + 1}/{repeats}"
            print(f"  {progress}: {label} done", file=sys.stderr, flush=True)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table (numbers formatted by the caller)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def milliseconds(seconds: float) -> str:
    return f"{1000 * seconds:.1f}"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def conditions(args) -> str:
    """One paragraph on what the figures were measured with and under which load."""
    device = torch.cuda.get_device_name() if args.device == "cuda" else cpu_name()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (f"model: {model_name(args)}; {args.device} ({device}), {args.dtype}, "
            f"{args.threads} torch thread(s); {os.cpu_count()} CPU cores, load average {load} "
            f"at the end; torch {torch.__version__}; medians over {args.repeats} interleaved repeats")


# ---------------------------------------------------------------------------------------------
# real i-PI, driven from Python (ipi.scripting.InteractiveSimulation), with pet-driver processes

SOCKET = '<ffsocket name="{name}" mode="unix"><address>{address}</address>{options}</ffsocket>'

ROTATIONS = """<ffrotations name="{name}"><grid_mode>legendre</grid_mode><grid_order>2</grid_order>
  <inversion>true</inversion>{socket}</ffrotations>"""
"""i-PI's own rotation average over its Legendre grid of order 2 with inversion (36 rotations)."""

SIMULATION = """<simulation verbosity="quiet">
  <output prefix="{prefix}"></output>
  <total_steps>100000000</total_steps>
  <prng><seed>12345</seed></prng>
  {forcefields}
  <system>
    <initialize nbeads="1"><file mode="xyz" units="angstrom">{init}</file></initialize>
    <forces>{forces}</forces>
    <motion mode="dynamics"><dynamics mode="nve"><timestep units="femtosecond">{timestep}</timestep>
      {nmts}</dynamics></motion>
    <ensemble><temperature units="kelvin">300</temperature></ensemble>
  </system>
</simulation>
"""
"""An NVE run from rest (no initial velocities), outputs off."""


def ipi_frame(atoms: Atoms) -> Atoms:
    """A copy of ``atoms`` turned as i-PI holds it (a along x, b in the xy plane)."""
    atoms = atoms.copy()
    atoms.set_cell(cellpar_to_cell(cell_to_cellpar(np.asarray(atoms.cell))), scale_atoms=True)
    return atoms


def write_ipi_xyz(path: Path, atoms: Atoms) -> Path:
    """``atoms`` as an i-PI xyz start file (Å), turned to i-PI's orientation (:func:`ipi_frame`)."""
    atoms = ipi_frame(atoms)
    a, b, c, alpha, beta, gamma = cell_to_cellpar(np.asarray(atoms.cell))
    lines = [str(len(atoms)), f"# CELL(abcABC): {a:.12f} {b:.12f} {c:.12f} {alpha:.12f} {beta:.12f} "
             f"{gamma:.12f} Step: 0 Bead: 0 positions{{angstrom}} cell{{angstrom}}"]
    lines += [f"{s} {x:.16e} {y:.16e} {z:.16e}" for s, (x, y, z) in zip(atoms.symbols, atoms.positions)]
    path.write_text("\n".join(lines) + "\n")
    return path


class IPIBench:
    """A scratch folder, pet-driver processes and i-PI simulations in this process; everything
    is stopped and removed at :meth:`close` (use as a context manager)."""

    def __init__(self, args):
        self.args = args
        self.folder = Path(tempfile.mkdtemp(prefix="pet-bench-"))
        self.tag = uuid.uuid4().hex[:8]
        self.checkpoint = model_checkpoint(args, self.folder)
        self.drivers: List[subprocess.Popen] = []
        self.simulations = []
        self.closing = False
        self.previous_folder = Path.cwd()
        os.chdir(self.folder)  # i-PI writes its (empty) outputs into the working folder

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def address(self, name: str) -> str:
        """A unix socket address unique to this run."""
        return f"bench-{name}-{self.tag}"

    def start_driver(self, channels: Dict[str, str], log_name: str) -> subprocess.Popen:
        """pet-driver serving ``channels`` (address → mode); it connects to every socket as soon
        as a simulation opens it, and ends when i-PI has closed them all."""
        command = [sys.executable, "-m", "driver.cli", "--model", str(self.checkpoint), "--retry",
                   "--connect-timeout", "86400", "--device", self.args.device, "--dtype", self.args.dtype]
        for address, mode in channels.items():
            command += ["--channel", f"{mode}=unix:{address}"]
        environment = dict(os.environ, OMP_NUM_THREADS=str(self.args.threads))
        log = open(self.folder / log_name, "w")
        driver = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment,
                                  cwd=self.previous_folder, start_new_session=True)
        self.drivers.append(driver)
        threading.Thread(target=self._watch, args=(driver, log_name), daemon=True).start()
        return driver

    def _watch(self, driver: subprocess.Popen, log_name: str) -> None:
        """A driver that fails leaves i-PI waiting for forces for ever: end this process then."""
        if driver.wait() != 0 and not self.closing:
            log = (self.folder / log_name).read_text(errors="replace")[-2000:]
            print(f"pet-driver failed (status {driver.returncode}):\n{log}", file=sys.stderr, flush=True)
            shutil.rmtree(self.folder, ignore_errors=True)
            for path in Path(SOCKETS_PREFIX).parent.glob(Path(SOCKETS_PREFIX).name + f"bench-*-{self.tag}"):
                path.unlink(missing_ok=True)
            os._exit(1)

    def simulation(self, forcefields: str, forces: str, atoms: Atoms, timestep: float = 0.5,
                   nmts: str = ""):
        """An i-PI simulation (InteractiveSimulation) of ``atoms`` with these XML pieces."""
        from ipi.scripting import InteractiveSimulation

        prefix = f"sim{len(self.simulations)}"
        init = write_ipi_xyz(self.folder / f"{prefix}.xyz", atoms)
        xml = SIMULATION.format(prefix=prefix, forcefields=forcefields, forces=forces, init=init.name,
                                timestep=timestep, nmts=nmts)
        simulation = InteractiveSimulation(xml)
        self.simulations.append(simulation)
        return simulation

    def close_simulation(self, simulation) -> None:
        """Stop ``simulation``'s forcefields: its sockets close, the driver lets go of them."""
        for forcefield in simulation.fflist.values():
            inner = getattr(forcefield, "ff", None)  # the socket inside an <ffrotations>
            if inner is not None:
                inner.stop()
            forcefield.stop()
        self.simulations.remove(simulation)

    def close(self) -> None:
        self.closing = True
        for simulation in list(self.simulations):
            self.close_simulation(simulation)
        for driver in self.drivers:
            try:
                driver.wait(10)
            except subprocess.TimeoutExpired:  # sockets it never got (the run stopped early)
                driver.kill()
                driver.wait()
        os.chdir(self.previous_folder)
        shutil.rmtree(self.folder, ignore_errors=True)


def evaluate_forces(simulation, positions: np.ndarray) -> np.ndarray:
    """i-PI's forces (N, 3) in eV/Å on ``positions`` (N, 3) Å: sets the bead and asks i-PI's
    force object, which sends the request through the forcefield(s) and waits for the answer."""
    system = simulation.syslist[0]
    system.beads.q[0] = positions.reshape(-1) / ANGSTROM_PER_BOHR
    return np.array(system.forces.f[0]).reshape(-1, 3) * (EV_PER_HARTREE / ANGSTROM_PER_BOHR)


def advance(simulation, steps: int) -> None:
    """Run ``steps`` MD steps of ``simulation`` (as InteractiveSimulation.run, without writing
    outputs and the RESTART file)."""
    from ipi.engine.simulation import Simulation

    simulation.tsteps = simulation.step + steps
    Simulation.run(simulation, write_outputs=False)
    simulation.step += 1



