"""Cron-scheduled deployments of the forecasting flows, served by `forecast serve`.

The same deployments are declared in ``prefect.yaml`` for work-pool workers
(``prefect deploy --all`` then ``prefect worker start --pool forecasting``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.schedules import Cron

from flows.pipeline import batch_predict, forecast_pipeline, train
from forecasting.config import Config, ScheduleSpec

FLOWS = {"forecast_pipeline": forecast_pipeline, "train": train, "batch_predict": batch_predict}


def deployment_name(spec: ScheduleSpec) -> str:
    return spec.name or f"{spec.flow}-scheduled"


def build_deployments(config_path: Path, cfg: Config) -> list[Any]:
    """One runner deployment per configured schedule, each passing the config path."""
    deployments = []
    for spec in cfg.orchestration.schedules:
        flow = FLOWS[spec.flow]
        deployments.append(
            flow.to_deployment(
                name=deployment_name(spec),
                schedules=[Cron(spec.cron, timezone=spec.timezone)],
                parameters={"config_path": str(Path(config_path).resolve())},
                tags=["forecasting", spec.flow],
                description=f"{spec.flow} on {spec.cron} ({spec.timezone}) for {Path(config_path).name}",
            )
        )
    return deployments


def serve(config_path: Path, cfg: Config, limit: int | None = None) -> None:
    """Register the deployments with the Prefect API and run their scheduled flow runs (blocks)."""
    from prefect import serve as prefect_serve

    deployments = build_deployments(config_path, cfg)
    prefect_serve(*deployments, limit=limit, print_starting_message=True)
