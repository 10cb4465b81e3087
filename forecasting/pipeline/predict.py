"""Batch prediction with a registered model, logged as its own MLflow run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from forecasting.config import Config
from forecasting.data.schema import SERIES


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
    """
    from forecasting import serving
    from forecasting.tracking import Tracker

    tracker = Tracker(cfg.tracking)
    ref = model_ref or cfg.predict.model or f"{cfg.tracking.registered_model}@champion"
    name, version, source_run, uri = tracker.resolve_model(ref)
    source = Path(input_path) if input_path else (cfg.predict.input or cfg.data.path)
    output = Path(output_path) if output_path else cfg.predict.output
    tags = {"role": "prediction", "model_name": name, "model_version": version, "source_run_id": source_run}
    with tracker.run(f"predict {name} v{version}", tags=tags) as run:
        start = time.perf_counter()
        forecasts = serving.batch_predict(
            uri, source, output, model_name=name, model_version=version, run_id=source_run
        )
        seconds = time.perf_counter() - start
        run.log_params({"model_uri": uri, "input": str(source), "output": str(output)})
        run.log_metrics(
            {"n_series": forecasts[SERIES].nunique(), "rows": len(forecasts), "predict_seconds": seconds}
        )
        run.log_frame(forecasts, f"forecasts/{output.name}")
    return {
        "output": str(output.resolve()),
        "rows": len(forecasts),
        "series": int(forecasts[SERIES].nunique()),
        "model": f"{name}/{version}",
        "prediction_run_id": run.run_id,
    }
