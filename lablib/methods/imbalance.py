"""Class imbalance: make a class rare, weigh classes, and score what happens to the rare one.

The samplers themselves (SMOTE, random over- and undersampling, ADASYN) come from
imbalanced-learn; class weighting from scikit-learn (`class_weight="balanced"`).
"""

from __future__ import annotations

import numpy as np

from lablib.core.validate import integer, positive_int


def _labels(name: str, y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0 or not np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        raise ValueError(f"{name} must be a non-empty 1-d array of integer class labels, got {y.dtype} {y.shape}")
    if y.min() < 0:
        raise ValueError(f"{name} must hold class labels >= 0, got {y.min()}")
    return y


def make_rare(x, y, cls: int, keep: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A copy of (x, y) in which class `cls` keeps only `keep` samples (drawn with `seed`);
    every other class keeps all of its samples, in their order."""
    x = np.asarray(x)
    y = _labels("y", y)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    cls, keep, seed = integer("cls", cls, 0), positive_int("keep", keep), integer("seed", seed, 0, 2**32 - 1)
    members = np.flatnonzero(y == cls)
    if keep > len(members):
        raise ValueError(f"keep={keep} but class cls={cls} has only {len(members)} samples")
    kept = np.random.default_rng(seed).choice(members, keep, replace=False)
    mask = y != cls
    mask[kept] = True
    return x[mask], y[mask]


def class_weights(y, num_classes: int) -> np.ndarray:
    """scikit-learn's class_weight="balanced": n_samples / (num_classes * count of the class),
    so every class carries the same total weight. A class with no samples gets weight 0."""
    y = _labels("y", y)
    num_classes = positive_int("num_classes", num_classes)
    if y.max() >= num_classes:
        raise ValueError(f"y holds label {y.max()}, outside 0..{num_classes - 1}")
    counts = np.bincount(y, minlength=num_classes).astype(float)
    return np.divide(len(y), num_classes * counts, out=np.zeros(num_classes), where=counts > 0)


def rare_class_scores(y_true, y_pred, cls: int) -> dict[str, float]:
    """The rare class's recall and precision, the macro-F1 over every class, and the accuracy."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    y_true, y_pred = _labels("y_true", y_true), _labels("y_pred", y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {y_true.shape} and {y_pred.shape}")
    cls = integer("cls", cls, 0)
    if not (y_true == cls).any():
        raise ValueError(f"y_true has no sample of class cls={cls}: its recall is undefined")
    return {"rare recall": float(recall_score(y_true, y_pred, labels=[cls], average=None)[0]),
            "rare precision": float(precision_score(y_true, y_pred, labels=[cls], average=None, zero_division=0)[0]),
            "macro-F1": float(f1_score(y_true, y_pred, average="macro")),
            "accuracy": float(accuracy_score(y_true, y_pred))}
