"""Cron-scheduled deployments of the forecasting flows, served by `forecast serve`.

The same deployments are declared in ``prefect.yaml`` for work-pool workers
(``prefect deploy --all`` then ``prefect worker start --pool forecasting``).

Every deployment's entrypoint is the absolute path of the flow's file (``entrypoint_of``), and
its config path is absolute too: Prefect would record the file relative to the directory the
deployment was built from, which a worker started anywhere else cannot find.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from prefect.schedules import Cron

from flows.monitoring import monitor
from flows.pipeline import batch_predict, forecast_pipeline, train
from forecasting.config import Config, ScheduleSpec

FLOWS = {
    "forecast_pipeline": forecast_pipeline,
    "train": train,
    "batch_predict": batch_predict,
    "monitor": monitor,
}


def deployment_name(spec: ScheduleSpec) -> str:
    return spec.name or f"{spec.flow}-scheduled"


def entrypoint_of(flow: Any) -> str:
    """``/abs/path/to/file.py:function``: the flow's entrypoint, whatever the current directory."""
    return f"{Path(inspect.getfile(flow.fn)).resolve()}:{flow.fn.__qualname__}"


def build_deployments(config_path: Path, cfg: Config) -> list[Any]:
    """One runner deployment per configured schedule, each passing the config's absolute path."""
    deployments = []
    for spec in cfg.orchestration.schedules:
        flow = FLOWS[spec.flow]
        deployment = flow.to_deployment(
            name=deployment_name(spec),
            schedules=[Cron(spec.cron, timezone=spec.timezone)],
            parameters={"config_path": str(Path(config_path).resolve())},
            tags=["forecasting", spec.flow],
            description=f"{spec.flow} on {spec.cron} ({spec.timezone}) for {Path(config_path).name}",
        )
        deployment.entrypoint = entrypoint_of(flow)  # Prefect's is relative to the cwd
        deployments.append(deployment)
    return deployments


def serve(config_path: Path, cfg: Config, limit: int | None = None) -> None:
    """Register the deployments with the Prefect API and run their scheduled flow runs (blocks)."""
    from prefect import serve as prefect_serve

    deployments = build_deployments(config_path, cfg)
    prefect_serve(*deployments, limit=limit, print_starting_message=True)
