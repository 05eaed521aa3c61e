"""Learning curves: validation MAE of forces and energy per epoch, of training stages or of runs.

    python scripts/plot_learning_curve.py runs/small/last.pt runs/small-continue/last.pt \
        --out docs/results/learning-curve
    python scripts/plot_learning_curve.py --compare runs/size-study/d32/last.pt \
        runs/size-study/d64/last.pt runs/size-study/d128/last.pt --out docs/results/size-study

Each CHECKPOINT is a ``pet-train`` checkpoint (``last.pt`` holds the whole history of its run).
By default they are stages trained one after the other (``init_from``), and their epochs are
counted on from the end of the stage before. With ``--compare`` they are separate runs (a study of
model size, say): each is a curve of its own from epoch 1, labelled with its width, depth and
number of parameters, and a third panel sets the force MAE against the hours of training.
``--labels`` names the series instead (comma-separated, one per checkpoint).
Writes ``PREFIX.png`` (log scales, the learning rate beside the stages) and ``PREFIX.json`` (the
points; force MAE in meV/Å, energy MAE in meV/atom, seconds per epoch, cumulative hours per series);
``--out`` an existing folder (or one ending in /): FOLDER/learning-curve.png and .json.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.errors import AnalysisError  # noqa: E402
from analysis.output import output_prefix  # noqa: E402
from pet import checkpoint  # noqa: E402
from pet.arguments import OneLineParser  # noqa: E402

DEFAULT_NAME = "learning-curve"
"""The file name of the outputs when --out names a folder."""


def size_label(stored: dict) -> str:
    """'d_PET 64, N_GNN 2, N_TL 1: 126k parameters' for a checkpoint dict."""
    hypers = stored["hypers"]
    parameters = sum(p.numel() for p in checkpoint.model_from_dict(stored).parameters())
    return (f"d_PET {hypers['d_pet']}, N_GNN {hypers['n_gnn']}, N_TL {hypers['n_tl']}: "
            f"{parameters / 1000:.0f}k parameters")


def curve(paths, compare: bool = False, labels=None) -> list:
    """Validated epochs of the checkpoints in ``paths``, in order: dicts with ``series`` (index
    of the checkpoint), ``label``, ``checkpoint``, ``epoch`` (counted over the stages, or from 1
    in each run with ``compare``), ``force_mae`` (meV/Å), ``energy_mae`` (meV/atom), ``lr``,
    ``seconds`` (of that epoch) and ``hours`` (of training in its series up to that epoch).
    ``labels``: one per path, instead of 'stage k' or the size."""
    points, offset = [], 0
    for series, path in enumerate(paths):
        stored = checkpoint.read(path)
        history = stored["metadata"].get("history") or []
        if not history:
            raise checkpoint.CheckpointError(f"{path} holds no training history")
        label = labels[series] if labels else size_label(stored) if compare else f"stage {series + 1}"
        hours = 0.0
        for record in history:
            hours += record["seconds"] / 3600
            if "validation_force_mae" in record:
                points.append({"series": series, "label": label, "checkpoint": str(path),
                               "epoch": offset + record["epoch"], "force_mae": record["validation_force_mae"],
                               "energy_mae": record["validation_energy_mae"], "lr": record["lr"],
                               "seconds": record["seconds"], "hours": hours})
        if not compare:
            offset += history[-1]["epoch"]
    return points


def by_series(points) -> list:
    """The points of :func:`curve` as one list per series, in order."""
    return [[p for p in points if p["series"] == series] for series in sorted({p["series"] for p in points})]


def plot(points, path: Path, compare: bool = False) -> None:
    n_panels = 3 if compare else 2
    figure, axes = plt.subplots(1, n_panels, figsize=(5 * n_panels, 4), constrained_layout=True)
    forces, energies = axes[0], axes[1]
    for mine in by_series(points):
        epochs, label = [p["epoch"] for p in mine], mine[0]["label"]
        forces.plot(epochs, [p["force_mae"] for p in mine], "o-", label=label)
        energies.plot(epochs, [p["energy_mae"] for p in mine], "o-", label=label)
        if compare:
            axes[2].plot([p["hours"] for p in mine], [p["force_mae"] for p in mine], "o-", label=label)
    panels = [(forces, "epoch", "validation force MAE (meV/Å)"),
              (energies, "epoch", "validation energy MAE (meV/atom)")]
    if compare:
        panels.append((axes[2], "hours of training (one CPU core)", "validation force MAE (meV/Å)"))
    for axis, xlabel, ylabel in panels:
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.set_yscale("log")
        axis.grid(alpha=0.3, which="both")
        axis.legend(loc="best", fontsize="small")
    if not compare:
        rate = forces.twinx()
        rate.plot([p["epoch"] for p in points], [p["lr"] for p in points], ":", color="gray")
        rate.set_ylabel("learning rate at the epoch's end", color="gray")
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None) -> int:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                        help="pet-train checkpoints, stage by stage (or runs, with --compare)")
    parser.add_argument("--compare", action="store_true",
                        help="the checkpoints are separate runs to compare, not stages of one")
    parser.add_argument("--labels", metavar="A,B,...", help="names of the series, one per checkpoint")
    parser.add_argument("--out", required=True, metavar="PREFIX", help="writes PREFIX.png and PREFIX.json")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else None
    if labels and len(labels) != len(args.checkpoints):
        parser.error(f"--labels names {len(labels)} series for {len(args.checkpoints)} checkpoints")
    try:
        out = output_prefix(args.out, DEFAULT_NAME)
        points = curve([Path(p) for p in args.checkpoints], args.compare, labels)
    except (AnalysisError, checkpoint.CheckpointError) as error:
        print(f"plot_learning_curve.py: error: {error}", file=sys.stderr)
        return 2
    png, json_path = out.with_name(out.name + ".png"), out.with_name(out.name + ".json")
    plot(points, png, args.compare)
    units = {"force_mae": "meV/Å", "energy_mae": "meV/atom", "seconds": "s per epoch",
             "hours": "hours of training in the series"}
    json_path.write_text(json.dumps({"units": units, "points": points}, indent=1) + "\n")
    for mine in by_series(points):
        last = mine[-1]
        print(f"{last['label']}: last validated epoch {last['epoch']}, F {last['force_mae']:.1f} meV/Å, "
              f"E {last['energy_mae']:.2f} meV/atom, {last['hours']:.2f} h")
    print(f"{len(points)} validated epochs; wrote {png} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
