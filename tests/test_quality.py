"""lablib.data.tables (bundled tables, fault injection) and lablib.methods.quality (outlier rules,
imputation scoring, pandera failures as a mask)."""

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest
from matplotlib.figure import Figure

from lablib.data import tables
from lablib.methods import quality


@pytest.fixture(scope="module")
def cancer():
    return tables.load("breast_cancer")


# --- tables -------------------------------------------------------------------------------------


def test_load_gives_float_features_and_a_target(cancer):
    assert cancer.x.shape == (569, 30) and len(cancer.y) == 569
    assert all(cancer.x.dtypes == "float64") and set(cancer.y.unique()) == {0, 1}
    assert tables.load("wine").x.shape[1] == 13


@pytest.mark.parametrize("name, error", [("iris2", ValueError), (3, TypeError), (None, TypeError)])
def test_load_refuses_unknown_names(name, error):
    with pytest.raises(error, match="name"):
        tables.load(name)


def test_inject_faults_hits_disjoint_cells_at_the_asked_rates(cancer):
    x = cancer.x
    f = tables.inject_faults(x, missing=0.10, unit=0.02, sentinel=0.01, seed=3)
    n = x.size
    assert f.counts() == {"missing": round(0.10 * n), "unit": round(0.02 * n), "sentinel": round(0.01 * n)}
    kind, dirty = f.kind.to_numpy(), f.dirty.to_numpy()
    clean = x.to_numpy()
    assert np.array_equal(dirty[kind == 0], clean[kind == 0])  # untouched cells unchanged
    assert np.isnan(dirty[kind == 1]).all() and not np.isnan(dirty[kind != 1]).any()
    assert (dirty[kind == 3] == -999).all()
    unit = kind == 2
    nonzero = unit & (clean != 0)
    assert set(np.round(dirty[nonzero] / clean[nonzero]).astype(int)) <= {10, 100, 1000}
    assert f.mask("missing").to_numpy().sum() == f.counts()["missing"]
    assert f.mask().to_numpy().sum() == sum(f.counts().values())
    assert np.array_equal(x.to_numpy(), clean) and not x.isna().any().any()  # the input is not modified


def test_inject_faults_is_reproducible_and_seed_dependent(cancer):
    a = tables.inject_faults(cancer.x, seed=1)
    b = tables.inject_faults(cancer.x, seed=1)
    c = tables.inject_faults(cancer.x, seed=2)
    assert a.kind.equals(b.kind) and a.dirty.equals(b.dirty)
    assert not a.kind.equals(c.kind)


def test_inject_faults_leaves_cells_already_missing_out_of_the_truth():
    df = pd.DataFrame({"a": [1.0, np.nan, 3.0, 4.0], "b": [np.nan, 2.0, 3.0, 4.0]})
    f = tables.inject_faults(df, missing=0.0, unit=0.75, sentinel=0.0, factors=(10,), seed=0)
    assert (f.kind.to_numpy()[df.isna().to_numpy()] == 0).all()
    assert f.counts()["unit"] == 6


@pytest.mark.parametrize("kwargs, name", [
    ({"df": np.zeros((3, 3))}, "df"),
    ({"df": pd.DataFrame()}, "df"),
    ({"df": pd.DataFrame({"a": ["x", "y"]})}, "df"),
    ({"missing": -0.1}, "missing"),
    ({"unit": 1.5}, "unit"),
    ({"sentinel": "0.1"}, "sentinel"),
    ({"missing": 0.6, "unit": 0.6}, "missing"),
    ({"factors": ()}, "factors"),
    ({"factors": (10, float("nan"))}, "factors"),
    ({"factors": (1,)}, "factors"),
    ({"factors": "10"}, "factors"),
    ({"sentinel_value": float("nan")}, "sentinel_value"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
])
def test_inject_faults_refuses_bad_arguments(kwargs, name):
    args = {"df": pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]})} | kwargs
    with pytest.raises((ValueError, TypeError), match=name):
        tables.inject_faults(**args)


def test_faults_mask_refuses_unknown_kinds(cancer):
    with pytest.raises(ValueError, match="kinds"):
        tables.inject_faults(cancer.x).mask("clean")


@pytest.mark.parametrize("whole", [True, False])
def test_corrupt_rows_damages_exactly_the_rows_it_reports(cancer, whole):
    damaged_x, damaged = tables.corrupt_rows(cancer.x, fraction=0.1, whole=whole, factors=(10,), seed=0)
    assert damaged.sum() == round(0.1 * len(cancer.x))
    changed = damaged_x.to_numpy() != cancer.x.to_numpy()
    assert not changed[~damaged].any()
    per_row = changed[damaged].sum(axis=1)
    nonzero = (cancer.x.to_numpy()[damaged] != 0).sum(axis=1)
    assert (per_row == nonzero).all() if whole else (per_row <= 1).all() and per_row.sum() >= damaged.sum() - 3


@pytest.mark.parametrize("kwargs, name", [({"fraction": 2.0}, "fraction"), ({"whole": "yes"}, "whole"),
                                          ({"factors": [0]}, "factors"), ({"df": [[1.0]]}, "df")])
def test_corrupt_rows_refuses_bad_arguments(cancer, kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        tables.corrupt_rows(**({"df": cancer.x} | kwargs))


def test_heatmap_draws_one_or_two_panels(cancer):
    f = tables.inject_faults(cancer.x.iloc[:50], seed=0)
    assert isinstance(tables.heatmap(f.kind), Figure) and len(tables.heatmap(f.kind).axes) == 1
    assert len(tables.heatmap(f.kind, flagged=f.mask("unit")).axes) == 2
    with pytest.raises(TypeError, match="kind"):
        tables.heatmap(f.kind.to_numpy())
    with pytest.raises(ValueError, match="kind"):
        tables.heatmap(f.kind + 7)
    with pytest.raises(ValueError, match="flagged"):
        tables.heatmap(f.kind, flagged=f.mask("unit").iloc[:10])
    for bad in ("unit", ("clean",), ("units",), (), 3):
        with pytest.raises(ValueError, match="targets"):
            tables.heatmap(f.kind, flagged=f.mask("unit"), targets=bad)


def test_heatmap_tells_misses_from_faults_that_are_not_the_detectors_job(cancer):
    f = tables.inject_faults(cancer.x.iloc[:50], seed=0)
    flagged = f.mask("unit")
    flagged.iloc[0, 0] = True  # one clean or other cell flagged as well
    codes = f.kind.to_numpy()

    def panel(**kw):
        return np.asarray(tables.heatmap(f.kind, flagged=flagged, **kw).axes[1].images[0].get_array())

    every, units = panel(), panel(targets=("unit",))
    missing = codes == tables.KINDS.index("missing")
    assert missing[1:].any() and (every[missing & ~flagged.to_numpy()] == 3).all()  # all faults: a miss
    assert (units[missing & ~flagged.to_numpy()] == 4).all()  # unit detector: not its job
    assert (units[codes == tables.KINDS.index("unit")] == 1).all()  # every unit fault caught
    assert (units[codes == 0] == np.where(flagged.to_numpy()[codes == 0], 2, 0)).all()


# --- quality: outlier rules ---------------------------------------------------------------------


def test_iqr_outliers_flags_outside_the_fences_and_never_nan():
    x = np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 10.0], [4.0, 10.0], [100.0, np.nan], [-50.0, 10.0]])
    # column 0: quartiles of [1, 2, 3, 4, 100, -50] are 1.25 and 3.75, IQR 2.5
    got = quality.iqr_outliers(x, k=1.5)
    assert got.tolist() == [[False, False], [False, False], [False, False], [False, False], [True, False], [True, False]]
    assert not quality.iqr_outliers(x, k=1000.0).any()


def test_iqr_outliers_keeps_the_dataframe_shape_and_labels():
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0, 50.0]}, index=[10, 11, 12, 13])
    got = quality.iqr_outliers(df, 1.5)
    assert isinstance(got, pd.DataFrame) and list(got.index) == [10, 11, 12, 13] and got["a"].tolist() == [False] * 3 + [True]


def test_iqr_outliers_on_a_log_scale_ignores_cells_without_a_logarithm():
    x = np.array([[1.0], [1.1], [0.9], [1.05], [0.0], [-999.0], [1000.0]])
    got = quality.iqr_outliers(x, 1.5, log=True)
    assert got[:, 0].tolist() == [False, False, False, False, False, False, True]


def test_mad_outliers_matches_the_robust_z_score():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 40.0, np.nan])[:, None]
    # median 3.5, |x - 3.5| = 2.5, 1.5, .5, .5, 1.5, 36.5 -> MAD 1.5; z(40) = 0.6745 * 36.5 / 1.5 = 16.4
    got = quality.mad_outliers(x, 3.5)[:, 0]
    assert got.tolist() == [False, False, False, False, False, True, False]
    assert quality.mad_outliers(x, 17.0).sum() == 0


@pytest.mark.parametrize("fn", [quality.iqr_outliers, quality.mad_outliers])
@pytest.mark.parametrize("x, error", [([1.0, 2.0], TypeError), (np.array([]), ValueError),
                                      (np.array(["a", "b"]), TypeError), (np.zeros((2, 2, 2)), ValueError),
                                      (np.array([True, False]), TypeError)])
def test_outlier_rules_refuse_bad_tables(fn, x, error):
    with pytest.raises(error, match="x"):
        fn(x)


@pytest.mark.parametrize("k", [-1.0, float("nan"), "3", None, float("inf")])
def test_iqr_outliers_refuses_bad_k(k):
    with pytest.raises((ValueError, TypeError), match="k"):
        quality.iqr_outliers(np.ones((4, 2)), k)


def test_mad_and_iqr_refuse_bad_options():
    with pytest.raises((ValueError, TypeError), match="threshold"):
        quality.mad_outliers(np.ones((4, 2)), -1)
    with pytest.raises(TypeError, match="log"):
        quality.iqr_outliers(np.ones((4, 2)), 1.5, log="yes")


# --- quality: scoring ---------------------------------------------------------------------------


def test_precision_recall_counts():
    flagged = np.array([True, True, False, False, True])
    truth = np.array([True, False, True, False, True])
    assert quality.precision_recall(flagged, truth) == {"precision": 2 / 3, "recall": 2 / 3, "flagged": 3,
                                                        "faults": 3, "caught": 2}
    none = quality.precision_recall(np.zeros(3, bool), np.zeros(3, bool))
    assert none["precision"] == 0.0 and none["recall"] == 1.0


@pytest.mark.parametrize("flagged, truth, name", [
    (np.zeros(3, bool), np.zeros(4, bool), "flagged"),
    (np.zeros(3), np.zeros(3, bool), "flagged"),
    (np.zeros(3, bool), [True, False, True], "truth"),
])
def test_precision_recall_refuses_bad_masks(flagged, truth, name):
    with pytest.raises((ValueError, TypeError), match=name):
        quality.precision_recall(flagged, truth)


def test_missing_share():
    assert quality.missing_share(pd.DataFrame({"a": [1.0, np.nan], "b": [np.nan, np.nan]})) == 0.75
    assert quality.missing_share(np.ones((3, 3))) == 0.0
    with pytest.raises(TypeError, match="x"):
        quality.missing_share("table")


def test_imputation_error_is_in_standard_deviations():
    truth = np.array([[0.0, 0.0], [2.0, 10.0], [4.0, 20.0]])  # sd: 1.633, 8.165
    imputed = truth.copy()
    imputed[1, 0] += 1.633
    imputed[2, 1] -= 2 * 8.165
    mask = np.zeros_like(truth, bool)
    mask[1, 0] = mask[2, 1] = True
    assert quality.imputation_error(truth, imputed, mask) == pytest.approx(1.5, rel=1e-3)
    assert quality.imputation_error(truth, imputed, mask, scale=[1.0, 1.0]) == pytest.approx((1.633 + 16.33) / 2, rel=1e-3)


@pytest.mark.parametrize("change, name", [
    ({"imputed": np.ones((3, 3))}, "imputed"),
    ({"mask": np.zeros((3, 2), bool)}, "mask"),
    ({"mask": np.ones((3, 2))}, "mask"),
    ({"imputed": np.full((3, 2), np.nan)}, "imputed"),
    ({"scale": [1.0]}, "scale"),
    ({"scale": [0.0, 1.0]}, "scale"),
    ({"truth": np.ones((3, 2))}, "truth"),  # a constant column has no spread
])
def test_imputation_error_refuses_bad_arguments(change, name):
    args = {"truth": np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 4.0]]), "imputed": np.zeros((3, 2)),
            "mask": np.eye(3, 2, dtype=bool)} | change
    with pytest.raises((ValueError, TypeError), match=name):
        quality.imputation_error(**args)


def test_failure_mask_marks_exactly_the_cells_pandera_names():
    df = pd.DataFrame({"a": [1.0, np.nan, -5.0, 2.0], "b": [1.0, 2.0, 99.0, np.nan]}, index=[5, 6, 7, 8])
    schema = pa.DataFrameSchema({c: pa.Column(float, [pa.Check.ge(0), pa.Check.le(10)], nullable=False) for c in df})
    with pytest.raises(pa.errors.SchemaErrors) as info:
        schema.validate(df, lazy=True)
    mask = quality.failure_mask(info.value, df)
    expected = pd.DataFrame({"a": [False, True, True, False], "b": [False, False, True, True]}, index=df.index)
    assert mask.equals(expected)
    assert quality.failure_mask(info.value.failure_cases, df).equals(expected)
    with pytest.raises(TypeError, match="failures"):
        quality.failure_mask("errors", df)
    with pytest.raises(TypeError, match="like"):
        quality.failure_mask(info.value, df.to_numpy())


@pytest.mark.parametrize("fn", [quality.iqr_outliers, quality.mad_outliers, quality.missing_share])
def test_infinite_or_complex_values_are_refused(fn):
    with pytest.raises(ValueError, match="x has 1 infinite"):
        fn(np.array([[1.0], [np.inf], [2.0]]))
    with pytest.raises(TypeError, match="x must hold real numbers"):
        fn(np.array([1 + 2j, 3 + 0j]))


def test_nullable_dataframe_columns_are_read_as_floats_with_nan():
    df = pd.DataFrame({"a": pd.array([1.0, None, 3.0, 100.0, 2.0], dtype="Float64"),
                       "b": pd.array([1, 2, None, 3, 2], dtype="Int64")})
    assert quality.missing_share(df) == 0.2
    assert quality.iqr_outliers(df, 1.5)["a"].tolist() == [False, False, False, True, False]


def test_tables_refuse_infinite_cells():
    df = pd.DataFrame({"a": [1.0, np.inf, 2.0]})
    for fn in (tables.inject_faults, tables.corrupt_rows):
        with pytest.raises(ValueError, match="df has 1 infinite"):
            fn(df)


def test_inject_faults_counts_never_exceed_the_cells():
    df = pd.DataFrame(np.ones((1, 3)))
    f = tables.inject_faults(df, missing=0.5, unit=0.3, sentinel=0.2, seed=0)
    assert sum(f.counts().values()) == 3  # rounding each share alone would ask for 2 + 1 + 1 = 4 cells
    assert (f.kind.to_numpy() > 0).all()
