"""Where the shipped model lives, and paths that commands take from environment variables."""

import os
from pathlib import Path
from typing import Optional

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "models" / "pet-water-small.pt"


def environment_path(name: str, what: str) -> Optional[Path]:
    """The path in the environment variable ``name`` (``~`` expanded), None if it is not set;
    ValueError if it is set but empty or blank (``what`` says what it should name, e.g. "a
    checkpoint path"), which would otherwise mean the current directory."""
    value = os.environ.get(name)
    if value is None:
        return None
    if not value.strip():
        raise ValueError(f"{name} is set but empty: unset it or give {what}")
    return Path(value).expanduser()


def default_model_path() -> Path:
    """The model every command uses by default: $PET_IPI_MODEL if set, else the shipped one;
    ValueError if $PET_IPI_MODEL is set but empty."""
    return environment_path("PET_IPI_MODEL", "a checkpoint path") or SHIPPED_MODEL
