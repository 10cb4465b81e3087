"""End to end through the library and MLflow: every family trained on a small synthetic dataset,
the parent/child layout, the champion gate, batch prediction and failure handling."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from forecasting.config import config_from_dict
from forecasting.models.registry import available_models
from forecasting.pipeline import batch_predict, run_pipeline
from forecasting.pipeline.train import EPOCH_METRICS
from forecasting.serving import logged_model_id

FAMILIES = available_models()
PER_MODEL_METRICS = {
    "val_mse",
    "val_mae",
    "test_mse",
    "test_mae",
    "test_rmse",
    "test_mase",
    "test_smape",
    "test_mse_orig",
    "test_mae_orig",
    "fit_seconds",
    "predict_seconds",
    "log_seconds",
    "peak_rss_mb",
}


def synthetic_csv(path, n_series: int = 3, n: int = 500) -> None:
    rng = np.random.default_rng(1)
    parts = []
    for k in range(n_series):
        t = np.arange(n)
        y = 10 + 3 * np.sin(2 * np.pi * t / 24 + k) + 0.2 * rng.standard_normal(n)
        parts.append(
            pd.DataFrame(
                {
                    "store": f"store-{k}",
                    "ts": pd.date_range("2024-01-01", periods=n, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
                    "sales": y,
                    "temp": np.cos(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(n),
                }
            )
        )
    pd.concat(parts).to_csv(path, index=False)


def raw_config(tmp_path, experiment: str, models: list[dict] | None = None, **extra) -> dict:
    """A small config over the synthetic sales data (written once per folder)."""
    data = tmp_path / "sales.csv"
    if not data.exists():
        synthetic_csv(data)
    return {
        "data": {
            "path": str(data),
            "time_column": "ts",
            "target": "sales",
            "id_column": "store",
            "covariates": {"temp": "past"},
        },
        "split": {"method": "fractions", "train_fraction": 0.6, "test_fraction": 0.2},
        "window": {"lookback": 48, "horizon": 12},
        "models": models or [{"name": f} for f in FAMILIES],
        "training": {"epochs": 2, "batch_size": 64, "progress": False, "patience": None, "num_threads": 1},
        "tracking": {"experiment": experiment, "registered_model": f"{experiment}-model"},
        "predict": {"output": str(tmp_path / "forecast.parquet")},
        **extra,
    }


def make_config(tmp_path, experiment: str, models: list[dict] | None = None, **extra):
    return config_from_dict(raw_config(tmp_path, experiment, models, **extra))


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    cfg = make_config(tmp, "e2e")
    return cfg, run_pipeline(cfg), tmp


@pytest.mark.slow
def test_parent_child_layout_and_metric_keys(pipeline_run):
    _, result, _ = pipeline_run
    client = MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["role"] == "pipeline"
    assert parent.data.tags["best_model"] == result.leaderboard["model"].iloc[0]
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"leaderboard.csv", "plots", "config.yaml"} <= artifacts

    children = [r for r in result.results]
    assert sorted(r.name for r in children) == sorted(FAMILIES)
    for r in children:
        assert r.status == "FINISHED", r.error
        run = client.get_run(r.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == result.parent_run_id
        assert run.data.tags["model_family"] == r.family
        assert run.data.tags["dataset_hash"] == result.prepared.data.dataset_hash
        assert set(run.data.metrics) >= PER_MODEL_METRICS, r.name
        # Logged after the model, each metric is linked to it (MLflow 3's logged-model view).
        on_model = {m.key: m.value for m in client.get_logged_model(logged_model_id(r.model_uri)).metrics}
        assert on_model == {k: v for k, v in run.data.metrics.items() if k not in EPOCH_METRICS}, r.name
        assert run.data.params["window.lookback"] == "48" and run.data.params["model.name"] == r.family
        assert run.inputs.dataset_inputs[0].dataset.digest == result.prepared.data.dataset_hash
        names = {a.path for a in client.list_artifacts(r.run_id, "plots")}
        assert "plots/forecast.png" in names
        if r.model is not None and r.model.history_:
            curve = client.get_metric_history(r.run_id, "val_loss")
            assert [m.step for m in curve] == list(range(1, len(curve) + 1)) and len(
                curve
            ) >= 1  # epochs from 1
            assert "plots/learning_curve.png" in names


def test_per_series_scores_by_hand():
    """Series in the order they first appear; NaN targets left out; a series with no observed
    target scores NaN; windows counted per series; categorical and text ids alike."""
    from forecasting.pipeline.train import per_series_scores

    pred = pd.DataFrame(
        {
            "series_id": ["b", "b", "b", "b", "a", "a", "c", "c"],
            "window": [0, 0, 1, 1, 2, 2, 3, 3],
            "y": [1.0, np.nan, 2.0, 4.0, 0.0, 0.0, np.nan, np.nan],
            "yhat": [2.0, 5.0, 2.0, 1.0, 1.0, -1.0, 1.0, 1.0],
        }
    )
    for ids in (pred["series_id"], pred["series_id"].astype("category")):
        out = per_series_scores(pred.assign(series_id=ids))
        assert out["series_id"].tolist() == ["b", "a", "c"] and out["windows"].tolist() == [2, 1, 1]
        np.testing.assert_allclose(out["mse"], [(1 + 0 + 9) / 3, 1.0, np.nan])
        np.testing.assert_allclose(out["mae"], [(1 + 0 + 3) / 3, 1.0, np.nan])
        assert "mse_orig" not in out
    # window numbers that restart in each series count per series too
    local = per_series_scores(pred.assign(window=[0, 0, 1, 1, 0, 0, 0, 0]))
    assert local["windows"].tolist() == [2, 1, 1]


@pytest.mark.slow
def test_per_series_scores_are_one_artifact_not_one_metric_per_series(pipeline_run):
    """Each model run logs a Parquet of per-series test scores; their mean over series equals the
    run's test MSE (every series has as many test windows here) and no metric names a series."""
    import mlflow

    from forecasting.pipeline.train import PER_SERIES_ARTIFACT

    _, result, tmp = pipeline_run
    series = sorted(result.prepared.data.frame["series_id"].astype(str).unique())
    client = MlflowClient()
    for r in result.results:
        local = mlflow.artifacts.download_artifacts(
            run_id=r.run_id, artifact_path=PER_SERIES_ARTIFACT, dst_path=str(tmp / r.name)
        )
        frame = pd.read_parquet(local)
        assert sorted(frame["series_id"]) == series, r.name
        assert frame["windows"].nunique() == 1 and frame["windows"].iloc[0] > 0
        assert frame["mse"].mean() == pytest.approx(r.metrics["test_mse"], rel=1e-9), r.name
        assert frame["mae_orig"].mean() == pytest.approx(r.metrics["test_mae_orig"], rel=1e-9), r.name
        logged = client.get_run(r.run_id).data.metrics
        assert not any(sid in key for key in logged for sid in series)


@pytest.mark.slow
def test_champion_is_the_best_by_validation(pipeline_run):
    cfg, result, _ = pipeline_run
    client = MlflowClient()
    champion = client.get_model_version_by_alias(cfg.tracking.registered_model, "champion")
    best = min((r for r in result.results if r.status == "FINISHED"), key=lambda r: r.metrics["val_mse"])
    # what is registered is the best model refit on every row, linked to the run that evaluated it
    assert champion.run_id == result.refit.run_id != best.run_id
    assert champion.tags["evaluation_run_id"] == best.run_id and champion.tags["refit"] == "True"
    refit_run = client.get_run(result.refit.run_id)
    assert refit_run.data.tags["role"] == "refit"
    assert refit_run.data.tags["evaluation_run_id"] == best.run_id
    assert refit_run.data.tags["mlflow.parentRunId"] == result.parent_run_id
    assert refit_run.data.metrics["refit_rows"] == len(result.prepared.data.frame)
    assert not any(k.startswith(("val_", "test_")) for k in refit_run.data.metrics)
    assert champion.tags["decision"] == "champion"
    assert float(champion.tags["gate_mse_orig"]) == pytest.approx(result.decision.candidate_score)


@pytest.mark.slow
def test_the_ensemble_reuses_this_runs_models(pipeline_run):
    _, result, _ = pipeline_run
    by_name = {r.name: r for r in result.results}
    ensemble = by_name["ensemble"]
    assert ensemble.status == "FINISHED", ensemble.error
    weights = ensemble.model.weights_
    assert weights and sum(weights.values()) == pytest.approx(1.0)
    for name, member in ensemble.model.members_.items():
        assert member is by_name[name].model  # the fitted model itself: nothing trained twice
    assert ensemble.metrics["val_mse"] <= min(r.metrics["val_mse"] for r in result.results) + 1e-9
    params = MlflowClient().get_run(ensemble.run_id).data.params
    prefix = "model.weights."
    logged = {k.removeprefix(prefix): float(v) for k, v in params.items() if k.startswith(prefix)}
    assert logged == pytest.approx(weights)


@pytest.mark.slow
def test_batch_predict_reproduces_in_process_forecasts(pipeline_run):
    cfg, result, _ = pipeline_run
    out = batch_predict(cfg)
    written = pd.read_parquet(out["output"])
    assert written["run_id"].iloc[0] == result.refit.run_id  # the refit is what is served
    # In process: the refit model on the history scaled as it was (every row), inverse-scaled.
    from forecasting.pipeline.prepare import fit_data_scaler

    frame = result.prepared.data.frame
    scaler = fit_data_scaler(frame, result.prepared.data)
    expected = result.refit.model.predict(scaler.transform(frame))
    expected["yhat"] = scaler.inverse_y(
        expected["yhat"].to_numpy()[:, None], expected["series_id"].to_numpy()
    )[:, 0]
    merged = written.merge(expected, on=["series_id", "t"], suffixes=("", "_inproc"))
    assert len(merged) == len(written) == 3 * 12
    np.testing.assert_allclose(merged["yhat"], merged["yhat_inproc"], rtol=1e-5, atol=1e-6)
    assert set(written["model_version"].astype(str)) == {result.decision.version}
    runs = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("e2e").experiment_id], "tags.role = 'prediction'"
    )
    assert runs and runs[0].info.status == "FINISHED"


@pytest.mark.slow
def test_leaderboard_command_prints_full_names_at_any_width(pipeline_run, tmp_path, monkeypatch, capsys):
    """`forecast leaderboard` as a table on a narrow terminal and piped, and as CSV and JSON: every
    model name, header and figure in full (folded or wider than the terminal, never cut)."""
    import json

    from rich.console import Console

    from forecasting import cli
    from forecasting.config import dump_config

    cfg, result, _ = pipeline_run
    path = tmp_path / "cfg.yaml"
    path.write_text(dump_config(cfg))
    args = ["leaderboard", "--config", str(path), "--run-id", result.parent_run_id]
    for width in (40, 200):
        monkeypatch.setattr(cli, "console", Console(width=width))
        assert cli.main([*args, "--format", "table"]) == 0
        out = capsys.readouterr().out
        assert "…" not in out
        for name in [*FAMILIES, "fit_seconds", "test_mae"]:
            assert f" {name} " in out, (width, name)
        val_mse = f"{result.leaderboard['val_mse'].iloc[0]:.4f}"
        assert val_mse in out

    assert cli.main([*args, "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert table["model"].tolist() == result.leaderboard["model"].tolist()
    np.testing.assert_allclose(table["val_mse"], result.leaderboard["val_mse"], rtol=1e-12)

    assert cli.main([*args, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == result.leaderboard["model"].tolist()
    assert cli.main([*args, "--format", "xml"]) == 2


@pytest.mark.slow
def test_a_failing_model_fails_its_run_and_the_rest_complete(tmp_path):
    # lookback 48 with season 100 makes seasonal_naive fail inside fit.
    models = [{"name": "naive"}, {"name": "seasonal_naive", "params": {"season_length": 100}}, {"name": "ar"}]
    cfg = make_config(tmp_path, "with-failure", models)
    result = run_pipeline(cfg)
    status = {r.name: r for r in result.results}
    assert status["seasonal_naive"].status == "FAILED"
    run = MlflowClient().get_run(status["seasonal_naive"].run_id)
    assert run.info.status == "FAILED" and "season_length" in run.data.tags["error"]
    assert result.decision.model in {"naive", "ar"}
    assert "seasonal_naive" in MlflowClient().get_run(result.parent_run_id).data.tags["failed_models"]


@pytest.mark.slow
def test_rerun_with_equal_model_keeps_the_incumbent(tmp_path):
    """The same config on the same data and code registers nothing (``unchanged``); another
    config whose model scores the same is registered but does not take the alias."""
    cfg = make_config(tmp_path, "gate", [{"name": "naive"}])
    first = run_pipeline(cfg)
    again = run_pipeline(cfg)
    other = run_pipeline(make_config(tmp_path, "gate", [{"name": "naive", "label": "again"}]))
    assert first.decision.alias == "champion"
    assert again.decision.alias == "unchanged" and again.decision.version == first.decision.version
    assert other.decision.alias == "challenger"  # equal, not better: the champion stays
    client = MlflowClient()
    name = cfg.tracking.registered_model
    assert sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'")) == [1, 2]
    assert str(client.get_model_version_by_alias(name, "champion").version) == first.decision.version
    tags = client.get_model_version(name, other.decision.version).tags
    assert tags["incumbent_version"] == first.decision.version
    assert float(tags["incumbent_gate_mse_orig"]) == pytest.approx(float(tags["gate_mse_orig"]))
    assert tags["selection_metric"] == "val_mse" and float(tags["val_mse"]) == pytest.approx(
        other.results[0].metrics["val_mse"]
    )
    parent = client.get_run(again.parent_run_id).data.tags
    assert parent["champion_decision"] == "unchanged"
    assert "| naive | FINISHED |" in parent["mlflow.note.content"]


def test_bad_input_starts_no_run(tmp_path):
    from forecasting.errors import InputValidationError

    cfg = make_config(tmp_path, "bad-input", [{"name": "naive"}])
    frame = pd.read_csv(cfg.data.path, dtype=str)
    frame.loc[7, "sales"] = "oops"
    frame.to_csv(cfg.data.path, index=False)
    with pytest.raises(InputValidationError):
        run_pipeline(cfg)
    exp = MlflowClient().get_experiment_by_name("bad-input")
    assert exp is None or not MlflowClient().search_runs([exp.experiment_id])


def test_peak_rss_is_the_process_own_not_its_parents():
    """A worker started from a big parent reports its own peak (``ru_maxrss`` survives exec)."""
    import subprocess
    import sys
    from pathlib import Path

    big = np.ones(150_000_000)  # 1.2 GB, touched, held while the child runs
    code = "from forecasting.pipeline import peak_rss_mb; print(peak_rss_mb())"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    child = float(out.stdout.strip())
    assert 50 < child < big.nbytes / 2**20 / 2, child


@pytest.mark.slow
def test_a_retried_champion_step_registers_once_and_decides_once(tmp_path, monkeypatch):
    """The flow retries a failed champion step (I/O retries): the retry reuses the version the
    failed try registered for this pipeline run and the decision it recorded, and sets the same
    alias on it. It used to register a new version per try (4 versions for one run)."""
    from forecasting.pipeline import select
    from forecasting.tracking import Tracker

    cfg = make_config(tmp_path, "retried-gate", [{"name": "naive"}])
    trained = run_pipeline(cfg, select=False)
    tracker = Tracker(cfg.tracking)
    gated, aliases = [], []
    real_gate, real_alias = select.gate_score, tracker.set_alias

    def counted_gate(*args, **kwargs):
        gated.append(1)
        return real_gate(*args, **kwargs)

    def flaky_alias(alias, version):
        aliases.append((alias, version))
        if len(aliases) == 1:
            raise OSError("connection reset while setting the alias")
        real_alias(alias, version)

    monkeypatch.setattr(select, "gate_score", counted_gate)
    monkeypatch.setattr(tracker, "set_alias", flaky_alias)
    args = (tracker, trained.prepared, trained.results, trained.parent_run_id)
    with pytest.raises(OSError):
        select.select_champion(*args)
    decision = select.select_champion(*args)  # the retry

    client = MlflowClient()
    name = cfg.tracking.registered_model
    assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == [decision.version]
    assert gated == [1]  # gated once: no incumbent, so one score, the candidate's
    assert aliases == [("champion", decision.version)] * 2  # the same alias, the same version
    assert str(client.get_model_version_by_alias(name, "champion").version) == decision.version
    tags = client.get_model_version(name, decision.version).tags
    assert tags["decision"] == decision.alias == "champion"
    assert tags["parent_run_id"] == trained.parent_run_id
    assert float(tags["gate_mse_orig"]) == decision.candidate_score
    assert select.select_champion(*args) == decision  # and again: nothing moves, nothing is added
    assert len(aliases) == 2 and gated == [1]
