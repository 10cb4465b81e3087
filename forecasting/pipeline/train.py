"""Training: fit one model, score it on the validation and test windows, log it as a child run;
and the order in which a run's models are trained (every other model first, then each ensemble
from their fitted models, so no member is trained twice)."""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecasting import stages
from forecasting.config import Config, ModelSpec, dump_config
from forecasting.data.schema import string_ids
from forecasting.faults import epoch_failpoint
from forecasting.interrupts import raise_if_stopped
from forecasting.models.base import Forecaster
from forecasting.models.registry import build_model
from forecasting.pipeline.prepare import Prepared, input_example, season_length


@dataclass
class ModelResult:
    """What training one model produced (also when it failed)."""

    name: str
    family: str
    status: str  # FINISHED | FAILED
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    model_uri: str | None = None
    error: str | None = None
    model: Forecaster | None = None
    # The test forecasts of at most ``PLOT_SERIES`` series, the same ones for every model (the
    # comparison plot's pool; ``plot_sample``). Every series' are in the run's artifact.
    test_predictions: pd.DataFrame | None = None
    weights: dict[str, float] | None = None  # an ensemble's member weights (small: travels back)
    # The model's interval calibration (``Calibration.to_dict``; small: travels back), which its
    # refit inherits: a refit has no held-out rows left to calibrate on.
    calibration: dict[str, Any] | None = None


@dataclass(frozen=True)
class TrainJob:
    """One model to train, score and log as a child of ``parent_run_id``: all that a task needs,
    on this process or on a Dask worker."""

    prepared: Prepared
    spec: ModelSpec
    parent_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    members: dict[str, Forecaster] | None = None  # an ensemble's fitted members

    @property
    def model_kept(self) -> bool:
        """Whether the fitted model must travel back with the result (an ensemble combines it);
        otherwise it lives in MLflow and the result stays small."""
        return feeds_an_ensemble(self.prepared.cfg, self.spec)


# How a list of jobs is run (one after another here; as Prefect tasks on a thread pool or on Dask
# workers in ``flows/``). Results come back in the order of the jobs.
TrainMany = Callable[[list[TrainJob]], list[ModelResult]]


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Linux: ``VmHWM`` from /proc/self/status. ``getrusage``'s ``ru_maxrss`` survives ``exec``, so a
    process started from a large parent (a Dask or Prefect worker, a subprocess of a big driver)
    would report the parent's size (seen in bench/speed.py). Elsewhere: ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run_params(cfg: Config, spec: ModelSpec, model: Forecaster) -> dict[str, Any]:
    """Every setting that changes the result, flattened by the tracker."""
    settings = dataclasses.asdict(model.settings) if dataclasses.is_dataclass(model.settings) else {}
    params: dict[str, Any] = {
        "model": {"name": spec.name, **settings},
        "data": cfg.data.model_dump(mode="json", exclude={"path"}),
        "data.path": str(cfg.data.path),
        "split": cfg.split.model_dump(mode="json"),
        "window": cfg.window.model_dump(mode="json"),
        "features": {"calendar": model.window_calendar or "none"},  # what its windows carried
    }
    if model.uses_training_loop:
        params["training"] = cfg.training.model_dump(mode="json")
    if model.weights_:  # an ensemble: what it ended up combining
        params["model"]["weights"] = dict(model.weights_)
    return params


def fit_and_score(
    prepared: Prepared,
    spec: ModelSpec,
    callbacks: list | None = None,
    members: dict[str, Forecaster] | None = None,
) -> tuple[Forecaster, dict[str, float], pd.DataFrame]:
    """Fit one model and score it on the validation and test windows (no tracking).

    ``members``: for an ensemble, the fitted models it combines (see ``ensemble_members``).
    """
    from forecasting.evaluation.metrics import collect_forecasts, evaluate_windows

    model = build_model(spec, prepared.spec, prepared.training_for(spec.run_name), members=members)
    start = time.perf_counter()
    model.fit(prepared.train, prepared.val, callbacks=callbacks or [])
    fit_seconds = time.perf_counter() - start
    season = season_length(prepared.data.freq)
    score = dict(scaler=prepared.scaler, train=prepared.train, season=season)
    # The model's own windows: a family that reads no calendar computes and holds none.
    val_windows = model.make_windows(prepared.val, stride=prepared.spec.eval_stride)
    folds = prepared.validation_folds(val_windows)
    intervals = prepared.cfg.intervals
    chunks = prepared.cfg.orchestration.score_chunk_windows  # on a Dask worker: spread over the cluster
    val = collect_forecasts(
        model,
        val_windows,
        native=intervals.method == "native",
        scale=(intervals.scale, season) if intervals.enabled else None,
        chunk_windows=chunks,
    )
    start = time.perf_counter()
    if intervals.enabled:
        calibrate_model(model, val, folds, intervals, season)
    calibrate_seconds = time.perf_counter() - start
    val_metrics, _ = evaluate_windows(
        model, val_windows, predictions=False, folds=folds, forecasts=val, **score
    )
    start = time.perf_counter()
    test_windows = model.make_windows(prepared.test, stride=prepared.spec.eval_stride)
    test_metrics, test_pred = evaluate_windows(model, test_windows, chunk_windows=chunks, **score)
    predict_seconds = time.perf_counter() - start
    metrics = {f"val_{k}": v for k, v in val_metrics.items()}
    metrics.update({f"test_{k}": v for k, v in test_metrics.items()})
    metrics.update(
        fit_seconds=fit_seconds,
        calibrate_seconds=calibrate_seconds,
        predict_seconds=predict_seconds,
        n_params=float(model.n_params),
        peak_rss_mb=peak_rss_mb(),
        train_windows=float(model.train_windows_),
    )
    if model.best_epoch_ is not None:
        metrics["best_epoch"] = float(model.best_epoch_)
    return model, metrics, test_pred


def calibrate_model(model: Forecaster, val: Any, folds: Any, intervals: Any, season: int) -> None:
    """Calibrate ``model``'s intervals on its validation forecasts (``collect_forecasts``), rows it
    did not train on, and set the out-of-fold bands on ``val`` for scoring: each validation fold
    banded by a calibration of the others, so no ``val_*`` interval metric is scored on the
    residuals that set its bands. One fold: the earlier and later halves of the windows."""
    import numpy as np

    from forecasting.evaluation.intervals import calibrate, cross_bands

    base = val.native if val.native is not None else val.yhat
    args = dict(
        levels=intervals.levels,
        quantiles=intervals.quantiles,
        season=season,
        native=val.native is not None,
        scale_kind=intervals.scale,
    )
    model.calibration_ = calibrate(val.y, base, val.scale, **args)
    if len(np.unique(folds)) < 2:
        folds = np.arange(len(val.y)) * 2 // max(len(val.y), 1)
    val.bands = cross_bands(val.y, base, val.scale, folds, **args)


# --- which models an ensemble combines -----------------------------------------------------------
def is_ensemble(spec: ModelSpec) -> bool:
    return spec.name == "ensemble"


def _combines(ensemble: ModelSpec, family: str, run_name: str) -> bool:
    """The membership rule: every other (non-ensemble) model, or those its ``members`` name."""
    wanted = ensemble.params.get("members")
    return family != "ensemble" and (not wanted or run_name in wanted)


def feeds_an_ensemble(cfg: Config, spec: ModelSpec) -> bool:
    """Whether an ensemble of ``cfg`` combines ``spec``'s fitted model (so it must be kept)."""
    return any(is_ensemble(e) and _combines(e, spec.name, spec.run_name) for e in cfg.models)


def ensemble_members(spec: ModelSpec, results: list[ModelResult]) -> dict[str, Forecaster]:
    """The fitted models of this run an ensemble combines: those named in its ``members``
    (run names), or every other model that finished; failed ones are left out."""
    return {
        r.name: r.model
        for r in results
        if r.status == "FINISHED" and r.model is not None and _combines(spec, r.family, r.name)
    }


# --- training every model of a run ---------------------------------------------------------------
def train_all(
    prepared: Prepared, parent_run_id: str | None, train_many: TrainMany, tags: dict[str, str] | None = None
) -> list[ModelResult]:
    """Every configured model through ``train_many``: the others first, then each ensemble from
    their fitted models (never trained twice). Results in config order."""
    specs = list(prepared.cfg.models)

    def job(spec: ModelSpec, members: dict[str, Forecaster] | None = None) -> TrainJob:
        return TrainJob(prepared, spec, parent_run_id, dict(tags or {}), members)

    first = [s for s in specs if not is_ensemble(s)]
    done = dict(zip([s.run_name for s in first], train_many([job(s) for s in first]), strict=True))
    for spec in (s for s in specs if is_ensemble(s)):
        (done[spec.run_name],) = train_many([job(spec, ensemble_members(spec, list(done.values())))])
    return [done[s.run_name] for s in specs]


def train_job(job: TrainJob, tracker: Any = None) -> ModelResult:
    """Train, score and log one job (a tracker from the job's config unless given)."""
    from forecasting.tracking import Tracker

    tracker = tracker or Tracker(job.prepared.cfg.tracking)
    return train_model(job.prepared, job.spec, tracker, job.parent_run_id, job.tags, job.members)


def train_model(
    prepared: Prepared,
    spec: ModelSpec,
    tracker: Any = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    members: dict[str, Forecaster] | None = None,
) -> ModelResult:
    """Train, score and log one model as a child run. A failure is returned, not raised.

    ``members``: an ensemble's fitted members (``ensemble_members``); None trains it alone.
    """
    family = spec.name
    if tracker is None:
        try:
            model, metrics, pred = fit_and_score(prepared, spec, members=members)
        except Exception as err:
            return ModelResult(spec.run_name, family, "FAILED", error=f"{type(err).__name__}: {err}")
        weights = dict(model.weights_) if model.weights_ else None
        return ModelResult(
            spec.run_name,
            family,
            "FINISHED",
            metrics=metrics,
            model=model,
            test_predictions=plot_sample(pred),
            weights=weights,
            calibration=_calibration(model),
        )
    run_tags = {
        "model_family": family,
        "dataset_hash": prepared.data.dataset_hash,
        "role": "model",
        **(tags or {}),
    }
    stages.model_started(prepared.cfg, spec.run_name)
    earlier = tracker.child_named(parent_run_id, spec.run_name) if parent_run_id else None
    if earlier is not None and finished_whole(earlier, prepared.cfg.tracking.log_models):
        # An adopted pipeline run (its process was killed): this model finished before the kill.
        stages.model_finished(prepared.cfg, spec.run_name, reused=True)
        return finished_result(tracker, earlier, keep_model=feeds_an_ensemble(prepared.cfg, spec))
    adopt = earlier.info.run_id if earlier is not None else None
    run = None
    try:
        with tracker.run(spec.run_name, parent_id=parent_run_id, tags=run_tags, adopt=adopt) as run:
            result = ModelResult(spec.run_name, family, "RUNNING", run_id=run.run_id)
            start = time.perf_counter()
            if adopt is None or not earlier.inputs.dataset_inputs:
                log_inputs(run, prepared)
            logging = time.perf_counter() - start
            model, metrics, pred = fit_and_score(
                prepared,
                spec,
                callbacks=[run.epoch_callback, raise_if_stopped, epoch_failpoint],
                members=members,
            )
            start = time.perf_counter()
            run.log_params(run_params(prepared.cfg, spec, model))
            result.model_uri = _log_artifacts_and_model(run, prepared, model, pred)
            # The run's own MLflow work (inputs, params, prediction frames, figures, the pyfunc),
            # before these metrics go: issue 24 wants it flat in the number of series.
            metrics["log_seconds"] = logging + time.perf_counter() - start
            log_results(run, metrics, result.model_uri)
            if result.model_uri:
                run.set_tags({"model_uri": result.model_uri})
            result.metrics, result.model, result.test_predictions = metrics, model, plot_sample(pred)
            result.weights = dict(model.weights_) if model.weights_ else None
            result.calibration = _calibration(model)
        result.status = "FINISHED"
        stages.model_finished(prepared.cfg, spec.run_name, result.metrics)
        return result
    except Exception as err:
        stages.model_finished(prepared.cfg, spec.run_name, error=f"{type(err).__name__}: {err}")
        return ModelResult(
            spec.run_name,
            family,
            "FAILED",
            run_id=run.run_id if run is not None else None,
            error=f"{type(err).__name__}: {err}",
        )


def _calibration(model: Forecaster) -> dict[str, Any] | None:
    return model.calibration_.to_dict() if model.calibration_ is not None else None


CALIBRATION_ARTIFACT = "calibration.json"  # a model run's interval calibration

# Per-epoch curves: logged at every step, not figures of the fitted model.
EPOCH_METRICS = frozenset({"train_loss", "val_loss", "lr"})


def result_from_run(run: Any) -> ModelResult:
    """The result a finished (or failed) model run recorded: its metrics, model URI, error and an
    ensemble's weights, read back from MLflow (no model, no predictions)."""
    data = run.data
    prefix = "model.weights."
    weights = {k[len(prefix) :]: float(v) for k, v in data.params.items() if k.startswith(prefix)}
    return ModelResult(
        name=run.info.run_name or "",
        family=data.tags.get("model_family", ""),
        status=run.info.status,
        run_id=run.info.run_id,
        metrics={k: float(v) for k, v in data.metrics.items() if k not in EPOCH_METRICS},
        model_uri=data.tags.get("model_uri"),
        error=data.tags.get("error"),
        weights=weights or None,
    )


def logged_calibration(tracker: Any, run_id: str) -> dict[str, Any] | None:
    """The interval calibration a model run logged (``calibration.json``), or None: its refit
    inherits it when the results are read back from MLflow."""
    if not any(a.path == CALIBRATION_ARTIFACT for a in tracker.client.list_artifacts(run_id)):
        return None
    return tracker.load_dict(run_id, CALIBRATION_ARTIFACT)


def finished_whole(run: Any, log_models: bool) -> bool:
    """Whether a child run a killed process left has everything a finished one has. Logging the
    pyfunc ends the run ``FINISHED`` early (MLflow's fluent run), before its ``model_uri`` tag, the
    last thing written: a kill between the two leaves a run to continue, not to reuse."""
    return run.info.status == "FINISHED" and (not log_models or "model_uri" in run.data.tags)


def finished_result(tracker: Any, run: Any, keep_model: bool) -> ModelResult:
    """A model run that finished before its pipeline's process died, as if it had just trained:
    its recorded result, its test predictions (the comparison plot) and, when an ensemble combines
    it, its fitted model, loaded (and verified) from its logged pyfunc."""
    from forecasting import serving

    result = result_from_run(run)
    result.test_predictions = plot_sample(
        tracker.load_frame(run.info.run_id, "predictions/test_predictions.parquet")
    )
    result.calibration = logged_calibration(tracker, run.info.run_id)
    if keep_model:
        if not result.model_uri:
            raise RuntimeError(f"model run {result.name!r} finished without a model to combine")
        result.model = serving.load_pyfunc_bundle(result.model_uri)[0].model
    return result


def workers_and_threads(cfg: Config) -> tuple[int, int]:
    """How many models train at once on this machine, and torch's threads for each.

    Default: one model per core (at most one per configured model), the cores shared out among
    them. The models of a pipeline are small: a second torch thread gains them little, and on a
    busy machine it can lose a lot (bench/BENCHMARKS.md, "noticed"), while a second task keeps
    the other core busy during one model's MLflow logging and Prefect's state traffic (the demo
    on 2 cores: ~4 s faster warm, bench/BENCHMARKS.md §6). ``orchestration.max_workers`` caps
    the tasks: each holds its model, its batches and, while it scores, its prediction frames in
    memory.
    """
    cores = os.cpu_count() or 1
    workers = min(cfg.orchestration.max_workers or cores, len(cfg.models)) or 1
    return workers, max(1, cores // workers)


# --- what a model run logs -----------------------------------------------------------------------
def log_inputs(run: Any, prepared: Prepared) -> None:
    """The dataset (MLflow's dataset input: name, digest, source, schema, a 1,000-row profile),
    the config and the repair report, on a model run and on its pipeline run. The pipeline run logs
    them first, so that the dataset is stored before its models, which train concurrently, link
    it."""
    run.log_dataset(
        string_ids(prepared.data.frame.head(1000)),
        source=str(prepared.cfg.data.path),
        name=Path(prepared.cfg.data.path).stem,
        digest=prepared.data.dataset_hash,
        context="training",
    )
    run.log_text(dump_config(prepared.cfg), "config.yaml")
    run.log_dict(prepared.data.report.to_dict(), "repair_report.json")


PER_SERIES_ARTIFACT = "metrics/per_series_test.parquet"
PLOT_SERIES = 100


def plot_sample(pred: pd.DataFrame, k: int = PLOT_SERIES) -> pd.DataFrame:
    """The rows of at most ``k`` series of a prediction frame, evenly spread over its series in
    their order (the same series for every model of a run): what a result keeps for the run's
    comparison plot, so that the results of a run held together do not grow with the series."""
    codes, uniques = pd.factorize(pred["series_id"], sort=False)
    if len(uniques) <= k:
        return pred
    keep = np.unique(np.linspace(0, len(uniques) - 1, k).round().astype(np.int64))
    return pred[np.isin(codes, keep)].reset_index(drop=True)


def per_series_scores(pred: pd.DataFrame) -> pd.DataFrame:
    """One row per series of a test prediction frame (``evaluate_windows``), in the order the
    series first appear: windows scored, MSE and MAE on the model's scale and, when the frame has
    them, in original units (NaN targets left out; NaN for a series with none). A run logs this
    artifact, not one metric per series, so its size in MLflow does not grow with the series.

    Sums by series code (``np.bincount``): no string per row, no group-by (2.4 M rows of 100 k
    series in a tenth of the time)."""
    codes, uniques = pd.factorize(pred["series_id"], sort=False)
    n = len(uniques)

    def mean_by_series(values: np.ndarray) -> np.ndarray:
        ok = ~np.isnan(values)
        total = np.bincount(codes[ok], weights=values[ok], minlength=n)
        count = np.bincount(codes[ok], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / count

    windows = pred["window"].to_numpy(dtype=np.int64)
    span = int(windows.max(initial=0)) + 1
    pairs = np.unique(codes.astype(np.int64) * span + windows)  # distinct (series, window)
    out = {
        "series_id": np.asarray(uniques).astype(str),
        "windows": np.bincount(pairs // span, minlength=n),
    }
    columns = [("", "yhat", "y")] + ([("_orig", "yhat_orig", "y_orig")] if "y_orig" in pred else [])
    for suffix, forecast, actual in columns:
        err = pred[forecast].to_numpy(dtype=np.float64) - pred[actual].to_numpy(dtype=np.float64)
        out[f"mse{suffix}"] = mean_by_series(err**2)
        out[f"mae{suffix}"] = mean_by_series(np.abs(err))
    return pd.DataFrame(out)


def plot_context(prepared: Prepared) -> dict[str, Any]:
    """What every forecast drawing of a run shares: the scaler (original units), the history to
    show before an origin (two seasons, at least a lookback) and the target's name for the axis."""
    from forecasting import plotting

    return {
        "scaler": prepared.scaler,
        "history_steps": plotting.history_length(prepared.spec.lookback, prepared.data.freq),
        "y_label": plotting.target_label(prepared.cfg.data.target),
    }


def _log_artifacts_and_model(
    run: Any, prepared: Prepared, model: Forecaster, pred: pd.DataFrame
) -> str | None:
    from forecasting import plotting

    run.log_frame(pred, "predictions/test_predictions.parquet")
    run.log_frame(per_series_scores(pred), PER_SERIES_ARTIFACT)
    if model.calibration_ is not None:
        run.log_dict(model.calibration_.to_dict(), CALIBRATION_ARTIFACT)
    forecast = plotting.forecast_plot(pred, prepared.data.frame, **plot_context(prepared), model=model.name)
    run.log_figure(forecast, "plots/forecast.png")
    if model.history_:
        curve = plotting.learning_curve(model.history_, model.best_epoch_, model=model.name)
        run.log_figure(curve, "plots/learning_curve.png")
    return log_model(run, prepared, model, prepared.scaler)


def log_results(run: Any, metrics: Mapping[str, float], model_uri: str | None) -> None:
    """A model run's metrics, after its model: linked to the logged model as they are written.
    Logged before it, MLflow would link them itself, reading every metric's history back from
    the store, one query per metric (``mlflow.models.Model.log``), a tenth of a model run's
    logging."""
    from forecasting.serving import logged_model_id

    run.log_metrics(metrics, model_id=logged_model_id(model_uri))


def log_model(run: Any, prepared: Prepared, model: Forecaster, scaler: Any) -> str | None:
    """The model with its scaler as the run's pyfunc (``tracking.log_models``); its URI."""
    from forecasting import serving

    if not prepared.cfg.tracking.log_models:
        return None
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        bundle = serving.write_bundle(
            model, scaler, prepared.cfg.data, prepared.data.freq, Path(tmp) / "bundle"
        )
        with run.activated():
            return serving.log_pyfunc(bundle, input_example(prepared), name="model")
