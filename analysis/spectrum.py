"""Power spectra of properties time series: the potential energy and the non-equivariant part
Δ = E_raw − E_avg of an MTS run (``pot_component_raw`` of the raw and the averaged forcefield).

Welch's method: the mean-removed series is cut into segments overlapping by half, each multiplied
by a Hann window; the one-sided power spectral density is normalised so that its integral over
frequency equals the variance of the series (units: series² per THz).
"""

import numpy as np

from .errors import AnalysisError
from .ipi_files import column, read_properties
from .output import figure

NAME = "spectrum"
HELP = "power spectrum of the potential energy and of Δ = E_raw - E_avg (MTS components)"
EXAMPLE = "pet-analyze spectrum mts.out --raw-index 0 --avg-index 1 --segments 8 --out mts-spectrum"

THZ_TO_INVERSE_CM = 33.35640951981521
"""cm⁻¹ per THz (1e12 / c in cm/s)."""


def power_spectrum(series: np.ndarray, dt: float, n_segments: int = 8):
    """(frequencies (K,) in 1/[dt], one-sided PSD (K,) in series²·[dt]) by Welch's method.

    ``series`` (T,) sampled every ``dt``; ``n_segments`` half-overlapping Hann-windowed segments
    (1: one windowed periodogram of the whole series). Σ psd · Δf equals the variance.
    """
    series = np.asarray(series, dtype=float)
    if n_segments < 1:
        raise AnalysisError(f"--segments must be at least 1, got {n_segments}")
    length = 2 * len(series) // (n_segments + 1)
    if length < 4:
        raise AnalysisError(f"{len(series)} samples are too few for {n_segments} segments")
    window = np.hanning(length + 2)[1:-1]
    starts = range(0, len(series) - length + 1, length // 2)
    psd = np.zeros(length // 2 + 1)
    for start in starts:
        segment = series[start:start + length]
        psd += np.abs(np.fft.rfft(window * (segment - segment.mean()))) ** 2
    psd *= dt / (np.sum(window ** 2) * len(starts))
    psd[1:(length + 1) // 2] *= 2.0
    return np.fft.rfftfreq(length, dt), psd


def sampling_step(time: np.ndarray, path) -> float:
    """The (uniform) spacing of the time column in ps."""
    steps = np.diff(time)
    if len(steps) < 1 or not np.all(steps > 0):
        raise AnalysisError(f"{path}: the time column must increase")
    if np.ptp(steps) > 1e-3 * steps.mean():
        raise AnalysisError(f"{path}: the time column is not uniformly spaced (a restart?)")
    return float(steps.mean())


def select_series(columns: dict, names: list, raw_index: int, avg_index: int, path) -> dict:
    """{name: (T,) series in eV}: properties columns by name, "delta" for E_raw − E_avg."""
    series = {}
    for name in names:
        if name == "delta":
            raw = column(columns, f"pot_component_raw({raw_index})", path)
            average = column(columns, f"pot_component_raw({avg_index})", path)
            series[name] = raw - average
        else:
            series[name] = column(columns, name, path)
        if series[name].ndim != 1:
            raise AnalysisError(f"{path}: column '{name}' has several values per row")
    return series


def add_arguments(parser):
    parser.add_argument("properties", help="i-PI properties file with a time column")
    parser.add_argument("--series", nargs="+", default=["potential", "delta"],
                        help="columns to transform; 'delta' = pot_component_raw(RAW) - "
                             "pot_component_raw(AVG) (default: potential delta)")
    parser.add_argument("--raw-index", type=int, default=0, help="component index of the raw forcefield (default 0)")
    parser.add_argument("--avg-index", type=int, default=1, help="component index of the averaged forcefield (default 1)")
    parser.add_argument("--segments", type=int, default=8, help="Welch segments (default 8)")


def run(args):
    columns = read_properties(args.properties)
    dt = sampling_step(column(columns, "time", args.properties), args.properties)
    series = select_series(columns, args.series, args.raw_index, args.avg_index, args.properties)
    result = {"units": {"frequency": "THz", "psd": "eV^2/THz", "variance": "eV^2"},
              "sampling_step_ps": dt, "raw_index": args.raw_index, "avg_index": args.avg_index,
              "series": {}}
    fig, (axis,) = figure(1, width=7.0)
    lines = []
    for name, values in series.items():
        frequency, psd = power_spectrum(values, dt, args.segments)
        peak = frequency[1:][np.argmax(psd[1:])]
        result["series"][name] = {"frequency": frequency, "psd": psd, "variance": float(values.var()),
                                  "peak_frequency": float(peak),
                                  "peak_wavenumber": float(peak * THZ_TO_INVERSE_CM)}
        axis.semilogy(frequency[1:] * THZ_TO_INVERSE_CM, psd[1:], label=name)
        lines.append(f"{name}: peak at {peak * THZ_TO_INVERSE_CM:.4g} cm⁻¹, std {np.sqrt(values.var()) * 1e3:.4g} meV")
    axis.set(xlabel="wavenumber (cm⁻¹)", ylabel="PSD (eV²/THz)")
    axis.legend()
    return result, fig, "; ".join(lines)
