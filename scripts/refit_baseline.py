"""Refit the per-species energy baseline of a trained checkpoint on its training frames.

Usage: python scripts/refit_baseline.py IN.pt OUT.pt [--frames 300]

The network is unchanged (forces are unchanged); the baseline b_s is shifted by the least-squares
solution of Σ_s n_s Δb_s = E_DFT - E_model over the first ``--frames`` training frames, so a model
trained mostly on forces gets its energy zero right. The shift is recorded in the metadata.
"""

import sys

import numpy as np
import torch
from ase.data import chemical_symbols

from pet import checkpoint
from pet.arguments import OneLineParser, positive_int
from pet.compute import compute
from pet.data import DataError, read_frames
from pet.neighbors import graph_from_atoms


def shift_text(species, shift) -> str:
    """'H +0.0072 eV, O -0.0143 eV' for atomic numbers ``species`` and their shifts (eV)."""
    return ", ".join(f"{chemical_symbols[z]} {value:+.4f} eV" for z, value in zip(species, shift))


def training_frames(stored: dict, n_frames: int) -> list:
    """The first ``n_frames`` training frames of a checkpoint's data split."""
    split = stored.get("split") or {}
    if "path" not in split or not split.get("train"):
        raise DataError("the checkpoint records no training frames (it was not written by pet-train)")
    frames = read_frames(split["path"])
    return [frames[i] for i in split["train"][:n_frames]]


def refit(stored: dict, n_frames: int):
    """(the model with its baseline shifted, the shift per species in eV, the frames used)."""
    model = checkpoint.model_from_dict(stored).double().eval()
    train = training_frames(stored, n_frames)
    residual, counts = [], []
    for atoms in train:
        result = compute(model, graph_from_atoms(atoms, model.hypers.cutoff).to(dtype=torch.float64),
                         forces=False, virial=False)
        residual.append(atoms.get_potential_energy() - float(result.energy[0]))
        counts.append([np.sum(atoms.numbers == z) for z in model.species])
    shift = np.linalg.lstsq(np.array(counts, float), np.array(residual), rcond=None)[0]
    with torch.no_grad():
        model.baseline += torch.as_tensor(shift)
    return model, shift, train


def main(argv=None) -> int:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="the trained checkpoint")
    parser.add_argument("target", help="where the refitted checkpoint goes")
    parser.add_argument("--frames", type=positive_int, default=300, help="training frames to fit on (default 300)")
    args = parser.parse_args(argv)
    try:
        stored = checkpoint.read(args.source)
        model, shift, train = refit(stored, args.frames)
    except (checkpoint.CheckpointError, DataError) as error:
        print(f"refit_baseline.py: error: {error}", file=sys.stderr)
        return 2
    metadata = dict(stored["metadata"], baseline_refit={"frames": len(train), "shift_ev": shift.tolist()})
    checkpoint.save(args.target, model.float(), metadata, stored["split"])
    print(f"baseline shifted by {shift_text(model.species, shift)} over {len(train)} frames; saved {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
