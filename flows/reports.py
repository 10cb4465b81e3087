"""What a flow run shows in the Prefect UI: which model won, how good it is, and where to look.

Each flow publishes its outcome as an artifact of its flow run (the run's Artifacts tab, and the
Artifacts page under the key):

- ``forecast-pipeline-summary`` (``forecast_pipeline``), ``train-summary`` (``train``) and
  ``champion-decision`` (``select_champion``): markdown with the leaderboard, the champion
  decision (model, registered version, alias, the gate's candidate and incumbent scores), the
  forecasts written, and links to the pipeline run and the registered version in MLflow;
- ``batch-forecasts`` (``batch_predict``, and the prediction step of ``forecast_pipeline``): a
  table of the first forecasts, described by the output path, the model version and the row count.

The flow's final state carries a one-line summary too (``state_message``), so the flow run list
says more than "Completed". Building the markdown is pure; only ``publish_*`` talk to Prefect, and
a summary that cannot be published is logged, never allowed to fail a run whose work is done.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote

PIPELINE_KEY = "forecast-pipeline-summary"
TRAIN_KEY = "train-summary"
CHAMPION_KEY = "champion-decision"
FORECASTS_KEY = "batch-forecasts"
BOARD_COLUMNS = ("model", "status", "val_mse", "test_mse", "fit_seconds")
LOCAL_UI = "http://127.0.0.1:5000"  # where `forecast ui` serves the MLflow UI
_ALIAS_NOTES = {
    "champion": "it serves the forecasts from now on",
    "challenger": "it did not beat the incumbent, which stays champion",
    "unchanged": "the champion already is this model on this data",
}


# --- markdown ---------------------------------------------------------------------------------
def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "–" if not math.isfinite(value) else f"{value:.{digits}f}"
    return "–" if value in (None, "") else str(value)


def board_markdown(rows: list[dict[str, Any]]) -> str:
    """The leaderboard as a markdown table (best first, as given), scores in scaled units."""
    lines = ["| " + " | ".join(BOARD_COLUMNS) + " |", "|---|---|---:|---:|---:|"]
    for row in rows:
        cells = [
            _number(row.get(col), 1 if col == "fit_seconds" else 4)
            if col not in ("model", "status")
            else str(row.get(col, ""))
            for col in BOARD_COLUMNS
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def decision_markdown(decision: dict[str, Any], registered_model: str) -> list[str]:
    """The champion decision as markdown list items."""
    alias = decision["alias"]
    note = _ALIAS_NOTES.get(alias, "")
    metric = decision.get("selection_metric", "val_mse")
    value = _number(decision.get("selection_value"))
    lines = [
        f"- best by `{metric}`: **{decision['model']}** ({metric} {value})",
        f"- registered as **{registered_model}** version **{decision['version']}**, "
        f"alias **{alias}**" + (f" ({note})" if note else ""),
    ]
    candidate = _number(decision.get("candidate_score"))
    gate = f"- gate (MSE in original units on validation origins): candidate {candidate}"
    if decision.get("incumbent_version") is None:
        gate += ", no incumbent (the first version of this model)"
    else:
        gate += (
            f" vs incumbent version {decision['incumbent_version']} "
            f"{_number(decision.get('incumbent_score'))}"
        )
    return [*lines, gate]


def mlflow_links(
    uri: str,
    experiment_id: str,
    run_id: str,
    registered_model: str | None = None,
    version: str | None = None,
    ui_uri: str | None = None,
) -> list[str]:
    """Markdown list items linking the pipeline run and the registered version in the MLflow UI.

    An http(s) tracking ``uri`` is the UI itself: full links. Any other store (SQLite, a database)
    is not served: the command that opens a UI on it (``forecast ui`` when it is the store that
    command opens, ``ui_uri``), then the local address with the run's path."""
    run_path = f"#/experiments/{experiment_id}/runs/{run_id}"
    version_path = (
        f"#/models/{quote(registered_model)}/versions/{version}" if registered_model and version else None
    )
    if uri.startswith(("http://", "https://")):
        base = uri.rstrip("/")
        lines = [f"- MLflow pipeline run: [{run_id}]({base}/{run_path})"]
        if version_path:
            lines.append(f"- registered version: [{registered_model} v{version}]({base}/{version_path})")
        return lines
    opener = "forecast ui" if uri == ui_uri else f"mlflow ui --backend-store-uri {uri}"
    lines = [
        f"- MLflow store `{uri}` is not served over HTTP: run `{opener}`, then open",
        f"  - the pipeline run: {LOCAL_UI}/{run_path}",
    ]
    if version_path:
        lines.append(f"  - the registered version {registered_model} v{version}: {LOCAL_UI}/{version_path}")
    return lines


def prediction_markdown(prediction: dict[str, Any]) -> str:
    """One line: the forecasts written, by which model version, and how many."""
    return (
        f"**{prediction['rows']}** forecasts for {prediction['series']} series by model "
        f"**{prediction['model']}** written to `{prediction['output']}` "
        f"(MLflow prediction run {prediction['prediction_run_id']})"
    )


def summary_markdown(
    title: str,
    outcome: dict[str, Any],
    registered_model: str,
    links: list[str],
) -> str:
    """A flow run's summary: the winner first, then the leaderboard, the decision, the forecasts
    and the MLflow links. ``outcome`` is what the flow returns (``leaderboard`` rows,
    ``decision`` or None, ``prediction`` when it predicted)."""
    decision = outcome.get("decision")
    board = outcome.get("leaderboard") or []
    if decision:
        head = (
            f"# {title}: **{decision['model']}** won, {registered_model} "
            f"v{decision['version']} → `{decision['alias']}`"
        )
    else:
        finished = [r for r in board if r.get("status") == "FINISHED"]
        best = f"best **{finished[0]['model']}**" if finished else "no model finished"
        head = f"# {title}: {best} (no champion step in this flow)"
    parts = [head, "## Leaderboard (best validation score first; scaled units)", board_markdown(board)]
    if decision:
        parts += ["## Champion decision", "\n".join(decision_markdown(decision, registered_model))]
    if outcome.get("prediction"):
        parts += ["## Forecasts", prediction_markdown(outcome["prediction"])]
    parts += ["## MLflow", "\n".join(links)]
    return "\n\n".join(parts) + "\n"


def state_message(outcome: dict[str, Any]) -> str:
    """One line for the flow run's final state: the winner, its score and version, the forecasts."""
    decision = outcome.get("decision")
    parts = []
    if decision:
        metric = decision.get("selection_metric", "val_mse")
        parts.append(
            f"{decision['model']} won ({metric} {_number(decision.get('selection_value'))}), "
            f"version {decision['version']} -> {decision['alias']}"
        )
    elif outcome.get("leaderboard"):
        best = outcome["leaderboard"][0]
        parts.append(f"best {best['model']} (val_mse {_number(best.get('val_mse'))}); nothing registered")
    if outcome.get("prediction"):
        p = outcome["prediction"]
        parts.append(f"{p['rows']} forecasts by {p['model']} -> {p['output']}")
    return "; ".join(parts) or "completed"


# --- publishing -------------------------------------------------------------------------------
def _ui_uri() -> str:
    from forecasting.config import TrackingConfig
    from forecasting.tracking import resolve_tracking_uri

    return resolve_tracking_uri(TrackingConfig())[0]


def publish_summary(key: str, title: str, cfg: Any, outcome: dict[str, Any]) -> None:
    """The flow run's markdown summary under ``key`` (see the module docstring)."""
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact

    from forecasting.tracking import Tracker

    try:
        tracker = Tracker(cfg.tracking)
        decision = outcome.get("decision") or {}
        name = cfg.tracking.registered_model
        links = mlflow_links(
            tracker.uri,
            tracker.experiment_id,
            outcome["parent_run_id"],
            name,
            decision.get("version"),
            _ui_uri(),
        )
        markdown = summary_markdown(title, outcome, name, links)
        create_markdown_artifact(markdown=markdown, key=key, description=state_message(outcome))
    except Exception as err:  # the work is done and logged in MLflow; only its summary is missing
        get_run_logger().warning(f"could not publish the {key} artifact: {type(err).__name__}: {err}")


def publish_forecasts(prediction: dict[str, Any]) -> None:
    """The first forecasts written, as a table artifact described by one markdown line."""
    from prefect import get_run_logger
    from prefect.artifacts import create_table_artifact

    rows = [{k: v for k, v in row.items() if k != "run_id"} for row in prediction.get("first_rows", [])]
    shown = f"; the first {len(rows)} below" if len(rows) < prediction["rows"] else ""
    try:
        create_table_artifact(
            table=rows, key=FORECASTS_KEY, description=prediction_markdown(prediction) + shown
        )
    except Exception as err:  # the forecasts are written; only their preview is missing
        get_run_logger().warning(
            f"could not publish the {FORECASTS_KEY} artifact: {type(err).__name__}: {err}"
        )
