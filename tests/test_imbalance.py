"""lablib.methods.imbalance: make a class rare, balanced class weights, the rare class's scores."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from sklearn.utils.class_weight import compute_class_weight

from lablib.methods import imbalance


def _data(n=60, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = np.stack([np.arange(n), y], 1) * 1.0  # column 0: the sample's index, column 1: its label
    return x, y


# --- make_rare ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, keep", [(0, 1), (1, 3), (2, 5)])
def test_make_rare_keeps_exactly_keep_of_the_class(cls, keep):
    x, y = _data()
    rx, ry = imbalance.make_rare(x, y, cls, keep, seed=1)
    assert (ry == cls).sum() == keep
    kept = rx[ry == cls, 0].astype(int)
    assert set(kept) <= set(np.flatnonzero(y == cls)) and len(set(kept)) == keep  # its own, no repeats
    assert np.array_equal(rx[:, 1], ry)  # every row still has its own label


def test_make_rare_keeps_every_other_sample_in_order():
    x, y = _data()
    rx, ry = imbalance.make_rare(x, y, 1, 2, seed=3)
    others = ry != 1
    assert np.array_equal(rx[others], x[y != 1]) and np.array_equal(ry[others], y[y != 1])
    assert np.all(np.diff(rx[:, 0]) > 0)  # the whole result keeps the original order


def test_make_rare_keeping_all_is_the_input_and_does_not_alias():
    x, y = _data()
    rx, ry = imbalance.make_rare(x, y, 2, int((y == 2).sum()))
    assert np.array_equal(rx, x) and np.array_equal(ry, y)
    rx[0, 0] = -1.0
    assert x[0, 0] == 0.0


def test_make_rare_seed_is_repeatable_and_seeds_differ():
    x, y = _data()
    a = imbalance.make_rare(x, y, 0, 4, seed=7)
    b = imbalance.make_rare(x, y, 0, 4, seed=7)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    picks = {tuple(imbalance.make_rare(x, y, 0, 4, seed=s)[0][:, 0]) for s in range(6)}
    assert len(picks) > 1


def test_make_rare_takes_lists_and_images():
    x = np.random.default_rng(0).random((10, 1, 4, 4))
    y = [0, 1] * 5
    rx, ry = imbalance.make_rare(x, y, 1, 2)
    assert rx.shape == (7, 1, 4, 4) and ry.tolist().count(1) == 2


@pytest.mark.parametrize("kwargs, word", [
    ({"keep": 0}, "keep"),
    ({"keep": -1}, "keep"),
    ({"keep": 2.0}, "keep"),
    ({"keep": 10_000}, "keep"),  # more than the class has
    ({"cls": -1}, "cls"),
    ({"cls": 1.0}, "cls"),
    ({"cls": "1"}, "cls"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"seed": 0.5}, "seed"),
    ({"y": np.zeros(59, dtype=int)}, "same length"),
    ({"y": np.arange(60) * 0.5}, "y"),
    ({"y": np.zeros(60, dtype=bool)}, "y"),
    ({"y": -np.ones(60, dtype=int)}, "y"),
    ({"y": np.zeros((60, 1), dtype=int)}, "y"),
])
def test_make_rare_bad_arguments_are_named(kwargs, word):
    x, y = _data()
    args = {"x": x, "y": y, "cls": 1, "keep": 2} | kwargs
    with pytest.raises((ValueError, TypeError), match=word):
        imbalance.make_rare(**args)


# --- class_weights ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_class_weights_match_sklearn_balanced(seed):
    _, y = _data(n=80, classes=4, seed=seed)
    assert set(y) == {0, 1, 2, 3}
    want = compute_class_weight("balanced", classes=np.arange(4), y=y)
    assert np.allclose(imbalance.class_weights(y, 4), want)


def test_every_class_carries_the_same_total_weight():
    y = np.array([0] * 50 + [1] * 7 + [2] * 3)
    w = imbalance.class_weights(y, 3)
    totals = w * np.bincount(y)
    assert np.allclose(totals, len(y) / 3)
    assert w[2] > w[1] > w[0]  # the rarer, the heavier


def test_an_absent_class_gets_weight_zero():
    y = np.array([0, 0, 0, 2, 2, 4])
    w = imbalance.class_weights(y, 6)
    assert w.shape == (6,)
    assert w[1] == w[3] == w[5] == 0
    assert np.allclose(w[[0, 2, 4]], 6 / (6 * np.array([3, 2, 1])))


@pytest.mark.parametrize("kwargs, word", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": 3.0}, "num_classes"),
    ({"num_classes": 2}, "label 2"),  # y holds a label the classes do not cover
    ({"y": []}, "y"),
    ({"y": [0.5, 1.0]}, "y"),
    ({"y": [-1, 0]}, "y"),
    ({"y": [[0, 1]]}, "y"),
])
def test_class_weights_bad_arguments_are_named(kwargs, word):
    args = {"y": [0, 1, 2], "num_classes": 3} | kwargs
    with pytest.raises((ValueError, TypeError), match=word):
        imbalance.class_weights(**args)


# --- rare_class_scores --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_rare_class_scores_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, 50)
    y_pred = np.where(rng.random(50) < 0.6, y_true, rng.integers(0, 4, 50))
    cls = int(seed % 4)
    got = imbalance.rare_class_scores(y_true, y_pred, cls)
    assert set(got) == {"rare recall", "rare precision", "macro-F1", "accuracy"}
    assert all(isinstance(v, float) for v in got.values())
    rare_true, rare_pred = y_true == cls, y_pred == cls
    assert got["rare recall"] == pytest.approx((rare_true & rare_pred).sum() / rare_true.sum())
    assert got["rare recall"] == pytest.approx(recall_score(y_true == cls, y_pred == cls))
    assert got["rare precision"] == pytest.approx(precision_score(y_true == cls, y_pred == cls, zero_division=0))
    assert got["macro-F1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert got["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred)) == pytest.approx((y_true == y_pred).mean())


def test_a_model_that_never_predicts_the_rare_class():
    y_true = np.array([0] * 95 + [1] * 5)
    got = imbalance.rare_class_scores(y_true, np.zeros(100, dtype=int), 1)
    assert got["accuracy"] == pytest.approx(0.95)  # high accuracy...
    assert got["rare recall"] == 0.0 and got["rare precision"] == 0.0  # ...and the rare class is never found
    assert got["macro-F1"] == pytest.approx((2 * 0.95 / 1.95 + 0) / 2)


def test_perfect_predictions_score_one():
    y = np.array([0, 1, 2, 2, 1, 0, 1])
    assert imbalance.rare_class_scores(y, y, 2) == {"rare recall": 1.0, "rare precision": 1.0,
                                                     "macro-F1": 1.0, "accuracy": 1.0}


@pytest.mark.parametrize("kwargs, word", [
    ({"y_pred": [0, 1]}, "same shape"),
    ({"y_true": [0.0, 1.0, 1.0]}, "y_true"),
    ({"y_pred": [0, -1, 1]}, "y_pred"),
    ({"y_pred": []}, "y_pred"),
    ({"cls": -1}, "cls"),
    ({"cls": "1"}, "cls"),
    ({"cls": 2}, "y_true has no sample"),  # no sample of the class: recall undefined
])
def test_rare_class_scores_bad_arguments_are_named(kwargs, word):
    args = {"y_true": [0, 1, 1], "y_pred": [0, 1, 0], "cls": 1} | kwargs
    with pytest.raises((ValueError, TypeError), match=word):
        imbalance.rare_class_scores(**args)


@pytest.mark.parametrize("call", [
    lambda: imbalance.make_rare(*_data(), cls=7, keep=1),
    lambda: imbalance.rare_class_scores([0, 1, 1], [0, 1, 0], cls=7),
], ids=["make_rare", "rare_class_scores"])
def test_a_class_with_no_samples_is_refused_by_naming_cls(call):
    with pytest.raises(ValueError, match="cls"):
        call()
