"""Metric functions against small hand-computed examples, including the edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from forecasting.evaluation.metrics import (
    METRIC_KEYS,
    mae,
    mase,
    mase_scale,
    mase_scales,
    mse,
    rmse,
    score,
    smape,
    wape,
)

NAN = float("nan")


def test_mse_mae_rmse_on_a_small_example() -> None:
    y = np.array([[1.0, 2.0], [3.0, 4.0]])
    yhat = np.array([[1.0, 3.0], [5.0, 4.0]])  # errors 0, 1, 2, 0
    assert mse(y, yhat) == pytest.approx(5 / 4)
    assert mae(y, yhat) == pytest.approx(3 / 4)
    assert rmse(y, yhat) == pytest.approx(math.sqrt(5 / 4))


def test_missing_truth_is_skipped_but_a_missing_forecast_poisons() -> None:
    y = np.array([[1.0, NAN]])
    assert mse(y, np.array([[2.0, 100.0]])) == pytest.approx(1.0)
    assert wape(y, np.array([[2.0, 100.0]])) == pytest.approx(100.0)
    assert math.isnan(mae(np.array([[1.0, 2.0]]), np.array([[1.0, NAN]])))
    assert math.isnan(mse(np.array([[NAN, NAN]]), np.zeros((1, 2))))  # nothing to score


def test_mase_scale_is_the_in_sample_seasonal_naive_mae() -> None:
    y = np.array([1.0, 3.0, 2.0, 5.0])
    assert mase_scale(y, 1) == pytest.approx((2 + 1 + 3) / 3)
    assert mase_scale(y, 2) == pytest.approx((1 + 2) / 2)
    assert math.isnan(mase_scale(y, 4))  # no seasonal pair in a series as long as the season
    assert mase_scale(np.full(5, 7.0), 1) == 0.0
    with pytest.raises(ValueError):
        mase_scale(y, 0)


@pytest.mark.parametrize("season", [1, 3, 24])
def test_mase_scales_of_a_frame_equal_the_per_series_scale(season) -> None:
    """One pass over every series (pairs never straddle two series) gives ``mase_scale`` of each:
    NaN rows skipped, series no longer than a season NaN, a constant series 0."""
    import pandas as pd

    rng = np.random.default_rng(season)
    lengths = rng.integers(1, 50, 300)
    ids = np.repeat([f"s{i}" for i in range(300)], lengths)
    y = rng.normal(size=lengths.sum()) * 10
    y[rng.random(len(y)) < 0.05] = np.nan
    y[ids == "s7"] = 4.0
    frame = pd.DataFrame({"series_id": pd.Categorical(ids, categories=pd.unique(ids)), "y": y})
    got = mase_scales(frame, season)
    assert list(got.index) == list(pd.unique(ids))
    for sid in ("s0", "s7", "s123", "s299", *got.index[np.isnan(got.to_numpy())][:3]):
        expected = mase_scale(y[ids == sid], season)
        assert (math.isnan(expected) and math.isnan(got[sid])) or got[sid] == pytest.approx(
            expected, rel=1e-12
        )
    assert got["s7"] == 0.0 or lengths[7] <= season
    with pytest.raises(ValueError, match="season"):
        mase_scales(frame, 0)


def test_mase_scales_each_row_by_its_series() -> None:
    assert mase(np.array([[2.0, 4.0]]), np.array([[3.0, 3.0]]), 2.0) == pytest.approx(0.5)
    y = np.zeros((2, 2))
    yhat = np.array([[1.0, 1.0], [2.0, 2.0]])
    assert mase(y, yhat, np.array([1.0, 2.0])) == pytest.approx(1.0)  # every scaled error is 1
    assert mase(y, y, np.array([1.0, 2.0])) == 0.0


def test_mase_edge_cases_follow_ieee_division() -> None:
    y = np.array([[1.0, 1.0]])
    assert mase(y, y + 1.0, 0.0) == math.inf  # constant training series, wrong forecast
    assert math.isnan(mase(y, y, 0.0))  # constant training series, exact forecast: 0/0
    assert math.isnan(mase(y, y + 1.0, NAN))  # training series shorter than the season
    with pytest.raises(ValueError, match="rows"):
        mase(y, y, np.array([1.0, 2.0]))


def test_smape_in_percent_with_zero_over_zero_as_exact() -> None:
    assert smape(np.array([1.0]), np.array([3.0])) == pytest.approx(100.0)  # 200 * 2 / 4
    assert smape(np.array([0.0]), np.array([1.0])) == pytest.approx(200.0)  # the upper bound
    assert smape(np.array([0.0, 2.0]), np.array([0.0, 2.0])) == 0.0
    assert smape(np.array([-1.0]), np.array([1.0])) == pytest.approx(200.0)


def test_wape_weights_by_the_total_truth() -> None:
    assert wape(np.array([[1.0, 3.0]]), np.array([[2.0, 2.0]])) == pytest.approx(50.0)
    assert wape(np.zeros(2), np.ones(2)) == math.inf
    assert math.isnan(wape(np.zeros(2), np.zeros(2)))


def test_score_has_stable_keys() -> None:
    y, yhat = np.array([[1.0, 2.0]]), np.array([[1.0, 4.0]])
    plain = score(y, yhat)
    assert tuple(plain) == METRIC_KEYS
    assert math.isnan(plain["mase"])
    scored = score(y, yhat, scale=2.0)
    assert tuple(scored) == METRIC_KEYS
    assert scored == pytest.approx(
        {"mse": 2.0, "mae": 1.0, "rmse": math.sqrt(2.0), "mase": 0.5, "smape": 100 / 3 * 1, "wape": 200 / 3}
    )
    with pytest.raises(ValueError, match="shape"):
        score(y, yhat[:, :1])
