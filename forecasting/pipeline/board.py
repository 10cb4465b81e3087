"""The leaderboard: one row per model, best first, built from a run's results or read back from
MLflow, and the summary logged on the pipeline run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from forecasting.pipeline.prepare import Prepared
from forecasting.pipeline.train import ModelResult, result_from_run

BOARD_METRICS = (
    "val_mse",
    "val_mae",
    "test_mse",
    "test_mae",
    "test_mse_orig",
    "test_mae_orig",
    "fit_seconds",
)


def leaderboard(results: list[ModelResult], metric: str = "val_mse") -> pd.DataFrame:
    """One row per model, best first by the selection metric (failed models last)."""
    rows = []
    for r in results:
        row = {"model": r.name, "family": r.family, "status": r.status, "run_id": r.run_id}
        for key in BOARD_METRICS:
            row[key] = r.metrics.get(key, np.nan)
        row["error"] = r.error or ""
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["_failed"] = table["status"] != "FINISHED"
    sort_key = metric if metric in table.columns else "val_mse"
    return (
        table.sort_values(["_failed", sort_key], na_position="last")
        .drop(columns="_failed")
        .reset_index(drop=True)
    )


def log_pipeline_summary(
    parent: Any, prepared: Prepared, results: list[ModelResult], board: pd.DataFrame
) -> None:
    """Leaderboard table, comparison plot and the best model's name on the parent run."""
    from forecasting import plotting

    parent.log_frame(board, "leaderboard.csv")
    parent.log_text(board.to_string(index=False), "leaderboard.txt")
    frames = {r.name: r.test_predictions for r in results if r.test_predictions is not None}
    if frames:
        parent.log_figure(plotting.comparison_plot(frames), "plots/comparison.png")
    finished = board[board["status"] == "FINISHED"]
    parent.set_tags(
        {
            "best_model": finished["model"].iloc[0] if len(finished) else "none",
            "failed_models": ",".join(board.loc[board["status"] != "FINISHED", "model"]) or "none",
        }
    )
    parent.log_metrics({f"{r.name}.val_mse": r.metrics.get("val_mse") for r in results if r.metrics})


def results_from_runs(tracker: Any, parent_run_id: str) -> list[ModelResult]:
    """Rebuild the model results of a finished pipeline run from its child runs in MLflow (a
    refit is not a candidate: it has no validation score)."""
    runs = tracker.child_runs_of(parent_run_id)
    return [result_from_run(r) for r in runs if r.data.tags.get("role") != "refit"]


def leaderboard_from_mlflow(tracking: Any, run_id: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The leaderboard of a pipeline run (the latest when ``run_id`` is None), from MLflow."""
    from forecasting.errors import InputValidationError
    from forecasting.tracking import Tracker

    tracker = Tracker(tracking)
    if run_id is None:
        parents = tracker.pipeline_runs(max_results=1)
        if not parents:
            raise InputValidationError(
                f"no pipeline run in experiment {tracking.experiment!r} yet; run one first"
            )
        run_id = parents[0]
    results = results_from_runs(tracker, run_id)
    if not results:
        raise InputValidationError(
            f"run {run_id!r} has no model runs (is it a pipeline run of {tracking.experiment!r}?)"
        )
    board = leaderboard(results, tracking.selection_metric)
    return run_id, board.to_dict(orient="records")
