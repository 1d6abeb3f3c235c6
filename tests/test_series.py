"""lablib.data.series: the demand generator's components add up, each one has the shape its
parameters ask for, it is reproducible, and bad arguments get errors naming them."""

import numpy as np
import pandas as pd
import pytest

from lablib.data import series


def test_components_add_up_to_the_truth_and_sales_are_the_truth_where_recorded():
    d = series.demand(5, 120, seed=0, missing=0.1)
    parts = sum(getattr(d, c) for c in series.COMPONENTS)
    np.testing.assert_allclose(parts.to_numpy(), d.truth.to_numpy(), atol=1e-9)
    recorded = ~d.missing.to_numpy()
    np.testing.assert_array_equal(d.sales.to_numpy()[recorded], d.truth.to_numpy()[recorded])
    assert np.isnan(d.sales.to_numpy()[~recorded]).all()
    assert 0 < (~recorded).mean() < 0.2  # about 10 % of the days


def test_frames_share_a_daily_index_and_the_series_names():
    d = series.demand(3, 30, seed=1, start="2023-05-01")
    assert isinstance(d.sales.index, pd.DatetimeIndex)
    assert d.sales.index[0] == pd.Timestamp("2023-05-01") and len(d.sales) == 30
    assert (d.sales.index[1:] - d.sales.index[:-1] == pd.Timedelta(days=1)).all()
    assert list(d.sales.columns) == ["s000", "s001", "s002"]
    for name in (*series.COMPONENTS, "promo_days", "missing"):
        frame = getattr(d, name)
        assert frame.index.equals(d.sales.index) and frame.columns.equals(d.sales.columns), name


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (series.demand(4, 60, seed=s) for s in (3, 3, 4))
    pd.testing.assert_frame_equal(a.sales, b.sales)
    assert not np.allclose(a.truth.to_numpy(), c.truth.to_numpy())


def test_the_season_is_weekly_with_mean_zero_and_the_asked_strength():
    d = series.demand(6, 70, seed=2, season_strength=0.4, noise=0.0, promo_rate=0.0)
    s = d.season.to_numpy()
    np.testing.assert_allclose(s[7:], s[:-7])  # it repeats every 7 days
    np.testing.assert_allclose(s[:7].mean(0), 0, atol=1e-9)
    level = d.trend.to_numpy()[0]  # the trend starts at the series' level
    np.testing.assert_allclose(s[:7].std(0) / level, 0.4, rtol=1e-9)
    profile = d.season_profile.to_numpy()
    np.testing.assert_allclose(profile[d.sales.index.day_of_week], s)


def test_switched_off_components_are_zero():
    d = series.demand(3, 50, seed=0, noise=0.0, season_strength=0.0, promo_rate=0.0, missing=0.0,
                      start="2022-03-01")  # no holiday in these 50 days
    for part in ("season", "promo", "holiday", "noise"):
        assert (getattr(d, part).to_numpy() == 0).all(), part
    assert not d.missing.to_numpy().any() and not d.promo_days.to_numpy().any()
    pd.testing.assert_frame_equal(d.truth, d.trend)


def test_promotions_lift_demand_only_on_promotion_days_and_at_about_the_rate():
    d = series.demand(20, 400, seed=5, promo_rate=0.1)
    on = d.promo_days.to_numpy()
    lift = d.promo.to_numpy()
    assert (lift[~on] == 0).all() and (lift[on] > 0).all()
    assert 0.06 < on.mean() < 0.12
    level = d.trend.to_numpy()[0]
    ratio = lift.max(0) / level
    assert ((ratio >= 0.3 - 1e-9) & (ratio <= 0.8 + 1e-9)).all()


def test_holidays_fall_on_their_calendar_days():
    d = series.demand(4, 365, seed=0, start="2023-01-01")
    h = d.holiday
    assert (h.loc["2023-01-01"] < 0).all()  # shops close
    assert (h.loc["2023-11-11"] > 0).all() and (h.loc["2023-10-03"] > 0).all()
    assert (h.loc["2023-06-15"] == 0).all()


def test_demand_is_never_negative_and_the_noise_absorbs_the_floor():
    d = series.demand(10, 200, seed=0, noise=1.0, season_strength=1.0)
    truth = d.truth.to_numpy()
    assert truth.min() >= 0 and (truth == 0).any()  # the floor acted on some days
    np.testing.assert_allclose(sum(getattr(d, c) for c in series.COMPONENTS).to_numpy(), truth, atol=1e-9)


def test_noise_is_autocorrelated_with_the_asked_size():
    d = series.demand(50, 2000, seed=0, noise=0.2, season_strength=0.0, promo_rate=0.0)
    z = d.noise.to_numpy() / d.trend.to_numpy()[0]
    assert 0.17 < z.std() < 0.23
    lag1 = np.mean([np.corrcoef(z[1:, j], z[:-1, j])[0, 1] for j in range(z.shape[1])])
    assert abs(lag1 - series.AR) < 0.05


def test_components_of_one_series():
    d = series.demand(2, 20, seed=0)
    one = d.components("s001")
    assert list(one.columns) == ["sales", "truth", *series.COMPONENTS, "promo day"]
    pd.testing.assert_series_equal(one["truth"], d.truth["s001"], check_names=False)
    with pytest.raises(KeyError, match="column"):
        d.components("s999")


@pytest.mark.parametrize("kwargs, match", [
    ({"n_series": 0}, "n_series"), ({"n_series": 2.5}, "n_series"), ({"days": 3}, "days"),
    ({"days": "30"}, "days"), ({"seed": -1}, "seed"), ({"noise": -0.1}, "noise"),
    ({"noise": float("nan")}, "noise"), ({"season_strength": "0.3"}, "season_strength"),
    ({"promo_rate": 1.5}, "promo_rate"), ({"missing": 0.9}, "missing"), ({"level": 0}, "level"),
    ({"start": "not a date"}, "start"), ({"start": 20220101}, "start"),
    ({"n_series": 100_000, "days": 100_000}, "n_series x days"),
])
def test_bad_arguments_name_themselves(kwargs, match):
    args = {"n_series": 2, "days": 30, "seed": 0} | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        series.demand(**args)
