"""Scheduled flows out of the `forecast serve` process: `forecast deploy` registers a config's
deployments to a `process` work pool of a real `prefect server` on a new PostgreSQL database, and a
`prefect worker` processes started elsewhere run its flow runs, all on loopback: two workers of one
pool, each taking one flow run at a time, share two runs of the nightly deployment (one per
config, each with its own MLflow store), so the work leaves any one process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from servers import postgres_database, prefect_server, stop
from test_flows import write_config

from forecasting.cli import main

ROOT = Path(__file__).resolve().parents[1]
POOL = "forecast-test-pool"  # not the command's default, `forecasting`: --pool must take effect
WORKERS = ("forecast-test-worker-a", "forecast-test-worker-b")


def test_deploy_without_schedules_names_the_config(tmp_path, capsys):
    path = write_config(tmp_path, "unscheduled", [{"name": "naive"}])
    assert main(["deploy", str(path), "--pool", POOL]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: ConfigError: {path}: orchestration.schedules is empty; nothing to deploy"
    ]


@pytest.mark.server
@pytest.mark.slow
def test_a_prefect_worker_runs_a_deployed_flow_from_a_work_pool(tmp_path, capsys):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import (
        LogFilter,
        LogFilterFlowRunId,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.workers.process import ProcessWorker

    schedules = [
        # Crons that fire only on 29 February: no scheduled run takes a worker's one slot mid-test.
        {"flow": "forecast_pipeline", "cron": "0 2 29 2 *", "name": "nightly"},
        {"flow": "batch_predict", "cron": "5 3 29 2 *", "name": "hourly"},
    ]
    path = write_config(tmp_path, "pooled", orchestration={"schedules": schedules})
    (tmp_path / "b").mkdir()
    b_store = {"tracking_uri": f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"}
    tracking_b = {"experiment": "pooled-b", "registered_model": "pooled-b-model", **b_store}
    second = write_config(tmp_path / "b", "pooled-b", tracking=tracking_b)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    elsewhere = tmp_path / "worker-cwd"  # the worker starts outside the checkout
    elsewhere.mkdir()
    with ExitStack() as stack:
        database = stack.enter_context(postgres_database())
        api = stack.enter_context(
            prefect_server(
                database.replace("postgresql+psycopg2://", "postgresql+asyncpg://", 1),
                tmp_path / "server-home",
                tmp_path / "server.log",
            )
        )
        stack.enter_context(temporary_settings({PREFECT_API_URL: api}))
        client = stack.enter_context(get_client(sync_client=True))
        template = ProcessWorker.get_default_base_job_template()
        for pool in (POOL, "forecasting"):  # `forecasting`: prefect.yaml's
            client.create_work_pool(WorkPoolCreate(name=pool, type="process", base_job_template=template))
        logs_of, workers = {}, []
        for name in WORKERS:
            logs_of[name] = tmp_path / f"{name}.log"
            worker = _start_worker(api, tracking, tmp_path / f"{name}-home", elsewhere, logs_of[name], name)
            stack.callback(stop, worker)
            workers.append(worker)

        assert main(["deploy", str(path), "--pool", "no-such-pool"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"error: WorkPoolError: no work pool 'no-such-pool' on the Prefect API at {api}; create it "
            "with `prefect work-pool create no-such-pool --type process`, or name another with --pool"
        ]

        # `forecast deploy`: both schedules become deployments of the pool, with absolute paths
        # and one pull step (the checkout as working directory), nothing to copy or build.
        assert main(["deploy", str(path), "--pool", POOL]) == 0
        out = capsys.readouterr().out
        assert f"deployed forecast_pipeline/nightly to work pool '{POOL}'" in out
        assert f"prefect worker start --pool {POOL}" in out
        found = client.read_deployments(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[POOL])))
        deployments = {d.name: d for d in found}
        assert set(deployments) == {"nightly", "hourly"}
        for name, function in [("nightly", "forecast_pipeline"), ("hourly", "batch_predict")]:
            d = deployments[name]
            assert d.work_pool_name == POOL
            assert d.entrypoint == f"{ROOT / 'flows' / 'pipeline.py'}:{function}"
            assert d.pull_steps == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
            ]
            assert d.path is None  # nothing for the worker to copy
            assert d.parameters == {"config_path": str(path.resolve())}
        assert [s.schedule.cron for s in deployments["nightly"].schedules] == ["0 2 29 2 *"]
        assert [s.schedule.cron for s in deployments["hourly"].schedules] == ["5 3 29 2 *"]

        # Two runs of the nightly deployment, the second for another config (its own experiment
        # and MLflow store): each worker takes one flow run at a time, so each takes one of them.
        run = client.create_flow_run_from_deployment(deployments["nightly"].id)
        other = client.create_flow_run_from_deployment(
            deployments["nightly"].id, parameters={"config_path": str(second.resolve())}
        )
        # Meanwhile `prefect deploy` registers prefect.yaml's deployments in the same shape.
        deployed = _prefect_deploy(api, tmp_path / "deploy-home", elsewhere)
        declared = client.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=["forecasting"]))
        )
        assert deployed.returncode == 0, deployed.stdout[-3000:]
        assert {d.name for d in declared} == {"nightly-retrain", "hourly-forecast", "hourly-monitor"}
        for d in declared:
            file, _ = d.entrypoint.rsplit(":", 1)
            assert Path(file).parent == ROOT / "flows" and d.path is None
            assert d.pull_steps == deployments["nightly"].pull_steps
            assert d.parameters == {"config_path": str(ROOT / "configs" / "demo.yaml")}

        run = _wait_until_final(client, run.id, workers, logs_of, timeout=300)
        other = _wait_until_final(client, other.id, workers, logs_of, timeout=300)
        texts = {name: log.read_text() for name, log in logs_of.items()}
        worker_logs = "\n".join(text[-2000:] for text in texts.values())
        ran = {}
        for r in (run, other):
            assert r.state.is_completed(), (r.state, worker_logs)
            assert "won" in r.state.message
            assert r.work_pool_name == POOL and r.deployment_id == deployments["nightly"].id
            pid = int(r.infrastructure_pid)  # the process a worker started for the flow run
            assert pid not in (os.getpid(), *(w.pid for w in workers))
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id])))
            assert any(log.message.startswith("Worker 'forecast-test-worker-") for log in logs)
            # The worker that ran it: both may try to submit a run, and one is told it is taken.
            ran[r.id] = [n for n in WORKERS if f"Flow run '{r.name}' submitted to infrastructure" in texts[n]]
        assert sorted(name for names in ran.values() for name in names) == sorted(WORKERS), ran  # one each
        assert sorted(w.name for w in client.read_workers_for_work_pool(POOL)) == sorted(WORKERS)

    # What the flow run produced: runs in the MLflow store the worker's environment names, the
    # config's forecast file.
    mlflow = MlflowClient(tracking)
    experiment = mlflow.get_experiment_by_name("pooled")
    runs = mlflow.search_runs([experiment.experiment_id], "tags.role = 'model'")
    assert {r.info.run_name for r in runs} == {"naive", "ar"}
    assert {r.data.tags.get("prefect_flow_run_id") for r in runs} == {str(run.id)}
    champion = mlflow.get_model_version_by_alias("pooled-model", "champion")
    forecast = pd.read_csv(tmp_path / "forecast.csv")
    assert len(forecast) == 3 * 12 and forecast["series_id"].nunique() == 3
    assert set(forecast["model_version"].astype(str)) == {str(champion.version)}
    # The other config's run: its own store, experiment, champion and forecast file.
    mlflow = MlflowClient(f"sqlite:///{second.parent / 'mlflow.db'}")
    runs = mlflow.search_runs(
        [mlflow.get_experiment_by_name("pooled-b").experiment_id], "tags.role = 'model'"
    )
    assert {r.data.tags.get("prefect_flow_run_id") for r in runs} == {str(other.id)} and len(runs) == 2
    assert str(mlflow.get_model_version_by_alias("pooled-b-model", "champion").version) == "1"
    assert len(pd.read_csv(second.parent / "forecast.csv")) == 3 * 12


def _start_worker(api: str, tracking: str, home: Path, cwd: Path, log: Path, name: str) -> subprocess.Popen:
    """`prefect worker start` for the pool, polling every second (Prefect's default is 10 s), one
    flow run at a time (``--limit 1``)."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(home),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",  # the worker's own lines, kept by the API for its flow runs
        "MLFLOW_TRACKING_URI": tracking,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    cmd = [str(bin_dir / "prefect"), "worker", "start", "--pool", POOL, "--type", "process", "--name", name]
    cmd += ["--limit", "1"]
    with open(log, "wb") as fh:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )


def _prefect_deploy(api: str, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    """`prefect deploy --all` of the checkout's prefect.yaml, as its header comment says."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(home), "FORECAST_PROJECT_DIR": str(ROOT)}
    cmd = [
        str(bin_dir / "prefect"),
        "--no-prompt",
        "deploy",
        "--all",
        "--prefect-file",
        str(ROOT / "prefect.yaml"),
    ]
    return subprocess.run(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300
    )


def _wait_until_final(client, run_id, workers: list[subprocess.Popen], logs: dict[str, Path], timeout: float):
    """The flow run once its state is final (or as it is after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.read_flow_run(run_id)
        if run.state.is_final() or time.monotonic() > deadline:
            return run
        for worker, log in zip(workers, logs.values(), strict=True):
            if worker.poll() is not None:
                raise RuntimeError(f"a worker exited with {worker.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(1)
