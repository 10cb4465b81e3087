"""The `tune` flow: hyper-parameter and architecture search over the config's `search` section.

The library does the search (``forecasting.tuning.tune``); this flow only ingests through the
ingest task and fans the trial workers out as tasks: on Dask when the config gives a Dask
address or asks for a local cluster (trials then run in parallel on the Dask workers against the
shared study storage), else on a thread pool of ``search.n_workers``.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.local_api import without_heartbeats
from flows.pipeline import _limit_threads, flow_config, prepared_for, task_runner_for
from forecasting import tuning
from forecasting.config import Config


@task(
    name="tune-worker",
    task_run_name="tune-worker-{job.worker}",
    cache_policy=NO_CACHE,
    persist_result=False,
    result_serializer="json",
)
def worker_task(job: tuning.WorkerJob, threads: int) -> tuning.WorkerReport:
    _limit_threads(threads)
    return tuning.run_worker(job)


def _runner_and_threads(cfg: Config) -> tuple[Any, int]:
    orch, workers = cfg.orchestration, tuning.n_workers(cfg)
    if orch.dask_address or orch.dask_local_workers:
        return task_runner_for(cfg), cfg.training.num_threads or 1
    threads = cfg.training.num_threads or max(1, (os.cpu_count() or 1) // workers)
    return ThreadPoolTaskRunner(max_workers=workers), threads


@flow(name="tune", log_prints=True, persist_result=False, result_serializer="json")
def tune(
    config_path: str | None = None,
    data_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    retrain: bool | None = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """Search (or resume the search), then retrain the best trial and gate it as the champion."""
    cfg = flow_config(config, config_path, overrides, data_path)
    tuning.check_search(cfg)  # a bad search section fails before ingest and before any run
    runner, threads = _runner_and_threads(cfg)

    def fan_out(jobs: list[tuning.WorkerJob]) -> list[tuning.WorkerReport]:
        # The jobs (they carry the data set) reach the subflow in its closure: Prefect would
        # JSON-encode a flow parameter for the API, a deep copy of every frame (see flows/pipeline.py).
        @flow(name="tune-trials", task_runner=runner, persist_result=False, result_serializer="json")
        def tune_trials(workers: int) -> list[tuning.WorkerReport]:
            futures = [worker_task.submit(job, threads) for job in jobs]
            return [f.result() for f in futures]

        return without_heartbeats(tune_trials)(len(jobs))  # the parent's heartbeats speak for it

    result = tuning.tune(
        cfg,
        data=prepared_for(cfg).data,
        run_workers=fan_out,
        retrain=retrain,
        flow_run_id=flow_run.get_id(),
    )
    return result.to_dict()
