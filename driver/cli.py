"""pet-driver: serve PET force channels to i-PI over its socket protocol."""

import argparse
import logging
import os
import signal
import sys
import threading
from typing import List, Optional, Tuple

import torch

from pet.allocator import retain_freed_memory
from pet.arguments import OneLineParser, finite_float, non_negative_int, positive_int
from pet.calculator import load_model, resolve_device
from pet.checkpoint import CheckpointError
from pet.compilation import compile_problem, compile_transformers
from pet.models import default_model_path
from pet.verlet import MAX_SKIN

from . import runner
from .channels import Channel, LastRaw, parse_mode
from .protocol import SOCKETS_PREFIX, Address
from .species import DEFAULT_UNIT, Species, SpeciesError

log = logging.getLogger("pet-driver")

DESCRIPTION = """\
Serve a PET model to i-PI: connect to i-PI's sockets and answer its force requests.
One process serves several channels (sockets) at once, each in its own mode, from one copy of
the model: raw (the network as it is), a rotation grid N or Ni (the average over that grid, e.g.
2i = 36 rotations) or random (one random rotation per call). Every answer carries a JSON extras
string; averaged channels report there the symmetry error of each structure."""

EPILOG = """\
examples:
  pet-driver --grid 2i
      raw on unix socket pet-raw and the 2i average on pet-2i (i-PI's <address>pet-raw</address>)
  pet-driver --channel raw=unix:md-raw --channel 3i=unix:md-3i --model my.pt --retry
  pet-driver --channel random=inet:node12:31415 --dtype float32 --device cuda
  pet-driver --grid 2i --template init.xyz      (species and atom order from i-PI's start file)

species: i-PI sends positions only. The atom order comes from --template, else from a
'species: FORMULA' entry in the ffsocket's <parameters>, else from --species (default OH2: atoms
O, H, H, molecule after molecule; the atom count must then be a multiple of 3). A --template or
--species with elements the model does not know is refused before connecting.

exit status: 0 when i-PI sent EXIT (or closed the socket between messages) on every socket, 1 on
an error (model, structure, species, connection lost mid-message: one line on stderr), 2 on a
command-line mistake, 130 when interrupted (Ctrl-C, SIGTERM)."""


def default_model_text() -> str:
    """How --help names the default model: its path now, or why there is none (a blank
    $PET_IPI_MODEL), so that the help never fails."""
    try:
        return str(default_model_path())
    except ValueError as error:
        return str(error)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="pet-driver", description=DESCRIPTION, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", metavar="G",
                        help="serve raw on unix:pet-raw and the G-averaged model on unix:pet-G "
                             "(e.g. --grid 2i); not with --channel")
    parser.add_argument("--channel", action="append", default=[], metavar="MODE=ADDRESS",
                        help="serve MODE (raw, random, N or Ni, N at most 20) on ADDRESS (unix:NAME "
                             "for the socket /tmp/ipi_NAME, or inet:HOST:PORT); repeat for several, e.g. "
                             "--channel raw=unix:pet-raw --channel 2i=unix:pet-2i")
    parser.add_argument("--sockets-prefix", default=SOCKETS_PREFIX, metavar="PREFIX",
                        help=f"unix:NAME is the socket file PREFIX+NAME, as i-PI's <simulation "
                             f"sockets_prefix> (default {SOCKETS_PREFIX}; its folder must exist); the "
                             f"whole path may have at most 107 bytes")
    parser.add_argument("--model", metavar="PATH",
                        help=f"PET checkpoint (default: $PET_IPI_MODEL or the shipped model, "
                             f"now {default_model_text()})")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where the model runs (default cpu; cuda: the first GPU torch sees)")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                        help="floating-point precision of the model (default float64: forces "
                             "consistent with the energy to round-off, for energy conservation)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="CPU threads of the model (default: torch's, one per core; averaged "
                             "channels run that many passes of rotated copies side by side); give fewer "
                             "when other jobs share the cores: torch's threads wait for each other, and "
                             "one molecule took 122 ms per evaluation on 2 threads against 14 ms on 1 "
                             "with the other core busy")
    parser.add_argument("--skin", default=0.5, metavar="Å",
                        type=finite_float(0.0, MAX_SKIN, unit=" Å",
                                          why="a larger skin only slows the neighbour list"),
                        help="neighbour-list skin: the list holds pairs within R_c + skin and is rebuilt "
                             "only when an atom has moved more than skin/2 (default 0.5, at most 10; "
                             "0: a new list at every request; the forces are the same either way)")
    parser.add_argument("--template", metavar="FILE",
                        help="structure file (any format ASE reads, e.g. i-PI's init.xyz) giving "
                             "the species in i-PI's atom order")
    parser.add_argument("--species", metavar="FORMULA",
                        help=f"repeating unit of the atom order instead of --template, element "
                             f"symbols the model knows (default {DEFAULT_UNIT}: O, H, H per molecule)")
    parser.add_argument("--seed", type=non_negative_int, default=None,
                        help="seed of the random channels, a non-negative integer (default: fresh randomness)")
    parser.add_argument("--chunk-size", type=positive_int, default=None, metavar="K",
                        help="at most K rotated copies per forward pass (bounds memory; default automatic)")
    parser.add_argument("--max-memory", type=finite_float(0.0, low_allowed=False, unit=" MB"),
                        default=None, metavar="MB",
                        help="instead of --chunk-size: as many rotated copies per pass as fit in MB "
                             "megabytes (estimated from one copy; for GPUs, on a CPU the default is faster)")
    parser.add_argument("--compile", action="store_true",
                        help="compile the model's transformers with torch.compile: faster evaluations "
                             "(docs/performance.md), but the first one, and the first of a new kind of "
                             "shape, waits for the compiler (tens of seconds on a CPU); needs a C++ "
                             "compiler on a CPU, triton on a GPU; not with --max-memory")
    parser.add_argument("--connect-timeout", type=finite_float(0.0, unit=" s"), default=60.0,
                        metavar="SECONDS",
                        help="with --retry, give up when i-PI is not there after this long (default 60)")
    parser.add_argument("--retry", action="store_true",
                        help="keep trying to connect while i-PI starts (for a driver launched first)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="how much to log on stderr (default info)")
    return parser


def channel_specs(args) -> List[Tuple[str, Address]]:
    """(mode, address) of every channel asked for; ValueError with a clear message otherwise."""
    if args.grid is not None and args.channel:
        raise ValueError("give either --grid or --channel, not both")
    if args.channel:
        specs = []
        for text in args.channel:
            mode, separator, address = text.partition("=")
            if not separator:
                raise ValueError(f"bad --channel {text!r}: use MODE=ADDRESS, e.g. 2i=unix:pet-2i")
            specs.append((parse_mode(mode), Address.parse(address, args.sockets_prefix)))
    elif args.grid is not None:
        grid = parse_mode(args.grid)
        if grid in ("raw", "random"):
            raise ValueError(f"--grid takes a rotation grid such as 2i, not {grid!r}")
        specs = [("raw", Address.parse("unix:pet-raw", args.sockets_prefix)),
                 (grid, Address.parse(f"unix:pet-{grid}", args.sockets_prefix))]
    else:
        specs = [("raw", Address.parse("unix:pet-raw", args.sockets_prefix))]
    addresses = [str(address) for _, address in specs]
    for address in set(addresses):
        if addresses.count(address) > 1:
            raise ValueError(f"two channels on the same address {address}")
    return specs


def check_device(device: str) -> None:
    """ValueError if ``device`` is not on this machine (:func:`pet.calculator.resolve_device`)."""
    try:
        resolve_device(device)
    except ValueError as error:
        raise ValueError(f"{error}: use --device cpu") from None


def check_compilable(args) -> None:
    """ValueError if --compile cannot work with the other options or on this machine."""
    if args.max_memory is not None:
        raise ValueError("give either --compile or --max-memory, not both: the memory estimate "
                         "is made with the model as it is, not compiled")
    problem = compile_problem(args.device)
    if problem:
        raise ValueError(f"--compile: {problem}")


def check_socket_folders(specs: List[Tuple[str, Address]]) -> None:
    """ValueError if the folder of a unix socket file (``--sockets-prefix`` + NAME) does not exist:
    i-PI makes its socket files there but not the folder, so it could not start."""
    for _, address in specs:
        folder = os.path.dirname(address.path) or "."
        if address.kind == "unix" and not os.path.isdir(folder):
            raise ValueError(f"--sockets-prefix {address.prefix}: there is no folder {folder} for the "
                             f"socket file {address.path} (i-PI makes its socket files, not their "
                             "folder): create it, or give the <simulation sockets_prefix> of the i-PI input")


def species_of(args) -> Species:
    """The species of --template, else of --species (default OH2); SpeciesError or ValueError
    if they cannot be read, or both options are given."""
    if args.template is not None and args.species is not None:
        raise ValueError("give either --template or --species, not both")
    return Species.given(args.template, args.species)


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    """pet-driver with the command line ``argv``: the exit status. Ctrl-C or SIGTERM, also while
    torch starts or the model loads, ends it with one line and status 130."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return serve_channels(argv)
    except KeyboardInterrupt:
        print("pet-driver: interrupted", file=sys.stderr, flush=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve_channels(argv: Optional[List[str]]) -> int:
    """Check the command line ``argv``, load the model and serve the channels: the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="pet-driver: %(message)s", stream=sys.stderr)
    try:
        specs = channel_specs(args)
        check_socket_folders(specs)
        species = species_of(args)
        check_device(args.device)
        if args.max_memory is not None and args.chunk_size is not None:
            raise ValueError("give either --chunk-size or --max-memory, not both")
        if args.compile:
            check_compilable(args)
    except (ValueError, SpeciesError) as error:
        parser.error(str(error))
    retain_freed_memory()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        model = load_model(args.model, args.device, args.dtype)
    except CheckpointError as error:
        log.error("cannot load the model: %s (give one with --model PATH)", error)
        return 1
    except ValueError as error:
        log.error("cannot load the model: %s", error)
        return 1
    if args.compile:
        compile_transformers(model)
        log.info("--compile: the transformers are compiled at the first evaluation (tens of "
                 "seconds on a CPU; again, shorter, for a new kind of shape)")
    if species.exact or args.species is not None:  # the default unit may be replaced in i-PI's INIT
        try:
            species.check_known(model.species)
        except SpeciesError as error:
            if args.species is not None:
                parser.error(f"argument --species: {error}")
            log.error("%s", error)
            return 1
    log.info("model %s (%s, %s, %d CPU thread(s)), species %s", args.model or default_model_path(),
             args.device, args.dtype, torch.get_num_threads(), species.source)
    lock, last_raw = threading.Lock(), LastRaw()
    max_memory = None if args.max_memory is None else args.max_memory * 2**20
    tasks = [runner.Task(Channel(model, mode, lock, seed=None if args.seed is None else args.seed + k,
                                 chunk_size=args.chunk_size, max_memory=max_memory,
                                 last_raw=last_raw, skin=args.skin), address)
             for k, (mode, address) in enumerate(specs)]
    return runner.run(tasks, species, timeout=args.connect_timeout, retry=args.retry)


if __name__ == "__main__":
    sys.exit(main())
