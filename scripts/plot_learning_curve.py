"""Learning curve of one or more training stages: validation MAE of forces and energy per epoch.

    python scripts/plot_learning_curve.py runs/small/last.pt runs/small-continue/last.pt \
        --out docs/results/learning-curve

Each CHECKPOINT is a ``pet-train`` checkpoint (``last.pt`` holds the whole history of its run);
several are stages trained one after the other (``init_from``), and their epochs are counted on
from the end of the stage before. Writes ``OUT.png`` (force MAE in meV/Å and energy MAE in
meV/atom against the epoch, log scale, the learning rate beside) and ``OUT.json`` (the points).
"""

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pet import checkpoint  # noqa: E402


def curve(paths) -> list:
    """Validated epochs of the stages in ``paths``, in order: dicts with ``stage``, ``epoch``
    (counted over all stages), ``force_mae`` (meV/Å), ``energy_mae`` (meV/atom), ``lr``, ``seconds``."""
    points, offset = [], 0
    for stage, path in enumerate(paths):
        history = checkpoint.read(path)["metadata"].get("history") or []
        if not history:
            raise checkpoint.CheckpointError(f"{path} holds no training history")
        for record in history:
            if "validation_force_mae" in record:
                points.append({"stage": stage, "checkpoint": str(path), "epoch": offset + record["epoch"],
                               "force_mae": record["validation_force_mae"],
                               "energy_mae": record["validation_energy_mae"], "lr": record["lr"],
                               "seconds": record["seconds"]})
        offset += history[-1]["epoch"]
    return points


def plot(points, path: Path) -> None:
    figure, (forces, energies) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for stage in sorted({p["stage"] for p in points}):
        mine = [p for p in points if p["stage"] == stage]
        epochs = [p["epoch"] for p in mine]
        forces.plot(epochs, [p["force_mae"] for p in mine], "o-", label=f"stage {stage + 1}")
        energies.plot(epochs, [p["energy_mae"] for p in mine], "o-", label=f"stage {stage + 1}")
    for axis, label in ((forces, "validation force MAE (meV/Å)"), (energies, "validation energy MAE (meV/atom)")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.set_yscale("log")
        axis.grid(alpha=0.3, which="both")
        axis.legend(loc="upper right")
    rate = forces.twinx()
    rate.plot([p["epoch"] for p in points], [p["lr"] for p in points], ":", color="gray")
    rate.set_ylabel("learning rate at the epoch's end", color="gray")
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="pet-train checkpoints, stage by stage")
    parser.add_argument("--out", required=True, metavar="PREFIX", help="writes PREFIX.png and PREFIX.json")
    args = parser.parse_args(argv)
    try:
        points = curve([Path(p) for p in args.checkpoints])
    except checkpoint.CheckpointError as error:
        print(f"plot_learning_curve.py: error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(points, out.with_suffix(".png"))
    units = {"force_mae": "meV/Å", "energy_mae": "meV/atom", "seconds": "s per epoch"}
    out.with_suffix(".json").write_text(json.dumps({"units": units, "points": points}, indent=1) + "\n")
    last = points[-1]
    print(f"{len(points)} validated epochs; last: epoch {last['epoch']}, F {last['force_mae']:.1f} meV/Å, "
          f"E {last['energy_mae']:.2f} meV/atom; wrote {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
