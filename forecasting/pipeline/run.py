"""The pipeline, written once: prepare -> train every model (child runs of one pipeline run) ->
leaderboard -> refit the best on every row -> champion gate.

A pipeline run survives kill -9. Its *run key* (the resolved config and the data's hash) says
which runs are the same work: a rerun on the same key adopts the pipeline run a dead process left
``RUNNING`` (``tracking``: owner and heartbeat), reuses every child run that finished, continues
the others in their own runs from their per-epoch checkpoints, and lets the champion step find
the version it had registered. Stale pipeline runs of any other key are ended ``KILLED``.
Checkpoints live in one folder per pipeline run (``training.checkpoints``), removed when it ends.

Called directly (the tests, the benchmarks) it trains the models one after another in this
process. The Prefect flow ``forecast_pipeline`` calls the same function and supplies only how the
models are trained (``train_models``: a Prefect task per model on a thread pool or on Dask
workers), how the refit and the champion step run (``refit_step``, ``select_step``: tasks, the
latter with I/O retries) and its flow run id for the tags.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from forecasting import stages
from forecasting.config import Config
from forecasting.pipeline.board import leaderboard, log_pipeline_summary
from forecasting.pipeline.prepare import Prepared, prepare, run_key
from forecasting.pipeline.refit import refit_model
from forecasting.pipeline.select import ChampionDecision, best_result, select_champion
from forecasting.pipeline.train import ModelResult, log_inputs, train_all, train_job

# (prepared, parent run id, tags for every model run) -> every configured model's result, in
# config order. The default trains them here, one after another, through ``train_all``.
TrainModels = Callable[[Prepared, str, dict[str, str]], list[ModelResult]]
# (prepared, the selected result, every result, parent run id, tags) -> its refit on every row.
RefitStep = Callable[[Prepared, ModelResult, list[ModelResult], str, dict[str, str]], ModelResult]
# (tracker, prepared, results, parent run id, the refit or None) -> the champion decision.
SelectStep = Callable[[Any, Prepared, list[ModelResult], str, "ModelResult | None"], ChampionDecision]


@dataclass
class PipelineResult:
    prepared: Prepared
    results: list[ModelResult]
    leaderboard: pd.DataFrame
    decision: ChampionDecision | None
    parent_run_id: str | None
    refit: ModelResult | None = None  # the selected model trained on every row (what is served)
    # The Prefect flow run of the dead process whose pipeline run this one adopted, if it had one
    # (the flow marks it crashed: nothing else would end it).
    interrupted_flow_run_id: str | None = None


def pipeline_run_name(prepared: Prepared) -> str:
    """``pipeline <experiment> <data hash> <time>``: what tells one pipeline run from the next in
    MLflow's run list."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    return f"pipeline {prepared.cfg.tracking.experiment} {prepared.data.dataset_hash[:8]} {when}"


def summary_markdown(board: pd.DataFrame, decision: ChampionDecision | None, metric: str) -> str:
    """The run's description in MLflow (``mlflow.note.content``): the leaderboard and the
    decision, in markdown."""
    columns = [c for c in ("model", "status", metric, "test_mse", "test_mase", "fit_seconds") if c in board]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in board.iterrows():
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in (row[c] for c in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    head = (
        "Leaderboard, best first by "
        + f"`{metric}` (validation, scaled units; test columns for information)."
    )
    if decision is not None:
        verdict = (
            f"**{decision.model}** registered as version {decision.version}, alias `{decision.alias}` "
            f"(gate MSE {decision.candidate_score:.4g} in original units"
            + (
                f" against the incumbent's {decision.incumbent_score:.4g})"
                if decision.incumbent_score is not None
                else ")"
            )
        )
        head = verdict + "\n\n" + head
    return head + "\n\n" + "\n".join(lines) + "\n"


def pipeline_tags(prepared: Prepared, flow_run_id: str | None = None) -> dict[str, str]:
    tags = {"role": "pipeline", "dataset_hash": prepared.data.dataset_hash}
    if flow_run_id:
        tags["prefect_flow_run_id"] = flow_run_id
    return tags


def checkpoint_root(cfg: Config, tracker: Any) -> Path | None:
    """The folder under which each pipeline run checkpoints (None: ``training.checkpoints`` off)."""
    if not cfg.training.checkpoints:
        return None
    return Path(cfg.training.checkpoint_dir) if cfg.training.checkpoint_dir else tracker.checkpoint_root()


def run_pipeline(
    cfg: Config,
    tracker: Any = None,
    flow_run_id: str | None = None,
    *,
    prepared: Prepared | None = None,
    train_models: TrainModels | None = None,
    refit_step: RefitStep | None = None,
    select_step: SelectStep = select_champion,
    select: bool = True,
) -> PipelineResult:
    """Ingest, train every configured model, log it all and (``select``) refit the best on every
    row (``selection.refit``) and gate it as the champion.

    Bad input raises before any MLflow run starts, so nothing is left half-logged. Model runs left
    open by a worker that died are ended before the leaderboard is drawn.
    """
    from forecasting.tracking import Tracker

    prepared = prepared if prepared is not None else prepare(cfg)
    tracker = tracker or Tracker(cfg.tracking)
    if train_models is None:

        def train_models(p: Prepared, parent_id: str, tags: dict[str, str]) -> list[ModelResult]:
            return train_all(p, parent_id, lambda jobs: [train_job(j, tracker) for j in jobs], tags)

    if refit_step is None:

        def refit_step(
            p: Prepared, best: ModelResult, results: list[ModelResult], parent_id: str, tags: dict[str, str]
        ) -> ModelResult:
            return refit_model(p, best, results, tracker, parent_id, tags)

    model_tags = {"prefect_flow_run_id": flow_run_id} if flow_run_id else {}
    key = run_key(prepared)
    same_work = [r for r in tracker.stale_pipelines() if r.data.tags.get("run_key") == key]
    adopt = same_work[0].info.run_id if same_work else None  # the newest
    interrupted_flow = same_work[0].data.tags.get("prefect_flow_run_id") if same_work else None
    root = checkpoint_root(cfg, tracker)
    for ended in tracker.end_stale_pipelines(keep=adopt):
        if root is not None:
            shutil.rmtree(root / ended, ignore_errors=True)
    tags = {**pipeline_tags(prepared, flow_run_id), "run_key": key}
    name = pipeline_run_name(prepared)
    with tracker.run(name, tags=tags, adopt=adopt) as parent, tracker.heartbeat(parent.run_id):
        stages.pipeline_started(parent.run_id, prepared.cfg, adopted=adopt is not None)
        if adopt is None:
            parent.log_params(
                {
                    "config": prepared.cfg.model_dump(mode="json", exclude={"models"}),
                    "models": [m.run_name for m in cfg.models],
                    "defaults": prepared.choices,
                }
            )
            log_inputs(parent, prepared)
        if root is not None:
            folder = root / parent.run_id
            prepared = dataclasses.replace(prepared, checkpoints=folder, resume=adopt is not None)
        try:
            try:
                results = train_models(prepared, parent.run_id, model_tags)
            finally:
                tracker.end_stale_runs(parent.run_id)  # a crashed worker must not leave RUNNING runs
            board = leaderboard(results, cfg.tracking.selection_metric)
            log_pipeline_summary(parent, prepared, results, board)
            refit = decision = None
            if select:
                if cfg.selection.refit:
                    best = best_result(results, cfg.tracking.selection_metric)
                    refit = refit_step(prepared, best, results, parent.run_id, model_tags)
                decision = select_step(tracker, prepared, results, parent.run_id, refit)
                stages.champion_decided(decision)
            if decision is not None:
                parent.set_tags({"champion_decision": decision.alias, "registered_version": decision.version})
            metric = cfg.tracking.selection_metric
            parent.set_tags({"mlflow.note.content": summary_markdown(board, decision, metric)})
        finally:
            if prepared.checkpoints is not None:  # ended either way: nothing will resume from them
                shutil.rmtree(prepared.checkpoints, ignore_errors=True)
    return PipelineResult(prepared, results, board, decision, parent.run_id, refit, interrupted_flow)
