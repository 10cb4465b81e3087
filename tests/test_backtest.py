"""Scoring on windows and rolling-origin backtests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame

from forecasting.data.scaling import fit_scaler
from forecasting.errors import SeriesTooShortError
from forecasting.evaluation import METRIC_KEYS, backtest, evaluate_windows, fold_cutoffs, mase_scale
from forecasting.models.ar import AR, ARSettings
from forecasting.models.base import DataSpec
from forecasting.models.baselines import Naive

SPEC = DataSpec(lookback=24, horizon=12)


def test_evaluate_windows_scores_every_window_on_both_scales(sine_frame: pd.DataFrame) -> None:
    scaler = fit_scaler(sine_frame, ["y"])
    scaled = scaler.transform(sine_frame)
    model = Naive(spec=SPEC).fit(scaled)
    windows = model.make_windows(scaled)
    metrics, pred = evaluate_windows(model, windows, scaler, batch_size=100, train=scaled, season=24)
    assert set(metrics) == set(METRIC_KEYS) | {f"{k}_orig" for k in METRIC_KEYS}
    n, h = len(windows), SPEC.horizon
    assert len(pred) == n * h and pred["step"].tolist()[:h] == list(range(1, h + 1))
    batch = windows.batch(np.arange(n))
    np.testing.assert_allclose(
        metrics["mse"], np.mean((batch["target"] - batch["y"][:, -1:]) ** 2), rtol=1e-6
    )
    one_step = pred[pred["step"] == 1]
    assert (one_step["t"] - one_step["origin"] == pd.Timedelta("1h")).all()
    orig = sine_frame.set_index(["series_id", "t"])["y"]
    np.testing.assert_allclose(
        pred["y_orig"], orig.loc[list(zip(pred["series_id"], pred["t"], strict=True))], atol=1e-5
    )
    assert metrics["mse_orig"] == pytest.approx(np.mean((pred["y_orig"] - pred["yhat_orig"]) ** 2))
    assert metrics["mase"] == pytest.approx(metrics["mase_orig"], rel=1e-5)  # MASE is scale-free
    scales = {s: mase_scale(g["y"].to_numpy(), 24) for s, g in scaled.groupby("series_id")}
    expected = np.mean(np.abs(pred["y"] - pred["yhat"]) / pred["series_id"].map(scales))
    assert metrics["mase"] == pytest.approx(expected)


def test_evaluate_windows_maps_series_to_the_model_s_training_index(sine_frame: pd.DataFrame) -> None:
    model = AR(ARSettings(ic="aic", max_lag=12), spec=SPEC).fit(sine_frame)
    reordered = pd.concat([sine_frame[sine_frame["series_id"] == s] for s in ("s2", "s0")])
    _, pred = evaluate_windows(model, model.make_windows(reordered))
    _, ref = evaluate_windows(model, model.make_windows(sine_frame))
    merged = pred.merge(ref, on=["series_id", "t", "step"], suffixes=("", "_ref"))
    assert len(merged) == len(pred)
    np.testing.assert_allclose(merged["yhat"], merged["yhat_ref"])


def test_fold_cutoffs_step_back_from_the_end() -> None:
    np.testing.assert_array_equal(fold_cutoffs(np.array([100, 60]), 10, 3, 5), [[80, 40], [85, 45], [90, 50]])


class CountingFactory:
    def __init__(self) -> None:
        self.fits = 0

    def __call__(self) -> Naive:
        factory = self

        class Counted(Naive):
            def _fit(self, *args, **kwargs) -> None:
                factory.fits += 1

        return Counted(spec=SPEC)


@pytest.mark.parametrize("refit", [True, False])
def test_backtest_folds_origins_and_values(refit: bool) -> None:
    y = np.sin(np.arange(200) / 7.0) + np.arange(200) / 50.0
    frame = make_frame(y)
    factory = CountingFactory()
    folds = backtest(frame, factory, n_folds=3, step=12, refit=refit, scale=False)
    assert folds["fold"].tolist() == [0, 1, 2]
    cuts = [200 - 12 - 24, 200 - 12 - 12, 200 - 12]
    assert folds["origin"].tolist() == [frame["t"][c - 1] for c in cuts]
    assert folds["train_rows"].tolist() == cuts and folds["n_windows"].tolist() == [1, 1, 1]
    assert folds["fitted"].tolist() == [True, refit, refit]
    assert factory.fits == (3 if refit else 1)
    for (_, fold), cut in zip(folds.iterrows(), cuts, strict=True):
        assert fold["mse"] == pytest.approx(np.mean((y[cut : cut + 12] - y[cut - 1]) ** 2), rel=1e-5)


def test_backtest_with_scaling_and_ar(sine_frame: pd.DataFrame) -> None:
    folds = backtest(
        sine_frame, lambda: AR(ARSettings(ic="bic", max_lag=24), spec=SPEC), n_folds=2, season=24
    )
    assert len(folds) == 2 and folds["n_windows"].tolist() == [3, 3]
    assert np.isfinite(folds[["mse", "mse_orig", "mase", "mase_orig"]].to_numpy()).all()
    assert (folds["mse_orig"] < 0.1).all()  # noise variance 0.01 on a learnable sine


def test_backtest_rejects_series_too_short_for_its_folds() -> None:
    with pytest.raises(SeriesTooShortError, match="needs 72 rows"):
        backtest(make_frame(np.arange(70.0)), lambda: Naive(spec=SPEC), n_folds=3, step=12)
