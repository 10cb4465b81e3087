"""The trial queue: the budget as queued slots, claiming them, heartbeats, queueing a trial again.

The budget (``n_trials``) is queued in the study as that many WAITING trials ("slots"; for the
grid, one per grid point). A worker claims a slot by moving it to RUNNING, which the storage does
atomically, so workers sharing one study (threads, processes, Dask workers, machines) finish the
budget between them without running a trial twice or overshooting it. A trial interrupted by
Ctrl-C/SIGTERM, or whose worker died (no heartbeat), is failed and its slot queued again with the
same parameters: a resumed study runs only what is left.

Claims and heartbeats go through the storage this process opened (``study.make_storage``), by its
public methods; the ``Trial`` of a claimed trial comes from ``optuna_adapter``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from forecasting.config import Config
from forecasting.periodic import every
from forecasting.tuning.optuna_adapter import bind_trial
from forecasting.tuning.space import grid_points

SLOT = "slot"  # user attr of a trial: which place of the budget it fills


def budget(cfg: Config) -> int | None:
    """How many trials the study should finish; None: until the wall time runs out."""
    search = cfg.search
    if search.sampler == "grid":
        n = len(grid_points(search))
        return min(n, search.n_trials) if search.n_trials else n
    return search.n_trials


def queue_budget(study: optuna.Study, cfg: Config) -> None:
    """Queue the slots of the budget that the study does not have yet (grid: each its point)."""
    n = budget(cfg)
    if n is None:
        return
    taken = {t.user_attrs.get(SLOT) for t in study.get_trials(deepcopy=False)}
    points = grid_points(cfg.search) if cfg.search.sampler == "grid" else None
    for slot in range(n):
        if slot not in taken:
            study.enqueue_trial(points[slot] if points else {}, user_attrs={SLOT: slot})


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
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


def requeue_stale(study: optuna.Study, trial: FrozenTrial, tracking: Any = None) -> None:
    """A trial whose worker stopped sending heartbeats: end its MLflow run KILLED, queue it again."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id and tracking is not None:
        from forecasting.tracking import Tracker

        tracker = Tracker(tracking)
        tracker.finish(tracker.resume(run_id), "KILLED", RuntimeError("its worker stopped (no heartbeat)"))
    requeue(study, trial)


@dataclass(frozen=True)
class TrialQueue:
    """The queued trials of one study, claimed through the storage the study was opened with."""

    study: optuna.Study
    storage: optuna.storages.RDBStorage  # opened here (make_storage): its public methods only
    study_id: int

    @classmethod
    def of(cls, study: optuna.Study, storage: optuna.storages.RDBStorage) -> TrialQueue:
        return cls(study, storage, storage.get_study_id_from_name(study.study_name))

    def trial_id(self, trial: optuna.Trial | FrozenTrial) -> int:
        """The storage's id of a trial of this study (Optuna exposes only its number)."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)

    def next_trial(self, limit: int | None) -> optuna.Trial | None:
        """A queued slot below ``limit``; with no trial budget (None), any queued trial, else a new one."""
        return self.claim(limit) if limit is not None else self._ask()

    def claim(self, limit: int | None) -> optuna.Trial | None:
        """Move one queued trial (slot below ``limit``) to RUNNING; None when none is left.

        The storage changes WAITING to RUNNING in one transaction and reports whether it did, so of
        two workers claiming the same trial only one gets it. (``Study.ask`` would create a new,
        unbudgeted trial when another worker took the last queued one meanwhile.)
        """
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        for frozen in sorted(waiting, key=lambda t: t.number):
            slot = frozen.user_attrs.get(SLOT)
            if limit is not None and (slot is None or slot >= limit):
                continue
            trial_id = self.trial_id(frozen)
            try:
                if self.storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                    return bind_trial(self.study, trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    def _ask(self) -> optuna.Trial:
        """An unbudgeted trial (wall-time budget only): a re-queued one first, else a new one.

        That is ``Study.ask``. It warns that heartbeats are meant for ``Study.optimize``: here
        ``heartbeat`` records them.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            return self.study.ask()

    def fail_stale(self) -> None:
        """Fail (and re-queue, see ``requeue_stale``) running trials whose heartbeats stopped."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    @contextmanager
    def heartbeat(self, trial: optuna.Trial) -> Iterator[None]:
        """Record the trial's heartbeat while it runs (a worker that dies stops them)."""
        storage = self.storage
        interval = storage.get_heartbeat_interval()
        if interval is None:
            yield
            return
        trial_id = self.trial_id(trial)
        with every(interval, lambda: storage.record_heartbeat(trial_id), name=f"heartbeat-{trial.number}"):
            yield
