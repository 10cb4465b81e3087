"""The pipeline as plain library calls, one concern a module:

- ``prepare``: ingest, split, scale (``Prepared``);
- ``train``: fit, score and log one model (``train_model``), and the order of a run's models
  (``train_all``);
- ``board``: the leaderboard;
- ``refit``: the selected model trained again on every row, what is served;
- ``select``: the champion gate;
- ``run``: ``run_pipeline``, the one body that chains them (the Prefect flow calls it too);
- ``predict``: batch prediction with a registered model.

Nothing here imports prefect; MLflow is reached through ``forecasting.tracking`` and
``forecasting.serving``.
"""

from forecasting.pipeline.board import (
    leaderboard,
    leaderboard_from_mlflow,
    log_pipeline_summary,
    results_from_runs,
)
from forecasting.pipeline.predict import batch_predict
from forecasting.pipeline.prepare import Prepared, input_example, prepare, season_length
from forecasting.pipeline.refit import refit, refit_model
from forecasting.pipeline.run import PipelineResult, RefitStep, TrainModels, pipeline_tags, run_pipeline
from forecasting.pipeline.select import (
    ChampionDecision,
    asdict,
    best_result,
    gate_origins,
    gate_score,
    select_champion,
)
from forecasting.pipeline.train import (
    ModelResult,
    TrainJob,
    TrainMany,
    ensemble_members,
    feeds_an_ensemble,
    fit_and_score,
    log_inputs,
    peak_rss_mb,
    run_params,
    train_all,
    train_job,
    train_model,
    workers_and_threads,
)

__all__ = [
    "ChampionDecision",
    "ModelResult",
    "PipelineResult",
    "Prepared",
    "RefitStep",
    "TrainJob",
    "TrainMany",
    "TrainModels",
    "asdict",
    "batch_predict",
    "best_result",
    "ensemble_members",
    "feeds_an_ensemble",
    "fit_and_score",
    "gate_origins",
    "gate_score",
    "input_example",
    "leaderboard",
    "leaderboard_from_mlflow",
    "log_inputs",
    "log_pipeline_summary",
    "peak_rss_mb",
    "pipeline_tags",
    "prepare",
    "refit",
    "refit_model",
    "results_from_runs",
    "run_params",
    "run_pipeline",
    "season_length",
    "select_champion",
    "train_all",
    "train_job",
    "train_model",
    "workers_and_threads",
]
