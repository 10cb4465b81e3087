"""Scheduled flows out of the `forecast serve` process: `forecast deploy` registers a config's
deployments to a `process` work pool of a real `prefect server` on a new PostgreSQL database, and a
`prefect worker` process started elsewhere runs a flow run of one of them, all on loopback."""

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
WORKER = "forecast-test-worker"


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
        {"flow": "forecast_pipeline", "cron": "0 2 * * *", "name": "nightly"},
        {"flow": "batch_predict", "cron": "5 * * * *", "name": "hourly"},
    ]
    path = write_config(tmp_path, "pooled", orchestration={"schedules": schedules})
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
        worker_log = tmp_path / "worker.log"
        worker = _start_worker(api, tracking, tmp_path / "worker-home", elsewhere, worker_log)
        stack.callback(stop, worker)

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
        assert [s.schedule.cron for s in deployments["nightly"].schedules] == ["0 2 * * *"]
        assert [s.schedule.cron for s in deployments["hourly"].schedules] == ["5 * * * *"]

        # A run of the nightly deployment, picked up from the pool by the worker process.
        run = client.create_flow_run_from_deployment(deployments["nightly"].id)
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

        run = _wait_until_final(client, run.id, worker, worker_log, timeout=300)
        assert run.state.is_completed(), (run.state, worker_log.read_text()[-3000:])
        assert "won" in run.state.message
        assert run.work_pool_name == POOL and run.deployment_id == deployments["nightly"].id
        pid = int(run.infrastructure_pid)  # the process the worker started for the flow run
        assert pid not in (os.getpid(), worker.pid)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        messages = [log.message for log in logs]
        assert f"Worker '{WORKER}' submitting flow run '{run.id}'" in messages
        assert [w.name for w in client.read_workers_for_work_pool(POOL)] == [WORKER]

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


def _start_worker(api: str, tracking: str, home: Path, cwd: Path, log: Path) -> subprocess.Popen:
    """`prefect worker start` for the pool, polling every second (Prefect's default is 10 s)."""
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
    cmd = [str(bin_dir / "prefect"), "worker", "start", "--pool", POOL, "--type", "process", "--name", WORKER]
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


def _wait_until_final(client, run_id, worker: subprocess.Popen, log: Path, timeout: float):
    """The flow run once its state is final (or as it is after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.read_flow_run(run_id)
        if run.state.is_final() or time.monotonic() > deadline:
            return run
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(1)
