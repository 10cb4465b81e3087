"""The forecasting flows: ingest, train (fanned out per model), select_champion, batch_predict,
and forecast_pipeline chaining them.

Each flow is a short list of calls into ``forecasting.pipeline``: the pipeline's steps are written
there once (``run_pipeline``); this module supplies the fan-out (a Prefect task per model) and the
champion task. Every flow takes a config path and optional overrides, or a parsed config.
Retries with exponential backoff apply to tasks that do I/O, never to a bad-input error.
Training tasks run on Prefect's thread pool (capped to the machine) or, when the config gives a
Dask address or asks for a local cluster, on Dask workers through prefect-dask.
Each flow run publishes what it decided as Prefect artifacts (``flows/reports.py``) and ends with
a one-line state message: the winner, its score, its registered version, the forecasts written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from flows import reports
from flows.local_api import without_heartbeats
from forecasting import pipeline as lib
from forecasting.config import Config, load_config
from forecasting.errors import InputValidationError
from forecasting.pipeline.predict import pin_model


# --- retry policy ---------------------------------------------------------------------------
def retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O failures; a validation error will fail the same way again, so never retry it."""
    try:
        state.result(raise_on_failure=True)
    except InputValidationError:
        return False
    except Exception:
        return True
    return False


IO_RETRIES = dict(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.2,
    retry_condition_fn=retry_unless_bad_input,
)


# --- tasks ----------------------------------------------------------------------------------
# Ingest is neither cached nor persisted: Prefect persists a task's result as a cloudpickle under
# its storage folder, and a file planted there under the cache key ran code at the next run's
# load. The result stays in memory; every flow run reads its data again (~0.1 s on the demo data).
@task(name="ingest", cache_policy=NO_CACHE, persist_result=False, result_serializer="json", **IO_RETRIES)
def ingest_task(cfg: Config) -> lib.Prepared:
    return lib.prepare(cfg)


def prepared_for(cfg: Config) -> lib.Prepared:
    """The run's data, read and prepared by the ingest task, with ``cfg`` resolved for it."""
    return ingest_task(cfg)


@task(
    name="train-model",
    task_run_name="train-{job.spec.name}",
    cache_policy=NO_CACHE,
    persist_result=False,
    result_serializer="json",
)
def train_task(job: lib.TrainJob, threads: int) -> lib.ModelResult:
    _limit_threads(threads)
    result = lib.train_job(job)
    if not job.model_kept:
        result.model = None  # the model lives in MLflow; ship it back only to an ensemble's members
    return result


@task(
    name="refit",
    task_run_name="refit-{best.name}",
    cache_policy=NO_CACHE,
    persist_result=False,
    result_serializer="json",
)
def refit_task(
    prepared: lib.Prepared,
    best: lib.ModelResult,
    results: list[lib.ModelResult],
    parent_run_id: str,
    tags: dict[str, str],
    threads: int,
) -> lib.ModelResult:
    from forecasting.tracking import Tracker

    _limit_threads(threads)
    return lib.refit_model(prepared, best, results, Tracker(prepared.cfg.tracking), parent_run_id, tags)


# Retried on I/O failures: ``select_champion`` reuses the version and the decision a failed try
# already recorded for this pipeline run. Its decision stays in memory (``persist_result``).
@task(
    name="select-champion",
    cache_policy=NO_CACHE,
    persist_result=False,
    result_serializer="json",
    **IO_RETRIES,
)
def select_task(
    prepared: lib.Prepared,
    results: list[lib.ModelResult],
    parent_run_id: str | None,
    refit: lib.ModelResult | None = None,
) -> lib.ChampionDecision:
    from forecasting.tracking import Tracker

    return lib.select_champion(Tracker(prepared.cfg.tracking), prepared, results, parent_run_id, refit)


@task(
    name="batch-predict", cache_policy=NO_CACHE, persist_result=False, result_serializer="json", **IO_RETRIES
)
def predict_task(
    cfg: Config, model_ref: str | None, input_path: str | None, output_path: str | None
) -> dict[str, Any]:
    return lib.batch_predict(cfg, model_ref, input_path, output_path)


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


# --- task runners ---------------------------------------------------------------------------
def task_runner_for(cfg: Config) -> Any:
    """Dask when configured (prefect-dask, optional extra), else a capped thread pool."""
    orch = cfg.orchestration
    if orch.dask_address or orch.dask_local_workers:
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise InputValidationError(
                "orchestration asks for Dask but prefect-dask is not installed: pip install '.[dask]'"
            ) from None
        if orch.dask_address:
            return DaskTaskRunner(address=orch.dask_address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={"n_workers": orch.dask_local_workers, "threads_per_worker": 1, "processes": True},
        )
    workers, _ = lib.workers_and_threads(cfg)
    return ThreadPoolTaskRunner(max_workers=workers)


def _threads_per_task(cfg: Config) -> int:
    orch = cfg.orchestration
    if orch.dask_address or orch.dask_local_workers:
        return cfg.training.num_threads or 1
    return lib.workers_and_threads(cfg)[1]


def flow_config(
    config: Config | None, config_path: str | None, overrides: dict[str, Any] | None, data_path: str | None
) -> Config:
    """The run's config: as given (the CLI has parsed and checked it already), or read from
    ``config_path`` (a deployment's parameter) with the overrides and the data path applied."""
    if config is not None:
        return config
    if config_path is None:
        raise InputValidationError("a flow needs a config: pass config_path (or config)")
    overrides = dict(overrides or {})
    if data_path:
        overrides.setdefault("data", {})["path"] = str(Path(data_path).resolve())
    return load_config(config_path, overrides)


def _train_models(cfg: Config) -> lib.TrainModels:
    """The pipeline's fan-out: one Prefect task per model on the configured runner, inside one
    ``train-models`` subflow (the pipeline body decides which models train in which order)."""
    threads = _threads_per_task(cfg)
    runner = task_runner_for(cfg)  # here, so that a missing prefect-dask fails before any MLflow run

    def submit(jobs: list[lib.TrainJob]) -> list[lib.ModelResult]:
        futures = [train_task.submit(job, threads) for job in jobs]
        return [f.result() for f in futures]

    def train_models(
        prepared: lib.Prepared, parent_run_id: str, tags: dict[str, str]
    ) -> list[lib.ModelResult]:
        # The data reaches the subflow in its closure, not as a flow parameter: Prefect
        # JSON-encodes a flow run's parameters for the API, which for ``Prepared`` meant a deep
        # copy of every frame and an encoding cell by cell that fails in the end (the UI showed
        # "<Prepared>"): ~0.1 s per pipeline run on 1,000 rows, ~5 s on 100,000
        # (bench/BENCHMARKS.md, "Orchestration cost").
        @flow(
            name="train-models",
            task_runner=runner,
            persist_result=False,
            result_serializer="json",
        )
        def train_models_flow(parent_run_id: str, tags: dict[str, str]) -> list[lib.ModelResult]:
            results = lib.train_all(prepared, parent_run_id, submit, tags)
            failed = [r for r in results if r.status != "FINISHED"]
            if failed:
                get_run_logger().warning(
                    "models failed: " + "; ".join(f"{r.name}: {r.error}" for r in failed)
                )
            return results

        return without_heartbeats(train_models_flow)(parent_run_id, tags)  # the parent's speak for it

    return train_models


def _refit_step(
    prepared: lib.Prepared, best: Any, results: list, parent_run_id: str, tags: dict[str, str]
) -> Any:
    # The refit runs alone, after every model has trained: all of this machine's cores.
    threads = prepared.cfg.training.num_threads or os.cpu_count() or 1
    return refit_task(prepared, best, results, parent_run_id, tags, threads)


def _select_step(
    tracker: Any, prepared: lib.Prepared, results: list, parent_run_id: str, refit: Any = None
) -> Any:
    return select_task(prepared, results, parent_run_id, refit)  # a task: retried on I/O failures


def _mark_crashed(flow_run_id: str, parent_run_id: str | None) -> None:
    """End the flow run of a process that was killed, and its subflow runs still open (kill -9
    leaves them ``Running`` in Prefect for good), as ``Crashed``, now that this run has adopted
    and finished its work."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.states import Crashed

    message = f"its process died; flow run {flow_run.get_id()} adopted MLflow run {parent_run_id}"
    try:
        with get_client(sync_client=True) as client:
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
                )
            )
            for run_id in [*(c.id for c in children if c.state and not c.state.is_final()), flow_run_id]:
                client.set_flow_run_state(run_id, Crashed(message=message), force=True)
    except Exception as err:  # a flow run Prefect no longer knows: nothing to end
        get_run_logger().warning(f"could not mark flow run {flow_run_id} crashed: {err}")


def _pipeline(cfg: Config, select: bool) -> dict[str, Any]:
    """The library's one pipeline body with this module's fan-out and champion task."""
    result = lib.run_pipeline(
        cfg,
        flow_run_id=flow_run.get_id(),
        prepared=prepared_for(cfg),
        train_models=_train_models(cfg),
        refit_step=_refit_step,
        select_step=_select_step,
        select=select,
    )
    if result.interrupted_flow_run_id and result.interrupted_flow_run_id != flow_run.get_id():
        _mark_crashed(result.interrupted_flow_run_id, result.parent_run_id)
    return {
        "parent_run_id": result.parent_run_id,
        "leaderboard": result.leaderboard.to_dict(orient="records"),
        "decision": lib.asdict(result.decision),
    }


# --- flows ----------------------------------------------------------------------------------
# Every flow takes ``config_path`` (what a deployment passes) or an already parsed ``config``
# (what the CLI passes: it parses the file once, before any flow starts).
@flow(name="ingest", log_prints=True, persist_result=False, result_serializer="json")
def ingest(
    config_path: str | None = None,
    data_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """Read + validate + repair report + dataset hash; returns the summary."""
    return prepared_for(flow_config(config, config_path, overrides, data_path)).data.summary()


@flow(name="train", log_prints=True, persist_result=False, result_serializer="json")
def train(
    config_path: str | None = None,
    data_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    config: Config | None = None,
) -> list[dict[str, Any]]:
    """Train every configured model (one task each) under one parent MLflow run."""
    cfg = flow_config(config, config_path, overrides, data_path)
    outcome = _pipeline(cfg, select=False)
    reports.publish_summary(reports.TRAIN_KEY, "Train", cfg, outcome)
    return _completed(outcome["leaderboard"], reports.state_message(outcome))


@flow(name="select_champion", log_prints=True, persist_result=False, result_serializer="json")
def select_champion(
    config_path: str | None,
    parent_run_id: str,
    data_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """Register the best model of a finished pipeline run and gate the `champion` alias."""
    from forecasting.tracking import Tracker

    cfg = flow_config(config, config_path, overrides, data_path)
    prepared = prepared_for(cfg)
    results = lib.results_from_runs(Tracker(cfg.tracking), parent_run_id, calibrations=cfg.selection.refit)
    refit = None
    if cfg.selection.refit:
        best = lib.best_result(results, cfg.tracking.selection_metric)
        refit = _refit_step(prepared, best, results, parent_run_id, {})
    decision = lib.asdict(select_task(prepared, results, parent_run_id, refit))
    board = lib.leaderboard(results, cfg.tracking.selection_metric).to_dict(orient="records")
    outcome = {"parent_run_id": parent_run_id, "leaderboard": board, "decision": decision}
    reports.publish_summary(reports.CHAMPION_KEY, "Champion decision", cfg, outcome)
    return _completed(decision, reports.state_message(outcome))


@flow(name="batch_predict", log_prints=True, persist_result=False, result_serializer="json")
def batch_predict(
    config_path: str | None = None,
    model: str | None = None,
    input_path: str | None = None,
    output_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """Forecast every series of the input with a registered model (default: the champion).

    A model alias that names no version yet (a new store before the first pipeline run has
    registered a champion) fails the flow run with one ``NoChampionError``, before any task."""
    prediction = _predict(flow_config(config, config_path, overrides, None), model, input_path, output_path)
    return _completed(prediction, reports.state_message({"prediction": prediction}))


def _predict(
    cfg: Config, model: str | None, input_path: str | None, output_path: str | None
) -> dict[str, Any]:
    """The prediction task on the configured runner (a Dask worker when one is configured), and
    the table artifact of its forecasts."""
    # The alias is resolved here, in the calling flow: no champion yet is one named error in
    # this flow run, not a failed task, subflow and flow each logging its traceback.
    pinned = pin_model(cfg, model)

    @flow(
        name="batch-predict-run",
        task_runner=task_runner_for(cfg),
        persist_result=False,
        result_serializer="json",
    )
    def on_runner() -> dict[str, Any]:
        return predict_task.submit(cfg, pinned, input_path, output_path).result()

    prediction = without_heartbeats(on_runner)()  # its parent's heartbeats speak for the process
    reports.publish_forecasts(prediction)
    return prediction


@flow(name="forecast_pipeline", log_prints=True, persist_result=False, result_serializer="json")
def forecast_pipeline(
    config_path: str | None = None,
    data_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    predict: bool = True,
    config: Config | None = None,
) -> dict[str, Any]:
    """ingest -> train (fan-out) -> select_champion -> batch_predict.

    ``data_path`` replaces ``data.path`` (when the config is read here) and is the input of the
    batch prediction (default: ``predict.input``, else ``data.path``)."""
    cfg = flow_config(config, config_path, overrides, data_path)
    outcome = _pipeline(cfg, select=True)
    if predict and outcome["decision"] is not None:
        outcome["prediction"] = _predict(cfg, None, data_path, None)
    reports.publish_summary(reports.PIPELINE_KEY, "Forecast pipeline", cfg, outcome)
    return _completed(outcome, reports.state_message(outcome))


def _completed(result: Any, message: str) -> Any:
    """The flow's return value as a ``Completed`` state whose message says what the run did (the
    flow run list shows it; a caller of the flow still gets ``result``)."""
    return Completed(message=message, data=result)
