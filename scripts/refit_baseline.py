"""Refit the per-species energy baseline of a trained checkpoint on its training frames.

Usage: python scripts/refit_baseline.py IN.pt OUT.pt [--frames 300]

The network is unchanged (forces are unchanged); the baseline b_s is shifted by the least-squares
solution of Σ_s n_s Δb_s = E_DFT - E_model over the first ``--frames`` training frames, so a model
trained mostly on forces gets its energy zero right. The shift is recorded in the metadata.
"""

import argparse

import numpy as np
import torch

from pet import checkpoint
from pet.compute import compute
from pet.data import read_frames
from pet.neighbors import graph_from_atoms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    stored = checkpoint.read(args.source)
    model = checkpoint.model_from_dict(stored).double().eval()
    frames = read_frames(stored["split"]["path"])
    train = [frames[i] for i in stored["split"]["train"][: args.frames]]
    residual, counts = [], []
    for atoms in train:
        result = compute(model, graph_from_atoms(atoms, model.hypers.cutoff).to(dtype=torch.float64),
                         forces=False, virial=False)
        residual.append(atoms.get_potential_energy() - float(result.energy[0]))
        counts.append([np.sum(atoms.numbers == z) for z in model.species])
    shift = np.linalg.lstsq(np.array(counts, float), np.array(residual), rcond=None)[0]
    with torch.no_grad():
        model.baseline += torch.as_tensor(shift)
    metadata = dict(stored["metadata"], baseline_refit={"frames": len(train), "shift_ev": shift.tolist()})
    checkpoint.save(args.target, model.float(), metadata, stored["split"])
    print(f"baseline shifted by {dict(zip(model.species, np.round(shift, 6)))} eV; saved {args.target}")


if __name__ == "__main__":
    main()
