"""Where the shipped model lives."""

import os
from pathlib import Path

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "models" / "pet-water-small.pt"


def default_model_path() -> Path:
    """The model every command uses by default: $PET_IPI_MODEL if set, else the shipped one."""
    return Path(os.environ.get("PET_IPI_MODEL", SHIPPED_MODEL))
