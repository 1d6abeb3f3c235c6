"""Forecasts from one series' history, and the errors that score them.

    naive(history, horizon)                       # the last value, repeated
    seasonal_naive(history, horizon, period=7)    # the last cycle, repeated
    decomposition_forecast(trend, seasonal, horizon, window, period=7)
                                                  # a line through the trend's last `window` days,
                                                  # plus the last seasonal cycle repeated
    fill_trend_ends(trend, window)                # a centred moving average's NaN ends, extended
    mae(actual, forecast), mape(...), smape(...)

Every function takes 1-D sequences (a list, a numpy array, a pandas Series, a CPU tensor) and
returns numpy arrays (forecasts) or floats (errors). Nothing here fits a decomposition: the
trend and seasonal parts come from statsmodels (`seasonal_decompose`, `STL`) or any other.

Zeros and MAPE: the percentage error of a day with no demand is undefined, so `mape` refuses
actual values of 0 with a ValueError instead of dropping those days without a word (which would
flatter a forecast exactly where it is hardest to score). Use `mae` or `smape` on such series.
"""

from __future__ import annotations

import numbers

import numpy as np

from lablib.core.validate import positive_int


def _vector(name: str, values, finite: bool = True) -> np.ndarray:
    """`values` as a non-empty 1-D float array; a clear error naming `name` otherwise."""
    if values is None or isinstance(values, (str, bytes, dict, numbers.Number)) or not hasattr(values, "__len__"):
        raise TypeError(f"{name} must be a 1-D sequence of numbers, got {type(values).__name__}")
    try:
        raw = np.asarray(values)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be a 1-D sequence of numbers ({exc})") from None
    if raw.dtype == bool or raw.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold numbers, got dtype {raw.dtype}")
    if raw.ndim != 1 or len(raw) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {raw.shape}")
    out = raw.astype(np.float64)
    if finite and not np.isfinite(out).all():
        where = int(np.flatnonzero(~np.isfinite(out))[0])
        raise ValueError(f"{name} holds NaN or inf (first at position {where} of {len(out)}): fill missing "
                         "days (e.g. interpolate) or a decomposition's NaN trend ends first")
    return out


def naive(history, horizon: int) -> np.ndarray:
    """The last observed value, for each of the next `horizon` days."""
    h = _vector("history", history)
    return np.full(positive_int("horizon", horizon), h[-1])


def seasonal_naive(history, horizon: int, period: int = 7) -> np.ndarray:
    """Day k of the horizon (0-based) gets the value of the same day of the last full cycle:
    history[n - period + k % period]. Exact on a purely periodic series."""
    h = _vector("history", history)
    horizon, period = positive_int("horizon", horizon), positive_int("period", period)
    if len(h) < period:
        raise ValueError(f"history must hold at least one cycle (period={period} values), got {len(h)}")
    return h[len(h) - period + np.arange(horizon) % period]


def decomposition_forecast(trend, seasonal, horizon: int, window: int, period: int = 7) -> np.ndarray:
    """Trend + season, projected forward: the least-squares line through the trend's last
    `window` values, extended `horizon` days, plus the last `period` values of the seasonal part
    repeated (as in seasonal_naive). `trend` must have no NaN (a centred moving average has NaN
    ends: extrapolate them first, with seasonal_decompose(..., extrapolate_trend=...) or
    fill_trend_ends)."""
    trend, seasonal = _vector("trend", trend), _vector("seasonal", seasonal)
    horizon, window, period = (positive_int(n, v) for n, v in (("horizon", horizon), ("window", window),
                                                                  ("period", period)))
    if len(seasonal) != len(trend):
        raise ValueError(f"seasonal must have the trend's length ({len(trend)}), got {len(seasonal)}")
    if len(trend) < max(period, window, 2):
        raise ValueError(f"trend must hold at least max(period, window, 2) = {max(period, window, 2)} values, "
                         f"got {len(trend)}")
    if window < 2:
        raise ValueError(f"window must be >= 2 (a line needs two points), got {window}")
    n = len(trend)
    days = np.arange(n - window, n)
    slope, intercept = np.polyfit(days, trend[-window:], 1)
    future = np.arange(n, n + horizon)
    return intercept + slope * future + seasonal[n - period + np.arange(horizon) % period]


def fill_trend_ends(trend, window: int) -> np.ndarray:
    """`trend` with its leading and trailing NaN replaced by least-squares lines through the
    `window` nearest defined values at each end (what a centred moving average leaves undefined).
    NaN inside the series is an error: that is missing data, not an end."""
    t = _vector("trend", trend, finite=False)
    window = positive_int("window", window)
    if window < 2:
        raise ValueError(f"window must be >= 2 (a line needs two points), got {window}")
    if np.isinf(t).any():
        raise ValueError("trend holds inf")
    defined = np.flatnonzero(~np.isnan(t))
    if len(defined) < window:
        raise ValueError(f"trend must have at least window={window} defined values, got {len(defined)}")
    first, last = defined[0], defined[-1]
    if np.isnan(t[first:last + 1]).any():
        raise ValueError("trend has NaN between its defined ends: fill missing days before decomposing")
    out = t.copy()
    for days, gap in ((np.arange(first, first + window), np.arange(0, first)),
                      (np.arange(last - window + 1, last + 1), np.arange(last + 1, len(t)))):
        if len(gap):
            slope, intercept = np.polyfit(days, t[days], 1)
            out[gap] = intercept + slope * gap
    return out


def _pair(actual, forecast) -> tuple[np.ndarray, np.ndarray]:
    a, f = _vector("actual", actual), _vector("forecast", forecast)
    if a.shape != f.shape:
        raise ValueError(f"forecast must have actual's length ({len(a)}), got {len(f)}")
    return a, f


def mae(actual, forecast) -> float:
    """Mean absolute error, in the series' units."""
    a, f = _pair(actual, forecast)
    return float(np.mean(np.abs(a - f)))


def mape(actual, forecast) -> float:
    """Mean absolute percentage error, in percent: 100 * mean(|a - f| / |a|). An actual value of
    0 is refused (ValueError): its percentage error is undefined."""
    a, f = _pair(actual, forecast)
    if (a == 0).any():
        raise ValueError(f"actual is 0 on {int((a == 0).sum())} of {len(a)} days: MAPE is undefined there "
                         "(use mae or smape on series with zero demand)")
    return float(100 * np.mean(np.abs(a - f) / np.abs(a)))


def smape(actual, forecast) -> float:
    """Symmetric MAPE, in percent (0-200): 100 * mean(2 |a - f| / (|a| + |f|)); a day where both
    are 0 counts as a perfect 0."""
    a, f = _pair(actual, forecast)
    scale = np.abs(a) + np.abs(f)
    ratio = np.divide(2 * np.abs(a - f), scale, out=np.zeros_like(a), where=scale > 0)
    return float(100 * np.mean(ratio))
