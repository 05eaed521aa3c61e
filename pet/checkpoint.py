"""Self-describing PET checkpoints: hypers, species, baseline, weights, metadata, data split.

A checkpoint is a ``torch.save`` of a plain dict with ``format`` = "pet-ipi-checkpoint" and a
``version``; :func:`load` upgrades older versions step by step and reads with
``weights_only=True`` (no code is unpickled).
"""

import hashlib
import pickle
import zipfile
from pathlib import Path
from typing import Optional, Union

import torch

from .hypers import PETHypers
from .model import PET

FORMAT = "pet-ipi-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable pet-ipi checkpoint."""


def to_dict(model: PET, metadata: Optional[dict] = None, split: Optional[dict] = None,
            extra: Optional[dict] = None) -> dict:
    """The checkpoint dict of ``model`` (weights on the CPU).

    ``metadata``: free-form training information (JSON-like); ``split``: the data split, e.g.
    {"train": [...], "validation": [...], "test": [...]} frame indices; ``extra``: more tensors
    or values (optimizer state for resuming), kept as they are.
    """
    return {
        "format": FORMAT,
        "version": VERSION,
        "hypers": model.hypers.to_dict(),
        "species": list(model.species),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": dict(metadata or {}),
        "split": dict(split or {}),
        "extra": dict(extra or {}),
    }


def save(path: Union[str, Path], model: PET, metadata: Optional[dict] = None,
         split: Optional[dict] = None, extra: Optional[dict] = None) -> Path:
    """Write the checkpoint of ``model`` to ``path`` atomically (write, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(to_dict(model, metadata, split, extra), temporary)
    temporary.replace(path)
    return path


UPGRADES = {}
"""version → function turning a checkpoint dict of that version into one of version + 1."""


def upgrade(checkpoint: dict) -> dict:
    """Bring a checkpoint dict to :data:`VERSION`."""
    version = checkpoint.get("version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"checkpoint has no valid version field (got {version!r})")
    if version > VERSION:
        raise CheckpointError(
            f"checkpoint version {version} is newer than this pet-ipi reads ({VERSION}): upgrade pet-ipi"
        )
    while version < VERSION:
        checkpoint = UPGRADES[version](checkpoint)
        version = checkpoint["version"]
    return checkpoint


def file_sha256(path: Union[str, Path]) -> str:
    """The SHA-256 of a checkpoint file, hex: what results record to name the model they used."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _unreadable_reason(path: Path, error: Exception) -> str:
    """Why ``torch.load`` could not read ``path``, in a few words (torch's own message is long)."""
    with open(path, "rb") as handle:
        start = handle.read(4)
    if not start:
        return "the file is empty"
    if start != b"PK\x03\x04":  # torch.save writes a zip archive
        return "not a file written by torch.save"
    if not zipfile.is_zipfile(path):
        return "a torch file cut short or damaged"
    if isinstance(error, pickle.UnpicklingError):
        return "it holds Python objects, not only tensors and plain data"
    lines = str(error).strip().splitlines()
    return f"a damaged torch file: {lines[0] if lines else type(error).__name__}"


def read(path: Union[str, Path]) -> dict:
    """The checkpoint dict stored in ``path``, upgraded; one-line errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        # TorchVersion (a str subclass) is allowed: checkpoints of earlier trainers stored torch.__version__
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = _unreadable_reason(path, error)
        raise CheckpointError(f"{path} is not a pet-ipi checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pet-ipi checkpoint (no '{FORMAT}' format field)")
    return upgrade(checkpoint)


def _some(names, shown: int = 3) -> str:
    """The first ``shown`` of ``names`` (sorted), and how many more there are."""
    names = sorted(names)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _weight_mismatch(model: PET, state_dict: dict) -> str:
    """How ``state_dict`` fails to fit ``model`` (missing, unexpected, misshapen weights), or ""."""
    expected = model.state_dict()
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    misshapen = {name for name in set(expected) & set(state_dict)
                 if tuple(getattr(state_dict[name], "shape", ())) != tuple(expected[name].shape)}
    problems = [f"{len(names)} {kind} weight(s) ({_some(names)})"
                for kind, names in (("missing", missing), ("unexpected", unexpected),
                                    ("wrongly shaped", misshapen)) if names]
    return "; ".join(problems)


def model_from_dict(checkpoint: dict, source: str = "checkpoint content") -> PET:
    """Rebuild the model of a checkpoint dict (``source``: what errors call it)."""
    try:
        model = PET(PETHypers.from_dict(checkpoint["hypers"]), checkpoint["species"])
        mismatch = _weight_mismatch(model, checkpoint["state_dict"])
        if mismatch:
            raise ValueError(mismatch)
        model.load_state_dict(checkpoint["state_dict"])
    except (AttributeError, KeyError, RuntimeError, TypeError, ValueError) as error:
        raise CheckpointError(f"{source} does not describe a PET model: {error}") from None
    return model


def load(path: Union[str, Path], device="cpu", dtype=torch.float32) -> PET:
    """The model stored at ``path``, in eval mode, on ``device`` in ``dtype``."""
    return model_from_dict(read(path), f"checkpoint {path}").to(device=device, dtype=dtype).eval()
