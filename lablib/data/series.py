"""Daily demand series made to order, with the truth about every component, so a forecast and a
decomposition can both be scored against what really generated the data.

    d = series.demand(n_series=50, days=758, seed=0)   # two years of history + 28 days
    d.sales          # what a shop records: days x series, NaN on the days that were not recorded
    d.truth          # the demand itself, every day: trend + season + promo + holiday + noise
    d.season         # each component on its own, same index and columns
    d.promo_days     # the promotion calendar (planned, so known ahead of time)

A series is the sum of
  trend    a level with a slow growth (or decline) that changes slope once;
  season   a weekly profile (zero mean over the week) scaled by `season_strength`;
  promo    a lift on promotion days (runs of 1-3 days, about `promo_rate` of all days);
  holiday  fixed calendar days (New Year, Labour Day, National Day week, Singles' Day) that
           close shops or bring crowds;
  noise    weather-like noise: autocorrelated from day to day (AR(1)), sd `noise` x the level.
Demand is never negative: on the rare day the sum falls below 0 it is 0, and the `noise`
component takes the difference, so the components always add up to `truth` (to rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lablib.core.validate import integer, positive_int, real

# (month, day) -> the holiday's effect as a share of the series' level (before a per-series factor)
HOLIDAYS = {(1, 1): -0.5, (5, 1): 0.3, (5, 2): 0.3, (5, 3): 0.3, (11, 11): 1.0,
            **{(10, d): 0.4 for d in range(1, 8)}}
AR = 0.6  # day-to-day correlation of the noise: a wet week stays wet for a few days
COMPONENTS = ("trend", "season", "promo", "holiday", "noise")
MAX_CELLS = 50_000_000  # n_series x days: ten frames of this many float64 values already fill 4 GB


@dataclass
class Demand:
    """Generated demand: days x series DataFrames with a daily DatetimeIndex.

    sales:      what was recorded (the truth, NaN on missing days);
    truth:      the demand of every day, recorded or not;
    trend, season, promo, holiday, noise: the components, which add up to `truth` (to rounding);
    promo_days: bool, the promotion calendar; missing: bool, the days not recorded;
    season_profile: the true weekly profile of each series, 7 rows indexed by weekday (0 Monday)."""

    sales: pd.DataFrame
    truth: pd.DataFrame
    trend: pd.DataFrame
    season: pd.DataFrame
    promo: pd.DataFrame
    holiday: pd.DataFrame
    noise: pd.DataFrame
    promo_days: pd.DataFrame
    missing: pd.DataFrame
    season_profile: pd.DataFrame

    def components(self, column: str) -> pd.DataFrame:
        """One series as a DataFrame: its sales, truth and components side by side."""
        if column not in self.sales.columns:
            raise KeyError(f"column {column!r} is not a series here (columns: {self.sales.columns[0]}...)")
        parts = {"sales": self.sales[column], "truth": self.truth[column]}
        parts |= {c: getattr(self, c)[column] for c in COMPONENTS}
        return pd.DataFrame(parts | {"promo day": self.promo_days[column]})


def _promotions(rng: np.random.Generator, days: int, n: int, rate: float) -> np.ndarray:
    """(days, n) bool: runs of 1-3 promotion days starting at random, `rate` of the days on average."""
    on = np.zeros((days, n), dtype=bool)
    starts = rng.random((days, n)) < rate / 2  # runs last 2 days on average
    for day, col in zip(*np.nonzero(starts), strict=True):
        on[day:day + int(rng.integers(1, 4)), col] = True
    return on


def demand(n_series: int, days: int, seed: int, *, noise: float = 0.1, season_strength: float = 0.3,
           promo_rate: float = 0.05, missing: float = 0.01, level: float = 100.0,
           start: str = "2022-02-07") -> Demand:
    """`n_series` daily demand series of `days` days from `start`, reproducible from `seed`.

    noise:           sd of the noise as a share of each series' level (0 for none);
    season_strength: sd of the weekly profile as a share of the level (0 for no season);
    promo_rate:      share of days on promotion (each lifts demand by 30-80 % of the level);
    missing:         share of days not recorded (NaN in `sales`, present in `truth`);
    level:           the typical demand; each series draws its own level from 0.5-1.5 x this.
    """
    positive_int("n_series", n_series)
    integer("days", days, 14)
    integer("seed", seed, 0, 2**63 - 1)
    if n_series * days > MAX_CELLS:
        raise ValueError(f"n_series x days must be at most {MAX_CELLS:,} values (about 0.4 GB per frame), "
                         f"got {n_series} x {days}")
    noise, season_strength = real("noise", noise, 0, 5), real("season_strength", season_strength, 0, 5)
    promo_rate, missing = real("promo_rate", promo_rate, 0, 1), real("missing", missing, 0, 0.5)
    level = real("level", level, 0, 1e9, low_open=True)
    if not isinstance(start, str):
        raise TypeError(f"start must be a date as a str ('2022-02-07'), got {type(start).__name__}")
    try:
        index = pd.date_range(pd.Timestamp(start), periods=days, freq="D", name="date")
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"start must be a date such as '2022-02-07', got {start!r} ({exc})") from None

    rng = np.random.default_rng(seed)
    t = np.arange(days)[:, None] / 365.0  # years since the start
    base = level * rng.uniform(0.5, 1.5, n_series)
    # trend: a yearly growth rate that changes once, somewhere in the middle of the span
    g1, g2 = rng.uniform(-0.1, 0.3, n_series), rng.uniform(-0.1, 0.3, n_series)
    turn = rng.uniform(0.3, 0.8, n_series) * t[-1]
    trend = base * (1 + g1 * np.minimum(t, turn) + g2 * np.maximum(t - turn, 0))
    # season: a weekly profile with mean 0 and sd season_strength x level
    profile = rng.normal(size=(7, n_series))
    profile = (profile - profile.mean(0)) / profile.std(0) * season_strength * base
    season = profile[index.day_of_week.to_numpy()]
    # promotions: planned days with a lift of 30-80 % of the level
    promo_days = _promotions(rng, days, n_series, promo_rate)
    promo = promo_days * rng.uniform(0.3, 0.8, n_series) * base
    # holidays: the calendar's effect, scaled per series (0.5-1.5 x)
    effect = np.array([HOLIDAYS.get((d.month, d.day), 0.0) for d in index])
    holiday = effect[:, None] * rng.uniform(0.5, 1.5, n_series) * base
    # weather-like noise: AR(1), scaled so its sd is noise x level
    shocks = rng.normal(size=(days, n_series)) * np.sqrt(1 - AR**2)
    weather = np.empty_like(shocks)
    weather[0] = rng.normal(size=n_series)
    for i in range(1, days):
        weather[i] = AR * weather[i - 1] + shocks[i]
    weather *= noise * base
    total = trend + season + promo + holiday + weather
    truth = np.maximum(total, 0)  # demand is never negative
    weather += truth - total  # the noise absorbs the floor, so the components still add up
    not_recorded = rng.random((days, n_series)) < missing

    columns = pd.Index([f"s{i:03d}" for i in range(n_series)], name="series")

    def frame(values):
        return pd.DataFrame(values, index=index, columns=columns)

    return Demand(sales=frame(np.where(not_recorded, np.nan, truth)), truth=frame(truth), trend=frame(trend),
                  season=frame(season), promo=frame(promo), holiday=frame(holiday), noise=frame(weather),
                  promo_days=frame(promo_days), missing=frame(not_recorded),
                  season_profile=pd.DataFrame(profile, index=pd.RangeIndex(7, name="weekday"), columns=columns))
