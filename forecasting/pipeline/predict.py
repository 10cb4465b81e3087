"""Batch prediction with a registered model, logged as its own MLflow run.

The model is ``NAME``, ``NAME@alias`` or ``NAME/version``; an alias no version holds yet (a new
store before its first pipeline run has registered a champion) is a ``NoChampionError`` that says
what to do, raised before anything is read or written."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from forecasting import stages
from forecasting.config import Config
from forecasting.data.schema import SERIES, TIME
from forecasting.errors import InputValidationError, NoChampionError

FIRST_ROWS = 50  # forecasts returned with the summary (the flow shows them as a table artifact)


def batch_predict(
    cfg: Config,
    model_ref: str | None = None,
    input_path: str | Path | None = None,
    output_path: str | Path | None = None,
) -> dict[str, Any]:
    """Forecast every series of ``input_path`` with a registered model; log it as an MLflow run.

    ``model_ref`` is ``NAME``, ``NAME@alias`` or ``NAME/version`` (default: the config's
    ``predict.model`` or ``<registered_model>@champion``). The alias is resolved to one version
    before scoring, and every output row carries ``model_name``, ``model_version`` and ``run_id``.
    With ``monitoring.archive`` on, the forecasts are then appended to the forecast archive
    (``archived``: rows inserted, 0 for a batch archived before; None with the archive off).
    """
    from forecasting import serving
    from forecasting.monitoring.archive import Archive, archive_uri
    from forecasting.tracking import Tracker

    tracker = Tracker(cfg.tracking)
    name, version, source_run, uri = resolve_model(tracker, default_model_ref(cfg, model_ref))
    source = Path(input_path) if input_path else (cfg.predict.input or cfg.data.path)
    output = Path(output_path) if output_path else cfg.predict.output
    tags = {"role": "prediction", "model_name": name, "model_version": version, "source_run_id": source_run}
    with tracker.run(f"predict {name} v{version} {source.name}", tags=tags) as run:
        start = time.perf_counter()
        orch = cfg.orchestration
        forecasts = serving.batch_predict(
            uri,
            source,
            output,
            model_name=name,
            model_version=version,
            run_id=source_run,
            chunk_series=cfg.predict.chunk_series,
            dask_address=orch.dask_address,
            dask_local_workers=orch.dask_local_workers,
        )
        seconds = time.perf_counter() - start
        where = orch.dask_address or (
            f"LocalCluster({orch.dask_local_workers})" if orch.dask_local_workers else "process"
        )
        run.log_params(
            {
                "model_uri": uri,
                "input": str(source),
                "output": str(output),
                "chunk_series": cfg.predict.chunk_series,
                "executor": where,
            }
        )
        run.log_metrics(
            {"n_series": forecasts[SERIES].nunique(), "rows": len(forecasts), "predict_seconds": seconds}
        )
        run.log_frame(forecasts, f"forecasts/{output.name}")
        archived = None
        if cfg.monitoring.archive:  # after the file: a failure here keeps it, and a retry adds nothing twice
            with Archive(archive_uri(cfg)) as archive:
                archived = archive.append(forecasts, forecasts.attrs["freq"], run.run_id)
            run.log_metrics({"archived_rows": archived})
    stages.predicted(len(forecasts), forecasts[SERIES].nunique(), str(output), f"{name}/{version}")
    return {
        "output": str(output.resolve()),
        "rows": len(forecasts),
        "series": int(forecasts[SERIES].nunique()),
        "model": f"{name}/{version}",
        "prediction_run_id": run.run_id,
        "archived": archived,
        "first_rows": forecasts.head(FIRST_ROWS).astype({TIME: str}).to_dict(orient="records"),
    }


def default_model_ref(cfg: Config, model_ref: str | None = None) -> str:
    """The model a batch predicts with: ``model_ref``, else the config's ``predict.model``, else
    ``<registered_model>@champion``."""
    return model_ref or cfg.predict.model or f"{cfg.tracking.registered_model}@champion"


def pin_model(cfg: Config, model_ref: str | None = None) -> str:
    """``NAME/VERSION`` of the model a batch would predict with (an alias resolved once), or
    ``NoChampionError`` when the alias names no version yet. The flow calls it before its
    prediction task, so that a missing champion fails the flow run once, with nothing retried."""
    from forecasting.tracking import Tracker

    name, version, _, _ = resolve_model(Tracker(cfg.tracking), default_model_ref(cfg, model_ref))
    return f"{name}/{version}"


def resolve_model(tracker: Any, ref: str) -> tuple[str, str, str, str]:
    """``Tracker.resolve_model`` (name, version, run id, models:/ URI), with ``NoChampionError``
    for an alias (``NAME`` alone means ``NAME@champion``) that no version of the model holds,
    or a registered model that does not exist yet."""
    try:
        return tracker.resolve_model(ref)
    except InputValidationError:
        if "/" in ref and "@" not in ref:
            raise  # a version number that does not exist: the registry's own message says so
        name, _, alias = ref.partition("@")
        alias = alias or "champion"
        found = tracker.client.search_registered_models(filter_string=f"name = '{name}'")
        if found and alias in (found[0].aliases or {}):
            raise  # the alias exists: something else went wrong, and the message says what
        raise NoChampionError(_no_alias_message(tracker, name, alias, found)) from None


def _no_alias_message(tracker: Any, name: str, alias: str, found: list[Any]) -> str:
    first_run = (
        "run the pipeline first (`forecast run CONFIG`, or the nightly forecast_pipeline "
        "deployment): it registers the best model and makes it the champion"
    )
    if not found:
        return (
            f"no model is registered as {name!r} in tracking store {tracker.uri} yet, so "
            f"{name}@{alias} names no version; {first_run}"
        )
    aliases = found[0].aliases or {}
    held = ", ".join(f"{a} -> version {v}" for a, v in sorted(aliases.items())) or "none"
    versions = tracker.client.search_model_versions(f"name = '{name}'")
    latest = max((int(v.version) for v in versions), default=None)
    pick = f", or predict with one version: --model {name}/{latest}" if latest is not None else ""
    todo = first_run if alias == "champion" else "set the alias on a version (MLflow UI, Models page)"
    return (
        f"registered model {name!r} has no version with alias {alias!r} (its aliases: {held}); {todo}{pick}"
    )
