"""The whole search: ``tune`` opens the study and its parent MLflow run, runs the workers,
summarises, then retrains the best trial and gates it as the champion.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd

from forecasting.config import Config
from forecasting.data.ingest import IngestResult
from forecasting.interrupts import raise_if_stopped
from forecasting.pipeline import ChampionDecision, ModelResult, prepare
from forecasting.pipeline.prepare import ingest_data
from forecasting.tuning.report import summarise, trials_frame
from forecasting.tuning.space import check_search, grid_points, trial_config
from forecasting.tuning.study import display_url, open_study, storage_url
from forecasting.tuning.worker import EpochCallback, WorkerJob, WorkerReport, run_worker


@dataclass
class TuneResult:
    study_name: str
    storage: str  # without password
    parent_run_id: str
    summary: dict[str, Any]
    trials: pd.DataFrame
    seconds: float
    reports: list[WorkerReport] = field(default_factory=list)
    retrained: ModelResult | None = None
    decision: ChampionDecision | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly outcome (what the flow returns and the CLI prints)."""
        out = {
            "study_name": self.study_name,
            "storage": self.storage,
            "parent_run_id": self.parent_run_id,
            "seconds": self.seconds,
            **{k: v for k, v in self.summary.items() if k != "importance"},
            "workers": [{"worker": r.worker, "pid": r.pid, "trials": len(r.trials)} for r in self.reports],
            "errors": sorted({e for e in self.trials.get("error", []) if e})[:3],
        }
        if self.retrained is not None:
            out["retrained"] = {
                "run_id": self.retrained.run_id,
                "status": self.retrained.status,
                "metrics": {
                    k: v for k, v in self.retrained.metrics.items() if k.startswith(("val_", "test_"))
                },
                "error": self.retrained.error,
            }
        out["decision"] = dataclasses.asdict(self.decision) if self.decision is not None else None
        return out


RunWorkers = Callable[[list[WorkerJob]], list[WorkerReport]]


def n_workers(cfg: Config) -> int:
    orch = cfg.orchestration
    return cfg.search.n_workers or orch.dask_local_workers or orch.max_workers or 1


def tune(
    cfg: Config,
    *,
    data: IngestResult | None = None,
    tracker: Any = None,
    run_workers: RunWorkers | None = None,
    callbacks: Sequence[EpochCallback] = (),
    retrain: bool | None = None,
    flow_run_id: str | None = None,
) -> TuneResult:
    """Run (or resume) the search of ``cfg.search``, summarise it, retrain and gate the best.

    ``run_workers`` runs the worker jobs (the Prefect flow passes one that fans them out over a
    thread pool or Dask); by default one worker runs here, in this process. ``callbacks`` are
    extra epoch callbacks for the in-process worker. Bad config raises before any run starts.
    """
    from forecasting.tracking import Tracker

    check_search(cfg)
    start = time.perf_counter()
    data = data if data is not None else ingest_data(cfg)
    study = open_study(cfg)
    url = storage_url(cfg)
    tracker = tracker or Tracker(cfg.tracking)
    deadline = time.time() + cfg.search.timeout_s if cfg.search.timeout_s else None
    tags = {
        "role": "tuning",
        "study_name": study.study_name,
        "study_storage": display_url(url),
        "sampler": cfg.search.sampler,
        "pruner": cfg.search.pruner,
        "dataset_hash": data.dataset_hash,
        **({"prefect_flow_run_id": flow_run_id} if flow_run_id else {}),
    }
    with _parent_run(tracker, study, cfg, tags) as parent:
        jobs = [
            WorkerJob(cfg, data, study.study_name, url, parent.run_id, worker=i, deadline=deadline)
            for i in range(n_workers(cfg) if run_workers else 1)
        ]
        reports = run_workers(jobs) if run_workers else [run_worker(jobs[0], callbacks)]
        summary = summarise(study, parent, cfg)
        result = TuneResult(
            study.study_name, display_url(url), parent.run_id, summary, trials_frame(study), 0.0, reports
        )
        raise_if_stopped()  # workers drained on a stop request: summarised, but retrain nothing
        if (cfg.search.retrain_best if retrain is None else retrain) and summary["best_trial"] is not None:
            result.retrained, result.decision = retrain_best(cfg, data, study, tracker, parent)
    result.seconds = time.perf_counter() - start
    return result


def retrain_best(
    cfg: Config, data: IngestResult, study: optuna.Study, tracker: Any, parent: Any
) -> tuple[ModelResult, ChampionDecision]:
    """The best trial's config through the normal path: ``train_model`` then ``select_champion``."""
    from forecasting.pipeline import select_champion, train_model

    best = study.best_trial
    trial_cfg, spec = trial_config(cfg, best.params)
    spec = spec.model_copy(update={"label": f"tuned-{spec.name}"})
    prepared = prepare(trial_cfg, data)
    tags = {"study_name": study.study_name, "best_trial": str(best.number)}
    result = train_model(prepared, spec, tracker, parent.run_id, tags=tags)
    decision = select_champion(tracker, prepared, [result], parent.run_id)
    parent.set_tags(
        {
            "retrained_run_id": result.run_id,
            "champion_decision": decision.alias,
            "registered_version": decision.version,
        }
    )
    return result, decision


@contextmanager
def _parent_run(tracker: Any, study: optuna.Study, cfg: Config, tags: dict[str, Any]) -> Iterator[Any]:
    """The study's one parent run: created with the study, reopened when the study resumes.

    Ends like ``Tracker.run``: FINISHED, FAILED on an error, KILLED on an interrupt.
    """
    run = _reopen(tracker, study.user_attrs.get("mlflow_parent_run_id"))
    if run is None:
        run = tracker.start(f"tune {study.study_name}", tags=tags)
        study.set_user_attr("mlflow_parent_run_id", run.run_id)
        run.log_params(
            {
                "search": cfg.search.model_dump(mode="json"),
                "config": cfg.model_dump(mode="json", exclude={"models", "search"}),
            }
        )
        if cfg.search.sampler == "grid":
            run.log_dict(grid_points(cfg.search), "grid.json")
    else:
        run.set_tags({k: v for k, v in tags.items() if k != "role"})
    try:
        yield run
    except Exception as err:
        tracker.finish(run, "FAILED", err)
        raise
    except BaseException as err:
        tracker.finish(run, "KILLED", err)
        raise
    else:
        tracker.finish(run)


def _reopen(tracker: Any, run_id: str | None) -> Any:
    """The parent run of an earlier session, RUNNING again; None if this store does not have it.

    (The only MLflow calls outside ``forecasting.tracking``: ``Tracker`` has no way to reopen a run.)
    """
    if not run_id:
        return None
    try:
        info = tracker.client.get_run(run_id).info
    except Exception:  # not in this tracking store (another URI, or deleted for good)
        return None
    if info.experiment_id != tracker.experiment_id or info.lifecycle_stage != "active":
        return None
    tracker.client.update_run(run_id, status="RUNNING")
    with suppress(Exception):  # the interruption that ended the last session, if it was tagged
        tracker.client.delete_tag(run_id, "error")
    return tracker.resume(run_id)
