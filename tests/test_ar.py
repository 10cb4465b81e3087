"""AR(p) family: known coefficients come back, the batched solver equals statsmodels, ARX, pooled."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame
from statsmodels.tsa.ar_model import AutoReg

from forecasting.data.scaling import fit_scaler
from forecasting.errors import ConfigError, SeriesTooShortError
from forecasting.evaluation import evaluate_windows
from forecasting.models.ar import AR, ARSettings, fit_batched, fit_statsmodels, forecast_recursive
from forecasting.models.base import DataSpec, Forecaster
from forecasting.models.baselines import Naive
from forecasting.models.registry import parse_settings

SPEC = DataSpec(lookback=24, horizon=12)


def random_ar_panel(
    rng: np.random.Generator, n_series: int, n_exog: int = 0, max_order: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stable AR(p) series of random order, level and length, concatenated: y (T,), x (T, Cf), offsets."""
    ys, xs = [], []
    for _ in range(n_series):
        n, p = int(rng.integers(150, 600)), int(rng.integers(0, max_order + 1))
        phi = -np.atleast_1d(np.poly(rng.uniform(-0.9, 0.9, p)))[1:]  # real roots inside the unit circle
        gamma = rng.normal(size=n_exog)
        x = rng.standard_normal((n + 100, n_exog))
        y = np.zeros(n + 100)
        for t in range(p, n + 100):
            y[t] = 1.5 + phi @ y[t - p : t][::-1] + x[t] @ gamma + rng.standard_normal()
        ys.append(y[100:] + rng.normal(0, 5))  # levels far from 0: the intercept must survive
        xs.append(x[100:])
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in ys])]).astype(np.int64)
    return np.concatenate(ys), np.concatenate(xs), offsets


def test_recovers_ar2_coefficients_and_picks_order_2_by_bic(ar2_frame: pd.DataFrame) -> None:
    model = AR(ARSettings(ic="bic", max_lag=10, solver="statsmodels"), spec=SPEC).fit(ar2_frame)
    assert model.order_.tolist() == [2]
    np.testing.assert_allclose(model.coef_[0, :3], [0.5, 0.6, -0.3], atol=0.02)
    assert np.all(model.coef_[0, 3:] == 0)
    assert model.n_params == 3 + 3  # the series' fit plus the pooled fit (the same series here)


@pytest.mark.parametrize("n_exog", [0, 2])
@pytest.mark.parametrize(("ic", "lags"), [("bic", None), ("aic", None), ("fixed", 3)])
def test_batched_equals_statsmodels(rng: np.random.Generator, ic: str, lags: int | None, n_exog: int) -> None:
    y, x, offsets = random_ar_panel(rng, 20, n_exog)
    max_lag = 8 if lags is None else lags
    ref = fit_statsmodels(y, x, offsets, max_lag, ic, lags)
    got = fit_batched(y, x, offsets, max_lag, ic, lags)
    np.testing.assert_array_equal(got.order, ref.order)
    np.testing.assert_allclose(got.coef, ref.coef, rtol=0, atol=1e-6)
    if ic != "fixed":
        assert len(set(ref.order.tolist())) > 1  # the comparison covers several selected orders


def test_batched_model_equals_autoreg_directly(rng: np.random.Generator) -> None:
    y, _, offsets = random_ar_panel(rng, 4)
    parts = [make_frame(y[a:b], series_id=f"s{k}") for k, (a, b) in enumerate(pairwise(offsets))]
    model = AR(ARSettings(ic="aic", max_lag=6, solver="batched"), spec=SPEC).fit(pd.concat(parts))
    assert model.solver_ == "batched"
    for k, (a, b) in enumerate(pairwise(offsets)):
        p = int(model.order_[k])
        params = AutoReg(y[a:b], p, trend="c").fit().params
        np.testing.assert_allclose(model.coef_[k, : 1 + p], params, rtol=0, atol=1e-6)


@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.SingularMatrixWarning")
def test_batched_falls_back_to_statsmodels_on_a_singular_design(ar2_frame: pd.DataFrame) -> None:
    y = ar2_frame["y"].to_numpy()
    x = np.zeros((len(y), 1))  # a covariate that never moves: X'X is singular
    offsets = np.array([0, len(y)])
    got, ref = fit_batched(y, x, offsets, 4, "bic"), fit_statsmodels(y, x, offsets, 4, "bic")
    np.testing.assert_allclose(got.coef, ref.coef, atol=1e-9)
    assert got.coef[0, -1] == 0


def test_arx_recovers_the_future_covariate(rng: np.random.Generator) -> None:
    n = 2000
    x = rng.standard_normal(n)
    y = np.zeros(n)
    for t in range(1, n):
        y[t] = 0.3 + 0.5 * y[t - 1] + 2.0 * x[t] + 0.1 * rng.standard_normal()
    spec = DataSpec(lookback=24, horizon=12, future=["x"])
    frame = make_frame(y, x=x)
    for solver in ("statsmodels", "batched"):
        model = AR(ARSettings(ic="bic", max_lag=5, solver=solver), spec=spec).fit(frame)
        assert model.order_.tolist() == [1]
        np.testing.assert_allclose(model.coef_[0, [0, 1, -1]], [0.3, 0.5, 2.0], atol=0.02)
    # The forecast uses the covariate at the target times: one more unit at step 1 adds g, then g * b.
    batch = model.make_windows(frame).batch(np.array([0]))
    base = model.predict_windows(batch)
    batch["x_future"] = batch["x_future"].copy()
    batch["x_future"][0, 0, 0] += 1.0
    diff = model.predict_windows(batch) - base
    g, b = model.coef_[0, -1], model.coef_[0, 1]
    np.testing.assert_allclose(diff[0, :3], [g, g * b, g * b * b], rtol=1e-6)


def test_forecast_equals_statsmodels_out_of_sample_forecast(ar2_frame: pd.DataFrame) -> None:
    model = AR(ARSettings(ic="fixed", lags=2), spec=SPEC).fit(ar2_frame)
    y = ar2_frame["y"].to_numpy()
    expected = AutoReg(y, 2, trend="c").fit().forecast(SPEC.horizon)
    batch = {
        "y": y[None, -SPEC.lookback :],
        "x_future": np.zeros((1, SPEC.horizon, 0)),
        "series": np.array([0]),
    }
    np.testing.assert_allclose(model.predict_windows(batch)[0], expected, rtol=1e-10)


def test_unseen_series_use_the_pooled_coefficients(sine_frame: pd.DataFrame) -> None:
    model = AR(ARSettings(ic="aic", max_lag=24), spec=SPEC).fit(sine_frame)
    batch = model.make_windows(sine_frame).batch(np.arange(5))
    batch["series"] = np.full(5, -1)
    expected = forecast_recursive(
        batch["y"].astype(np.float64), np.tile(model.pooled_coef_, (5, 1)), np.zeros((5, 12, 0))
    )
    np.testing.assert_allclose(model.predict_windows(batch), expected)
    new = sine_frame[sine_frame["series_id"] == "s1"].assign(series_id="never-seen")
    forecast = model.predict(new)
    assert len(forecast) == SPEC.horizon and np.isfinite(forecast["yhat"]).all()


def test_beats_naive_on_a_learnable_series(sine_frame: pd.DataFrame) -> None:
    pos = sine_frame.groupby("series_id").cumcount()
    train, test = sine_frame[pos < 480], sine_frame[pos >= 480 - SPEC.lookback]
    scaler = fit_scaler(train, ["y"])
    train, test = scaler.transform(train), scaler.transform(test)
    scores = {}
    for model in (AR(ARSettings(ic="aic"), spec=SPEC), Naive(spec=SPEC)):
        model.fit(train)
        scores[model.name], _ = evaluate_windows(model, model.make_windows(test), scaler)
    assert scores["ar"]["mse"] < 0.2 * scores["naive"]["mse"]


def test_save_load_round_trip_without_pickle(sine_frame: pd.DataFrame, tmp_path) -> None:
    model = AR(ARSettings(ic="bic", max_lag=12, solver="batched"), spec=SPEC).fit(sine_frame)
    model.save(tmp_path)
    with np.load(tmp_path / "ar.npz", allow_pickle=False) as state:
        assert {"coef", "order", "pooled_coef", "pooled_order"} <= set(state.files)
    loaded = Forecaster.load(tmp_path)
    batch = model.make_windows(sine_frame).batch(np.arange(50))
    np.testing.assert_array_equal(loaded.predict_windows(batch), model.predict_windows(batch))
    assert loaded.n_params == model.n_params and loaded.solver_ == "batched"


def test_settings_and_lengths_are_checked(ar2_frame: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="lags"):
        parse_settings(AR, {"ic": "aic", "lags": 3}, "test")
    with pytest.raises(ConfigError, match="lookback"):
        AR(ARSettings(max_lag=30), spec=SPEC).fit(ar2_frame)
    with pytest.raises(SeriesTooShortError, match="s0"):
        AR(ARSettings(max_lag=24), spec=SPEC).fit(ar2_frame.head(45))


def test_a_series_too_short_for_its_own_fit_takes_the_pooled_coefficients(ar2_frame: pd.DataFrame) -> None:
    """A short series left-padded with its first value (as a counts split pads it) would make a
    rank-deficient fit; it gets the pooled coefficients instead, and finite, sane forecasts."""
    from conftest import make_frame

    from forecasting.data.padding import left_pad

    tail = ar2_frame["y"].to_numpy()[-30:]
    short = make_frame(tail, series_id="short", start="2030-01-01")
    frame, padded = left_pad(pd.concat([ar2_frame, short], ignore_index=True), 200, "h", max_pad=200)
    assert padded.to_dict() == {"short": 170}
    model = AR(ARSettings(max_lag=24), spec=SPEC).fit(frame)
    assert model.pooled_series_ == 1
    np.testing.assert_array_equal(model.coef_[1], model.pooled_coef_)
    assert model.order_[0] > 0 and not np.array_equal(model.coef_[0], model.pooled_coef_)
    forecast = model.predict(frame)
    short_forecast = forecast.loc[forecast["series_id"] == "short", "yhat"].to_numpy()
    assert np.isfinite(short_forecast).all()
    assert np.abs(short_forecast).max() < 10 * np.abs(tail).max()


def test_an_explosive_fit_forecasts_with_the_pooled_coefficients(rng: np.random.Generator) -> None:
    """Three stable AR(1) series, one running away 8 % a step and one growing 3 % a step: with
    ``stable`` (the default) the runaway fit (1.08 ** 12 = 2.5 over the horizon) is replaced by the
    pooled one and its forecast stays bounded; the slower grower keeps its own fit and its growth
    (1.03 is significantly above a unit root on 200 rows, 1 + 2/200, but 1.03 ** 12 = 1.4 over the
    horizon: a growing series, not a runaway fit)."""
    from forecasting.models.ar import explosive, spectral_radius

    frames = []
    for k in range(3):
        y = np.zeros(200)
        for t in range(1, 200):
            y[t] = 0.6 * y[t - 1] + rng.standard_normal()
        frames.append(make_frame(y, f"s{k}"))
    growing = {}
    for name, rate in (("boom", 1.08), ("trend", 1.03)):
        y = np.zeros(200)
        y[0] = 1.0
        for t in range(1, 200):
            y[t] = rate * y[t - 1] + 0.001 * rng.standard_normal()
        y = y / y[-1]  # ending at 1: the stable series dominate the pooled fit
        growing[name] = y
        frames.append(make_frame(y, name))
    frame = pd.concat(frames, ignore_index=True)
    settings = dict(ic="fixed", lags=1, max_lag=1)
    plain = AR(ARSettings(**settings, stable=False), spec=SPEC).fit(frame)
    stable = AR(ARSettings(**settings), spec=SPEC).fit(frame)
    radius = spectral_radius(plain.coef_[:, 1:2])
    assert radius[3] == pytest.approx(1.08, abs=0.01) and radius[4] == pytest.approx(1.03, abs=0.01)
    rows = np.full(5, 200)
    assert explosive(plain.coef_[:, 1:2], rows, 12).tolist() == [False, False, False, True, False]
    assert explosive(plain.coef_[4:, 1:2], rows[:1], 200).tolist() == [True]  # over a long horizon
    # On 20 rows a radius of 1.05 is within a unit root's noise (1 + 2/20), however far it reaches.
    assert explosive(np.array([[1.05]]), np.array([20]), 24).tolist() == [False]
    assert explosive(np.array([[1.05]]), np.array([200]), 24).tolist() == [True]
    assert stable.explosive_series_ == 1 and plain.explosive_series_ == 0
    np.testing.assert_array_equal(stable.coef_[3], stable.pooled_coef_)
    np.testing.assert_array_equal(stable.coef_[[0, 1, 2, 4]], plain.coef_[[0, 1, 2, 4]])  # kept
    assert spectral_radius(stable.coef_[3:4, 1:2])[0] < 1
    boom, calm = plain.predict(frame), stable.predict(frame)
    last = growing["boom"][-1]
    assert boom[boom.series_id == "boom"].yhat.iloc[-1] > 2 * last  # 1.08 ** 12 = 2.5
    assert calm[calm.series_id == "boom"].yhat.abs().max() < 1.1 * abs(last)
    trend = calm[calm.series_id == "trend"].yhat.to_numpy()
    assert trend[-1] > trend[0] > growing["trend"][-1]  # it keeps growing
