"""Reference answers for lab 10 (data quality and versioning with DVC)."""

import numpy as np


def _iqr_outliers(x, k=1.5):
    """The lab's IQR rule (section 3), repeated so this module stands alone."""
    q1, q3 = np.nanquantile(x, [0.25, 0.75], axis=0)
    iqr = q3 - q1
    return (x < q1 - k * iqr) | (x > q3 + k * iqr)


def my_log_iqr_outliers(x, k=1.5):
    """The IQR rule on log10(x); cells <= 0 or NaN have no logarithm and are never flagged."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _iqr_outliers(np.log10(np.where(x > 0, x, np.nan)), k)


def my_mad_outliers(x, threshold=3.5):
    """The robust z-score per column: 0.6745 * |x - median| / MAD > threshold (NaN never flagged)."""
    median = np.nanmedian(x, axis=0)
    mad = np.nanmedian(np.abs(x - median), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 0.6745 * np.abs(x - median) / mad > threshold
