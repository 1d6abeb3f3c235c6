"""Tabular data as pandas DataFrames: the sets that ship with scikit-learn, and the faults real
pipelines put into them, injected on purpose with a ground-truth record of every changed cell.

    table = tables.load("breast_cancer")          # Table(x=DataFrame, y=Series, name)
    faults = tables.inject_faults(table.x, missing=0.10, unit=0.02, sentinel=0.01, seed=0)
    faults.dirty                                   # the table as a pipeline would deliver it
    faults.kind                                    # per cell: 0 clean, 1 missing, 2 unit, 3 sentinel
    faults.mask("unit", "sentinel")                # the cells a detector should flag

Nothing is downloaded: the sets are the ones scikit-learn installs with itself.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lablib.core.validate import integer, real

# The fault kinds, by the code `Faults.kind` stores in each cell.
KINDS = ("clean", "missing", "unit", "sentinel")
# One colour per kind, for heatmap (clean cells pale, faults saturated).
COLOURS = ("#f2f2f2", "#4c72b0", "#dd8452", "#c44e52")

_LOADERS = {
    "breast_cancer": "load_breast_cancer",
    "wine": "load_wine",
    "diabetes": "load_diabetes",
}
NAMES = tuple(_LOADERS)


@dataclass
class Table:
    """A bundled tabular set: features `x` (a DataFrame of floats), target `y` (a Series)."""

    x: pd.DataFrame
    y: pd.Series
    name: str


@dataclass
class Faults:
    """A table with injected faults and the truth about each cell.

    dirty: the faulty table (same index and columns as the clean one);
    kind:  a DataFrame of ints, the code of each cell's fault (see KINDS), 0 where untouched."""

    dirty: pd.DataFrame
    kind: pd.DataFrame

    def mask(self, *kinds: str) -> pd.DataFrame:
        """A boolean DataFrame: True where a cell has one of `kinds` ("missing", "unit",
        "sentinel"); with no kinds, every faulty cell."""
        for k in kinds:
            if k not in KINDS[1:]:
                raise ValueError(f"kinds must be among {', '.join(KINDS[1:])}, got {k!r}")
        codes = [KINDS.index(k) for k in kinds] if kinds else [1, 2, 3]
        return self.kind.isin(codes)

    def counts(self) -> dict[str, int]:
        """How many cells of each fault kind."""
        return {k: int((self.kind.to_numpy() == i).sum()) for i, k in enumerate(KINDS) if i}


def load(name: str = "breast_cancer") -> Table:
    """One of scikit-learn's bundled tabular sets as DataFrames ("breast_cancer": 569 tumours, 30
    measurements, benign/malignant; "wine"; "diabetes", a regression target)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {', '.join(NAMES)}; got {type(name).__name__}")
    if name not in _LOADERS:
        raise ValueError(f"name must be one of {', '.join(NAMES)}, got {name!r}")
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, _LOADERS[name])(as_frame=True)
    return Table(bunch.data.astype("float64"), bunch.target.rename("target"), name)


def _check_frame(name: str, df) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column, got shape {df.shape}")
    numeric = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])]
    if numeric:
        raise ValueError(f"{name} must hold numbers only; column(s) {numeric[:3]} are not numeric")
    values = df.to_numpy(dtype="float64", na_value=np.nan)
    if np.isinf(values).any():
        raise ValueError(f"{name} has {int(np.isinf(values).sum())} infinite value(s): clean them (or make them NaN) first")
    return df


def _check_factors(factors) -> tuple[float, ...]:
    if isinstance(factors, (str, bytes)) or not isinstance(factors, (list, tuple)) or not factors:
        raise TypeError(f"factors must be a non-empty list or tuple of numbers, got {factors!r}")
    out = []
    for f in factors:
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not math.isfinite(f) or f <= 0 or f == 1:
            raise ValueError(f"factors must be finite positive numbers other than 1, got {f!r}")
        out.append(float(f))
    return tuple(out)


def inject_faults(df: pd.DataFrame, missing: float = 0.10, unit: float = 0.02, sentinel: float = 0.01,
                  factors=(10, 100, 1000), sentinel_value: float = -999.0, seed: int = 0) -> Faults:
    """Damage a copy of `df` the way real pipelines do, on disjoint random cells:

    missing   this share of cells becomes NaN (a sensor dropped out, a field left empty);
    unit      this share is multiplied by one of `factors` (mm recorded as µm, g as mg);
    sentinel  this share is set to `sentinel_value` (-999: "unknown" in an old export).

    Each count is the share times the number of cells, rounded (on the running total, so the
    three never add up to more cells than there are; Faults.counts() gives the exact figures).
    Returns Faults(dirty, kind): the damaged table and, per cell, which fault it got. Cells that
    were already NaN are left out of the draw, so the truth stays exact."""
    _check_frame("df", df)
    rates = {k: real(k, v, 0, 1) for k, v in (("missing", missing), ("unit", unit), ("sentinel", sentinel))}
    if sum(rates.values()) > 1:
        raise ValueError(f"missing + unit + sentinel must be at most 1, got {sum(rates.values()):g}")
    factors = _check_factors(factors)
    sentinel_value = real("sentinel_value", sentinel_value, low_open=True, high_open=True)
    seed = integer("seed", seed, 0, 2**32 - 1)
    rng = np.random.default_rng(seed)
    values = df.to_numpy(dtype="float64", na_value=np.nan, copy=True)
    kind = np.zeros(values.shape, dtype=np.int64)
    free = np.flatnonzero(~np.isnan(values).ravel())
    order = rng.permutation(free)
    start, cumulative = 0, 0.0
    for code, name in enumerate(KINDS[1:], start=1):
        cumulative += rates[name]
        end = min(int(round(cumulative * values.size)), len(order))  # rounding the running total: counts add up
        kind.flat[order[start:end]] = code
        start = end
    values[kind == 1] = np.nan
    values[kind == 2] *= rng.choice(factors, size=int((kind == 2).sum()))
    values[kind == 3] = sentinel_value
    dirty = pd.DataFrame(values, index=df.index, columns=df.columns)
    return Faults(dirty, pd.DataFrame(kind, index=df.index, columns=df.columns))


def corrupt_rows(df: pd.DataFrame, fraction: float = 0.05, whole: bool = True, factors=(10, 100, 1000),
                 seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Damage a share of whole records: each chosen row is multiplied by one of `factors`, in
    every column (whole=True: a batch logged in other units) or in one random column only
    (whole=False: a single bad cell per record). Returns the damaged copy and a boolean array,
    True for the rows that were damaged."""
    _check_frame("df", df)
    fraction = real("fraction", fraction, 0, 1)
    if not isinstance(whole, bool):
        raise TypeError(f"whole must be True or False, got {type(whole).__name__} {whole!r}")
    factors = _check_factors(factors)
    seed = integer("seed", seed, 0, 2**32 - 1)
    rng = np.random.default_rng(seed)
    values = df.to_numpy(dtype="float64", na_value=np.nan, copy=True)
    n, p = values.shape
    rows = rng.choice(n, size=int(round(fraction * n)), replace=False)
    scale = rng.choice(factors, size=len(rows))
    if whole:
        values[rows] *= scale[:, None]
    else:
        values[rows, rng.integers(0, p, size=len(rows))] *= scale
    damaged = np.zeros(n, dtype=bool)
    damaged[rows] = True
    return pd.DataFrame(values, index=df.index, columns=df.columns), damaged


def heatmap(kind: pd.DataFrame, title: str = "Injected faults", flagged: pd.DataFrame | None = None,
            targets: tuple[str, ...] | None = None):
    """Rows x columns, each cell coloured by its fault kind (a DataFrame of KINDS codes, as
    Faults.kind); `flagged` (a boolean DataFrame of the same shape) adds a second panel with
    what a detector flagged. `targets`: the fault kinds that detector looks for (default: every
    fault); other faults it leaves alone are drawn as not its job, not as misses.
    Returns a matplotlib Figure (closed in pyplot: shown once)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    if not isinstance(kind, pd.DataFrame):
        raise TypeError(f"kind must be a DataFrame of fault codes (Faults.kind), got {type(kind).__name__}")
    codes = kind.to_numpy()
    if codes.size == 0 or not np.issubdtype(codes.dtype, np.integer) or codes.min() < 0 or codes.max() >= len(KINDS):
        raise ValueError(f"kind must be a non-empty DataFrame of int codes 0..{len(KINDS) - 1} (see KINDS)")
    if not isinstance(title, str):
        raise TypeError(f"title must be a str, got {type(title).__name__}")
    if flagged is not None:
        if not isinstance(flagged, pd.DataFrame) or flagged.shape != kind.shape or not all(
                pd.api.types.is_bool_dtype(flagged[c]) for c in flagged.columns):
            raise ValueError(f"flagged must be a boolean DataFrame of shape {kind.shape}, like kind")
    if targets is not None and (not isinstance(targets, (tuple, list)) or not targets
                                or not all(isinstance(t, str) and t in KINDS[1:] for t in targets)):
        raise ValueError(f"targets must be a tuple of fault kinds among {', '.join(KINDS[1:])}, got {targets!r}")
    faulty = np.isin(codes, [KINDS.index(k) for k in targets]) if targets is not None else codes > 0
    panels = 1 if flagged is None else 2
    fig = plt.figure(figsize=(8.0 * panels, 4.2), layout="constrained")  # room for the legends beside the panels
    plt.close(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    cmap = ListedColormap(COLOURS)
    axes[0].imshow(codes, aspect="auto", interpolation="nearest", cmap=cmap, vmin=-0.5, vmax=len(KINDS) - 0.5)
    axes[0].set(title=title, xlabel="column", ylabel="row")
    axes[0].legend(handles=[Patch(color=c, label=k) for k, c in zip(KINDS, COLOURS, strict=True)],
                   bbox_to_anchor=(1.01, 1), loc="upper left", fontsize="small", framealpha=0.9)  # outside the axes
    if flagged is not None:
        other = (codes > 0) & ~faulty  # a fault of a kind this detector does not look for
        caught = np.where(flagged.to_numpy(), np.where(faulty, 1, 2), np.where(faulty, 3, np.where(other, 4, 0)))
        colours = ("#f2f2f2", "#55a868", "#c44e52", "#8172b3", "#c6dbef")
        names = ("clean, not flagged", "fault, flagged", "not its fault, flagged", "fault, missed",
                 "other fault (not its job)")
        if targets is None:  # every fault is this detector's job: no fifth colour to explain
            colours, names = colours[:4], names[:4]
        axes[1].imshow(caught, aspect="auto", interpolation="nearest", cmap=ListedColormap(colours), vmin=-0.5,
                       vmax=len(colours) - 0.5)
        axes[1].set(title="what the detector flagged", xlabel="column", ylabel="row")
        axes[1].legend(handles=[Patch(color=c, label=k) for k, c in zip(names, colours, strict=True)],
                       bbox_to_anchor=(1.01, 1), loc="upper left", fontsize="small", framealpha=0.9)  # outside the axes
    return fig
