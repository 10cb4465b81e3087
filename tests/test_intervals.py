"""Prediction intervals and quantiles (``forecasting.evaluation.intervals``): the conformal recipe,
its metrics, and the path from a fitted model to the pyfunc's columns."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame

from forecasting.config import ConfigError, config_from_dict
from forecasting.data.schema import string_ids
from forecasting.evaluation import intervals as iv
from forecasting.evaluation.metrics import collect_forecasts
from forecasting.models.base import Forecaster
from forecasting.pipeline import prepare, train_model
from forecasting.pipeline.refit import refit
from forecasting.pipeline.select import best_result
from forecasting.pipeline.train import ModelResult
from forecasting.serving import Bundle


# --- the recipe, on arrays ------------------------------------------------------------------------
def test_quantile_levels_and_columns():
    assert iv.quantile_levels([80, 95], [0.1, 0.5]) == [0.025, 0.1, 0.5, 0.9, 0.975]
    assert iv.interval_columns([80.0, 95.0], [0.5]) == [
        "yhat_lo_80",
        "yhat_hi_80",
        "yhat_lo_95",
        "yhat_hi_95",
        "q0.5",
    ]
    assert iv.bound_taus(97.5) == (0.0125, 0.9875)


def test_conformal_offsets_take_the_finite_sample_order_statistic():
    r = np.arange(1, 20, dtype=float)[:, None, None].repeat(2, axis=2)  # 19 residuals 1..19
    out = iv.conformal_offsets(r, [0.1, 0.9])
    # n = 19: upper ceil(20 * 0.9) = 18th smallest, lower floor(20 * 0.1) = 2nd smallest
    assert out[0].tolist() == [2.0, 18.0]


def _order_statistic(column: np.ndarray, tau: float) -> float:
    """The definition, one column at a time: the ceil((n+1) tau)-th smallest of the n observed
    residuals for tau >= 1/2, the floor((n+1) tau)-th for tau < 1/2; NaN with none."""
    r = np.sort(column[~np.isnan(column)])
    if not len(r):
        return float("nan")
    k = min(math.ceil((len(r) + 1) * tau), len(r)) if tau >= 0.5 else max(math.floor((len(r) + 1) * tau), 1)
    return float(r[k - 1])


def test_conformal_offsets_equal_the_order_statistic_of_each_step_and_level():
    """Shared (N, H) residuals (one base forecast) and per-level (N, H, Q) ones (native quantiles)
    give each step and level its own order statistic, NaNs left out per column."""
    rng = np.random.default_rng(3)
    taus = [0.025, 0.1, 0.5, 0.9, 0.975]
    shared = rng.standard_normal((57, 6))
    shared[rng.random(shared.shape) < 0.2] = np.nan
    shared[:, 5] = np.nan  # a step nobody observed
    per_level = rng.standard_normal((57, 6, len(taus)))
    per_level[rng.random(per_level.shape) < 0.3] = np.nan
    expect_shared = [[_order_statistic(shared[:, h], t) for t in taus] for h in range(6)]
    expect_level = [[_order_statistic(per_level[:, h, j], t) for j, t in enumerate(taus)] for h in range(6)]
    np.testing.assert_array_equal(iv.conformal_offsets(shared, taus), expect_shared)
    np.testing.assert_array_equal(iv.conformal_offsets(per_level, taus), expect_level)
    # the shared path is the per-level one with every level's column alike
    repeated = np.repeat(shared[:, :, None], len(taus), axis=2)
    np.testing.assert_array_equal(iv.conformal_offsets(repeated, taus), expect_shared)
    for empty in (shared[:0], per_level[:0]):  # no windows at all
        out = iv.conformal_offsets(empty, taus)
        assert out.shape == (6, len(taus)) and np.isnan(out).all()


def test_window_scale_kinds_and_left_padding():
    y = np.array([[5.0, 5.0, 5.0, 1.0, 2.0, 4.0], [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]])
    # row 0: two padded copies of 5 are skipped; the pairs left are (5,1), (1,2), (2,4)
    assert iv.window_scale(y, 1, "naive").tolist() == pytest.approx([(4 + 1 + 2) / 3, 1.0])
    assert iv.window_scale(y, 2, "seasonal").tolist() == pytest.approx([(3 + 3) / 2, 0.0])  # (5,2), (1,4)
    assert iv.window_scale(y, 1, "none").tolist() == [1.0, 1.0]
    assert iv.window_scale(y, 1, "std")[1] == pytest.approx(0.5)


def test_metrics_on_hand_made_values():
    y = np.array([[1.0, 2.0, 10.0]])
    lo, hi = np.array([[0.0, 2.5, 0.0]]), np.array([[2.0, 3.0, 8.0]])
    assert iv.coverage(y, lo, hi) == pytest.approx(1 / 3)
    # widths 2, 0.5, 8; penalties (2 / 0.2) * 0.5 and (2 / 0.2) * 2; scale 2
    expected = ((2 + 0.5 + 8) + 10 * 0.5 + 10 * 2) / 3 / 2
    assert iv.msis(y, lo, hi, np.array([2.0]), 80) == pytest.approx(expected)
    bands = np.stack([lo, hi], axis=-1)
    pin_lo = iv.pinball(y, lo, 0.1).sum()
    pin_hi = iv.pinball(y, hi, 0.9).sum()
    assert iv.weighted_quantile_loss(y, bands, [0.1, 0.9]) == pytest.approx(
        (2 * pin_lo + 2 * pin_hi) / 2 / 13
    )


def test_selection_key_ranks_a_coverage_by_its_distance_from_nominal():
    assert iv.selection_key("val_coverage_95", 0.94) < iv.selection_key("val_coverage_95", 0.99)
    assert iv.selection_key("val_msis", 7.0) == 7.0
    results = [
        ModelResult("wide", "naive", "FINISHED", model_uri="m", metrics={"val_coverage_80": 0.99}),
        ModelResult("right", "ar", "FINISHED", model_uri="m", metrics={"val_coverage_80": 0.78}),
        ModelResult("narrow", "linear", "FINISHED", model_uri="m", metrics={"val_coverage_80": 0.5}),
    ]
    assert best_result(results, "val_coverage_80").name == "right"


# --- on data with known noise ---------------------------------------------------------------------
def _ar1_config(tmp_path, models, n=2400, intervals=None, **extra):
    """One Gaussian AR(1) series, y_t = 0.8 y_{t-1} + e_t, e ~ N(0, 1)."""
    rng = np.random.default_rng(7)
    y = np.zeros(n)
    for t in range(1, n):
        y[t] = 0.8 * y[t - 1] + rng.standard_normal()
    path = tmp_path / "ar1.csv"
    make_frame(y).rename(columns={"series_id": "id"}).to_csv(path, index=False)
    raw = {
        "data": {"path": str(path), "time_column": "t", "target": "y", "id_column": "id"},
        "split": {"method": "fractions", "train_fraction": 0.25, "test_fraction": 0.4},
        "window": {"lookback": 48, "horizon": 12},
        "features": {"calendar": "none"},
        "models": models,
        "training": {
            "epochs": 40,
            "batch_size": 32,
            "progress": False,
            "num_threads": 1,
            "patience": None,
            **extra.pop("training", {}),
        },
        **extra,
    }
    if intervals is not None:
        raw["intervals"] = intervals
    return config_from_dict(raw)


def _coverage_on_test(model: Forecaster, prepared, cal: iv.Calibration) -> dict[str, float]:
    test = collect_forecasts(model, prepared.windows(prepared.test))
    windows = prepared.windows(prepared.test)
    context = np.concatenate([windows.batch(i)["y"] for i in windows.iter_batches(4096)])
    bands = cal.bands(test.yhat, cal.scale(context))
    return iv.interval_metrics(test.y, bands, cal, None)


def test_validation_residuals_cover_as_nominal_and_training_residuals_do_not(tmp_path):
    """A network that overfits its few training windows: bands from its validation residuals
    cover the test windows as nominal; the same recipe on its training residuals (the wrong
    method) gives bands far too narrow, and so do one-step residuals used for every step."""
    cfg = _ar1_config(tmp_path, [{"name": "linear"}])
    prepared = prepare(cfg)
    result = train_model(prepared, cfg.models[0])
    assert result.status == "FINISHED", result.error
    model, cal = result.model, result.model.calibration_
    assert cal is not None and cal.n_windows > 400

    right = _coverage_on_test(model, prepared, cal)
    assert abs(right["coverage_80"] - 0.80) < 0.04 and abs(right["coverage_95"] - 0.95) < 0.025
    assert result.metrics["test_coverage_80"] == pytest.approx(right["coverage_80"])

    # The wrong method: calibrate on the rows the model trained on.
    train_windows = prepared.windows(prepared.train)
    fc = collect_forecasts(model, train_windows, scale=(cal.scale_kind, cal.season))
    wrong = iv.calibrate(
        fc.y,
        fc.yhat,
        fc.scale,
        levels=[80, 95],
        quantiles=[],
        season=cal.season,
        scale_kind=cal.scale_kind,
    )
    bad = _coverage_on_test(model, prepared, wrong)
    assert bad["coverage_80"] < right["coverage_80"] - 0.06 and bad["coverage_80"] < 0.76

    # Another wrong method: the first step's residual spread for every step (an AR(1)'s error
    # grows with the step).
    flat = iv.Calibration(**{**cal.__dict__, "offsets": np.repeat(cal.offsets[:1], len(cal.offsets), axis=0)})
    assert _coverage_on_test(model, prepared, flat)["coverage_95"] < 0.90


def test_method_native_starts_ar_from_its_analytic_bands(tmp_path):
    spec = [{"name": "ar", "params": {"ic": "fixed", "lags": 1}}]
    cfg = _ar1_config(tmp_path, spec, intervals={"method": "native"})
    native = train_model(prepare(cfg), cfg.models[0])
    default = _ar1_config(tmp_path, spec)
    plain = train_model(prepare(default), default.models[0])
    assert native.model.calibration_.native is True and plain.model.calibration_.native is False
    # The analytic bands of a correctly specified AR(1) are nearly right: conformal moves them a
    # little, where bands built from the point forecast move by the whole band.
    moved = np.abs(native.model.calibration_.offsets).mean()
    assert moved < 0.3 * np.abs(plain.model.calibration_.offsets).mean()
    for result in (native, plain):
        assert abs(result.metrics["test_coverage_95"] - 0.95) < 0.025
        assert abs(result.metrics["test_coverage_80"] - 0.80) < 0.04


def test_levels_and_quantiles_set_the_columns_and_none_turns_them_off(tmp_path):
    cfg = _ar1_config(
        tmp_path, [{"name": "naive"}], n=800, intervals={"levels": [50], "quantiles": [0.1, 0.5, 0.9]}
    )
    prepared = prepare(cfg)
    result = train_model(prepared, cfg.models[0])
    out = result.model.predict(prepared.scaler.transform(prepared.data.frame))
    assert list(out.columns) == ["series_id", "t", "yhat", "yhat_lo_50", "yhat_hi_50", "q0.1", "q0.5", "q0.9"]
    ordered = out[["q0.1", "yhat_lo_50", "yhat_hi_50", "q0.9"]].to_numpy()
    assert (np.diff(ordered, axis=1) >= 0).all()  # taus 0.1 <= 0.25 <= 0.75 <= 0.9
    assert {"val_coverage_50", "test_coverage_50", "test_msis_50", "test_wql"} <= set(result.metrics)
    assert "test_coverage_80" not in result.metrics

    off = _ar1_config(tmp_path, [{"name": "naive"}], n=800, intervals={"levels": [], "quantiles": []})
    plain = train_model(prepare(off), off.models[0])
    assert plain.model.calibration_ is None and plain.calibration is None
    assert not [k for k in plain.metrics if "coverage" in k or "msis" in k]
    assert list(plain.model.predict(prepared.scaler.transform(prepared.data.frame)).columns) == [
        "series_id",
        "t",
        "yhat",
    ]


def test_bad_interval_settings_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"intervals\.levels"):
        _ar1_config(tmp_path, [{"name": "naive"}], n=200, intervals={"levels": [80, 100]})
    with pytest.raises(ConfigError, match=r"intervals\.quantiles"):
        _ar1_config(tmp_path, [{"name": "naive"}], n=200, intervals={"quantiles": [0.0]})
    with pytest.raises(ConfigError, match="quantile head has no level"):
        _ar1_config(
            tmp_path, [{"name": "linear"}], n=200, intervals={"levels": []}, training={"loss": "quantile"}
        )


def test_bounds_never_cross_and_survive_save_load_and_the_bundle(tmp_path):
    cfg = _ar1_config(
        tmp_path, [{"name": "linear"}], n=900, intervals={"levels": [80, 95], "quantiles": [0.1, 0.9]}
    )
    prepared = prepare(cfg)
    result = train_model(prepared, cfg.models[0])
    model = result.model
    history = prepared.scaler.transform(prepared.data.frame)
    before = model.predict(history)
    cols = ["yhat_lo_95", "yhat_lo_80", "yhat_hi_80", "yhat_hi_95"]
    assert (np.diff(before[cols].to_numpy(), axis=1) >= 0).all()
    assert (before["yhat_lo_80"] == before["q0.1"]).all()

    model.save(tmp_path / "m")
    again = Forecaster.load(tmp_path / "m")
    pd.testing.assert_frame_equal(again.predict(history), before)

    bundle = Bundle(again, prepared.scaler, cfg.data, prepared.data.freq)
    served = bundle.forecast(prepared.data.frame)
    scaled_back = prepared.scaler.inverse_y(before[cols].to_numpy(), before["series_id"].to_numpy())
    np.testing.assert_allclose(served[cols].to_numpy(), scaled_back)
    assert list(served.columns[:3]) == ["series_id", "t", "yhat"]


def test_the_refit_keeps_the_evaluated_calibration_and_an_ensemble_is_calibrated(tmp_path):
    cfg = _ar1_config(tmp_path, [{"name": "naive"}, {"name": "ar"}, {"name": "ensemble"}], n=900)
    prepared = prepare(cfg)
    naive, ar = (train_model(prepared, s) for s in cfg.models[:2])
    ensemble = train_model(prepared, cfg.models[2], members={"naive": naive.model, "ar": ar.model})
    assert ensemble.status == "FINISHED", ensemble.error
    assert ensemble.model.calibration_ is not None and not ensemble.model.calibration_.native
    assert 0.85 < ensemble.metrics["test_coverage_95"] <= 1.0
    model, _, _ = refit(prepared, ensemble, [naive, ar, ensemble])
    assert model.calibration_.to_dict() == ensemble.calibration


def test_the_scale_key_chooses_what_residuals_are_divided_by(tmp_path):
    """``intervals.scale: none`` gives every window the same band; the default (``naive``) widens
    the band of a window whose lookback moves more."""
    widths = {}
    for scale in ("naive", "none"):
        cfg = _ar1_config(tmp_path, [{"name": "naive"}], n=900, intervals={"scale": scale})
        prepared = prepare(cfg)
        result = train_model(prepared, cfg.models[0])
        assert result.model.calibration_.scale_kind == scale
        pred = result.test_predictions
        first = pred[pred["step"] == 1]
        widths[scale] = (first["yhat_hi_80"] - first["yhat_lo_80"]).to_numpy()
    assert np.ptp(widths["none"]) == pytest.approx(0.0, abs=1e-9)
    assert np.ptp(widths["naive"]) > 0.1 * widths["naive"].mean()


@pytest.mark.slow
def test_the_pipeline_serves_the_bands_it_measured(tmp_path, mlflow_globals):
    """Through MLflow: the champion's pyfunc gives the refit model's bounds, the signature names
    them, the child run logs its calibration and the pipeline run its calibration plot."""
    from mlflow import MlflowClient

    from forecasting import serving
    from forecasting.pipeline import run_pipeline
    from forecasting.pipeline.prepare import fit_data_scaler

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = _ar1_config(
        tmp_path,
        [{"name": "naive"}, {"name": "ar"}],
        n=900,
        intervals={"levels": [80, 95], "quantiles": [0.5]},
        tracking={"tracking_uri": store, "registered_model": "ar1"},
    )
    result = run_pipeline(cfg)
    assert result.decision.alias == "champion"
    history = string_ids(result.prepared.data.frame)  # the data as a user hands it over: ids as text
    served = serving.load_pyfunc("models:/ar1@champion").predict(history)
    scaler = fit_data_scaler(history, result.prepared.data)
    expected = Bundle(result.refit.model, scaler, cfg.data, result.prepared.data.freq).forecast(history)
    columns = ["yhat", "yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95", "q0.5"]
    pd.testing.assert_frame_equal(served[columns], expected[columns])

    client = MlflowClient(store)
    version = client.get_model_version_by_alias("ar1", "champion")
    from mlflow.models import get_model_info

    outputs = get_model_info(f"models:/ar1/{version.version}").signature.outputs.input_names()
    assert set(columns) <= set(outputs)
    child = next(r for r in result.results if r.name == result.refit.name)
    logged = [a.path for a in client.list_artifacts(child.run_id)]
    assert "calibration.json" in logged
    plots = [a.path for a in client.list_artifacts(result.parent_run_id, "plots")]
    assert "plots/calibration.png" in plots
    assert {"val_msis", "test_msis", "test_coverage_80", "test_coverage_95"} <= set(
        result.leaderboard.columns
    )


def test_a_quantile_head_is_the_base_of_a_deep_familys_bands(tmp_path):
    """``training.loss: quantile`` with ``intervals.method: native``: the network's own quantiles,
    conformally corrected."""
    cfg = _ar1_config(
        tmp_path,
        [{"name": "linear"}],
        n=1200,
        training={"loss": "quantile", "epochs": 5},
        intervals={"method": "native"},
    )
    prepared = prepare(cfg)
    result = train_model(prepared, cfg.models[0])
    assert result.status == "FINISHED", result.error
    assert result.model.calibration_.native is True
    assert abs(result.metrics["test_coverage_80"] - 0.80) < 0.06
    assert abs(result.metrics["test_coverage_95"] - 0.95) < 0.04


@pytest.mark.slow
def test_the_select_champion_flow_serves_bands_from_the_logged_calibration(
    tmp_path, prefect_harness, mlflow_globals
):
    """Train and select as two flows: the refit of the best, chosen from what MLflow holds,
    inherits the calibration its evaluation run logged, and the champion forecasts bands."""
    from flows.pipeline import select_champion, train
    from forecasting import serving
    from forecasting.pipeline import prepare as prepare_data

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = _ar1_config(
        tmp_path, [{"name": "naive"}], n=600, tracking={"tracking_uri": store, "registered_model": "two-step"}
    )
    board = train(config=cfg)  # its rows name the model runs, children of the pipeline run
    from mlflow import MlflowClient

    parent = MlflowClient(store).get_run(board[0]["run_id"]).data.tags["mlflow.parentRunId"]
    decision = select_champion(config_path=None, parent_run_id=parent, config=cfg)
    assert decision["alias"] == "champion"
    history = string_ids(prepare_data(cfg).data.frame)  # ids as text, as a user's data has them
    served = serving.load_pyfunc("models:/two-step@champion").predict(history)
    assert {"yhat_lo_80", "yhat_hi_95"} <= set(served.columns)
    assert (served["yhat_lo_80"] <= served["yhat_hi_80"]).all()
