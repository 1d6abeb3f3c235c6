"""Data quality: the tested references of the checks a cleaning pipeline runs on a table.

    flagged = quality.iqr_outliers(x, k=3.0)        # Tukey's fences, per column
    flagged = quality.mad_outliers(x, threshold=3.5)  # the robust z-score (median and MAD)
    quality.precision_recall(flagged, truth)         # against a ground-truth mask
    quality.missing_share(df)                        # share of NaN cells
    quality.imputation_error(truth, imputed, mask)   # mean |error| on the hidden cells, in sd units
    quality.failure_mask(schema_errors, df)          # pandera's failure cases as a cell mask

Every function takes a 2-D NumPy array or a pandas DataFrame (one column per feature) and
returns the same kind for masks. NaN cells are never outliers: they are missing, a separate fault.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lablib.core.validate import real


def _as_array(name: str, x, allow_bool: bool = False) -> np.ndarray:
    """x as a float (or bool) NumPy array, 1-D or 2-D; a clear error otherwise."""
    if isinstance(x, pd.Series):
        x = x.to_frame()
    if isinstance(x, pd.DataFrame):
        bad = [c for c in x.columns if not (pd.api.types.is_numeric_dtype(x[c]) or pd.api.types.is_bool_dtype(x[c]))]
        if bad:
            raise TypeError(f"{name} must hold numbers only; column(s) {bad[:3]} are not numeric")
        if x.shape[1] and all(pd.api.types.is_bool_dtype(x[c]) for c in x.columns):
            arr = x.to_numpy(dtype=bool)
        else:  # nullable dtypes (Float64, Int64 with <NA>) become floats with NaN
            try:
                arr = x.to_numpy(dtype="float64", na_value=np.nan)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name} must hold numbers only ({exc})") from exc
    elif isinstance(x, np.ndarray):
        arr = x
    else:
        raise TypeError(f"{name} must be a NumPy array or a pandas DataFrame, got {type(x).__name__}")
    if arr.ndim not in (1, 2) or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D or 2-D table, got shape {arr.shape}")
    if arr.dtype == bool:
        if not allow_bool:
            raise TypeError(f"{name} must hold numbers, not booleans")
        return arr
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype("float64", copy=False)
    if np.isinf(arr).any():
        raise ValueError(f"{name} has {int(np.isinf(arr).sum())} infinite value(s): make them NaN (missing) "
                         "or fix them before scoring")
    return arr


def _like(x, mask: np.ndarray):
    """The mask in the same form as the input: a DataFrame for a DataFrame, else an array."""
    if isinstance(x, pd.DataFrame):
        return pd.DataFrame(mask, index=x.index, columns=x.columns)
    if isinstance(x, pd.Series):
        return pd.Series(mask.reshape(-1), index=x.index, name=x.name)
    return mask


def iqr_outliers(x, k: float = 1.5, log: bool = False):
    """Tukey's rule, per column: a value is an outlier when it lies below Q1 - k·IQR or above
    Q3 + k·IQR, where Q1, Q3 are the column's quartiles (NaN ignored, linear interpolation) and
    IQR = Q3 - Q1. k = 1.5 is Tukey's "outside", k = 3 his "far out". log=True applies the rule
    to log10(x) (for multiplicative errors and skewed columns); cells <= 0 then have no logarithm
    and are never flagged. Returns a boolean mask of x's shape (a DataFrame for a DataFrame);
    NaN cells are never flagged."""
    arr = _as_array("x", x)
    k = real("k", k, 0, math.inf, high_open=True)
    if not isinstance(log, bool):
        raise TypeError(f"log must be True or False, got {type(log).__name__} {log!r}")
    with np.errstate(invalid="ignore", divide="ignore"), _no_nan_warnings():
        if log:
            arr = np.log10(np.where(arr > 0, arr, np.nan))
        q1, q3 = np.nanquantile(arr, [0.25, 0.75], axis=0)
        iqr = q3 - q1
        mask = (arr < q1 - k * iqr) | (arr > q3 + k * iqr)
    return _like(x, mask)


def mad_outliers(x, threshold: float = 3.5):
    """The robust z-score (Iglewicz and Hoaglin's modified z), per column:
    z = 0.6745 · (x - median) / MAD, MAD = median(|x - median|); an outlier when |z| > threshold.
    The median and MAD ignore NaN; a column whose MAD is 0 flags every value off its median.
    Returns a boolean mask of x's shape; NaN cells are never flagged."""
    arr = _as_array("x", x)
    threshold = real("threshold", threshold, 0, math.inf, high_open=True)
    with np.errstate(invalid="ignore", divide="ignore"), _no_nan_warnings():
        median = np.nanmedian(arr, axis=0)
        mad = np.nanmedian(np.abs(arr - median), axis=0)
        z = 0.6745 * np.abs(arr - median) / mad
        mask = z > threshold
    return _like(x, mask)


class _no_nan_warnings:
    """Silence NumPy's "All-NaN slice" warning for an empty column: its cells are simply not flagged."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _same_shape(a_name: str, a: np.ndarray, b_name: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{a_name} has shape {a.shape} but {b_name} has shape {b.shape}: they must match")


def precision_recall(flagged, truth) -> dict[str, float]:
    """How a detector's flags compare with the truth (two boolean masks of the same shape):
    precision = share of flagged cells that are faults (0 when nothing is flagged), recall = share
    of faults that were flagged (1 when there are none), with the counts behind them."""
    f = _as_array("flagged", flagged, allow_bool=True)
    t = _as_array("truth", truth, allow_bool=True)
    for name, arr in (("flagged", f), ("truth", t)):
        if arr.dtype != bool:
            raise TypeError(f"{name} must be a boolean mask, got dtype {arr.dtype}")
    _same_shape("flagged", f, "truth", t)
    tp, n_flagged, n_true = int((f & t).sum()), int(f.sum()), int(t.sum())
    return {"precision": tp / n_flagged if n_flagged else 0.0, "recall": tp / n_true if n_true else 1.0,
            "flagged": n_flagged, "faults": n_true, "caught": tp}


def missing_share(x) -> float:
    """The share of cells that are missing (NaN), between 0 and 1."""
    arr = _as_array("x", x)
    return float(np.isnan(arr).mean())


def imputation_error(truth, imputed, mask, scale=None) -> float:
    """Mean absolute error of the imputed values on the cells that were hidden (mask True),
    each divided by its column's scale: the column's standard deviation in `truth` by default,
    so 1.0 means "off by one standard deviation on average"."""
    t = _as_array("truth", truth)
    i = _as_array("imputed", imputed)
    m = _as_array("mask", mask, allow_bool=True)
    if m.dtype != bool:
        raise TypeError(f"mask must be a boolean mask, got dtype {m.dtype}")
    _same_shape("imputed", i, "truth", t)
    _same_shape("mask", m, "truth", t)
    if not m.any():
        raise ValueError("mask must mark at least one cell (the hidden ones to score)")
    if np.isnan(i[m]).any():
        raise ValueError("imputed still has NaN in masked cells: impute every hidden cell first")
    if np.isnan(t[m]).any():
        raise ValueError("truth has NaN in masked cells: the hidden values must be known")
    if scale is None:
        sd = np.nanstd(t, axis=0)
        if np.any(~np.isfinite(sd)) or np.any(sd <= 0):
            raise ValueError("truth has a constant (or empty) column, with no spread to measure the error in: "
                             "pass scale=, one positive value per column")
    else:
        sd = _as_array("scale", np.asarray(scale) if isinstance(scale, (list, tuple)) else scale)
        if sd.shape != t.shape[1:]:
            raise ValueError(f"scale must have one value per column, shape {t.shape[1:]}, got {sd.shape}")
    if np.any(~np.isfinite(sd)) or np.any(sd <= 0):
        raise ValueError("scale must be positive and finite in every column (a constant column has no spread)")
    err = np.abs(i - t) / sd
    return float(err[m].mean())


def failure_mask(failures, like: pd.DataFrame) -> pd.DataFrame:
    """The cells that pandera's lazy validation named, as a boolean DataFrame shaped like `like`.

    failures: the `SchemaErrors` that `schema.validate(df, lazy=True)` raised, or its
    `.failure_cases` DataFrame (columns "column", "index", ...). Failures not about one cell
    (a missing column, a wrong dtype: index None) are left out."""
    if not isinstance(like, pd.DataFrame):
        raise TypeError(f"like must be the validated DataFrame, got {type(like).__name__}")
    cases = getattr(failures, "failure_cases", failures)
    if not isinstance(cases, pd.DataFrame) or not {"column", "index"} <= set(cases.columns):
        raise TypeError("failures must be pandera's SchemaErrors or its failure_cases DataFrame "
                        f"(columns 'column' and 'index'), got {type(failures).__name__}")
    mask = pd.DataFrame(False, index=like.index, columns=like.columns)
    cells = cases[cases["column"].isin(like.columns) & cases["index"].notna()]
    cells = cells[cells["index"].isin(like.index)]
    for column, rows in cells.groupby("column")["index"]:
        mask.loc[rows.unique(), column] = True
    return mask
