"""Benchmark of reading a training set: the checks of every frame against the parsing alone.

``pet-train`` reads its data with :func:`pet.data.read_frames`, which parses the file
(:func:`pet.data.read_structures`) and then checks every frame (:func:`pet.data.check_frame`: finite
coordinates within bounds, no two atoms closer than 0.3 Å, periodic images included: a neighbour
search per frame) and its labels; pet-eval checks the frames it evaluates alike. The table gives
both times, interleaved, and their ratio (docs/performance.md).

    python scripts/bench_data.py                       # the shared data set (1396 frames)
    python scripts/bench_data.py --data FILE --repeats 5
"""

import tempfile
from pathlib import Path

from ase.io import write

import benchlib
from pet.arguments import OneLineParser, positive_int
from pet.data import DataError, default_dataset, read_frames, read_structures

QUICK_FRAMES = 20
"""Frames of the data set read in --quick mode (an uncompressed copy of the first ones)."""


def run() -> int:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="file to read (default: the data set pet-train reads, $PET_IPI_DATA or "
                             "../shared/data or the cache)")
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help="timed repeats (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"the first {QUICK_FRAMES} frames, uncompressed (a smoke test)")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    try:
        path = args.data or default_dataset()
        if not path.is_file():
            raise DataError(f"no data file at {path}")
        with tempfile.TemporaryDirectory() as folder:
            if args.quick:
                copy = Path(folder) / f"first-{QUICK_FRAMES}-frames-of-{path.name.split('.')[0]}.extxyz"
                write(copy, read_structures(path)[:QUICK_FRAMES], format="extxyz")
                path = copy
            frames = {}
            times = benchlib.interleaved({"parse": lambda: frames.update(parsed=len(read_structures(path))),
                                          "parse + checks": lambda: read_frames(path)},
                                         repeats, progress="reading")
            timed = path.name if args.quick else str(path)
    except DataError as error:
        raise benchlib.BenchError(str(error)) from None
    parse, checked = (benchlib.median(times[name]) for name in ("parse", "parse + checks"))
    count = frames["parsed"]
    print(f"\nReading {timed} ({count} frames):\n", flush=True)
    print(benchlib.table(["frames", "parse, ms", "parse + checks, ms", "per frame (checked), ms",
                          "checked / parse"],
                         [[count, benchlib.milliseconds(parse), benchlib.milliseconds(checked),
                           benchlib.milliseconds(checked / count), f"{checked / parse:.2f}"]]))
    print(f"\nmedians over {repeats} interleaved repeat(s)")
    return 0


if __name__ == "__main__":
    benchlib.main(run)
