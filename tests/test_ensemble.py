"""The ensemble family: greedy weights, scoring, members reused in a pipeline, named errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame

from forecasting.config import ModelSpec, TrainingConfig
from forecasting.errors import ConfigError
from forecasting.evaluation.metrics import evaluate_windows, predict_all_windows
from forecasting.models.base import DataSpec, Forecaster
from forecasting.models.ensemble import Ensemble, greedy_weights, greedy_weights_abs
from forecasting.models.registry import build_model

L, H = 48, 12
TRAINING = TrainingConfig(epochs=2, batch_size=64, patience=None, progress=False, seed=3, num_threads=1)


def _stats(preds: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
    err = preds - y
    return err @ err.T, y.size


def _mse(w: np.ndarray, preds: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((w @ preds - y) ** 2))


def test_greedy_weights_average_opposite_errors():
    rng = np.random.default_rng(0)
    y = rng.standard_normal(1000)
    e = rng.standard_normal(1000)
    preds = np.stack([y + e, y - e, y + 3 * rng.standard_normal(1000)])  # a third, worse member
    w = greedy_weights(*_stats(preds, y), rounds=20)
    np.testing.assert_allclose(w, [0.5, 0.5, 0.0])  # the two opposite errors cancel exactly
    assert _mse(w, preds, y) == pytest.approx(0.0, abs=1e-20)


def test_greedy_weights_never_worse_than_the_best_member():
    rng = np.random.default_rng(1)
    y = rng.standard_normal(500)
    preds = np.stack([y + s * rng.standard_normal(500) + b for s, b in [(0.5, 0.2), (0.7, -0.1), (1.0, 0)]])
    w = greedy_weights(*_stats(preds, y), rounds=25)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    # counts over the rounds of the best prefix (at most 25)
    assert any(np.allclose(w * r, np.round(w * r)) for r in range(1, 26))
    best_single = min(_mse(np.eye(3)[k], preds, y) for k in range(3))
    assert _mse(w, preds, y) < best_single


def test_absolute_greedy_weights_follow_the_absolute_error_not_the_squared():
    """A member exact on 90 % of entries and far off on the rest against one off by a little
    everywhere: MSE takes the steady one, MAE the mostly exact one."""
    n = 1000
    spiky = np.where(np.arange(n) % 10 == 0, 10.0, 0.0)  # MAE 1.0, MSE 10
    steady = np.full(n, 2.0)  # MAE 2.0, MSE 4
    errors = np.stack([spiky, steady])
    by_abs = greedy_weights_abs(errors, rounds=1)
    by_square = greedy_weights(errors @ errors.T, n, rounds=1)
    np.testing.assert_array_equal(by_abs, [1.0, 0.0])
    np.testing.assert_array_equal(by_square, [0.0, 1.0])
    w = greedy_weights_abs(errors, rounds=25)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert np.abs(w @ errors).mean() <= 1.0  # never above its best member


def _fitted(name: str, train: pd.DataFrame, holdout: pd.DataFrame, **params) -> Forecaster:
    return build_model(ModelSpec(name=name, params=params), DataSpec(L, H), TRAINING).fit(train, holdout)


def _split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    pos = frame.groupby("series_id").cumcount()
    return frame[pos < 450].reset_index(drop=True), frame[pos >= 450 - L].reset_index(drop=True)


def _three_members(train: pd.DataFrame, holdout: pd.DataFrame) -> dict[str, Forecaster]:
    return {
        "naive": _fitted("naive", train, holdout),
        "seasonal": _fitted("seasonal_naive", train, holdout, season_length=24),
        "linear": _fitted("linear", train, holdout),
    }


def test_fitted_members_are_weighed_on_validation_and_forecast_the_weighted_mean(sine_frame):
    train, holdout = _split(sine_frame)
    members = _three_members(train, holdout)
    ensemble = build_model(ModelSpec(name="ensemble"), DataSpec(L, H), TRAINING, members=members)
    ensemble.fit(train, holdout)

    assert sum(ensemble.weights_.values()) == pytest.approx(1.0)
    assert set(ensemble.members_) <= set(members) and all(w > 0 for w in ensemble.weights_.values())
    assert all(ensemble.members_[k] is members[k] for k in ensemble.members_)  # reused, not refitted
    windows = ensemble.make_windows(holdout)
    y, combined = predict_all_windows(ensemble, windows)
    member_mse = [float(np.mean((predict_all_windows(m, windows)[1] - y) ** 2)) for m in members.values()]
    assert np.mean((combined - y) ** 2) <= min(member_mse) + 1e-12
    expected = sum(w * predict_all_windows(members[k], windows)[1] for k, w in ensemble.weights_.items())
    np.testing.assert_allclose(combined, expected, rtol=1e-12)
    assert ensemble.n_params == sum(members[k].n_params for k in ensemble.members_)


def test_fit_without_validation_gives_equal_weights(sine_frame):
    train, _ = _split(sine_frame)
    spec = ModelSpec(name="ensemble", params={"members": ["naive", "linear"]})
    model = build_model(spec, DataSpec(L, H), TRAINING).fit(train)
    assert model.weights_ == {"naive": 0.5, "linear": 0.5}


def test_equal_weighting_takes_the_plain_mean_even_with_validation(sine_frame):
    train, holdout = _split(sine_frame)
    members = _three_members(train, holdout)
    greedy = build_model(ModelSpec(name="ensemble"), DataSpec(L, H), TRAINING, members=members)
    greedy.fit(train, holdout)
    assert len(greedy.weights_) < 3  # greedy drops a member here, so the two differ
    spec = ModelSpec(name="ensemble", params={"weighting": "equal"})
    equal = build_model(spec, DataSpec(L, H), TRAINING, members=members).fit(train, holdout)
    assert equal.weights_ == pytest.approx({k: 1 / 3 for k in members})
    windows = equal.make_windows(holdout)
    _, combined = predict_all_windows(equal, windows)
    expected = np.mean([predict_all_windows(m, windows)[1] for m in members.values()], axis=0)
    np.testing.assert_allclose(combined, expected, rtol=1e-12)
    with pytest.raises(ConfigError, match="weighting"):
        build_model(ModelSpec(name="ensemble", params={"weighting": "median"}), DataSpec(L, H), TRAINING)


class _Broken(Forecaster):
    """A fitted model whose forecasts are NaN (a member that diverged)."""

    name = "broken"

    def _fit(self, train, train_windows, val_windows, callbacks) -> None:
        pass

    def _predict_windows(self, batch):
        return np.full((len(batch["y"]), self.spec.horizon), np.nan)


@pytest.mark.parametrize("weighting", ["greedy", "equal"])
def test_a_member_with_non_finite_forecasts_gets_no_weight(sine_frame, weighting):
    train, holdout = _split(sine_frame)
    broken = _Broken(spec=DataSpec(L, H)).fit(train)
    naive = _fitted("naive", train, holdout)
    seasonal = _fitted("seasonal_naive", train, holdout, season_length=24)
    spec = ModelSpec(name="ensemble", params={"weighting": weighting})
    members = {"broken": broken, "naive": naive, "seasonal": seasonal}
    ensemble = build_model(spec, DataSpec(L, H), TRAINING, members=members).fit(train, holdout)
    assert "broken" not in ensemble.weights_ and sum(ensemble.weights_.values()) == pytest.approx(1.0)
    if weighting == "equal":
        assert ensemble.weights_ == {"naive": 0.5, "seasonal": 0.5}
    assert np.isfinite(ensemble.predict(holdout)["yhat"]).all()


def test_members_must_share_the_windows(sine_frame):
    train, holdout = _split(sine_frame)
    other = build_model(ModelSpec(name="naive"), DataSpec(L, 6), TRAINING).fit(train)
    ensemble = build_model(ModelSpec(name="ensemble"), DataSpec(L, H), TRAINING, members={"naive": other})
    with pytest.raises(ConfigError, match="member 'naive' was trained on other windows"):
        ensemble.fit(train, holdout)
    with pytest.raises(ConfigError, match="no fitted member"):
        build_model(ModelSpec(name="ensemble"), DataSpec(L, H), TRAINING, members={}).fit(train, holdout)
    with pytest.raises(ConfigError, match="its own member"):
        build_model(ModelSpec(name="ensemble", params={"members": ["ensemble"]}), DataSpec(L, H)).fit(train)


def test_config_names_unknown_members(tmp_path):
    from test_pipeline import raw_config

    from forecasting.config import config_from_dict

    models = [{"name": "naive"}, {"name": "ensemble", "params": {"members": ["naive", "lstm"]}}]
    raw = raw_config(tmp_path, "ens-config", models)
    with pytest.raises(ConfigError, match=r"models\[1\] \(ensemble\): members \['lstm'\] are not models"):
        config_from_dict(raw)
    alone = raw_config(tmp_path, "ens-alone", [{"name": "ensemble"}])
    with pytest.raises(ConfigError, match=r"models\[0\] \(ensemble\): the config has no other model"):
        config_from_dict(alone)
    # a label keys the ensemble's weight params in MLflow, which refuses '(', '+', '@' in keys
    odd = raw_config(tmp_path, "ens-label", [{"name": "gru", "label": "gru(big)"}, {"name": "ensemble"}])
    with pytest.raises(ConfigError, match=r"label 'gru\(big\)': use 1-100 letters, digits"):
        config_from_dict(odd)


def test_only_an_ensembles_members_are_shipped_back(tmp_path):
    from test_pipeline import raw_config

    from forecasting.config import config_from_dict
    from forecasting.pipeline import feeds_an_ensemble

    models = [{"name": "naive"}, {"name": "linear"}, {"name": "ensemble", "params": {"members": ["linear"]}}]
    cfg = config_from_dict(raw_config(tmp_path, "ens-ship", models))
    assert [feeds_an_ensemble(cfg, s) for s in cfg.models] == [False, True, False]
    every = config_from_dict(raw_config(tmp_path, "ens-all", [*models[:2], {"name": "ensemble"}]))
    assert [feeds_an_ensemble(every, s) for s in every.models] == [True, True, False]
    plain = config_from_dict(raw_config(tmp_path, "no-ens", models[:2]))
    assert not any(feeds_an_ensemble(plain, s) for s in plain.models)


def test_loaded_ensemble_is_a_plain_folder(sine_frame, tmp_path):
    train, holdout = _split(sine_frame)
    model = Ensemble(Ensemble.Settings(members=["naive", "linear"]), spec=DataSpec(L, H), training=TRAINING)
    model.fit(train, holdout)
    model.save(tmp_path / "ens")
    assert (tmp_path / "ens" / "ensemble.json").exists()
    assert not list((tmp_path / "ens").rglob("*.pkl"))
    loaded = Forecaster.load(tmp_path / "ens")
    assert loaded.weights_ == model.weights_
    np.testing.assert_array_equal(loaded.predict(holdout)["yhat"], model.predict(holdout)["yhat"])


@pytest.mark.parametrize("objective", ["mse", "mae", "mase"])
def test_the_ensemble_is_never_worse_than_its_best_member_on_its_objective(sine_frame, objective):
    """Weighed on the metric the pipeline selects by, scored as ``evaluate_windows`` scores it
    (MASE with each series' seasonal-naive scale on the training rows): the ensemble's validation
    figure is at most its best member's. Series of unlike sizes, so MASE weighs them unlike MSE."""
    frame = sine_frame.copy()
    frame.loc[frame["series_id"] == "s2", "y"] *= 20.0  # one loud series
    train, holdout = _split(frame)
    members = _three_members(train, holdout)
    params = {"objective": objective, "season_length": 24}
    spec = ModelSpec(name="ensemble", params=params)
    ensemble = build_model(spec, DataSpec(L, H), TRAINING, members=members).fit(train, holdout)
    windows = ensemble.make_windows(holdout)

    def figure(model: Forecaster) -> float:
        metrics, _ = evaluate_windows(model, windows, train=train, season=24, predictions=False)
        return metrics[objective]

    assert figure(ensemble) <= min(figure(m) for m in members.values()) + 1e-12
    assert ensemble.settings.objective == objective


def test_the_objective_changes_the_weights(sine_frame):
    frame = sine_frame.copy()
    frame.loc[frame["series_id"] == "s2", "y"] *= 20.0
    train, holdout = _split(frame)
    members = _three_members(train, holdout)
    weights = {}
    for objective in ("mse", "mase"):
        params = {"objective": objective, "season_length": 24}
        spec = ModelSpec(name="ensemble", params=params)
        model = build_model(spec, DataSpec(L, H), TRAINING, members=members)
        weights[objective] = model.fit(train, holdout).weights_
    assert weights["mse"] != weights["mase"], weights


def test_the_lag_of_the_mase_scale_changes_the_weights():
    """``season_length`` sets each series' MASE scale (seasonal-naive error at that lag): a clean
    sine is loud at lag 1 and quiet at its period, a random walk the other way round, so the two
    lags weigh the series, and the members, differently; each is at most its best member's."""
    rng = np.random.default_rng(0)
    t = np.arange(600)
    sine = 2.0 * np.sin(2 * np.pi * t / 24) + 0.05 * rng.standard_normal(600)
    walk = np.cumsum(rng.standard_normal(600))
    frame = pd.concat([make_frame(sine, series_id="sine"), make_frame(walk, series_id="walk")])
    train, holdout = _split(frame.reset_index(drop=True))
    members = _three_members(train, holdout)
    weights = {}
    for lag in (1, 24):
        spec = ModelSpec(name="ensemble", params={"objective": "mase", "season_length": lag})
        model = build_model(spec, DataSpec(L, H), TRAINING, members=members).fit(train, holdout)
        windows = model.make_windows(holdout)

        def figure(m: Forecaster, lag: int = lag, windows=windows) -> float:
            return evaluate_windows(m, windows, train=train, season=lag, predictions=False)[0]["mase"]

        assert figure(model) <= min(figure(m) for m in members.values()) + 1e-12
        weights[lag] = model.weights_
    assert weights[1] != weights[24], weights
