"""Block averages and a least-squares line: the statistical errors of the analyses."""

import numpy as np

from .errors import AnalysisError


def block_slices(n_samples: int, n_blocks: int) -> list:
    """``n_blocks`` contiguous slices of equal length covering the first n_blocks·⌊n/n_blocks⌋ samples."""
    if n_blocks < 2:
        raise AnalysisError(f"need at least 2 blocks for an error bar, got {n_blocks}")
    length = n_samples // n_blocks
    if length < 1:
        raise AnalysisError(f"{n_samples} frames cannot make {n_blocks} blocks (--blocks at most {n_samples})")
    return [slice(k * length, (k + 1) * length) for k in range(n_blocks)]


def block_error(n_frames: int, n_blocks: int, statistic):
    """Standard error of a mean over ``n_frames`` frames from ``n_blocks`` blocks of frames, each
    block's value ``statistic(part)`` for its slice of frames; None for ``n_blocks`` = 1 (no error
    bar: e.g. a single structure)."""
    if n_blocks == 1:
        return None
    return mean_and_error([statistic(part) for part in block_slices(n_frames, n_blocks)])[1]


def mean_and_error(samples: np.ndarray):
    """Mean over the first axis (one entry per block) and its standard error std/√(B)."""
    samples = np.asarray(samples, dtype=float)
    return samples.mean(axis=0), samples.std(axis=0, ddof=1) / np.sqrt(len(samples))


def linear_fit(x: np.ndarray, y: np.ndarray):
    """Ordinary least squares y ≈ slope·x + intercept: (slope, intercept, standard error of slope).

    The error assumes independent residuals; correlated residuals make it an underestimate.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) < 3:
        raise AnalysisError(f"a line fit needs at least 3 points, got {len(x)}")
    design = np.stack([x, np.ones_like(x)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(design, y, rcond=None)
    residuals = y - (slope * x + intercept)
    spread = np.sum((x - x.mean()) ** 2)
    slope_error = np.sqrt(np.sum(residuals ** 2) / (len(x) - 2) / spread)
    return float(slope), float(intercept), float(slope_error)


def vector_autocorrelation(series: np.ndarray, max_lag: int) -> np.ndarray:
    """⟨a(t)·a(t + m)⟩ over all origins t, for lags m = 0..max_lag: shape (max_lag + 1, ...).

    ``series`` (T, ..., 3); FFT with zero padding, so each lag averages its T − m products.
    """
    T = len(series)
    if not 0 < max_lag < T:
        raise AnalysisError(f"a correlation needs a lag between 1 and {T - 1} frames, got {max_lag}")
    spectrum = np.fft.rfft(series, n=2 * T, axis=0)
    products = np.fft.irfft(np.abs(spectrum) ** 2, n=2 * T, axis=0)[: max_lag + 1].sum(axis=-1)
    counts = (T - np.arange(max_lag + 1)).reshape((-1,) + (1,) * (products.ndim - 1))
    return products / counts
