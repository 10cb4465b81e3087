"""Refit before serving: the selected model trained again on every row (``pipeline.refit``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame

from forecasting.config import config_from_dict
from forecasting.data.ingest import IngestResult
from forecasting.pipeline import prepare, refit, train_model
from forecasting.pipeline.prepare import fit_data_scaler


def _level_shift_config(tmp_path, models):
    """600 hours of noise around 0, then the last 120 (the test period) around 10."""
    rng = np.random.default_rng(0)
    n = 600
    y = 0.3 * rng.standard_normal(n) + np.where(np.arange(n) >= 480, 10.0, 0.0)
    frame = make_frame(y)
    path = tmp_path / "shift.csv"
    frame.rename(columns={"series_id": "id"}).to_csv(path, index=False)
    return config_from_dict(
        {
            "data": {"path": str(path), "time_column": "t", "target": "y", "id_column": "id"},
            "split": {"method": "fractions", "train_fraction": 0.6, "test_fraction": 0.2},
            "window": {"lookback": 48, "horizon": 12},
            "models": models,
            "training": {"epochs": 3, "batch_size": 64, "progress": False, "num_threads": 1},
        }
    )


def _forecast(model, scaler, frame: pd.DataFrame) -> np.ndarray:
    out = model.predict(scaler.transform(frame))
    return scaler.inverse_y(out["yhat"].to_numpy()[:, None], out["series_id"].to_numpy())[:, 0]


def test_the_refit_model_forecasts_the_level_of_the_last_rows(tmp_path):
    cfg = _level_shift_config(tmp_path, [{"name": "ar"}])
    prepared = prepare(cfg)
    evaluated = train_model(prepared, cfg.models[0])
    assert evaluated.status == "FINISHED", evaluated.error
    model, scaler, metrics = refit(prepared, evaluated, [evaluated])
    frame = prepared.data.frame
    unrefit = _forecast(evaluated.model, prepared.scaler, frame)
    refitted = _forecast(model, scaler, frame)
    assert np.abs(refitted - 10).max() < 1.5  # the new level
    assert np.abs(unrefit - 10).min() > 5  # trained before the shift, it reverts to the old one
    assert metrics["refit_rows"] == len(frame) == 600
    assert scaler.mean.loc["s0", "y"] == pytest.approx(frame["y"].mean())  # the scaler saw every row


def test_a_network_refits_for_the_epochs_selection_kept_and_an_ensemble_keeps_its_weights(tmp_path):
    models = [{"name": "naive"}, {"name": "linear"}, {"name": "ensemble"}]
    cfg = _level_shift_config(tmp_path, models)
    prepared = prepare(cfg)
    naive, linear = (train_model(prepared, spec) for spec in cfg.models[:2])
    ensemble = train_model(prepared, cfg.models[2], members={"naive": naive.model, "linear": linear.model})
    assert ensemble.status == "FINISHED", ensemble.error
    model, _, metrics = refit(prepared, linear, [naive, linear, ensemble])
    assert model.training.epochs == int(linear.metrics["best_epoch"]) and model.training.patience is None
    assert metrics["refit_epochs"] == linear.metrics["best_epoch"]
    combined, _, metrics = refit(prepared, ensemble, [naive, linear, ensemble])
    assert combined.weights_ == ensemble.model.weights_
    assert set(combined.members_) == set(ensemble.model.weights_)
    assert all(combined.members_[k] is not ensemble.model.members_[k] for k in combined.members_)
    assert all(m.series_ == ["s0"] for m in combined.members_.values())


def test_a_refit_sees_rows_the_evaluated_model_never_did(tmp_path):
    """No metric of a refit is named val_* or test_*: it trained on those rows."""
    cfg = _level_shift_config(tmp_path, [{"name": "naive"}])
    prepared = prepare(cfg)
    evaluated = train_model(prepared, cfg.models[0])
    _, scaler, metrics = refit(prepared, evaluated, [evaluated])
    assert not any(k.startswith(("val_", "test_")) for k in metrics)
    data: IngestResult = prepared.data
    expected = fit_data_scaler(data.frame, data)
    pd.testing.assert_frame_equal(scaler.mean, expected.mean)


@pytest.mark.slow
def test_selection_refit_false_registers_the_evaluated_model(tmp_path):
    from mlflow import MlflowClient

    from forecasting.pipeline import run_pipeline

    cfg = _level_shift_config(tmp_path, [{"name": "naive"}, {"name": "ar"}])
    tracking = cfg.tracking.model_copy(update={"experiment": "no-refit", "registered_model": "no-refit"})
    selection = cfg.selection.model_copy(update={"refit": False})
    cfg = cfg.model_copy(update={"selection": selection, "tracking": tracking})
    result = run_pipeline(cfg)
    best = min(result.results, key=lambda r: r.metrics["val_mse"])
    champion = MlflowClient().get_model_version_by_alias("no-refit", "champion")
    assert result.refit is None and champion.run_id == best.run_id and champion.tags["refit"] == "False"
    children = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("no-refit").experiment_id],
        f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'",
    )
    assert sorted(r.info.run_name for r in children) == ["ar", "naive"]
