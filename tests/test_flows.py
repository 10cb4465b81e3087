"""The Prefect flows: retries only for I/O, the pipeline end to end, Dask scale-out, and cron
deployments served against a real `prefect server` on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from servers import free_port, stop, wait_http
from test_pipeline import raw_config

import flows.pipeline as fp
from forecasting.config import load_config
from forecasting.errors import InputValidationError

pytestmark = pytest.mark.slow


def write_config(tmp_path: Path, experiment: str, models=None, **extra) -> Path:
    models = models or [{"name": "naive"}, {"name": "ar", "params": {"max_lag": 24}}]
    raw = raw_config(tmp_path, experiment, models, **extra)
    raw["predict"]["output"] = str(tmp_path / "forecast.csv")
    path = tmp_path / f"{experiment}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_retry_policy_skips_bad_input():
    class State:
        def __init__(self, exc):
            self.exc = exc

        def result(self, raise_on_failure=True):
            raise self.exc

    assert fp.retry_unless_bad_input(None, None, State(OSError("disk"))) is True
    assert fp.retry_unless_bad_input(None, None, State(InputValidationError("bad"))) is False


@pytest.mark.parametrize(
    ("cores", "models", "max_workers", "expected"),
    [
        (2, 10, None, (2, 1)),  # this machine's demo: two models at a time, one thread each
        (1, 10, None, (1, 1)),
        (16, 10, None, (10, 1)),  # never more tasks than models
        (16, 3, None, (3, 5)),  # the cores shared out among them
        (2, 10, 1, (1, 2)),  # orchestration.max_workers caps the tasks
        (16, 10, 4, (4, 4)),
    ],
)
def test_training_tasks_and_threads_share_the_cores(
    tmp_path, monkeypatch, cores, models, max_workers, expected
):
    cfg = load_config(
        write_config(
            tmp_path,
            "caps",
            [{"name": "naive", "label": f"n{i}"} for i in range(models)],
            orchestration={"max_workers": max_workers},
        )
    )
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    workers, threads = fp.lib.workers_and_threads(cfg)
    assert (workers, threads) == expected
    assert workers * threads <= cores
    assert fp.task_runner_for(cfg)._max_workers == workers


def test_pipeline_flow_end_to_end(prefect_harness, tmp_path):
    path = write_config(tmp_path, "flow-e2e")
    outcome = fp.forecast_pipeline(str(path))
    client = MlflowClient()
    parent = client.get_run(outcome["parent_run_id"])
    flow_run_id = parent.data.tags["prefect_flow_run_id"]
    assert flow_run_id
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    best = outcome["decision"]["model"]
    assert {r.info.run_name for r in children} == {"naive", "ar", f"{best} refit"}
    assert all(r.data.tags["prefect_flow_run_id"] == flow_run_id for r in children)
    assert all(r.info.status == "FINISHED" for r in children)
    # the pipeline run logs the dataset before its models (which train at once) link the same one
    digests = [[i.dataset.digest for i in run.inputs.dataset_inputs] for run in [parent, *children]]
    assert digests == [[parent.data.tags["dataset_hash"]]] * 4
    assert outcome["decision"]["alias"] == "champion"
    refit = next(r for r in children if r.data.tags["role"] == "refit")
    champion = client.get_model_version_by_alias("flow-e2e-model", "champion")
    assert champion.run_id == refit.info.run_id
    assert len(pd.read_csv(outcome["prediction"]["output"])) == 3 * 12


def test_io_failure_is_retried_then_succeeds(prefect_harness, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = fp.lib.prepare

    def flaky(cfg, data=None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("transient read error")
        return real(cfg, data)

    monkeypatch.setattr(fp.lib, "prepare", flaky)
    monkeypatch.setattr(fp, "ingest_task", fp.ingest_task.with_options(retry_delay_seconds=0))
    summary = fp.ingest(str(write_config(tmp_path, "retry")))
    assert calls["n"] == 2 and summary["series"] == 3


def test_validation_error_is_not_retried_and_names_the_error(prefect_harness, tmp_path, monkeypatch):
    path = write_config(tmp_path, "bad-flow")
    data = pd.read_csv(tmp_path / "sales.csv", dtype=str)
    data.loc[5, "sales"] = "n/a?"
    data.to_csv(tmp_path / "sales.csv", index=False)
    calls = {"n": 0}
    real = fp.lib.prepare

    def counted(cfg, data=None):
        calls["n"] += 1
        return real(cfg, data)

    monkeypatch.setattr(fp.lib, "prepare", counted)
    monkeypatch.setattr(fp, "ingest_task", fp.ingest_task.with_options(retry_delay_seconds=0))
    state = fp.forecast_pipeline(str(path), return_state=True)
    assert state.is_failed()
    assert "NonNumericValueError" in state.message
    assert calls["n"] == 1  # not retried
    exp = MlflowClient().get_experiment_by_name("bad-flow")
    assert exp is None or not MlflowClient().search_runs([exp.experiment_id])


def test_training_fans_out_on_a_dask_local_cluster(prefect_harness, tmp_path):
    pytest.importorskip("prefect_dask")
    from forecasting.models.registry import available_models

    models = [{"name": m} for m in available_models()]
    path = write_config(tmp_path, "dask", models, orchestration={"dask_local_workers": 2})
    outcome = fp.forecast_pipeline(str(path))  # training fan-out and batch prediction on Dask
    names = {row["model"]: row["status"] for row in outcome["leaderboard"]}
    assert set(names) == set(available_models())
    assert set(names.values()) == {"FINISHED"}
    exp = MlflowClient().get_experiment_by_name("dask")
    runs = MlflowClient().search_runs([exp.experiment_id], "tags.role = 'model'")
    assert {r.info.run_name for r in runs} == set(available_models())
    assert len(pd.read_csv(outcome["prediction"]["output"])) == 3 * 12


@pytest.mark.server
def test_cron_deployments_on_a_real_prefect_server(tmp_path):
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    env.pop("PREFECT_SERVER_EPHEMERAL_ENABLED", None)
    schedules = [
        {"flow": "forecast_pipeline", "cron": "0 2 * * *", "name": "nightly"},
        {"flow": "batch_predict", "cron": "5 * * * *", "name": "hourly"},
    ]
    path = write_config(tmp_path, "served", orchestration={"schedules": schedules})
    api = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen(
        [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=(tmp_path / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    served = None
    try:
        wait_http(f"{api}/health", timeout=120, proc=server)
        served = subprocess.Popen(
            [str(bin_dir / "forecast"), "serve", str(path)],
            env=env,
            stdout=(tmp_path / "serve.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deployments = _wait_for_deployments(api, 2, served, tmp_path)
        crons = {d["name"]: d["schedules"][0]["schedule"]["cron"] for d in deployments}
        assert crons == {"nightly": "0 2 * * *", "hourly": "5 * * * *"}

        nightly = next(d for d in deployments if d["name"] == "nightly")
        run = _post(f"{api}/deployments/{nightly['id']}/create_flow_run", {})
        state = _wait_for_flow_run(api, run["id"], timeout=240)
        assert state == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        exp = client.get_experiment_by_name("served")
        runs = client.search_runs([exp.experiment_id], "tags.role = 'model'")
        assert {r.info.run_name for r in runs} == {"naive", "ar"}
        assert all(r.data.tags.get("prefect_flow_run_id") == run["id"] for r in runs)
    finally:
        if served is not None:
            stop(served)
        stop(server)


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    return _open(req)


def _get(url: str) -> dict:
    return _open(urllib.request.Request(url))


def _open(req: urllib.request.Request, attempts: int = 5) -> dict:
    """The API's JSON answer. A 503 is Prefect's "retry": a SQLite write that met a lock (the
    server's own services write too), rolled back; Prefect's client retries it, and so does this."""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            if err.code != 503 or attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def _wait_for_deployments(api: str, n: int, served: subprocess.Popen, tmp_path: Path) -> list[dict]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if served.poll() is not None:
            raise RuntimeError((tmp_path / "serve.log").read_text()[-3000:])
        found = _post(f"{api}/deployments/filter", {})
        if len(found) >= n:
            return found
        time.sleep(1)
    raise TimeoutError("deployments never registered")


def _wait_for_flow_run(api: str, run_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < deadline:
        state = _get(f"{api}/flow_runs/{run_id}")["state"]["type"]
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return state
        time.sleep(2)
    return state


def test_a_flow_run_writes_no_result_file(prefect_harness, tmp_path, monkeypatch):
    """No task result of a flow run is persisted: Prefect persists results as cloudpickles, and a
    file planted under the ingest cache's key ran code when the next run loaded it. Ingest ran
    again for the second run (no cache), and the storage folder stays empty."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    storage = tmp_path / "storage"
    path = write_config(tmp_path, "no-pickle", [{"name": "naive"}])
    calls = {"n": 0}
    real = fp.lib.prepare

    def counted(cfg, data=None):
        calls["n"] += 1
        return real(cfg, data)

    monkeypatch.setattr(fp.lib, "prepare", counted)
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}):
        for _ in range(2):
            assert fp.forecast_pipeline(str(path), predict=False)["decision"] is not None
    assert calls["n"] == 2
    written = [f for f in storage.rglob("*") if f.is_file()] if storage.exists() else []
    assert written == []


@pytest.mark.server
def test_forecast_run_fails_fast_when_the_tracking_server_is_down(tmp_path):
    """`forecast run` with MLFLOW_TRACKING_URI on a closed port: one line naming the error, no
    traceback, a non-zero status, and no minutes of MLflow's HTTP retries (261 s seen) first."""
    path = write_config(tmp_path, "unreachable", [{"name": "naive"}])
    exe = Path(sys.executable).with_name("forecast")
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",  # nothing listens there
    }
    proc = subprocess.run(
        [str(exe), "run", str(path), "--no-predict"], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: TrackingUnavailableError: "), proc.stderr
    assert env["MLFLOW_TRACKING_URI"] in lines[0]
    # (the named error comes from the one probe: MLflow's retries would end in an MlflowException)
    exp = MlflowClient().get_experiment_by_name("unreachable")
    assert exp is None  # nothing went to the session's store either
