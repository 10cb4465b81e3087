"""Cron-scheduled deployments of the forecasting flows: served by `forecast serve` in its own
process, or registered to a work pool by `forecast deploy` for ``prefect worker`` processes.

The demo config's deployments are also declared in ``prefect.yaml`` for work-pool workers
(``prefect deploy --all`` then ``prefect worker start --pool forecasting``).

Every deployment's entrypoint is the absolute path of the flow's file (``entrypoint_of``), and
its config path is absolute too: Prefect would record the file relative to the directory the
deployment was built from, which a worker started anywhere else cannot find.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.schedules import Cron

from flows.monitoring import monitor
from flows.pipeline import batch_predict, forecast_pipeline, train
from forecasting.config import Config, ScheduleSpec
from forecasting.errors import ForecastingError

PROJECT_DIR = Path(__file__).resolve().parents[1]

FLOWS = {
    "forecast_pipeline": forecast_pipeline,
    "train": train,
    "batch_predict": batch_predict,
    "monitor": monitor,
}


class WorkPoolError(ForecastingError):
    """The work pool to deploy to does not exist on the Prefect API."""


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


def deploy(config_path: Path, cfg: Config, work_pool: str) -> list[UUID]:
    """Register (or update) the deployments with the Prefect API for the workers of ``work_pool``;
    returns their ids.

    Nothing is built or pushed: a worker runs the flow from this checkout, at this path, on its own
    disk. Each deployment's one pull step sets the flow run's working directory to the checkout
    (``LocalStorage``, as ``prefect.yaml``'s pull step does); without a pull step Prefect would copy
    the folder the deployment was built in into the flow run's directory first.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.runner.storage import LocalStorage
    from prefect.settings import PREFECT_API_URL

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(work_pool)
        except ObjectNotFound:
            api = PREFECT_API_URL.value() or "the local ephemeral API"
            raise WorkPoolError(
                f"no work pool {work_pool!r} on the Prefect API at {api}; create it with "
                f"`prefect work-pool create {work_pool} --type process`, or name another with --pool"
            ) from None
    ids = []
    for deployment in build_deployments(config_path, cfg):
        deployment.storage = LocalStorage(str(PROJECT_DIR))
        ids.append(deployment.apply(work_pool_name=work_pool))
    return ids
