"""Benchmarks through real i-PI: rotation averaging three ways (1), MTS (3), driver overhead (4).

i-PI runs in this process (``ipi.scripting.InteractiveSimulation``: the same server, forcefield
and integrator code as the ``i-pi`` command); one pet-driver process serves all its sockets. Every
part runs its variants side by side, interleaved, and reports medians. Every measurement has a
simulation and sockets of its own, opened before it and closed after it (i-PI polls every socket
from a thread of its own every 0.1 ms: idle simulations left open would slow the measured one), and
i-PI computes the start forces before the clock starts (connection, INIT).

- ``rotations``: one rotation-averaged force evaluation, asked from i-PI's force object at
  displaced positions (the same for all three ways in a repeat): pet-driver's ``2i`` channel;
  i-PI's ``<ffrotations>`` (Legendre grid of order 2 with inversion, 36 rotations) over pet-driver's
  raw channel, one request per rotation; the same with ``<batch_size>36</batch_size>`` on the
  inner socket (one request, one model call). i-PI's Legendre grid uses Euler angles ZXZ where
  grids.rotation_grid uses ZYZ: the two sets of 36 rotations differ, so each way is checked
  against the average over its own grid computed in this process.
- ``mts``: time per inner step (0.5 fs) of NVE runs: raw only, 2i only, and MTS (raw every inner
  step, 2i − raw every 10: outer step 5 fs, ``<nmts>[1, 10]</nmts>``).
- ``overhead``: raw NVE steps as i-PI sees them against the time pet-driver spent in the model for
  the same steps (it logs that when a socket ends), and pet-driver's channel called in this process
  against its own model time in the same call (neighbour list, checks, conversions), along a random
  walk, with the default skin and with ``--skin 0`` (a new list per call): differences
  taken round by round, so that a load that changes during the run cancels out.

    python scripts/bench_ipi.py                          # all parts, default sizes
    python scripts/bench_ipi.py --part rotations --molecules 1 64 --repeats 5
    python scripts/bench_ipi.py --part mts overhead --size paper --molecules 64
"""

import re
import sys
import time

import numpy as np
import torch

import benchlib
from driver.channels import Channel
from driver.protocol import Structure
from grids.quadrature import rotation_grid
from pet.compute import compute
from pet.neighbors import graph_from_atoms

PARTS = ("rotations", "mts", "overhead")
MOLECULES = {"rotations": [1, 64], "mts": [64, 512], "overhead": [64, 512]}
QUICK_MOLECULES = {"rotations": [1], "mts": [4], "overhead": [4]}
WAYS = ("2i channel", "ffrotations", "ffrotations batch")
OVERHEAD_STEPS = 5
"""Raw MD steps per timed block in the overhead part (per-call costs of the i-PI loop amortised)."""
MTS_INNER = 10

CHANNELS = {
    "rotations": {"avg": "2i", "rot": "raw", "rotb": "raw"},
    "mts": {"mts-raw": "raw", "mts-avg": "2i", "raw": "raw", "avg": "2i"},
    "overhead": {"raw": "raw"},
}
"""The sockets of every part and round (name → channel mode)."""


def socket(name: str, address: str, options: str = "") -> str:
    return benchlib.SOCKET.format(name=name, address=address, options=options)


# ---------------------------------------------------------------------------------------------
# part 1: rotation averaging

def ipi_grid():
    """i-PI's rotations (36, 3, 3) and normalised weights of ffrotations(legendre, 2, inversion)."""
    from ipi.utils.mathtools import get_rotation_quadrature_legendre

    quadrature = get_rotation_quadrature_legendre(2)
    rotations = np.array([r for r, _, _ in quadrature] + [-r for r, _, _ in quadrature])
    weights = np.array([w for _, w, _ in quadrature] * 2, dtype=float)
    return rotations, weights / weights.sum()


def averaged_forces(model, atoms, rotations, weights) -> np.ndarray:
    parameter = next(model.parameters())
    graph = graph_from_atoms(atoms, model.hypers.cutoff).to(parameter.device, parameter.dtype)
    result = compute(model, graph, torch.as_tensor(rotations), torch.as_tensor(weights), virial=False)
    return result.forces.detach().cpu().double().numpy()


def relative(forces: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(forces - reference).max() / np.abs(reference).max())


def rotations_part(bench, args, model, n_molecules, address):
    atoms = benchlib.structure(n_molecules)
    rotations = benchlib.ROTATIONS.format
    inner = {"ffrotations": "", "ffrotations batch": "<batch_size>36</batch_size>"}
    start = benchlib.ipi_frame(atoms)
    rng = np.random.default_rng(1)
    displaced = [start.positions + rng.normal(scale=0.01, size=start.positions.shape)
                 for _ in range(1 + args.repeats)]
    forces = {}

    def way(name):
        def measure(round_index):
            if name == "2i channel":
                forcefield = socket("avg", address(round_index, "avg"))
            else:
                key = "rot" if name == "ffrotations" else "rotb"
                inner_socket = socket("inner", address(round_index, key), inner[name])
                forcefield = rotations(name="avg", socket=inner_socket)
            simulation = bench.simulation(forcefield, '<force forcefield="avg"/>', atoms)
            benchlib.evaluate_forces(simulation, start.positions)  # connects, INIT, first request
            seconds, forces[name] = timed(
                lambda: benchlib.evaluate_forces(simulation, displaced[round_index]))
            bench.close_simulation(simulation)
            return seconds
        return measure

    times = rounds(bench, args, f"rotations, {n_molecules} molecule(s)", {name: way(name) for name in WAYS})

    last = start.copy()
    last.positions = displaced[-1]
    own, ipi = averaged_forces(model, last, *rotation_grid("2i")), averaged_forces(model, last, *ipi_grid())
    agreement = [
        ("2i channel vs the 2i grid average in this process", relative(forces["2i channel"], own)),
        ("ffrotations vs the i-PI grid average in this process", relative(forces["ffrotations"], ipi)),
        ("ffrotations batch vs ffrotations", relative(forces["ffrotations batch"], forces["ffrotations"])),
        ("the two grids' averages (a property of the model)", relative(ipi, own)),
    ]
    medians = {way: benchlib.median(values) for way, values in times.items()}
    row = [n_molecules] + [benchlib.milliseconds(medians[way]) for way in WAYS] + [
        f"{medians['2i channel'] / medians['ffrotations']:.3f}",
        f"{medians['2i channel'] / medians['ffrotations batch']:.3f}"]
    return row, [[n_molecules, what, f"{value:.1e}"] for what, value in agreement]


# ---------------------------------------------------------------------------------------------
# part 3: multiple time steps

def mts_part(bench, args, model, n_molecules, address):
    atoms = benchlib.structure(n_molecules)
    mts_forces = ('<force forcefield="raw"><mts_weights>[-1, 1]</mts_weights></force>'
                  '<force forcefield="avg"><mts_weights>[1, 0]</mts_weights></force>')
    setups = {  # name: (forcefields, forces, timestep, nmts, steps per timed block)
        "raw": (lambda r: socket("raw", address(r, "raw")), '<force forcefield="raw"/>', 0.5, "", MTS_INNER),
        "2i": (lambda r: socket("avg", address(r, "avg")), '<force forcefield="avg"/>', 0.5, "", 1),
        "MTS": (lambda r: socket("raw", address(r, "mts-raw")) + socket("avg", address(r, "mts-avg")),
                mts_forces, 0.5 * MTS_INNER, f"<nmts>[1, {MTS_INNER}]</nmts>", 1),
    }

    def variant(name):
        forcefields, forces, timestep, nmts, steps = setups[name]

        def measure(round_index):
            simulation = bench.simulation(forcefields(round_index), forces, atoms, timestep, nmts)
            prime(simulation)
            seconds, _ = timed(lambda: benchlib.advance(simulation, steps))
            bench.close_simulation(simulation)
            return seconds
        return measure

    times = rounds(bench, args, f"MTS, {n_molecules} molecules", {name: variant(name) for name in setups})
    raw_step = benchlib.median(times["raw"]) / MTS_INNER
    averaged_step = benchlib.median(times["2i"])
    mts_step = benchlib.median(times["MTS"]) / MTS_INNER
    expected = raw_step + averaged_step / MTS_INNER
    return [n_molecules, benchlib.milliseconds(raw_step), benchlib.milliseconds(averaged_step),
            benchlib.milliseconds(mts_step), f"{mts_step / raw_step:.2f}", f"{mts_step / expected:.3f}"]


# ---------------------------------------------------------------------------------------------
# part 4: driver overhead

def overhead_part(bench, args, model, n_molecules, address):
    """Per round, paired: an i-PI step against the model time the driver logged for the same
    steps, and pet-driver's channel in-process against its own model time in the same call."""
    structure = benchlib.structure(n_molecules)
    atoms = benchlib.ipi_frame(structure)  # as the driver sees it
    channels = {"channel": Channel(model, "raw"), "channel, skin 0": Channel(model, "raw", skin=0.0)}
    rng = np.random.default_rng(2)
    walk = [atoms.positions.copy()]  # a random walk of ~MD steps, shared by both channels

    def through_ipi(round_index):
        name = address(round_index, "raw")
        simulation = bench.simulation(socket("raw", name), '<force forcefield="raw"/>', structure)
        prime(simulation)
        seconds, _ = timed(lambda: benchlib.advance(simulation, OVERHEAD_STEPS))
        bench.close_simulation(simulation)
        requests, in_model = driver_report(bench, name)
        return seconds / OVERHEAD_STEPS, in_model / requests

    def through_channel(name):  # new positions every round: no reuse of the last raw result
        channel = channels[name]

        def measure(round_index):
            if name == "channel":
                walk[0] = walk[0] + rng.normal(scale=5e-3, size=walk[0].shape)
            structures = [Structure(walk[0], np.asarray(atoms.cell))]
            before = channel.seconds
            seconds, _ = timed(lambda: channel.evaluate(atoms.numbers, structures))
            return seconds, channel.seconds - before
        return measure

    times = rounds(bench, args, f"overhead, {n_molecules} molecules",
                   {"i-PI step": through_ipi, **{name: through_channel(name) for name in channels}})
    step = benchlib.median([total for total, _ in times["i-PI step"]])
    model_time = benchlib.median([in_model for _, in_model in times["i-PI step"]])
    overhead = benchlib.median([total - in_model for total, in_model in times["i-PI step"]])
    own_work = {name: benchlib.median([total - in_model for total, in_model in times[name]]) for name in channels}
    return [n_molecules, benchlib.milliseconds(step), benchlib.milliseconds(model_time),
            benchlib.milliseconds(overhead), f"{100 * overhead / model_time:.1f}",
            benchlib.milliseconds(own_work["channel"]), benchlib.milliseconds(overhead - own_work["channel"]),
            benchlib.milliseconds(own_work["channel, skin 0"])]


def driver_report(bench, address: str, wait: float = 30.0):
    """(requests, seconds in the model) that pet-driver logged when the socket ``address`` ended."""
    pattern = re.compile(rf"channel \S+ on unix:{re.escape(address)}: (\d+) requests, \d+ structures, "
                         r"([0-9.]+) s in the model")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        found = pattern.search((bench.folder / "driver.log").read_text(errors="replace"))
        if found:
            return int(found.group(1)), float(found.group(2))
        time.sleep(0.05)
    raise benchlib.BenchError(f"pet-driver did not report on the socket {address} within {wait:.0f} s")


def prime(simulation) -> None:
    """Have i-PI compute the forces at the start (connection, INIT, first request), untimed."""
    simulation.syslist[0].forces.f


def rounds(bench, args, what: str, variants) -> dict:
    """Seconds of every variant (name → function of the round index) over ``args.repeats``
    rounds after one warm-up round, each round calling every variant once in turn."""
    times = {name: [] for name in variants}
    for round_index in range(1 + args.repeats):
        for name, measure in variants.items():
            seconds = measure(round_index)
            if round_index:
                times[name].append(seconds)
        progress(what, round_index, args.repeats)
    return times


# ---------------------------------------------------------------------------------------------

def timed(function):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def progress(what: str, round_index: int, repeats: int) -> None:
    label = "warm-up" if round_index == 0 else f"repeat {round_index}/{repeats}"
    print(f"  {what}: {label} done", file=sys.stderr, flush=True)


TABLES = {
    "rotations": ("One rotation-averaged force evaluation through i-PI (ms, median)",
                  ["molecules", *WAYS, "2i / ffrotations", "2i / ffrotations batch"]),
    "mts": ("Time per inner step of 0.5 fs (ms, median)",
            ["molecules", "raw", "2i", "MTS (raw + 2i every 10)", "MTS / raw", "MTS / (raw + 2i/10)"]),
    "overhead": (f"Raw evaluation: per MD step as i-PI sees it against the model (ms, median; "
                 f"i-PI blocks of {OVERHEAD_STEPS} steps)",
                 ["molecules", "i-PI step", "model (in the driver, same steps)", "overhead = step - model",
                  "overhead % of model", "of which the channel's own work (neighbour list, checks)",
                  "of which i-PI + socket", "channel's own work with --skin 0 (a new list per call)"]),
}


def run() -> int:
    parser = benchlib.parser(__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=PARTS, default=list(PARTS),
                        help="which benchmarks (default all)")
    parser.add_argument("--molecules", type=int, nargs="+", default=None, metavar="N",
                        help="water molecules for every part (1: one molecule in a 100 Å box; "
                             "default: " + "; ".join(f"{part} {' '.join(map(str, sizes))}"
                                                     for part, sizes in MOLECULES.items()) + ")")
    args = parser.parse_args()
    defaults = QUICK_MOLECULES if args.quick else MOLECULES
    sizes = {part: args.molecules or defaults[part] for part in args.part}
    if any(n < 1 for values in sizes.values() for n in values):
        raise benchlib.BenchError("--molecules must be positive")
    benchlib.setup(args)
    args.repeats = args.repeats or (1 if args.quick else 5)
    model = benchlib.benchmark_model(args)
    functions = {"rotations": rotations_part, "mts": mts_part, "overhead": overhead_part}
    with benchlib.IPIBench(args) as bench:
        # every simulation gets fresh sockets (those of other variants are closed meanwhile, as
        # their idle polling threads would slow i-PI down); one driver serves them all
        def addresses(part, n_molecules):
            return lambda round_index, name: bench.address(f"{part}-{n_molecules}-{round_index}-{name}")

        bench.start_driver({addresses(part, n)(r, name): mode for part in args.part for n in sizes[part]
                            for r in range(1 + args.repeats) for name, mode in CHANNELS[part].items()},
                           "driver.log")
        for part in args.part:
            rows, agreement = [], []
            for n_molecules in sizes[part]:
                outcome = functions[part](bench, args, model, n_molecules, addresses(part, n_molecules))
                if part == "rotations":
                    rows.append(outcome[0])
                    agreement.extend(outcome[1])
                else:
                    rows.append(outcome)
            title, headers = TABLES[part]
            print(f"\n{title}:\n\n{benchlib.table(headers, rows)}", flush=True)
            if part == "rotations":
                print("\nAgreement of the forces (max |ΔF| / max |F|):\n")
                print(benchlib.table(["molecules", "comparison", "relative difference"], agreement),
                      flush=True)
    print(f"\n{benchlib.conditions(args)}")
    return 0


if __name__ == "__main__":
    benchlib.main(run)
