"""The Prefect flows: retries only for I/O, the pipeline end to end, what a flow run shows in the
Prefect UI (artifacts, state message), a batch prediction before any champion, Dask scale-out,
and cron deployments (absolute entrypoints) served against a real `prefect server` on loopback."""

from __future__ import annotations

import json
import logging
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
from test_pipeline import raw_config, synthetic_csv

import flows.pipeline as fp
from flows import reports
from forecasting.config import load_config
from forecasting.errors import InputValidationError, NoChampionError

ROOT = Path(__file__).resolve().parents[1]

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

    # what the Prefect UI shows of the run: the winner, its version and scores, links to MLflow
    summary = _artifact(flow_run_id, reports.PIPELINE_KEY)
    markdown = summary.data
    assert f"**{best}** won" in markdown and f"flow-e2e-model v{champion.version}" in markdown
    assert f"version **{champion.version}**, alias **champion**" in markdown
    assert "| model | status | val_mse | test_mse | fit_seconds |" in markdown
    assert {f"| {m} | FINISHED |" in markdown for m in ("naive", "ar")} == {True}
    assert f"#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}" in markdown
    assert f"#/models/flow-e2e-model/versions/{champion.version}" in markdown
    assert "run `forecast ui`, then open" in markdown  # the SQLite store `forecast ui` opens
    forecasts = _artifact(flow_run_id, reports.FORECASTS_KEY)
    assert forecasts.type == "table" and len(json.loads(forecasts.data)) == 3 * 12
    assert f"flow-e2e-model/{champion.version}" in forecasts.description
    assert (
        "**36** forecasts" in forecasts.description
        and outcome["prediction"]["output"] in forecasts.description
    )
    state = _flow_run(flow_run_id).state
    assert state.is_completed() and f"{best} won" in state.message
    assert f"version {champion.version} -> champion" in state.message
    # Heartbeats: the pipeline's flow run sends them (a server's automations read them), its
    # subflows, in the same process and thread, do not (each would wait ~1 s at its end for
    # the heartbeat thread's sleep).
    subflows = _subflow_runs(flow_run_id)
    assert len(subflows) == 2  # train-models, batch-predict-run
    beating = _heartbeats([flow_run_id, *(str(r.id) for r in subflows)], wait_for=flow_run_id)
    assert beating == {flow_run_id}

    # the hourly deployment's flow on its own: a table of what it wrote, and a named MLflow run
    state = fp.batch_predict(str(path), return_state=True)
    assert state.is_completed() and "36 forecasts by flow-e2e-model/" in state.message
    table = _artifact(str(state.state_details.flow_run_id), reports.FORECASTS_KEY)
    assert table.type == "table" and {"series_id", "t", "yhat"} <= set(json.loads(table.data)[0])
    names = [
        r.info.run_name for r in client.search_runs([parent.info.experiment_id], "tags.role = 'prediction'")
    ]
    assert f"predict flow-e2e-model v{champion.version} sales.csv" in names


def _flow_run(flow_run_id: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def _subflow_runs(flow_run_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )


def _heartbeats(flow_run_ids: list[str], wait_for: str, timeout_s: float = 60.0) -> set[str]:
    """The flow runs among ``flow_run_ids`` that sent a heartbeat event, read once ``wait_for``'s
    has reached the API (events arrive asynchronously; this is a hang guard, not a measurement)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            query = EventFilter(
                event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{i}" for i in flow_run_ids]),
            )
            events = client.read_events(query, limit=50).events  # the API allows at most 50
            found = {e.resource.id.removeprefix("prefect.flow-run.") for e in events}
            if wait_for in found or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


def _artifact(flow_run_id: str, key: str):
    """The artifact a flow run published under ``key``, read back through Prefect's client."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), key=ArtifactFilterKey(any_=[key])
            )
        )
    assert len(found) == 1, [a.key for a in found]
    return found[0]


class _Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


def test_batch_predict_before_any_champion_fails_once_with_a_named_error(
    prefect_harness, tmp_path, monkeypatch
):
    """The hourly deployment on a new store, before the nightly run has registered a champion:
    the flow run fails with one NoChampionError saying what to do; no task runs, nothing is
    retried, one traceback is logged (not one per task, subflow and flow)."""
    path = write_config(tmp_path, "no-champion-yet")
    calls = {"n": 0}

    def counted(*args, **kwargs):
        calls["n"] += 1
        raise AssertionError("the prediction must not start")

    monkeypatch.setattr(fp.lib, "batch_predict", counted)
    tracebacks = _Tracebacks()
    logging.getLogger("prefect").addHandler(tracebacks)
    try:
        state = fp.batch_predict(str(path), return_state=True)
    finally:
        logging.getLogger("prefect").removeHandler(tracebacks)
    assert state.is_failed()
    assert "NoChampionError" in state.message and "no-champion-yet-model@champion" in state.message
    assert "forecast run" in state.message
    with pytest.raises(NoChampionError, match="no model is registered as 'no-champion-yet-model'"):
        state.result()
    assert calls["n"] == 0
    assert len(tracebacks.records) <= 1, [r.getMessage() for r in tracebacks.records]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        subflows = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )
    assert tasks == [] and subflows == []


def test_a_missing_champion_is_never_retried():
    class State:
        def result(self, raise_on_failure=True):
            raise NoChampionError("no champion")

    assert fp.retry_unless_bad_input(None, None, State()) is False


def test_deployment_entrypoints_are_absolute(tmp_path, monkeypatch):
    """`forecast serve`'s deployments name their flow by its absolute path, whatever the cwd the
    deployments were built in, and pass the config's absolute path."""
    from flows.deployments import build_deployments

    schedules = [
        {"flow": "forecast_pipeline", "cron": "0 2 * * *", "name": "nightly"},
        {"flow": "batch_predict", "cron": "5 * * * *", "name": "hourly"},
        {"flow": "train", "cron": "0 3 * * *"},
    ]
    path = write_config(tmp_path, "entry", orchestration={"schedules": schedules})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    deployments = build_deployments(Path(os.path.relpath(path, elsewhere)), load_config(path))
    assert [d.name for d in deployments] == ["nightly", "hourly", "train-scheduled"]
    for d, function in zip(deployments, ["forecast_pipeline", "batch_predict", "train"], strict=True):
        file, name = d.entrypoint.rsplit(":", 1)
        assert Path(file).is_absolute() and Path(file).is_file(), d.entrypoint
        assert Path(file) == ROOT / "flows" / "pipeline.py" and name == function
        assert Path(d.parameters["config_path"]) == path.resolve()


def test_prefect_yaml_entrypoints_are_absolute_once_deployed(monkeypatch):
    """prefect.yaml's entrypoints and config paths become absolute paths that exist when
    `prefect deploy` fills in FORECAST_PROJECT_DIR from the environment (its own call below)."""
    from prefect.utilities.templating import apply_values

    from flows.deployments import FLOWS

    monkeypatch.setenv("FORECAST_PROJECT_DIR", str(ROOT))
    raw = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = apply_values(raw["deployments"], os.environ, remove_notset=False)
    assert {d["name"] for d in deployments} == {"nightly-retrain", "hourly-forecast", "hourly-monitor"}
    for d in deployments:
        file, name = d["entrypoint"].rsplit(":", 1)
        assert Path(file).is_absolute() and Path(file).is_file() and name in FLOWS, d["entrypoint"]
        assert Path(d["parameters"]["config_path"]).is_file()
    pull = apply_values(raw["pull"], os.environ, remove_notset=False)
    assert pull == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]


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
        {"flow": "monitor", "cron": "* * * * *", "name": "minutely-monitor"},
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
        deployments = _wait_for_deployments(api, 3, served, tmp_path)
        crons = {d["name"]: d["schedules"][0]["schedule"]["cron"] for d in deployments}
        assert crons == {"nightly": "0 2 * * *", "hourly": "5 * * * *", "minutely-monitor": "* * * * *"}

        nightly = next(d for d in deployments if d["name"] == "nightly")
        run = _post(f"{api}/deployments/{nightly['id']}/create_flow_run", {})
        state = _wait_for_flow_run(api, run["id"], timeout=240)
        assert state == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        exp = client.get_experiment_by_name("served")
        runs = client.search_runs([exp.experiment_id], "tags.role = 'model'")
        assert {r.info.run_name for r in runs} == {"naive", "ar"}
        assert all(r.data.tags.get("prefect_flow_run_id") == run["id"] for r in runs)

        # The nightly run predicted the 12 hours after the data (and archived them); now they
        # arrive, and the monitor deployment's next scheduled run scores them and logs to MLflow.
        synthetic_csv(tmp_path / "sales.csv", n=512)
        arrived = time.time()
        monitor = next(d for d in deployments if d["name"] == "minutely-monitor")
        state = _wait_for_scheduled_run(api, monitor["id"], after=arrived, timeout=200)
        assert state == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
        watched = client.search_runs([exp.experiment_id], "tags.role = 'monitor'")
        assert len(watched) == 1 and watched[0].data.tags["model_version"] == "1"
        assert watched[0].data.metrics["mae"] > 0
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


def _wait_for_scheduled_run(api: str, deployment_id: str, after: float, timeout: float) -> str:
    """The final state of the first run of a deployment that its schedule started after ``after``
    (epoch seconds), waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _post(f"{api}/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}}})
        for r in sorted(runs, key=lambda r: r.get("start_time") or ""):
            started = r.get("start_time")
            if started and pd.Timestamp(started).timestamp() > after and r.get("auto_scheduled"):
                return _wait_for_flow_run(api, r["id"], timeout=max(deadline - time.monotonic(), 1))
        time.sleep(2)
    return "NOT STARTED"


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


def test_a_failed_flow_run_writes_its_error_as_json_not_a_pickle(prefect_harness, tmp_path):
    """Prefect writes a failed run's exception to result storage whatever ``persist_result`` says;
    with ``result_serializer="json"`` it is ``{"__exc_type__", "message"}``, not a cloudpickle."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    storage = tmp_path / "storage"
    path = write_config(tmp_path, "failed-run-json")
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}):
        state = fp.batch_predict(str(path), return_state=True)
    assert state.is_failed()
    written = [f for f in storage.rglob("*") if f.is_file()]
    assert written, "Prefect wrote no record of the failure (did it stop persisting exceptions?)"
    for f in written:
        record = json.loads(f.read_text())  # a pickle is not JSON
        assert "NoChampionError" in json.dumps(record)
