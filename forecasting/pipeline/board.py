"""The leaderboard: one row per model, best first, built from a run's results or read back from
MLflow, and the summary logged on the pipeline run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forecasting.evaluation.intervals import selection_key
from forecasting.pipeline.prepare import Prepared
from forecasting.pipeline.train import ModelResult, logged_calibration, plot_context, result_from_run

BOARD_METRICS = (
    "val_mse",
    "val_mae",
    "test_mse",
    "test_mae",
    "test_mse_orig",
    "test_mae_orig",
    "fit_seconds",
)


def interval_columns(results: list[ModelResult]) -> list[str]:
    """The interval columns of the leaderboard: MSIS on validation and test, and the test coverage
    of every level the runs logged (``test_coverage_80`` ...), narrowest level first."""
    levels = sorted(
        {
            k.removeprefix("test_coverage_")
            for r in results
            for k in r.metrics
            if k.startswith("test_coverage_")
        },
        key=float,
    )
    if not levels:
        return []
    return ["val_msis", "test_msis", *(f"test_coverage_{lv}" for lv in levels)]


def leaderboard(results: list[ModelResult], metric: str = "val_mse") -> pd.DataFrame:
    """One row per model, best first by the selection metric (failed models last; a coverage
    ranks by its distance from nominal, as selection does)."""
    columns = [*BOARD_METRICS, *interval_columns(results)]
    if metric not in columns:
        columns.append(metric)
    rows = []
    for r in results:
        row = {"model": r.name, "family": r.family, "status": r.status, "run_id": r.run_id}
        for key in columns:
            row[key] = r.metrics.get(key, np.nan)
        row["error"] = r.error or ""
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["_failed"] = table["status"] != "FINISHED"
    table["_key"] = [selection_key(metric, v) for v in table[metric]]
    return (
        table.sort_values(["_failed", "_key"], na_position="last")
        .drop(columns=["_failed", "_key"])
        .reset_index(drop=True)
    )


def log_pipeline_summary(
    parent: Any, prepared: Prepared, results: list[ModelResult], board: pd.DataFrame
) -> None:
    """Leaderboard table and bars, comparison plot and the best model's name on the parent run."""
    from forecasting import plotting

    parent.log_frame(board, "leaderboard.csv")
    parent.log_text(board.to_string(index=False), "leaderboard.txt")
    metric = prepared.cfg.tracking.selection_metric
    by_name = {r.name: r for r in results}
    ranked = [by_name[m] for m in board["model"] if m in by_name] if len(board) else results
    scores = {r.name: r.metrics.get(metric) for r in ranked}
    if scores:
        naive = next((r.name for r in ranked if r.family == "naive"), None)
        bars = plotting.leaderboard_plot(scores, metric, reference=naive)
        parent.log_figure(bars, "plots/leaderboard.png")
    frames = {r.name: r.test_predictions for r in ranked if r.test_predictions is not None}
    if frames:
        comparison = plotting.comparison_plot(
            frames, prepared.data.frame, **plot_context(prepared), scores=scores, metric=metric
        )
        parent.log_figure(comparison, "plots/comparison.png")
    coverage = test_coverage(ranked)
    if coverage:
        calibration = plotting.calibration_plot(coverage, "prediction intervals on the test windows")
        parent.log_figure(calibration, "plots/calibration.png")
    finished = board[board["status"] == "FINISHED"]
    parent.set_tags(
        {
            "best_model": finished["model"].iloc[0] if len(finished) else "none",
            "failed_models": ",".join(board.loc[board["status"] != "FINISHED", "model"]) or "none",
        }
    )
    parent.log_metrics({f"{r.name}.val_mse": r.metrics.get("val_mse") for r in results if r.metrics})


def test_coverage(results: list[ModelResult]) -> dict[str, dict[float, float]]:
    """Model -> interval level (percent) -> empirical coverage on the test windows, for the
    calibration plot (nominal against empirical)."""
    prefix = "test_coverage_"
    return {
        r.name: {float(k[len(prefix) :]): float(v) for k, v in r.metrics.items() if k.startswith(prefix)}
        for r in results
        if any(k.startswith(prefix) for k in r.metrics)
    }


def results_from_runs(tracker: Any, parent_run_id: str, calibrations: bool = False) -> list[ModelResult]:
    """Rebuild the model results of a finished pipeline run from its child runs in MLflow (a
    refit is not a candidate: it has no validation score). ``calibrations``: also read each
    finished model's interval calibration, which the refit of the best inherits."""
    runs = [r for r in tracker.child_runs_of(parent_run_id) if r.data.tags.get("role") != "refit"]
    results = [result_from_run(r) for r in runs]
    for result in results if calibrations else []:  # what the refit of the best inherits
        if result.status == "FINISHED" and result.run_id:
            result.calibration = logged_calibration(tracker, result.run_id)
    return results


@dataclass
class StoredBoard:
    """A pipeline run's leaderboard read back from MLflow, and where it was read."""

    experiment: str
    run_id: str
    uri: str  # the tracking store
    rows: list[dict[str, Any]]


def leaderboard_from_mlflow(
    tracking: Any, run_id: str | None = None, experiment: str | None = None
) -> StoredBoard:
    """The leaderboard of a pipeline run, read back from ``tracking``'s store.

    ``run_id``: that pipeline run, in whichever experiment holds it (the run knows); otherwise
    the latest pipeline run of ``experiment`` (default: ``tracking.experiment``). Rows are ranked
    by the selection metric the run was configured with. Nothing is created in the store: a
    missing or deleted experiment, one without a pipeline run, and a run id that is not a
    pipeline run are each a ``NoPipelineRunError`` saying what was found instead.
    """
    from forecasting.errors import NoPipelineRunError
    from forecasting.tracking import Tracker

    store = _open_store(tracking)
    if run_id is not None:
        name = _experiment_of_pipeline_run(store, run_id)
    else:
        name = experiment or tracking.experiment
        found = store.client.get_experiment_by_name(name)
        if found is None or found.lifecycle_stage != "active":
            known = [e.name for e in store.client.search_experiments(max_results=50) if e.name != "Default"]
            state = "was deleted" if found is not None else "does not exist"
            raise NoPipelineRunError(
                f"experiment {name!r} {state} in tracking store {store.uri} (experiments there: "
                f"{', '.join(map(repr, known)) or 'none'}); pass --experiment NAME or --run-id ID, "
                "or run the pipeline first (forecast run CONFIG)"
            )
    tracker = Tracker(tracking.model_copy(update={"experiment": name}))
    if run_id is None:
        parents = tracker.pipeline_runs(max_results=1)
        if not parents:
            raise NoPipelineRunError(
                f"no pipeline run in experiment {name!r} (tracking store {tracker.uri}) yet; "
                "run one first (forecast run CONFIG)"
            )
        run_id = parents[0]
    params = tracker.client.get_run(run_id).data.params
    metric = params.get("config.tracking.selection_metric", tracking.selection_metric)
    results = results_from_runs(tracker, run_id)
    if not results:
        raise NoPipelineRunError(
            f"pipeline run {run_id!r} of experiment {name!r} has no model runs (it stopped before "
            "any model trained)"
        )
    board = leaderboard(results, metric)
    return StoredBoard(name, run_id, tracker.uri, board.to_dict(orient="records"))


def _open_store(tracking: Any) -> Any:
    """``tracking``'s store, opened to read: no experiment chosen, nothing created there."""
    from forecasting.tracking import open_store

    return open_store(tracking)


def _experiment_of_pipeline_run(store: Any, run_id: str) -> str:
    """The name of the experiment holding pipeline run ``run_id``, or ``NoPipelineRunError``
    naming what the id is instead (no run; a model, refit or prediction run, and its pipeline)."""
    from forecasting.errors import NoPipelineRunError
    from forecasting.tracking import PARENT_TAG

    try:
        run = store.client.get_run(run_id)
    except Exception as err:  # MlflowException; this module does not import mlflow
        if getattr(err, "error_code", None) not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise NoPipelineRunError(f"no run {run_id!r} in tracking store {store.uri}") from None
    name = store.client.get_experiment(run.info.experiment_id).name
    role = run.data.tags.get("role")
    if role != "pipeline":
        parent = run.data.tags.get(PARENT_TAG)
        hint = f"; its pipeline run is {parent} (--run-id {parent})" if parent else ""
        kind = f"a {role} run" if role else "a run without a role tag"
        raise NoPipelineRunError(
            f"run {run_id!r} ({run.info.run_name!r}, experiment {name!r}) is {kind}, not a pipeline run{hint}"
        )
    return name
