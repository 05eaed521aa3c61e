"""Writing an analysis's results: ``PREFIX.json`` (numbers) and ``PREFIX.png`` (matplotlib, Agg)."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from pet import output_paths  # noqa: E402

from .errors import AnalysisError  # noqa: E402


def _plain(value):
    """JSON-ready copy: arrays to lists, numpy scalars to Python numbers, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def figure(n_panels: int = 1, width: float = 6.0, height: float = 4.0):
    """A matplotlib figure with ``n_panels`` axes side by side: (figure, list of axes)."""
    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False)
    return fig, list(axes[0])


def output_prefix(text: str, default_name: str) -> Path:
    """:func:`pet.output_paths.output_prefix` (``text``, or ``text/default_name`` for a folder; the
    folder made and checked writable before an analysis runs), with AnalysisError for its errors."""
    try:
        return output_paths.output_prefix(text, default_name)
    except ValueError as error:
        raise AnalysisError(str(error)) from None


def write_outputs(prefix: Path, result: dict, fig) -> tuple:
    """Write ``result`` to PREFIX.json and ``fig`` to PREFIX.png (in the folder that
    :func:`output_prefix` made); returns the two paths."""
    json_path = prefix.with_name(prefix.name + ".json")
    png_path = prefix.with_name(prefix.name + ".png")
    json_path.write_text(json.dumps(_plain(result), indent=1) + "\n")
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path, json_path
