"""Hyper-parameter and architecture search with Optuna, on top of the normal training path.

The config's ``search`` section declares, per model family, the dimensions to search (depth,
width, activation, dropout, other settings) and the training/window dimensions (learning rate,
weight decay, batch size with the learning rate scaled linearly to it, warm-up length, lookback);
the family itself is a categorical dimension when several are declared. Samplers: ``grid`` (every
declared point exactly once), ``random``, ``tpe``. Pruners (``hyperband``, ``successive_halving``)
are fed the per-epoch validation loss through the training loop's epoch callbacks.

How a search runs::

    tune(cfg)                                   the coordinator
      open_study        create or resume the study in its storage; queue the trial budget
      parent run        one MLflow run per study (reopened when the study resumes)
        run_worker x N  claim a queued trial, train it (nested MLflow run), tell the study
      summarise         best parameters, optimisation history, parameter importance
      retrain_best      the best trial's config through train_model + select_champion

The budget (``n_trials``) is queued in the study as that many WAITING trials ("slots"; for the
grid, one per grid point). A worker claims a slot by moving it to RUNNING, which the storage does
atomically, so workers sharing one study (threads, processes, Dask workers, machines) finish the
budget between them without running a trial twice or overshooting it. A trial interrupted by
Ctrl-C/SIGTERM, or whose worker died (no heartbeat), is failed and its slot queued again with the
same parameters: a resumed study runs only what is left.

Storage: a database URL (``search.storage``); by default SQLite next to the MLflow store under
``mlruns/``. Nothing here imports prefect; MLflow goes through ``forecasting.tracking``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from forecasting.config import Config, ModelSpec, Range, SearchConfig, TrainingConfig, WindowConfig
from forecasting.data.ingest import IngestResult, ingest
from forecasting.errors import ConfigError, ForecastingError, TrackingError
from forecasting.interrupts import STOP, raise_if_stopped
from forecasting.pipeline import ChampionDecision, ModelResult, Prepared, fit_and_score, prepare

SLOT = "slot"  # user attr of a trial: which place of the budget it fills
TRAINING_DIMS = ("lr", "weight_decay", "batch_size", "warmup_fraction")
ARCH_DIMS = ("layers", "hidden", "activation", "dropout")
INTEGER_DIMS = ("batch_size", "lookback", "layers", "hidden")
EpochCallback = Callable[[int, dict[str, float]], None]


# --- the search space ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Dimension:
    """One searched value: its name in the study and the setting it sets."""

    param: str  # name in the study: "lr" (shared) or "lstm.hidden" (one family's)
    key: str  # the setting: "lr", "hidden"
    where: Literal["training", "window", "model"]
    values: list[Any] | Range

    def grid(self) -> list[Any]:
        return list(self.values) if isinstance(self.values, list) else self.values.values()

    def suggest(self, trial: optuna.Trial) -> Any:
        v = self.values
        if isinstance(v, list):
            return trial.suggest_categorical(self.param, v)
        if self.key in INTEGER_DIMS or v.is_int:
            return trial.suggest_int(self.param, int(v.low), int(v.high), step=int(v.step or 1), log=v.log)
        return trial.suggest_float(self.param, v.low, v.high, step=v.step, log=v.log)


def _uses_training_loop(family: str) -> bool:
    from forecasting.models.registry import get_model_class

    return get_model_class(family).uses_training_loop


def family_dimensions(search: SearchConfig, family: str) -> list[Dimension]:
    """The dimensions of one family: training and window ones (its own or the shared ones), then
    its architecture. Families without the training loop (naive, ar) skip the training ones."""
    own, shared = search.families[family], search.space.dimensions()
    mine = own.dimensions()
    keys = (*TRAINING_DIMS, "lookback") if _uses_training_loop(family) else ("lookback",)
    dims = []
    for key in keys:
        where = "window" if key == "lookback" else "training"
        if key in mine:
            dims.append(Dimension(f"{family}.{key}", key, where, mine[key]))
        elif key in shared:
            dims.append(Dimension(key, key, where, shared[key]))
    arch = {k: mine[k] for k in ARCH_DIMS if k in mine} | dict(own.settings)
    dims += [Dimension(f"{family}.{key}", key, "model", values) for key, values in arch.items()]
    return dims


def grid_points(search: SearchConfig) -> list[dict[str, Any]]:
    """Every point of the declared grid, family by family in declaration order."""
    points = []
    for family in search.families:
        dims = family_dimensions(search, family)
        for combo in itertools.product(*(d.grid() for d in dims)):
            point = {"family": family} if len(search.families) > 1 else {}
            point.update({d.param: v for d, v in zip(dims, combo, strict=True)})
            points.append(point)
    return points


def suggest_params(trial: optuna.Trial, search: SearchConfig) -> dict[str, Any]:
    """Ask the trial for every dimension of its family (the family first, when there are several)."""
    families = list(search.families)
    family = trial.suggest_categorical("family", families) if len(families) > 1 else families[0]
    params = {"family": family} if len(families) > 1 else {}
    for dim in family_dimensions(search, family):
        params[dim.param] = dim.suggest(trial)
    return params


def trial_config(cfg: Config, params: dict[str, Any], label: str | None = None) -> tuple[Config, ModelSpec]:
    """The config and model of one point of the space: the base config with the point applied.

    Checkpoints are off (every trial would write the family's one checkpoint file).
    """
    search = cfg.search
    family = params.get("family", next(iter(search.families)))
    dims = family_dimensions(search, family)
    picked = {d.where: {} for d in dims}
    for d in dims:
        if d.param in params:
            picked[d.where][d.key] = params[d.param]
    training = TrainingConfig.model_validate(
        {
            **cfg.training.model_dump(),
            **picked.get("training", {}),
            "scale_lr": search.scale_lr,
            "checkpoint_dir": None,
            "resume": False,
        }
    )
    window = WindowConfig.model_validate({**cfg.window.model_dump(), **picked.get("window", {})})
    spec = ModelSpec(
        name=family, label=label, params={**search.families[family].params, **picked.get("model", {})}
    )
    return cfg.model_copy(update={"training": training, "window": window, "models": [spec]}), spec


def check_search(cfg: Config) -> None:
    """Reject a search that cannot run, before any study or run is created (``ConfigError``)."""
    from forecasting.models.registry import get_model_class, parse_settings

    search = cfg.search
    if not search.families:
        raise ConfigError("search.families is empty: declare at least one model family to search")
    if search.pruner != "none" and search.min_epochs > cfg.training.epochs:
        raise ConfigError(
            f"search.min_epochs ({search.min_epochs}) exceeds training.epochs ({cfg.training.epochs})"
        )
    for family, space in search.families.items():
        where = f"search.families.{family}"
        if family == "ensemble":
            raise ConfigError(
                f"{where}: an ensemble is weighed on a run's fitted models, not searched; search its "
                "members' families and add `- name: ensemble` to the models of the run that uses them"
            )
        try:
            cls = get_model_class(family)
        except ForecastingError as err:
            raise ConfigError(f"{where}: {err}") from None
        parse_settings(cls, dict(space.params), where)
        for dim in family_dimensions(search, family):
            if dim.where != "model":
                continue
            ends = dim.values if isinstance(dim.values, list) else [dim.values.low, dim.values.high]
            for value in ends:
                parse_settings(cls, {**space.params, dim.key: value}, where)


# --- study, storage, sampler, pruner -------------------------------------------------------------
def fingerprint(cfg: Config) -> str:
    """What makes trials comparable: the space, the sampler, the data and the training recipe."""
    payload = {
        "search": cfg.search.model_dump(mode="json", include={"sampler", "space", "families", "scale_lr"}),
        "data": cfg.data.model_dump(mode="json"),
        "split": cfg.split.model_dump(mode="json"),
        "window": cfg.window.model_dump(mode="json"),
        "training": cfg.training.model_dump(
            mode="json", exclude={"progress", "num_threads", "device", "checkpoint_dir", "resume"}
        ),
        "metric": cfg.tracking.selection_metric,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


def study_name(cfg: Config) -> str:
    return cfg.search.study_name or f"{cfg.tracking.experiment}-{fingerprint(cfg)}"


def storage_url(cfg: Config) -> str:
    """``search.storage``, else SQLite beside the MLflow store (its folder when that is SQLite)."""
    if cfg.search.storage:
        return cfg.search.storage
    from forecasting.tracking import resolve_tracking_uri

    uri, _ = resolve_tracking_uri(cfg.tracking)  # the embedded default creates <project>/mlruns
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
    else:
        from forecasting.tracking import PROJECT_ROOT

        folder = PROJECT_ROOT / "mlruns"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def display_url(url: str) -> str:
    """A storage URL without its password (for tags and messages)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def make_storage(url: str, heartbeat_s: int, tracking: Any = None) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats (a dead worker's trial is re-queued).

    SQLite: every transaction starts with ``BEGIN IMMEDIATE`` and waits for the lock. The Python
    driver otherwise opens the transaction only at the first write, after the read that decided
    it, so two processes could both claim the same queued trial.
    """
    from sqlalchemy import event
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    sqlite = url.startswith("sqlite")
    engine_kwargs = (
        {"connect_args": {"timeout": 120, "isolation_level": None}} if sqlite else {"pool_pre_ping": True}
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_s,
                grace_period=4 * heartbeat_s,
                heartbeat_stale_trial_callback=functools.partial(_requeue_stale, tracking=tracking),
            )
    except (ArgumentError, ImportError, ValueError) as err:
        raise ConfigError(
            f"search.storage {display_url(url)!r} is not a usable database URL: {err}"
        ) from None
    except SQLAlchemyError as err:
        raise TrackingError(f"study storage {display_url(url)!r} refused the connection: {err}") from None
    if sqlite:
        event.listen(storage.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    return storage


def make_sampler(search: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    """TPE or random. The grid needs no sampler: each of its trials is a queued grid point."""
    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=search.startup_trials)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(search: SearchConfig, epochs: int) -> optuna.pruners.BasePruner:
    """Pruning on the per-epoch validation loss; the resource is the epoch."""
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=search.min_epochs, max_resource=epochs, reduction_factor=search.reduction_factor
        )
    if search.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=search.min_epochs, reduction_factor=search.reduction_factor
        )
    return optuna.pruners.NopPruner()


def budget(cfg: Config) -> int | None:
    """How many trials the study should finish; None: until the wall time runs out."""
    search = cfg.search
    if search.sampler == "grid":
        n = len(grid_points(search))
        return min(n, search.n_trials) if search.n_trials else n
    return search.n_trials


def _load(cfg: Config, name: str, url: str, seed: int) -> optuna.Study:
    storage = make_storage(url, cfg.search.heartbeat_s, cfg.tracking)
    return optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(cfg.search, seed),
        pruner=make_pruner(cfg.search, cfg.training.epochs),
    )


def open_study(cfg: Config) -> optuna.Study:
    """Create the study, or resume it; queue the slots of the budget that it does not have yet.

    Of several coordinators starting the same study at once, the one that creates it queues the
    budget while the others wait for it. A study of the same name but for another search space,
    data or training recipe is a ``ConfigError``.
    """
    name, url, fp = study_name(cfg), storage_url(cfg), fingerprint(cfg)
    storage = make_storage(url, cfg.search.heartbeat_s, cfg.tracking)
    sampler = make_sampler(cfg.search, cfg.search.seed)
    pruner = make_pruner(cfg.search, cfg.training.epochs)
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction="minimize", sampler=sampler, pruner=pruner
        )
        study.set_user_attr("fingerprint", fp)
        study.set_user_attr("search", cfg.search.model_dump(mode="json"))
        _queue_budget(study, cfg)
        study.set_user_attr("ready", True)
        return study
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    # The coordinator that just created the study may still be queueing its budget. One that died
    # before the study was ready leaves it to be finished here (slots already queued are kept).
    deadline = time.monotonic() + 15
    while "ready" not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.5)
    if study.user_attrs.get("fingerprint") != fp:
        raise ConfigError(
            f"study {name!r} in {display_url(url)} was created for another search space, data or "
            "training recipe; set search.study_name to a new name (or leave it unset)"
        )
    _queue_budget(study, cfg)
    study.set_user_attr("ready", True)
    return study


def _queue_budget(study: optuna.Study, cfg: Config) -> None:
    n = budget(cfg)
    if n is None:
        return
    taken = {t.user_attrs.get(SLOT) for t in study.get_trials(deepcopy=False)}
    points = grid_points(cfg.search) if cfg.search.sampler == "grid" else None
    for slot in range(n):
        if slot not in taken:
            study.enqueue_trial(points[slot] if points else {}, user_attrs={SLOT: slot})


def _claim(study: optuna.Study, limit: int | None) -> optuna.Trial | None:
    """Move one queued trial (slot below ``limit``) to RUNNING; None when none is left.

    The storage changes WAITING to RUNNING in one transaction and reports whether it did, so of
    two workers claiming the same trial only one gets it. (``Study.ask`` would create a new,
    unbudgeted trial when another worker took the last queued one meanwhile.)
    """
    storage, study_id = study._storage, study._study_id
    waiting = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))
    for frozen in sorted(waiting, key=lambda t: t.number):
        slot = frozen.user_attrs.get(SLOT)
        if limit is not None and (slot is None or slot >= limit):
            continue
        try:
            if storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, frozen._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def _new_trial(study: optuna.Study) -> optuna.Trial:
    """An unbudgeted trial (wall-time budget only); a re-queued one goes first (see ``_claim``)."""
    retried = _claim(study, None)
    return retried or optuna.Trial(study, study._storage.create_new_trial(study._study_id))


def _requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a trial that could not finish again, same parameters and slot."""
    if not trial.params:
        return
    attrs = {k: v for k, v in trial.user_attrs.items() if k == SLOT}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={**attrs, "retry_of": trial.number},
        )
    )


def _requeue_stale(study: optuna.Study, trial: FrozenTrial, tracking: Any = None) -> None:
    """A trial whose worker stopped sending heartbeats: end its MLflow run KILLED, queue it again."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id and tracking is not None:
        from forecasting.tracking import Tracker

        tracker = Tracker(tracking)
        tracker.finish(tracker.resume(run_id), "KILLED", RuntimeError("its worker stopped (no heartbeat)"))
    _requeue(study, trial)


def _fail_stale(study: optuna.Study) -> None:
    """Fail (and re-queue, see ``_requeue_stale``) running trials whose heartbeats stopped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@contextmanager
def _heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat while it runs (a worker that dies stops them)."""
    storage = study._storage
    interval = storage.get_heartbeat_interval()
    if interval is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            with suppress(Exception):  # a busy database: the next beat will do
                storage.record_heartbeat(trial._trial_id)

    storage.record_heartbeat(trial._trial_id)
    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# --- one trial -------------------------------------------------------------------------------------
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
    """What one worker keeps between trials: the study, the tracker, the data per lookback."""

    cfg: Config
    data: IngestResult
    study: optuna.Study
    tracker: Any
    parent_run_id: str | None
    index: int
    callbacks: Sequence[EpochCallback] = ()
    prepared: dict[int, Prepared] = field(default_factory=dict)

    def prepared_for(self, trial_cfg: Config) -> Prepared:
        lookback = trial_cfg.window.lookback
        if lookback not in self.prepared:
            self.prepared[lookback] = prepare(trial_cfg, self.data)
        return dataclasses.replace(self.prepared[lookback], cfg=trial_cfg)

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
            with _heartbeat(self.study, trial):
                state, value = self._train(trial, epochs)
        except Exception as err:
            state, value = TrialState.FAIL, None
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:2000])
        except BaseException:
            trial.set_user_attr("epochs", epochs[0])
            _requeue(self.study, self.study.tell(trial, state=TrialState.FAIL))
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


# --- a worker ------------------------------------------------------------------------------------
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
    """Claim and run trials of the study until its budget (or the wall time) is used up.

    Workers of one study may run anywhere that reaches its storage and the tracking store.
    """
    from forecasting.tracking import Tracker

    start = time.perf_counter()
    cfg = job.cfg
    study = _load(cfg, job.study_name, job.storage, cfg.search.seed)
    # Each worker and each resume samples its own stream (one seed everywhere: the same proposals).
    seed = cfg.search.seed + 7919 * job.worker + len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(cfg.search, seed)
    # Who works on the study: one entry per process (a study may be shared by many machines).
    study.set_user_attr(
        f"worker.{socket.gethostname()}.{os.getpid()}", {"index": job.worker, "started": time.time()}
    )
    _fail_stale(study)
    worker = _Worker(cfg, job.data, study, Tracker(cfg.tracking), job.parent_run_id, job.worker, callbacks)
    limit = budget(cfg)
    report = WorkerReport(job.worker, os.getpid())
    while not STOP.is_set():
        if job.deadline is not None and time.time() >= job.deadline:
            break
        trial = _claim(study, limit) if limit is not None else _new_trial(study)
        if trial is None:
            # Nothing queued. A trial still running elsewhere may yet come back to the queue (its
            # worker died): wait while any runs, re-queueing those whose heartbeats stopped.
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                break
            STOP.wait(min(2.0, cfg.search.heartbeat_s))
            _fail_stale(study)
            continue
        report.trials[trial.number] = worker.run_trial(trial).name
    report.seconds = time.perf_counter() - start
    return report


# --- summary on the parent run ---------------------------------------------------------------------
def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, epochs trained, worker, MLflow run, parameters."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value if t.state == TrialState.COMPLETE else np.nan,
                "last_val_loss": t.intermediate_values[t.last_step] if t.last_step is not None else np.nan,
                "epochs": int(t.user_attrs.get("epochs", 0)),
                "worker": t.user_attrs.get("worker"),
                "retry_of": t.user_attrs.get("retry_of"),
                "seconds": t.duration.total_seconds() if t.duration else np.nan,
                "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
                **{f"param.{k}": v for k, v in t.params.items()},
                "error": t.user_attrs.get("error", ""),
            }
        )
    return pd.DataFrame(rows)


def param_importances(study: optuna.Study, search: SearchConfig) -> pd.DataFrame:
    """Importance of each parameter for the objective (Optuna's default evaluator).

    Scope ``all`` covers the parameters every completed trial has (the family and the shared
    dimensions); with several families, each family's own parameters get a scope of their own.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return pd.DataFrame(columns=["scope", "param", "importance", "trials"])
    scopes = {"all": sorted(set.intersection(*(set(t.params) for t in complete)))}
    if len(search.families) > 1:
        for family in search.families:
            scopes[family] = [d.param for d in family_dimensions(search, family)]
    rows = []
    for scope, params in scopes.items():
        members = [t for t in complete if set(params) <= set(t.params)]
        varied = [p for p in params if len({repr(t.params[p]) for t in members}) > 1]
        if len(members) < 2 or not varied:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = optuna.importance.get_param_importances(study, params=varied)
        except (RuntimeError, ValueError, ZeroDivisionError):
            continue  # too few distinct trials for this scope
        rows += [
            {"scope": scope, "param": p, "importance": v, "trials": len(members)} for p, v in found.items()
        ]
    return pd.DataFrame(rows, columns=["scope", "param", "importance", "trials"])


def history_figure(study: optuna.Study, metric: str) -> Any:
    """Objective per trial (pruned ones at their last validation loss) and the best so far."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), layout="tight")
    ax = fig.subplots()
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    done = [(t.number, t.value) for t in trials if t.state == TrialState.COMPLETE]
    pruned = [
        (t.number, t.intermediate_values[t.last_step])
        for t in trials
        if t.state == TrialState.PRUNED and t.last_step is not None
    ]
    if done:
        x, y = zip(*done, strict=True)
        ax.scatter(x, y, s=18, label="complete", color="tab:blue", zorder=3)
        best = np.minimum.accumulate(np.asarray(y))
        ax.step(x, best, where="post", color="tab:red", label="best so far")
    if pruned:
        x, y = zip(*pruned, strict=True)
        ax.scatter(x, y, s=18, marker="x", color="tab:gray", label="pruned (last val_loss)")
    values = [v for _, v in done + pruned if v is not None and math.isfinite(v) and v > 0]
    if values and max(values) / min(values) > 20:
        ax.set_yscale("log")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"optimisation history of {study.study_name}")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def summarise(study: optuna.Study, parent: Any, cfg: Config) -> dict[str, Any]:
    """Best parameters, counts, the trials table, the history plot and parameter importance.

    The parent run is reopened when a study resumes, and MLflow params cannot change, so the best
    parameters are tags (``best.<name>``) and ``best_params.json``.
    """
    frame = trials_frame(study)
    counts = {
        s: int((frame["state"] == s).sum()) if len(frame) else 0 for s in ("COMPLETE", "PRUNED", "FAIL")
    }
    total_epochs = int(frame["epochs"].sum()) if len(frame) else 0
    summary: dict[str, Any] = {
        "n_complete": counts["COMPLETE"],
        "n_pruned": counts["PRUNED"],
        "n_failed": counts["FAIL"],
        "total_epochs": total_epochs,
        "best_trial": None,
        "best_value": None,
        "best_params": {},
    }
    if counts["COMPLETE"]:
        best = study.best_trial
        summary.update(best_trial=best.number, best_value=best.value, best_params=dict(best.params))
        parent.set_tags({"best_trial": best.number, **{f"best.{k}": v for k, v in best.params.items()}})
        parent.log_dict(
            {"trial": best.number, "value": best.value, "params": best.params}, "best_params.json"
        )
    step = sum(counts.values())
    parent.log_metrics(
        {k: v for k, v in summary.items() if k.startswith("n_") or k in ("total_epochs", "best_value")},
        step=step,
    )
    if len(frame):
        parent.log_frame(frame, "trials.csv")
        parent.log_figure(
            history_figure(study, cfg.tracking.selection_metric), "plots/optimization_history.png"
        )
    importance = param_importances(study, cfg.search)
    parent.log_frame(importance, "param_importance.csv")
    parent.log_text(
        importance.to_string(index=False) if len(importance) else "(too few trials)", "param_importance.txt"
    )
    summary["importance"] = importance.to_dict(orient="records")
    return summary


# --- the whole search --------------------------------------------------------------------------------
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
    data = data if data is not None else ingest(cfg.data)
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
