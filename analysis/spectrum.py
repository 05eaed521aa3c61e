"""Power spectra of properties time series: the potential energy and the non-equivariant part
Δ = E_raw − E_avg of an MTS run (``pot_component_raw`` of the raw and the averaged forcefield).

Welch's method: the mean-removed series is cut into segments overlapping by half, each multiplied
by a Hann window; the one-sided power spectral density is normalised so that its integral over
frequency equals the variance of the series (units: the series' unit squared per THz: eV²/THz for
energies, K²/THz for the temperature).
"""

import numpy as np

from pet.arguments import positive_int

from .errors import AnalysisError
from .ipi_files import column, read_properties, time_column
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
    length = 2 * len(series) // (n_segments + 1)
    if length < 4:
        raise AnalysisError(f"{len(series)} samples are too few for {n_segments} segments "
                            f"(at least {2 * (n_segments + 1)})")
    window = np.hanning(length + 2)[1:-1]
    starts = range(0, len(series) - length + 1, length // 2)
    psd = np.zeros(length // 2 + 1)
    for start in starts:
        segment = series[start:start + length]
        psd += np.abs(np.fft.rfft(window * (segment - segment.mean()))) ** 2
    psd *= dt / (np.sum(window ** 2) * len(starts))
    psd[1:(length + 1) // 2] *= 2.0
    return np.fft.rfftfreq(length, dt), psd


def sampling_step(columns: dict, path) -> float:
    """The (uniform) spacing in ps of the time column of ``columns``."""
    steps = np.diff(time_column(columns, path, min_rows=2))
    if np.ptp(steps) > 1e-3 * steps.mean():
        raise AnalysisError(f"{path}: the time column is not uniformly spaced (a restart?)")
    return float(steps.mean())


def select_series(columns, names: list, raw_index: int, avg_index: int, path) -> dict:
    """{name: ((T,) series, its unit)}: properties columns by name, "delta" for E_raw − E_avg."""
    series = {}
    for name in names:
        if name == "delta":
            components = [f"pot_component_raw({raw_index})", f"pot_component_raw({avg_index})"]
            missing = [component for component in components if component not in columns]
            if missing:
                raise AnalysisError(f"{path}: no column '{missing[0]}' for 'delta' (an MTS run's components; "
                                    "for another run give the columns, e.g. --series potential)")
            raw, average = (column(columns, component, path) for component in components)
            series[name] = (raw - average, columns.units[components[0]])
        else:
            series[name] = (column(columns, name, path), columns.units.get(name, ""))
    return series


def peak_frequency(frequency: np.ndarray, psd: np.ndarray, series: np.ndarray):
    """The frequency of the highest PSD above zero frequency, or None if ``series`` is constant."""
    if np.ptp(series) == 0:
        return None
    return float(frequency[1:][np.argmax(psd[1:])])


def squared(unit: str) -> str:
    """'eV^2' for 'eV', '1' for a number without unit."""
    return f"{unit}^2" if unit else "1"


def spread(std: float, unit: str) -> str:
    """The standard deviation for the summary line: in meV for eV, else in the series' unit."""
    if unit == "eV":
        return f"{std * 1e3:.4g} meV"
    return f"{std:.4g} {unit}".rstrip()


def add_arguments(parser):
    parser.add_argument("properties", help="i-PI properties file with a time column")
    parser.add_argument("--series", nargs="+", default=["potential", "delta"],
                        help="columns to transform; 'delta' = pot_component_raw(RAW) - "
                             "pot_component_raw(AVG) (default: potential delta)")
    parser.add_argument("--raw-index", type=int, default=0, help="component index of the raw forcefield (default 0)")
    parser.add_argument("--avg-index", type=int, default=1, help="component index of the averaged forcefield (default 1)")
    parser.add_argument("--segments", type=positive_int, default=8, help="Welch segments (default 8)")


def run(args):
    columns = read_properties(args.properties)
    dt = sampling_step(columns, args.properties)
    series = select_series(columns, args.series, args.raw_index, args.avg_index, args.properties)
    result = {"units": {"frequency": "THz", "sampling_step": "ps"},
              "sampling_step_ps": dt, "raw_index": args.raw_index, "avg_index": args.avg_index,
              "series": {}}
    fig, (axis,) = figure(1, width=7.0)
    lines = []
    for name, (values, unit) in series.items():
        frequency, psd = power_spectrum(values, dt, args.segments)
        peak = peak_frequency(frequency, psd, values)
        wavenumber = None if peak is None else peak * THZ_TO_INVERSE_CM
        result["series"][name] = {"frequency": frequency, "psd": psd, "variance": float(values.var()),
                                  "peak_frequency": peak, "peak_wavenumber": wavenumber,
                                  "units": {"psd": f"{squared(unit)}/THz", "variance": squared(unit)}}
        axis.semilogy(frequency[1:] * THZ_TO_INVERSE_CM, psd[1:], label=name)
        peak_text = "constant, no peak" if peak is None else f"peak at {wavenumber:.4g} cm⁻¹"
        lines.append(f"{name}: {peak_text}, std {spread(np.sqrt(values.var()), unit)}")
    units = {unit for _, unit in series.values()}
    axis.set(xlabel="wavenumber (cm⁻¹)",
             ylabel=f"PSD ({squared(units.pop())}/THz)" if len(units) == 1 else "PSD (unit² of each series/THz)")
    axis.legend()
    return result, fig, "; ".join(lines)
