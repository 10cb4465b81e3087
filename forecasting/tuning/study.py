"""The study: its name, its storage, sampler and pruner; opened by the coordinator (``open_study``,
which queues the budget) and by each worker (``open_queue``).

Storage: a database URL (``search.storage``); by default SQLite next to the MLflow store under
``mlruns/``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from forecasting.config import Config, SearchConfig
from forecasting.errors import ConfigError, TrackingError
from forecasting.tuning.trial_queue import TrialQueue, queue_budget, requeue_stale


def fingerprint(cfg: Config) -> str:
    """What makes trials comparable: the space, the sampler, the data and the training recipe."""
    payload = {
        "search": cfg.search.model_dump(mode="json", include={"sampler", "space", "families", "scale_lr"}),
        "data": cfg.data.model_dump(mode="json"),
        "split": cfg.split.model_dump(mode="json"),
        "window": cfg.window.model_dump(mode="json"),
        "training": cfg.training.model_dump(
            mode="json",
            exclude={"progress", "num_threads", "device", "checkpoint_dir", "resume", "checkpoints"},
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
                heartbeat_stale_trial_callback=functools.partial(requeue_stale, tracking=tracking),
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
        queue_budget(study, cfg)
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
    queue_budget(study, cfg)
    study.set_user_attr("ready", True)
    return study


def open_queue(cfg: Config, name: str, url: str, seed: int) -> TrialQueue:
    """A worker's handle on an existing study: the study and the storage it was opened with."""
    storage = make_storage(url, cfg.search.heartbeat_s, cfg.tracking)
    study = optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(cfg.search, seed),
        pruner=make_pruner(cfg.search, cfg.training.epochs),
    )
    return TrialQueue.of(study, storage)
