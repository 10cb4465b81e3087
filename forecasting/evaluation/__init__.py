"""Evaluation: metrics (pure functions of arrays), scoring on windows, rolling-origin backtests."""

from forecasting.evaluation.backtest import backtest, fold_cutoffs
from forecasting.evaluation.metrics import (
    METRIC_KEYS,
    evaluate_windows,
    mae,
    mase,
    mase_scale,
    mse,
    rmse,
    score,
    smape,
    wape,
)

__all__ = [
    "METRIC_KEYS",
    "backtest",
    "evaluate_windows",
    "fold_cutoffs",
    "mae",
    "mase",
    "mase_scale",
    "mse",
    "rmse",
    "score",
    "smape",
    "wape",
]
