"""AR's native quantiles: the analytic Gaussian bands of statsmodels' AutoReg, from either solver,
through save/load, and from the pooled fit for an unseen series."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame
from statsmodels.tsa.ar_model import AutoReg
from test_ar import random_ar_panel

from forecasting.models.ar import AR, ARSettings
from forecasting.models.base import DataSpec, Forecaster

SPEC = DataSpec(lookback=24, horizon=12, levels=[95, 80])  # taus 0.025, 0.1, 0.9, 0.975


def last_window(y: np.ndarray, spec: DataSpec, x_future: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The batch of one window: the series' last ``lookback`` values, forecast past its end."""
    xf = np.zeros((spec.horizon, 0)) if x_future is None else x_future
    return {"y": y[None, -spec.lookback :], "x_future": xf[None], "series": np.array([0])}


def autoreg_bands(res, start: int, horizon: int, exog_oos: np.ndarray | None = None) -> np.ndarray:
    """statsmodels' intervals at alpha 0.05 and 0.2, as quantiles 0.025, 0.1, 0.9, 0.975: (H, 4)."""
    pred = res.get_prediction(start=start, end=start + horizon - 1, exog_oos=exog_oos)
    (lo95, hi95), (lo80, hi80) = pred.conf_int(alpha=0.05).T, pred.conf_int(alpha=0.2).T
    return np.column_stack([lo95, lo80, hi80, hi95])


@pytest.mark.parametrize("solver", ["statsmodels", "batched"])
def test_bands_equal_autoreg_prediction_intervals(ar2_frame: pd.DataFrame, solver: str) -> None:
    assert SPEC.taus == [0.025, 0.1, 0.9, 0.975]
    model = AR(ARSettings(ic="fixed", lags=2, solver=solver), spec=SPEC).fit(ar2_frame)
    y = ar2_frame["y"].to_numpy()
    res = AutoReg(y, lags=2, trend="c").fit()
    np.testing.assert_allclose(model.sigma2_, [res.sigma2], rtol=1e-10)
    bands = model.native_quantiles(last_window(y, SPEC))
    assert bands.shape == (1, SPEC.horizon, 4) and bands.dtype == np.float64
    np.testing.assert_allclose(bands[0], autoreg_bands(res, len(y), SPEC.horizon), rtol=1e-8, atol=1e-8)
    assert np.all(np.diff(bands, axis=-1) > 0)  # monotone in tau


def test_arx_bands_treat_future_covariates_as_known(rng: np.random.Generator) -> None:
    n, horizon = 1500, SPEC.horizon
    x = rng.standard_normal(n + horizon)
    y = np.zeros(n)
    for t in range(2, n):
        y[t] = 0.2 + 0.5 * y[t - 1] + 0.2 * y[t - 2] + 1.5 * x[t] + 0.3 * rng.standard_normal()
    spec = DataSpec(lookback=24, horizon=horizon, future=["x"], levels=[95, 80])
    model = AR(ARSettings(ic="fixed", lags=2), spec=spec).fit(make_frame(y, x=x[:n]))
    res = AutoReg(y, lags=2, trend="c", exog=x[:n, None]).fit()
    bands = model.native_quantiles(last_window(y, spec, x[n:, None]))
    np.testing.assert_allclose(bands[0], autoreg_bands(res, n, horizon, x[n:, None]), rtol=1e-8, atol=1e-8)


def test_batched_and_statsmodels_give_the_same_sigma2_and_bands(rng: np.random.Generator) -> None:
    y, _, offsets = random_ar_panel(rng, 6)
    frame = pd.concat([make_frame(y[a:b], series_id=f"s{k}") for k, (a, b) in enumerate(pairwise(offsets))])
    models = {
        solver: AR(ARSettings(ic="bic", max_lag=6, solver=solver), spec=SPEC).fit(frame)
        for solver in ("statsmodels", "batched")
    }
    ref, got = models["statsmodels"], models["batched"]
    np.testing.assert_array_equal(got.order_, ref.order_)
    assert len(set(ref.order_.tolist())) > 1  # several orders, so several nobs
    np.testing.assert_allclose(got.sigma2_, ref.sigma2_, rtol=1e-8)
    for k, (a, b) in enumerate(pairwise(offsets)):  # each series' sigma2 is AutoReg's for its order
        assert ref.sigma2_[k] == pytest.approx(
            AutoReg(y[a:b], int(ref.order_[k]), trend="c").fit().sigma2, rel=1e-10
        )
    windows = ref.make_windows(frame)
    batch = windows.batch(np.arange(0, len(windows), 37))  # windows of every series
    assert set(batch["series"].tolist()) == set(range(6))
    np.testing.assert_allclose(
        got.native_quantiles(batch), ref.native_quantiles(batch), rtol=1e-8, atol=1e-10
    )


def test_save_load_keeps_the_bands_and_an_old_state_has_none(sine_frame: pd.DataFrame, tmp_path) -> None:
    model = AR(ARSettings(ic="bic", max_lag=12, solver="batched"), spec=SPEC).fit(sine_frame)
    batch = model.make_windows(sine_frame).batch(np.arange(50))
    model.save(tmp_path)
    loaded = Forecaster.load(tmp_path)
    np.testing.assert_array_equal(loaded.native_quantiles(batch), model.native_quantiles(batch))
    # A state saved before the analytic bands: no sigma2 in ar.npz.
    with np.load(tmp_path / "ar.npz", allow_pickle=False) as state:
        old = {name: state[name] for name in state.files if name not in ("sigma2", "pooled_sigma2")}
    np.savez(tmp_path / "ar.npz", **old)
    old_model = Forecaster.load(tmp_path)
    assert old_model.native_quantiles(batch) is None
    np.testing.assert_array_equal(old_model.predict_windows(batch), model.predict_windows(batch))
    # Saved again (an ensemble member refit from it, say): still no sigma2, and no pickled None.
    old_model.save(tmp_path / "again")
    with np.load(tmp_path / "again" / "ar.npz", allow_pickle=False) as state:
        assert "sigma2" not in state.files
    assert Forecaster.load(tmp_path / "again").native_quantiles(batch) is None


def test_an_unseen_series_gets_the_pooled_fits_bands(
    ar2_frame: pd.DataFrame, rng: np.random.Generator
) -> None:
    e, y = 0.3 * rng.standard_normal(1000), np.zeros(1000)
    for t in range(2, 1000):  # the fixture's AR(2), three times as loud
        y[t] = 0.5 + 0.6 * y[t - 1] - 0.3 * y[t - 2] + e[t]
    louder = make_frame(y, series_id="s1")
    model = AR(ARSettings(ic="fixed", lags=2), spec=SPEC).fit(pd.concat([ar2_frame, louder]))
    assert model.sigma2_[0] < model.pooled_sigma2_ < model.sigma2_[1]
    batch = last_window(ar2_frame["y"].to_numpy(), SPEC) | {"series": np.array([-1])}
    bands = model.native_quantiles(batch)[0]  # (H, 4)
    assert np.isfinite(bands).all()
    width = bands[:, -1] - bands[:, 0]  # the 95% interval
    assert np.all(np.diff(width) >= 0) and width[-1] > 1.1 * width[0]  # psi_j shrink: it levels off
    z = 1.959963984540054
    assert width[0] == pytest.approx(2 * z * np.sqrt(model.pooled_sigma2_), rel=1e-12)
    # A stationary AR(2) forecast's variance tends to the process variance gamma_0.
    phi1, phi2 = model.pooled_coef_[1:3]
    gamma0 = model.pooled_sigma2_ * (1 - phi2) / ((1 + phi2) * ((1 - phi2) ** 2 - phi1**2))
    assert (width[-1] / (2 * z)) ** 2 == pytest.approx(gamma0, rel=1e-3)
