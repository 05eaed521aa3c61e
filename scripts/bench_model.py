"""Benchmarks of the model alone: averaged vs raw (2), scaling with size (5), peak memory (6).

- ``averaging``: the 2i and 3i averages (all rotated copies batched, :class:`GridAverage` with its
  automatic chunks) against loops of 36 and 150 sequential raw evaluations of the rotated
  structures (neighbour lists built beforehand, as the average builds one). Both produce the
  same averaged forces, checked.
- ``scaling``: one raw evaluation (energy, forces, virial) for 1 (in a 100 Å box), 64, 128, 256 and
  512 water molecules.
- ``memory``: peak memory of the 2i and 3i averages of the largest structure, each in a fresh
  process (CPU: peak resident memory minus the resident memory before the evaluation; CUDA:
  torch.cuda.max_memory_allocated), with the automatic chunks and with memory budgets
  (``max_memory``), next to the budget's estimate.
- ``layout``: one raw evaluation with the token layout and attention of the code (atoms grouped
  by neighbour count, :mod:`pet.layout`; softmax over logits + log f) against one block padded to
  the largest neighbour count, and against that block with the attention computed as its
  definition (softmax, times f, renormalised: :func:`pet.transformer.definition_attention`).
- ``compile``: raw and 2i evaluations of the model as it is against the same model with its
  transformers compiled (:func:`pet.compilation.compile_transformers`, pet-driver --compile), with
  the time of the first compiled call (the compiler's) and the agreement of the forces.
- ``allocator``: raw evaluations in processes with and without
  :func:`pet.allocator.retain_freed_memory` (alternating, one process per round and setting), with
  the page faults per evaluation.

    python scripts/bench_model.py                        # all parts
    python scripts/bench_model.py --part scaling --no-retain-memory
    python scripts/bench_model.py --part memory --size paper --budgets 8000 20000
"""

import argparse
import copy
import ctypes
import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import torch

import benchlib
from grids.averaging import GridAverage
from grids.quadrature import rotation_grid
from pet import layout, transformer
from pet.compilation import compile_problem, compile_transformers
from pet.compute import PEAK_PER_SAVED_BYTE, compute, saved_bytes_per_token, tokens_per_copy
from pet.model import GNNLayer, concatenated_edge_tokens
from pet.neighbors import graph_from_atoms

PARTS = ("averaging", "scaling", "layout", "compile", "memory", "allocator")
MOLECULES = {"averaging": [1, 8, 64, 512], "scaling": [1, 64, 128, 256, 512], "layout": [64, 128, 512],
             "compile": [64], "memory": [512], "allocator": [64, 512]}
QUICK_MOLECULES = {"averaging": [4], "scaling": [1, 4, 8], "layout": [4], "compile": [4], "memory": [4],
                   "allocator": [4]}
RAW_EVALUATIONS = 3
"""Timed raw evaluations per process in the allocator part (after one untimed)."""
BUDGETS_MB = [1000.0, 3000.0]
QUICK_BUDGETS_MB = [30.0]
TARGET_RATIO = {"cpu": 0.8, "cuda": 0.3}
"""Issue 6: the 2i average costs at most this fraction of 36 sequential raw evaluations."""


def model_graph(model, n_molecules):
    parameter = next(model.parameters())
    atoms = benchlib.structure(n_molecules)
    return graph_from_atoms(atoms, model.hypers.cutoff).to(parameter.device, parameter.dtype)


def rotated(graph, rotation: torch.Tensor):
    """The graph of the rotated structure (positions and cell vectors turned by ``rotation``):
    the neighbour list is the same."""
    return dataclasses.replace(graph, positions=graph.positions @ rotation.T,
                               cells=graph.cells @ rotation.T)


# ---------------------------------------------------------------------------------------------

def averaging_part(args, model, n_molecules):
    graph = model_graph(model, n_molecules)
    rows = []
    for spec in ("2i", "3i"):
        average = GridAverage(model, spec)
        rotations, weights = (torch.as_tensor(a, dtype=graph.positions.dtype, device=graph.positions.device)
                              for a in rotation_grid(spec))
        graphs = [rotated(graph, r) for r in rotations]
        loop_forces = {}

        def loop():
            total = 0.0
            for r, w, g in zip(rotations, weights, graphs):
                forces = compute(model, g).forces
                total = total + w * forces @ r  # back to the original frame: Rᵀ F per atom
            loop_forces["forces"] = total

        one_pass_at_a_time = GridAverage(model, spec, workers=1)
        results = {}
        variants = {"average": lambda: results.setdefault("average", average(graph)),
                    "one pass at a time": lambda: results.setdefault("serial", one_pass_at_a_time(graph)),
                    "loop": loop}
        what = f"averaging {spec}, {n_molecules} molecules"
        times = benchlib.interleaved(variants, args.repeats, warmup=0 if args.quick else 1,
                                     device=args.device, progress=what)
        reference = loop_forces["forces"]
        difference = max(float((results[name].forces - reference).abs().max() / reference.abs().max())
                         for name in ("average", "serial"))
        averaged, serial, looped = (benchlib.median(times[name]) for name in variants)
        rows.append([n_molecules, spec, len(average), average.passes_for(graph)[1], benchlib.milliseconds(averaged),
                     benchlib.milliseconds(serial), benchlib.milliseconds(looped), f"{averaged / looped:.3f}",
                     f"{serial / looped:.3f}", f"{TARGET_RATIO[args.device]} (2i)" if spec == "2i" else "-",
                     f"{difference:.1e}"])
    return rows


def scaling_part(args, model, sizes):
    graphs = {n: model_graph(model, n) for n in sizes}
    variants = {n: (lambda g=g: compute(model, g)) for n, g in graphs.items()}
    times = benchlib.interleaved(variants, args.repeats, warmup=0 if args.quick else 1, device=args.device,
                                 progress="scaling")
    medians = {n: benchlib.median(values) for n, values in times.items()}
    reference = 64 if 64 in medians else min(n for n in medians if n > 1) if len(medians) > 1 else sizes[0]
    rows = []
    for n in sizes:
        atoms = graphs[n].n_atoms
        rows.append([n, atoms, benchlib.milliseconds(medians[n]), f"{1e6 * medians[n] / atoms:.0f}",
                     f"{medians[n] / medians[reference]:.2f}"])
    return rows, reference


def compile_part(args, model, compiled, n_molecules):
    graph = model_graph(model, n_molecules)
    rows = []
    for spec in ("raw", "2i"):
        def evaluation(network):
            if spec == "raw":
                return lambda: compute(network, graph)
            average = GridAverage(network, spec)
            return lambda: average(graph)

        variants = {"as it is": evaluation(model), "compiled": evaluation(compiled)}
        benchlib.synchronize(args.device)
        start = time.perf_counter()
        first = variants["compiled"]()
        benchlib.synchronize(args.device)
        compiling = time.perf_counter() - start
        times = benchlib.interleaved(variants, args.repeats, warmup=0 if args.quick else 1,
                                     device=args.device, progress=f"compile {spec}, {n_molecules} molecules")
        reference = variants["as it is"]().forces
        difference = float((first.forces - reference).abs().max() / reference.abs().max())
        eager, fast = benchlib.median(times["as it is"]), benchlib.median(times["compiled"])
        rows.append([n_molecules, spec, benchlib.milliseconds(eager), benchlib.milliseconds(fast),
                     f"{fast / eager:.3f}", f"{compiling:.1f}", f"{difference:.1e}"])
    return rows


LAYOUTS = ("grouped, log f, folded (the code)", "grouped, log f, concatenated", "one block, log f, concatenated",
           "one block, definition")


def layout_part(args, model, n_molecules):
    graph = model_graph(model, n_molecules)
    grouped = graph.layout
    single_tokens = graph.n_atoms * (graph.slots.shape[1] + 1)
    fast_attention = transformer.CutoffAttention.forward

    folded = GNNLayer.edge_tokens

    def variant(max_groups, attention, edge_tokens):
        own = dataclasses.replace(graph)  # a graph keeps the layout it builds first: one per variant

        def evaluate():
            with mock.patch.object(layout, "MAX_GROUPS", max_groups), \
                    mock.patch.object(transformer.CutoffAttention, "forward", attention), \
                    mock.patch.object(GNNLayer, "edge_tokens", edge_tokens):
                result = compute(model, own)
            if len(own.layout.groups) > max_groups:
                raise benchlib.BenchError(f"layout of {len(own.layout.groups)} groups, wanted {max_groups}")
            return result
        return evaluate

    variants = dict(zip(LAYOUTS, (variant(layout.MAX_GROUPS, fast_attention, folded),
                                  variant(layout.MAX_GROUPS, fast_attention, concatenated_edge_tokens),
                                  variant(1, fast_attention, concatenated_edge_tokens),
                                  variant(1, transformer.definition_attention, concatenated_edge_tokens))))
    results = {name: function() for name, function in variants.items()}
    times = benchlib.interleaved(variants, args.repeats, warmup=0 if args.quick else 1, device=args.device,
                                 progress=f"layout, {n_molecules} molecules")
    medians = {name: benchlib.median(values) for name, values in times.items()}
    reference = results[LAYOUTS[-1]].forces
    difference = max(float((results[name].forces - reference).abs().max() / reference.abs().max())
                     for name in LAYOUTS[:-1])
    return [n_molecules, f"{grouped.n_tokens} / {single_tokens}", len(grouped.groups),
            *[benchlib.milliseconds(medians[name]) for name in LAYOUTS],
            f"{medians[LAYOUTS[0]] / medians[LAYOUTS[1]]:.3f}", f"{medians[LAYOUTS[1]] / medians[LAYOUTS[2]]:.3f}",
            f"{medians[LAYOUTS[2]] / medians[LAYOUTS[3]]:.3f}",
            f"{difference:.1e}"]


# ---------------------------------------------------------------------------------------------
# memory: every measurement in a process of its own

def peak_of(args, n_molecules: int, spec: str, max_memory_mb):
    """Measure in this process: chunk, estimated and measured peak (MB), seconds."""
    model = benchlib.benchmark_model(args)
    graph = model_graph(model, n_molecules)
    max_memory = None if max_memory_mb is None else max_memory_mb * 2**20
    average = GridAverage(model, spec, max_memory=max_memory)
    per_token = saved_bytes_per_token(model, graph)  # the budget's estimate, also when not used
    passes, workers = average.passes_for(graph)
    chunk = max(stop - start for start, stop in passes)
    estimate = PEAK_PER_SAVED_BYTE * per_token * tokens_per_copy(graph) * chunk * workers
    if args.device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        ctypes.CDLL(None).malloc_trim(0)  # give the probe's freed memory back, not to count it as free
        before = resident_bytes("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # peak resident memory := resident memory now
    start = time.perf_counter()
    average(graph)
    benchlib.synchronize(args.device)
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if args.device == "cuda" else resident_bytes("VmHWM")) - before
    return {"chunk": chunk, "estimate_mb": estimate / 2**20, "peak_mb": peak / 2**20, "seconds": seconds,
            "copies": len(average), "per_copy_saved_mb": per_token * tokens_per_copy(graph) / 2**20,
            "workers": workers}


def raw_in_process(args, n_molecules: int):
    """Measure in this process: seconds of :data:`RAW_EVALUATIONS` raw evaluations after a first
    one, and the minor page faults per evaluation."""
    model = benchlib.benchmark_model(args)
    graph = model_graph(model, n_molecules)
    compute(model, graph)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = []
    for _ in range(RAW_EVALUATIONS):
        start = time.perf_counter()
        compute(model, graph)
        benchlib.synchronize(args.device)
        seconds.append(time.perf_counter() - start)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / RAW_EVALUATIONS
    return {"seconds": seconds, "faults": faults}


def in_subprocess(args, *arguments) -> dict:
    """The JSON line printed by this script run with ``arguments`` in a process of its own."""
    command = [sys.executable, __file__, *map(str, arguments), "--size", args.size, "--device", args.device,
               "--dtype", args.dtype, "--threads", str(args.threads)]
    command += ["--model", args.model] if args.model else []
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        raise benchlib.BenchError(f"measurement in a subprocess failed:\n{run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def allocator_part(args, n_molecules):
    seconds, faults = {True: [], False: []}, {True: [], False: []}
    for round_index in range(args.repeats):
        for retain in (True, False):
            result = in_subprocess(args, "--measure-raw", "--molecules", n_molecules,
                                   *([] if retain else ["--no-retain-memory"]))
            seconds[retain].append(benchlib.median(result["seconds"]))
            faults[retain].append(result["faults"])
        print(f"  allocator, {n_molecules} molecules: round {round_index + 1}/{args.repeats} done",
              file=sys.stderr, flush=True)
    kept, default = benchlib.median(seconds[True]), benchlib.median(seconds[False])
    return [n_molecules, benchlib.milliseconds(kept), benchlib.milliseconds(default), f"{kept / default:.3f}",
            f"{benchlib.median(faults[True]):.0f}", f"{benchlib.median(faults[False]):.0f}"]


def resident_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise benchlib.BenchError(f"no {field} in /proc/self/status (peak memory on a CPU needs Linux)")


def memory_part(args, n_molecules, budgets):
    rows = []
    cases = [("3i", budget) for budget in budgets]
    if not args.quick:
        cases = [("2i", None), ("3i", None)] + cases
    for spec, budget in cases:
        result = in_subprocess(args, "--measure-peak", spec, "--molecules", n_molecules,
                               *(["--no-retain-memory"] if args.no_retain_memory else []),
                               *([] if budget is None else ["--budget", budget]))
        print(f"  memory: {spec}, budget {budget} done", file=sys.stderr, flush=True)
        rows.append([n_molecules, spec, "automatic" if budget is None else f"{budget:.0f} MB",
                     f"{result['chunk']} of {result['copies']}", f"{result['per_copy_saved_mb']:.0f}",
                     f"{result['estimate_mb']:.0f}", f"{result['peak_mb']:.0f}",
                     f"{result['seconds']:.1f}", result["workers"]])
    return rows


TABLES = {
    "averaging": ("Averaged evaluation against sequential raw evaluations (ms, median; the average's passes "
                  "side by side on the workers, and one pass at a time)",
                  ["molecules", "grid", "rotations", "workers", "averaged (batched)", "one pass at a time",
                   "loop of raw evaluations", "averaged / loop", "one at a time / loop", "target",
                   "max |ΔF| / max |F|"]),
    "scaling": ("Raw evaluation (energy, forces, virial) against size (ms, median)",
                ["molecules", "atoms", "time", "µs per atom", "time / time(reference)"]),
    "layout": ("Raw evaluation: edge tokens, token layout and attention form (ms, median)",
               ["molecules", "tokens grouped / one block", "groups", *LAYOUTS, "folded / concatenated",
                "grouped / one block", "log f / definition", "max |ΔF| / max |F|"]),
    "compile": ("The model as it is against its transformers compiled (ms, median)",
                ["molecules", "evaluation", "as it is", "compiled", "compiled / as it is",
                 "first compiled call (s)", "max |ΔF| / max |F|"]),
    "allocator": ("Raw evaluation with and without pet.allocator.retain_freed_memory (ms, median; "
                  "one process per round and setting)",
                  ["molecules", "freed memory kept", "glibc default", "kept / default",
                   "page faults per evaluation, kept", "page faults, default"]),
    "memory": ("Peak memory of one averaged evaluation (MB; each in a fresh process)",
               ["molecules", "grid", "memory budget", "copies per pass", "saved tensors per copy",
                "estimated peak", "measured peak", "time (s)", "workers (passes side by side)"]),
}


def run() -> int:
    parser = benchlib.parser(__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=PARTS, default=None,
                        help="which benchmarks (default all; compile only where this machine can "
                             "compile)")
    parser.add_argument("--molecules", type=int, nargs="+", default=None, metavar="N",
                        help="water molecules for every part (default: " + "; ".join(
                            f"{part} {' '.join(map(str, sizes))}" for part, sizes in MOLECULES.items()) + ")")
    parser.add_argument("--budgets", type=float, nargs="+", default=None, metavar="MB",
                        help=f"memory budgets for 3i in the memory part (default {BUDGETS_MB})")
    parser.add_argument("--no-retain-memory", action="store_true",
                        help="leave glibc's malloc as it is (pet-driver and these benchmarks otherwise "
                             "keep freed memory: pet/allocator.py)")
    parser.add_argument("--measure-peak", metavar="GRID", help=argparse.SUPPRESS)
    parser.add_argument("--measure-raw", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_peak:
        args.repeats = 1
        benchlib.setup(args, retain_memory=not args.no_retain_memory)
        print(json.dumps(peak_of(args, args.molecules[0], args.measure_peak, args.budget)))
        return 0
    if args.measure_raw:
        benchlib.setup(args, retain_memory=not args.no_retain_memory)
        print(json.dumps(raw_in_process(args, args.molecules[0])))
        return 0
    problem = compile_problem(args.device)
    if args.part is None:
        args.part = [part for part in PARTS if part != "compile" or not problem]
        if problem:
            print(f"bench_model.py: the compile part is left out: {problem}", file=sys.stderr)
    elif "compile" in args.part and problem:
        raise benchlib.BenchError(f"--part compile: {problem}")
    defaults = QUICK_MOLECULES if args.quick else MOLECULES
    sizes = {part: args.molecules or defaults[part] for part in args.part}
    if any(n < 1 for values in sizes.values() for n in values):
        raise benchlib.BenchError("--molecules must be positive")
    budgets = args.budgets or (QUICK_BUDGETS_MB if args.quick else BUDGETS_MB)
    if any(not budget > 0 for budget in budgets):
        raise benchlib.BenchError("--budgets must be positive")
    benchlib.setup(args, retain_memory=not args.no_retain_memory)
    args.repeats = args.repeats or (1 if args.quick else 3)
    model = benchlib.benchmark_model(args)
    for part in args.part:
        title, headers = TABLES[part]
        note = ""
        if part == "averaging":
            rows = [row for n in sizes[part] for row in averaging_part(args, model, n)]
        elif part == "scaling":
            rows, reference = scaling_part(args, model, sizes[part])
            note = f"\n(reference: {reference} molecules)"
        elif part == "memory":
            rows = [row for n in sizes[part] for row in memory_part(args, n, budgets)]
        elif part == "layout":
            rows = [layout_part(args, model, n) for n in sizes[part]]
        elif part == "compile":
            compiled = compile_transformers(copy.deepcopy(model))
            rows = [row for n in sizes[part] for row in compile_part(args, model, compiled, n)]
        else:
            rows = [allocator_part(args, n) for n in sizes[part]]
        print(f"\n{title}:\n\n{benchlib.table(headers, rows)}{note}", flush=True)
    allocator = ("glibc default malloc" if args.no_retain_memory
                 else "freed memory retained (pet/allocator.py)")
    print(f"\n{benchlib.conditions(args)}; {allocator}")
    return 0


if __name__ == "__main__":
    benchlib.main(run)
