"""Hyper-parameter and architecture search with Optuna, on top of the normal training path.

The config's ``search`` section declares, per model family, the dimensions to search (depth,
width, activation, dropout, other settings) and the training/window dimensions (learning rate,
weight decay, batch size with the learning rate scaled linearly to it, warm-up length, lookback);
the family itself is a categorical dimension when several are declared. Samplers: ``grid`` (every
declared point exactly once), ``random``, ``tpe``. Pruners (``hyperband``, ``successive_halving``)
are fed the per-epoch validation loss through the training loop's epoch callbacks.

How a search runs, and where each part lives::

    tune(cfg)                                   the coordinator                      search.py
      open_study        create or resume the study in its storage                  study.py
                        and queue the trial budget as slots                         trial_queue.py
      parent run        one MLflow run per study (reopened when the study resumes)  search.py
        run_worker x N  claim a queued trial, train it (nested MLflow run), tell    worker.py
      summarise         best parameters, optimisation history, parameter importance report.py
      retrain_best      the best trial's config through train_model + select_champion search.py

The search space (dimensions, grid, what a trial samples, the config of one point) is in
``space.py``; the one use of Optuna beyond its public API in ``optuna_adapter.py``. Nothing here
imports prefect; MLflow goes through ``forecasting.tracking``.
"""

from forecasting.tuning.report import history_figure, param_importances, summarise, trials_frame
from forecasting.tuning.search import RunWorkers, TuneResult, n_workers, retrain_best, tune
from forecasting.tuning.space import (
    ARCH_DIMS,
    INTEGER_DIMS,
    TRAINING_DIMS,
    Dimension,
    check_search,
    family_dimensions,
    grid_points,
    suggest_params,
    trial_config,
)
from forecasting.tuning.study import (
    display_url,
    fingerprint,
    make_pruner,
    make_sampler,
    make_storage,
    open_queue,
    open_study,
    storage_url,
    study_name,
)
from forecasting.tuning.trial_queue import SLOT, TrialQueue, budget
from forecasting.tuning.worker import EpochCallback, WorkerJob, WorkerReport, run_worker

__all__ = [
    "ARCH_DIMS",
    "INTEGER_DIMS",
    "SLOT",
    "TRAINING_DIMS",
    "Dimension",
    "EpochCallback",
    "RunWorkers",
    "TrialQueue",
    "TuneResult",
    "WorkerJob",
    "WorkerReport",
    "budget",
    "check_search",
    "display_url",
    "family_dimensions",
    "fingerprint",
    "grid_points",
    "history_figure",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "n_workers",
    "open_queue",
    "open_study",
    "param_importances",
    "retrain_best",
    "run_worker",
    "storage_url",
    "study_name",
    "suggest_params",
    "summarise",
    "trial_config",
    "trials_frame",
    "tune",
]
