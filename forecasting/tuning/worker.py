"""A worker: claims trials of the study until its budget is used up and trains each one in a
nested MLflow run, reporting per-epoch validation losses to the pruner.

Workers of one study may run anywhere that reaches its storage and the tracking store.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from forecasting.config import Config
from forecasting.data.ingest import IngestResult
from forecasting.errors import ForecastingError
from forecasting.interrupts import STOP, raise_if_stopped
from forecasting.pipeline import Prepared, fit_and_score, prepare
from forecasting.tuning.space import suggest_params, trial_config
from forecasting.tuning.study import make_sampler, open_queue
from forecasting.tuning.trial_queue import TrialQueue, budget, requeue

EpochCallback = Callable[[int, dict[str, float]], None]


def _pruning_callback(trial: optuna.Trial, epochs: list[int]) -> EpochCallback:
    """Report each epoch's validation loss; raise ``TrialPruned`` when the pruner says so."""

    def callback(epoch: int, metrics: dict[str, float]) -> None:
        epochs[0] = epoch
        value = metrics.get("val_loss")
        if value is None:
            return
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} (val_loss {value:.4g})")

    return callback


@dataclass
class _Worker:
    """What one worker keeps between trials: the study's queue, the tracker, the data per lookback."""

    cfg: Config
    data: IngestResult
    queue: TrialQueue
    tracker: Any
    parent_run_id: str | None
    index: int
    callbacks: Sequence[EpochCallback] = ()
    prepared: dict[int, Prepared] = field(default_factory=dict)

    @property
    def study(self) -> optuna.Study:
        return self.queue.study

    def prepared_for(self, trial_cfg: Config) -> Prepared:
        lookback = trial_cfg.window.lookback
        if lookback not in self.prepared:
            self.prepared[lookback] = prepare(trial_cfg, self.data)
        return self.prepared[lookback].with_config(trial_cfg)

    def completed_twin(self, params: dict[str, Any]) -> FrozenTrial | None:
        """A completed trial with the same parameters: its result is reused, not trained again."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.params == params:
                return t
        return None

    def run_trial(self, trial: optuna.Trial) -> TrialState:
        """Train one trial in a nested MLflow run and tell the study how it ended.

        Pruned: the run ends FINISHED with ``trial_state=pruned``. Failed (any error): FAILED, and
        the search goes on. Interrupted (Ctrl-C, SIGTERM): KILLED, the trial is queued again and
        the interrupt goes on up.
        """
        trial.set_user_attr("worker", self.index)
        trial.set_user_attr("pid", os.getpid())
        epochs = [0]  # the last epoch the training loop reported
        try:
            with self.queue.heartbeat(trial):
                state, value = self._train(trial, epochs)
        except Exception as err:
            state, value = TrialState.FAIL, None
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:2000])
        except BaseException:
            trial.set_user_attr("epochs", epochs[0])
            requeue(self.study, self.study.tell(trial, state=TrialState.FAIL))
            raise
        trial.set_user_attr("epochs", epochs[0])
        if state == TrialState.COMPLETE:
            self.study.tell(trial, value)
            if self.parent_run_id:
                self.tracker.resume(self.parent_run_id).log_metrics({"trial_value": value}, step=trial.number)
        else:
            self.study.tell(trial, state=state)
        return state

    def _train(self, trial: optuna.Trial, epochs: list[int]) -> tuple[TrialState, float | None]:
        """Sample the trial's point, then fit and score it inside its own MLflow run.

        A point that already completed is not trained again: the trial takes its value (tag
        ``duplicate_of``; samplers re-propose points of a small discrete space).
        """
        cfg, metric = self.cfg, self.cfg.tracking.selection_metric
        params = suggest_params(trial, cfg.search)
        trial_cfg, spec = trial_config(cfg, params, label=f"trial-{trial.number}")
        prepared = self.prepared_for(trial_cfg)
        tags = {
            "role": "trial",
            "study_name": self.study.study_name,
            "trial_number": trial.number,
            "model_family": spec.name,
            "dataset_hash": self.data.dataset_hash,
            "worker": self.index,
            "worker_pid": os.getpid(),
        }
        with self.tracker.run(spec.run_name, parent_id=self.parent_run_id, tags=tags) as run:
            trial.set_user_attr("mlflow_run_id", run.run_id)
            run.log_params(
                {
                    "trial": params,
                    "model": {"name": spec.name, **spec.params},
                    "training": trial_cfg.training.model_dump(mode="json"),
                    "window": trial_cfg.window.model_dump(mode="json"),
                }
            )
            callbacks = [
                run.epoch_callback,
                _pruning_callback(trial, epochs),
                raise_if_stopped,
                *self.callbacks,
            ]
            twin = self.completed_twin(params)
            try:
                if twin is not None:
                    run.set_tags({"duplicate_of": twin.number})
                    metrics = {metric: twin.value}
                else:
                    _, metrics, _ = fit_and_score(prepared, spec, callbacks=callbacks)
                if not math.isfinite(metrics.get(metric, math.nan)):
                    raise ForecastingError(f"{metric} is {metrics.get(metric)}: nothing to compare")
            except optuna.TrialPruned as pruned:  # the run still ends FINISHED: pruning is no failure
                run.set_tags({"trial_state": "pruned", "pruned": str(pruned)})
                run.log_metrics({"epochs": epochs[0]})
                return TrialState.PRUNED, None
            except Exception:
                run.set_tags({"trial_state": "failed"})
                raise
            except BaseException:
                run.set_tags({"trial_state": "interrupted"})
                raise
            run.set_tags({"trial_state": "complete"})
            run.log_metrics({**metrics, "epochs": epochs[0]})
            return TrialState.COMPLETE, metrics[metric]


@dataclass
class WorkerJob:
    """Everything a worker needs (picklable: Dask ships it to another process or machine)."""

    cfg: Config
    data: IngestResult
    study_name: str
    storage: str
    parent_run_id: str | None
    worker: int = 0
    deadline: float | None = None  # time.time() after which no trial starts


@dataclass
class WorkerReport:
    worker: int
    pid: int  # the process that ran it
    trials: dict[int, str] = field(default_factory=dict)  # number -> COMPLETE | PRUNED | FAIL
    seconds: float = 0.0


def run_worker(job: WorkerJob, callbacks: Sequence[EpochCallback] = ()) -> WorkerReport:
    """Claim and run trials of the study until its budget (or the wall time) is used up."""
    from forecasting.tracking import Tracker

    start = time.perf_counter()
    cfg = job.cfg
    queue = open_queue(cfg, job.study_name, job.storage, cfg.search.seed)
    study = queue.study
    # Each worker and each resume samples its own stream (one seed everywhere: the same proposals).
    seed = cfg.search.seed + 7919 * job.worker + len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(cfg.search, seed)
    # Who works on the study: one entry per process (a study may be shared by many machines).
    study.set_user_attr(
        f"worker.{socket.gethostname()}.{os.getpid()}", {"index": job.worker, "started": time.time()}
    )
    queue.fail_stale()
    worker = _Worker(cfg, job.data, queue, Tracker(cfg.tracking), job.parent_run_id, job.worker, callbacks)
    limit = budget(cfg)
    report = WorkerReport(job.worker, os.getpid())
    while not STOP.is_set():
        if job.deadline is not None and time.time() >= job.deadline:
            break
        trial = queue.next_trial(limit)
        if trial is None:
            # Nothing queued. A trial still running elsewhere may yet come back to the queue (its
            # worker died): wait while any runs, re-queueing those whose heartbeats stopped.
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                break
            STOP.wait(min(2.0, cfg.search.heartbeat_s))
            queue.fail_stale()
            continue
        report.trials[trial.number] = worker.run_trial(trial).name
    report.seconds = time.perf_counter() - start
    return report
