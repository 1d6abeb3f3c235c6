"""lablib.methods.forecast: the forecasts on series whose answer is known, the trend's ends filled
as a line, the errors on hand-computed cases, and bad input named."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lablib.methods import forecast as fc


def test_naive_repeats_the_last_value():
    np.testing.assert_array_equal(fc.naive([3.0, 1.0, 4.0], 5), [4.0] * 5)


def test_seasonal_naive_of_a_periodic_series_is_exact():
    week = np.array([10.0, 12, 9, 8, 15, 30, 25])
    history, future = np.tile(week, 9), np.tile(week, 4)
    np.testing.assert_array_equal(fc.seasonal_naive(history, 28, 7), future)
    # a history that does not end on a cycle boundary: the next day continues the pattern
    np.testing.assert_array_equal(fc.seasonal_naive(history[:-2], 5, 7), np.tile(week, 2)[5:10])


def test_seasonal_naive_with_period_one_is_naive_and_shorter_history_is_refused():
    h = [1.0, 2.0, 5.0]
    np.testing.assert_array_equal(fc.seasonal_naive(h, 4, 1), fc.naive(h, 4))
    with pytest.raises(ValueError, match="history"):
        fc.seasonal_naive(h, 4, 7)


def test_decomposition_forecast_continues_a_line_plus_a_season_exactly():
    n, period = 70, 7
    days = np.arange(n + 14)
    line = 50 + 0.3 * days
    season = np.resize([5.0, -1, 0, -2, 3, -4, -1], n + 14)
    got = fc.decomposition_forecast(line[:n], season[:n], 14, 21, period)
    np.testing.assert_allclose(got, line[n:] + season[n:], atol=1e-9)


def test_decomposition_forecast_uses_only_the_last_window_of_the_trend():
    trend = np.r_[np.full(30, 100.0), np.arange(10.0)]  # flat, then a slope of 1 in the last 10 days
    got = fc.decomposition_forecast(trend, np.zeros(40), 3, 10, 7)
    np.testing.assert_allclose(got, [10.0, 11.0, 12.0], atol=1e-9)


def test_decomposition_forecast_refuses_a_nan_trend_end_with_advice():
    trend = np.r_[np.arange(20.0), [np.nan] * 3]
    with pytest.raises(ValueError, match="trend holds NaN.*position 20"):
        fc.decomposition_forecast(trend, np.zeros(23), 5, 7)


def test_decomposition_forecast_checks_lengths_and_window():
    with pytest.raises(ValueError, match="seasonal"):
        fc.decomposition_forecast(np.arange(20.0), np.zeros(19), 3, 5)
    with pytest.raises(ValueError, match="window"):
        fc.decomposition_forecast(np.arange(20.0), np.zeros(20), 3, 1)
    with pytest.raises(ValueError, match="trend"):
        fc.decomposition_forecast(np.arange(10.0), np.zeros(10), 3, 14)


def test_fill_trend_ends_extends_a_line_and_leaves_the_defined_part():
    line = 2.0 + 0.5 * np.arange(30)
    trend = line.copy()
    trend[:3] = trend[-3:] = np.nan
    filled = fc.fill_trend_ends(trend, 6)
    np.testing.assert_allclose(filled, line, atol=1e-9)
    assert np.isnan(trend[:3]).all()  # the input is not changed
    # only the window next to each end counts: a kink far from the end does not bend the line
    kinked = np.r_[np.full(10, 100.0), 2.0 + 0.5 * np.arange(10, 30)]
    kinked[-2:] = np.nan
    np.testing.assert_allclose(fc.fill_trend_ends(kinked, 5)[-2:], [16.0, 16.5], atol=1e-9)


def test_fill_trend_ends_matches_statsmodels_at_the_start():
    seasonal_decompose = pytest.importorskip("statsmodels.tsa.seasonal").seasonal_decompose
    rng = np.random.default_rng(0)
    x = 50 + np.cumsum(rng.normal(size=60)) + np.resize([3.0, -1, 0, -2], 60)
    raw = seasonal_decompose(x, period=4).trend
    ext = seasonal_decompose(x, period=4, extrapolate_trend=5).trend
    # statsmodels fits its start on the first extrapolate_trend + 1 defined values (its end differs:
    # it leaves out the last defined value), so fill_trend_ends(raw, 6) matches extrapolate_trend=5
    np.testing.assert_allclose(fc.fill_trend_ends(raw, 6)[:2], ext[:2], atol=1e-9)


def test_fill_trend_ends_refuses_inner_gaps_and_too_few_values():
    t = np.arange(20.0)
    t[10] = np.nan
    with pytest.raises(ValueError, match="between"):
        fc.fill_trend_ends(t, 3)
    with pytest.raises(ValueError, match="window"):
        fc.fill_trend_ends([np.nan, 1.0, 2.0, np.nan], 3)


def test_errors_on_hand_computed_cases():
    actual, forecast = [10.0, 20.0, 40.0], [12.0, 15.0, 40.0]
    assert fc.mae(actual, forecast) == pytest.approx(7 / 3)
    assert fc.mape(actual, forecast) == pytest.approx(100 * (0.2 + 0.25 + 0) / 3)
    assert fc.smape(actual, forecast) == pytest.approx(100 * (4 / 22 + 10 / 35 + 0) / 3)
    assert fc.mae(actual, actual) == 0 and fc.mape(actual, actual) == 0 and fc.smape(actual, actual) == 0


def test_mape_refuses_zero_demand_and_smape_scores_it():
    with pytest.raises(ValueError, match="actual is 0 on 1 of 3 days"):
        fc.mape([0.0, 2.0, 4.0], [1.0, 2.0, 4.0])
    assert fc.smape([0.0, 2.0], [0.0, 2.0]) == 0.0  # both zero: a perfect day
    assert fc.smape([0.0, 2.0], [1.0, 2.0]) == pytest.approx(100.0)  # 200 % on one day of two
    assert math.isclose(fc.mape([1e-3], [1.0]), 99_900.0)  # near zero, MAPE explodes


def test_inputs_may_be_lists_arrays_series_or_tensors():
    values = [1.0, 4.0, 2.0, 8.0]
    for v in (values, np.array(values), pd.Series(values), torch.tensor(values)):
        np.testing.assert_array_equal(fc.seasonal_naive(v, 3, 2), [2.0, 8.0, 2.0])
        assert fc.mae(v, values) == 0.0


@pytest.mark.parametrize("call, match", [
    (lambda: fc.naive("123", 3), "history"),
    (lambda: fc.naive([], 3), "history"),
    (lambda: fc.naive([[1.0, 2.0]], 3), "history"),
    (lambda: fc.naive([True, False], 3), "history"),
    (lambda: fc.naive([1.0, float("nan")], 3), "history"),
    (lambda: fc.naive([1.0], 0), "horizon"),
    (lambda: fc.naive([1.0], 2.5), "horizon"),
    (lambda: fc.seasonal_naive([1.0] * 10, 3, 0), "period"),
    (lambda: fc.decomposition_forecast(None, [1.0], 3, 2), "trend"),
    (lambda: fc.decomposition_forecast([1.0] * 10, ["a"] * 10, 3, 2), "seasonal"),
    (lambda: fc.fill_trend_ends([1.0, np.inf, 2.0], 2), "trend"),
    (lambda: fc.mae([1.0, 2.0], [1.0]), "forecast"),
    (lambda: fc.mape(3.0, [1.0]), "actual"),
    (lambda: fc.smape([1.0], {"a": 1}), "forecast"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
