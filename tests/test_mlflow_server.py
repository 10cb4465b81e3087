"""The pipeline against a real `mlflow server` on loopback: SQLite-backed and PostgreSQL-backed
(the scale-out configuration). Logging, registering and loading all go over HTTP."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from servers import mlflow_server, postgres_database
from test_pipeline import make_config

from forecasting.data.schema import string_ids
from forecasting.pipeline import batch_predict, run_pipeline
from forecasting.serving import load_pyfunc

pytestmark = [pytest.mark.server, pytest.mark.slow]


def _backend(kind: str, tmp_path):
    if kind == "sqlite":
        from contextlib import nullcontext

        return nullcontext(f"sqlite:///{tmp_path / 'server.db'}")
    return postgres_database()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_pipeline_over_http(kind, tmp_path, monkeypatch, mlflow_globals):
    with (
        _backend(kind, tmp_path) as backend,
        mlflow_server(backend, tmp_path / "artifacts", tmp_path / "server.log") as uri,
    ):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        # The forecast archive beside the server's store: the same PostgreSQL database, or a file.
        archive = backend if kind == "postgresql" else f"sqlite:///{tmp_path / 'archive.db'}"
        cfg = make_config(
            tmp_path,
            f"http-{kind}",
            [{"name": "naive"}, {"name": "ar", "params": {"max_lag": 24}}],
            monitoring={"archive_uri": archive},
        )
        result = run_pipeline(cfg)
        client = MlflowClient(uri)
        assert client.get_run(result.parent_run_id).info.status == "FINISHED"
        assert all(r.status == "FINISHED" for r in result.results)
        champion = client.get_model_version_by_alias(cfg.tracking.registered_model, "champion")
        best = min(result.results, key=lambda r: r.metrics["val_mse"])
        assert champion.tags["evaluation_run_id"] == best.run_id  # registered: its refit
        assert champion.run_id == result.refit.run_id

        # The artifacts went through the server (proxied), not to a local path.
        assert client.get_run(result.parent_run_id).info.artifact_uri.startswith("mlflow-artifacts:")
        model = load_pyfunc(f"models:/{cfg.tracking.registered_model}@champion")
        history = string_ids(result.prepared.data.frame)  # ids as text, as a user's data has them
        forecast = model.predict(history)
        assert len(forecast) == 3 * 12 and np.isfinite(forecast["yhat"]).all()

        out = batch_predict(cfg)
        written = pd.read_parquet(out["output"])
        np.testing.assert_allclose(
            written.sort_values(["series_id", "t"])["yhat"].to_numpy(),
            forecast.sort_values(["series_id", "t"])["yhat"].to_numpy(),
            rtol=1e-6,
        )
        assert out["archived"] == len(written)  # every forecast archived, on that database
        monkeypatch.delenv("MLFLOW_TRACKING_URI")
