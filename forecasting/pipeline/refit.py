"""Refit before serving: the selected model trained again on every row up to the end of the data.

Selection needs rows a model did not train on, so the evaluated model never saw the validation
and test periods, the most recent data of every series. What is registered and served is the
same configuration trained on all of it: the family's settings, the number of epochs selection
kept (its best epoch; no early stopping, since no row is held out), and a scaler fit on the same
rows. An ensemble refits each member it weighs and keeps the weights chosen in selection. The
refit keeps the interval calibration of the evaluated model (offsets per step in units of each
window's own scale): it has no held-out rows to calibrate on, and with more data its errors are,
if anything, smaller, so its bands err on the wide side.

The refit is its own MLflow run (``role: refit``), a child of the pipeline run, tagged with the
evaluation run it came from (``evaluation_run_id``). It logs no ``val_*`` or ``test_*`` metric:
it has no rows left to score on.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from forecasting import stages
from forecasting.config import TrainingConfig
from forecasting.errors import TrackingError
from forecasting.evaluation.intervals import Calibration
from forecasting.models.base import Forecaster
from forecasting.models.ensemble import Ensemble
from forecasting.models.registry import build_model
from forecasting.pipeline.prepare import Prepared, fit_data_scaler
from forecasting.pipeline.train import (
    ModelResult,
    finished_whole,
    log_inputs,
    log_model,
    log_results,
    peak_rss_mb,
    result_from_run,
    run_params,
)


def refit_training(training: TrainingConfig, best_epoch: float | None) -> TrainingConfig:
    """The training settings of a refit: the epochs the evaluated fit kept, nothing held out, no
    checkpoint shared with the evaluated fit."""
    epochs = int(best_epoch) if best_epoch else training.epochs
    return training.model_copy(update={"epochs": epochs, "patience": None, "checkpoint_dir": None})


def refit(
    prepared: Prepared, best: ModelResult, results: list[ModelResult]
) -> tuple[Forecaster, Any, dict[str, float]]:
    """(the refit model, the scaler fit on every row, metrics of the refit) for ``best``, one of
    ``results`` (an ensemble's members are refit from theirs)."""
    cfg, data = prepared.cfg, prepared.data
    scaler = fit_data_scaler(data.frame, data)
    full = scaler.transform(data.frame)
    specs = {s.run_name: s for s in cfg.models}
    evaluated = {r.name: r for r in results}

    def again(name: str) -> Forecaster:
        training = refit_training(cfg.training, evaluated[name].metrics.get("best_epoch"))
        return build_model(specs[name], prepared.spec, training).fit(full, None)

    start = time.perf_counter()
    if best.family == "ensemble":
        if not best.weights:
            raise TrackingError(f"cannot refit ensemble {best.name!r}: its member weights are unknown")
        members = {name: again(name) for name, w in best.weights.items() if w > 0}
        settings = build_model(specs[best.name], prepared.spec).settings
        model: Forecaster = Ensemble.from_weights(members, best.weights, settings, cfg.training)
        epochs = {f"refit_epochs.{n}": float(m.training.epochs) for n, m in members.items()}
    else:
        model = again(best.name)
        epochs = {"refit_epochs": float(model.training.epochs)} if model.uses_training_loop else {}
    if best.calibration is not None:  # the bands selection measured, on the model it measured
        model.calibration_ = Calibration.from_dict(best.calibration)
    metrics = {
        "fit_seconds": time.perf_counter() - start,
        "refit_rows": float(len(full)),
        "n_params": float(model.n_params),
        "peak_rss_mb": peak_rss_mb(),
        **epochs,
    }
    return model, scaler, metrics


def refit_model(
    prepared: Prepared,
    best: ModelResult,
    results: list[ModelResult],
    tracker: Any,
    parent_run_id: str | None,
    tags: dict[str, str] | None = None,
) -> ModelResult:
    """Refit ``best`` on every row and log it (and its pyfunc) as a child run of the pipeline."""
    run_tags = {
        "model_family": best.family,
        "dataset_hash": prepared.data.dataset_hash,
        "role": "refit",
        "evaluation_run_id": best.run_id or "",
        **(tags or {}),
    }
    name = f"{best.name} refit"
    earlier = tracker.child_named(parent_run_id, name) if parent_run_id else None
    if earlier is not None and finished_whole(earlier, prepared.cfg.tracking.log_models):
        # An adopted pipeline run whose refit finished before its process died.
        return dataclasses.replace(result_from_run(earlier), name=best.name, family=best.family)
    adopt = earlier.info.run_id if earlier is not None else None
    stages.refit_started(name)
    with tracker.run(name, parent_id=parent_run_id, tags=run_tags, adopt=adopt) as run:
        if adopt is None or not earlier.inputs.dataset_inputs:
            log_inputs(run, prepared)
        model, scaler, metrics = refit(prepared, best, results)
        spec = next(s for s in prepared.cfg.models if s.run_name == best.name)
        params = run_params(prepared.cfg, spec, model)
        params["refit"] = {"rows": "all", "evaluation_run_id": best.run_id}
        run.log_params(params)
        model_uri = log_model(run, prepared, model, scaler)
        log_results(run, metrics, model_uri)
        if model_uri:
            run.set_tags({"model_uri": model_uri})
    stages.refit_finished(name, metrics)
    return ModelResult(
        best.name,
        best.family,
        "FINISHED",
        run_id=run.run_id,
        metrics=metrics,
        model_uri=model_uri,
        model=model,
    )
