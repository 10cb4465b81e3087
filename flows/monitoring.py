"""The ``monitor`` flow: the archived forecasts against the actuals that arrived, the rules, and
the retrain a firing rule starts (``forecasting.monitoring``).

A firing rule is a log line, a Prefect event (``forecasting.monitor.rule-fired``, its resource
the model version) and a tag on the version; once per firing it starts a retrain: the
``forecast_pipeline`` flow as a subflow of this run, or, with ``monitoring.retrain_deployment``,
a flow run of that deployment (not waited for: its worker runs it).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.events import emit_event

from flows.pipeline import _completed, flow_config, forecast_pipeline
from forecasting.config import Config
from forecasting.monitoring.monitor import Firing
from forecasting.monitoring.monitor import monitor as monitor_lib

EVENT = "forecasting.monitor.rule-fired"


def _notify(cfg: Config) -> Any:
    def notify(firing: Firing) -> None:
        name = cfg.tracking.registered_model
        get_run_logger().warning(
            "monitoring rule %s fired for %s version %s at origin %s: %s",
            firing.rule,
            name,
            firing.version,
            firing.origin,
            firing.detail,
        )
        emit_event(
            event=EVENT,
            resource={"prefect.resource.id": f"forecasting.model.{name}.{firing.version}"},
            payload={"rule": firing.rule, "origin": firing.origin, "detail": firing.detail},
        )

    return notify


def _retrain(cfg: Config, firing: Firing) -> str | None:
    """Start the retrain: the deployment's flow run (its id), or the pipeline as a subflow (its
    MLflow pipeline run's id)."""
    if cfg.monitoring.retrain_deployment:
        from prefect.deployments import run_deployment

        run = run_deployment(cfg.monitoring.retrain_deployment, timeout=0)
        get_run_logger().info("retrain: started flow run %s of %s", run.id, cfg.monitoring.retrain_deployment)
        return str(run.id)
    outcome = forecast_pipeline(config=cfg, predict=False)
    return outcome.get("parent_run_id")


def state_message(report: dict[str, Any]) -> str:
    fired = ", ".join(sorted({f["rule"] for f in report["firings"]})) or "no rule fired"
    retrain = f"; retrain {report['retrain']}" if report.get("retrain") else ""
    skipped = f"; {report['retrain_skipped']}" if report.get("retrain_skipped") else ""
    return (
        f"scored {report['scored_rows']} forecasts of {report['model']} "
        f"({len(report['versions'])} version(s)); {fired}{retrain}{skipped}"
    )


@flow(name="monitor", log_prints=True, persist_result=False, result_serializer="json")
def monitor(
    config_path: str | None = None,
    actuals_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """Score the archive against the actuals (default: ``data.path``), log a monitoring run per
    model version, and act on the rules."""
    cfg = flow_config(config, config_path, overrides, None)
    report = monitor_lib(cfg, actuals_path, retrain=_retrain, notify=_notify(cfg)).to_dict()
    return _completed(report, state_message(report))


@flow(name="replay", log_prints=True, persist_result=False, result_serializer="json")
def replay(
    config_path: str | None = None,
    start: str = "",
    end: str = "",
    out: str = "outputs/replay",
    predict_every: str = "24h",
    monitor_every: str = "24h",
    policy: str = "rule",
    overrides: dict[str, Any] | None = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """Operate the pipeline from ``start`` to ``end`` over history with the real flows
    (``forecast_pipeline``, ``batch_predict``, ``monitor`` as subflows): see
    ``forecasting.monitoring.replay``."""
    from pathlib import Path

    from flows.pipeline import batch_predict
    from forecasting.monitoring.replay import ReplaySteps
    from forecasting.monitoring.replay import replay as replay_lib

    cfg = flow_config(config, config_path, overrides, None)
    steps = ReplaySteps(
        pipeline=lambda c: forecast_pipeline(config=c, predict=False),
        predict=lambda c, source, output: batch_predict(config=c, input_path=source, output_path=output),
        monitor=lambda c, actuals: monitor(config=c, actuals_path=actuals),
    )
    report = replay_lib(
        cfg,
        start,
        end,
        steps,
        out=Path(out) / policy.replace(":", "-"),
        predict_every=predict_every,
        monitor_every=monitor_every,
        policy=policy,
    ).to_dict()
    message = (
        f"replay {policy}: {report['predictions']} predictions, {report['monitors']} monitors, "
        f"{report['retrains']} retrains; MAE {report['scores'].get('mae', float('nan')):.4g}"
    )
    return _completed(report, message)
