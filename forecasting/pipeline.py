"""The pipeline as plain library calls: prepare data, train and score each model, pick a champion.

Prefect flows (``flows/``) call exactly these functions as tasks; the CLI's ``--no-prefect``
path and the tests call them directly. Nothing here imports prefect or mlflow: tracking goes
through ``forecasting.tracking.Tracker`` and the pyfunc through ``forecasting.serving``.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecasting.config import Config, ModelSpec, dump_config
from forecasting.data.ingest import IngestResult, ingest
from forecasting.data.scaling import Scaler, fit_scaler
from forecasting.data.splits import Split, split_frame
from forecasting.data.windows import Windows
from forecasting.errors import TrackingError
from forecasting.interrupts import raise_if_stopped
from forecasting.models.base import DataSpec, Forecaster
from forecasting.models.registry import build_model

SERIES, TIME, TARGET = "series_id", "t", "y"
METRIC_KEYS = ("mse", "mae", "rmse", "mase", "smape", "wape")


@dataclass(frozen=True)
class Prepared:
    """Validated, split and scaled data: every model is trained and scored on these windows."""

    cfg: Config
    data: IngestResult
    split: Split
    scaler: Scaler
    train: pd.DataFrame  # scaled
    val: pd.DataFrame  # scaled, starts lookback rows before the validation border
    test: pd.DataFrame  # scaled, starts lookback rows before the test border
    spec: DataSpec

    def windows(self, frame: pd.DataFrame) -> Windows:
        from forecasting.data.windows import to_arrays

        arrays = to_arrays(frame, self.spec.past, self.spec.future, self.spec.static)
        return Windows(arrays, self.spec.lookback, self.spec.horizon, stride=1)


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
    test_predictions: pd.DataFrame | None = None


def prepare(cfg: Config, data: IngestResult | None = None) -> Prepared:
    """Ingest (unless given), split by time per series, fit the scaler on train only, scale."""
    data = data if data is not None else ingest(cfg.data)
    split = split_frame(data.frame, cfg.split, cfg.window)
    columns = [TARGET, *data.past, *data.future, *data.static]
    scaler = fit_scaler(split.train, columns)
    spec = DataSpec(
        lookback=cfg.window.lookback,
        horizon=cfg.window.horizon,
        past=list(data.past),
        future=list(data.future),
        static=list(data.static),
    )
    return Prepared(
        cfg=cfg,
        data=data,
        split=split,
        scaler=scaler,
        train=scaler.transform(split.train),
        val=scaler.transform(split.val),
        test=scaler.transform(split.test),
        spec=spec,
    )


def season_length(freq: str) -> int:
    """The seasonal period MASE is scaled by: a day for sub-daily data, a week for daily data."""
    from pandas.tseries.frequencies import to_offset
    from pandas.tseries.offsets import Tick

    offset = to_offset(freq)
    if isinstance(offset, Tick):
        step = pd.Timedelta(offset)
        if step < pd.Timedelta(days=1) and pd.Timedelta(days=1) % step == pd.Timedelta(0):
            return int(pd.Timedelta(days=1) / step)
    if offset.name == "D" and offset.n == 1:  # Day is calendar-aware (not a Tick) in pandas 3
        return 7
    return 1


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
    import dataclasses

    settings = dataclasses.asdict(model.settings) if dataclasses.is_dataclass(model.settings) else {}
    params: dict[str, Any] = {
        "model": {"name": spec.name, **settings},
        "data": cfg.data.model_dump(mode="json", exclude={"path"}),
        "data.path": str(cfg.data.path),
        "split": cfg.split.model_dump(mode="json"),
        "window": cfg.window.model_dump(mode="json"),
    }
    if model.uses_training_loop:
        params["training"] = cfg.training.model_dump(mode="json")
    if getattr(model, "weights_", None):  # an ensemble: what it ended up combining
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
    from forecasting.evaluation.metrics import evaluate_windows

    cfg = prepared.cfg
    model = build_model(spec, prepared.spec, cfg.training)
    start = time.perf_counter()
    if members is not None:
        model.fit_members(members, prepared.val)
    else:
        model.fit(prepared.train, prepared.val, callbacks=callbacks or [])
    fit_seconds = time.perf_counter() - start
    season = season_length(prepared.data.freq)
    score = dict(scaler=prepared.scaler, train=prepared.train, season=season)
    val_metrics, _ = evaluate_windows(model, prepared.windows(prepared.val), predictions=False, **score)
    start = time.perf_counter()
    test_metrics, test_pred = evaluate_windows(model, prepared.windows(prepared.test), **score)
    predict_seconds = time.perf_counter() - start
    metrics = {f"val_{k}": v for k, v in val_metrics.items()}
    metrics.update({f"test_{k}": v for k, v in test_metrics.items()})
    metrics.update(
        fit_seconds=fit_seconds,
        predict_seconds=predict_seconds,
        n_params=float(model.n_params),
        peak_rss_mb=peak_rss_mb(),
    )
    if getattr(model, "best_epoch_", None) is not None:
        metrics["best_epoch"] = float(model.best_epoch_)
    return model, metrics, test_pred


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


TrainMany = Callable[[list[ModelSpec], "dict[str, Forecaster] | None"], list[ModelResult]]


def train_all(prepared: Prepared, train_many: TrainMany) -> list[ModelResult]:
    """Every configured model through ``train_many(specs, members) -> results`` (sequential,
    or fanned out to a task runner): the others first, then each ensemble from their fitted
    models (never trained twice). Results in config order."""
    specs = list(prepared.cfg.models)
    first = [s for s in specs if not is_ensemble(s)]
    done = dict(zip([s.run_name for s in first], train_many(first, None), strict=True))
    for spec in (s for s in specs if is_ensemble(s)):
        (done[spec.run_name],) = train_many([spec], ensemble_members(spec, list(done.values())))
    return [done[s.run_name] for s in specs]


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
        return ModelResult(
            spec.run_name, family, "FINISHED", metrics=metrics, model=model, test_predictions=pred
        )
    run_tags = {
        "model_family": family,
        "dataset_hash": prepared.data.dataset_hash,
        "role": "model",
        **(tags or {}),
    }
    try:
        with tracker.run(spec.run_name, parent_id=parent_run_id, tags=run_tags) as run:
            result = ModelResult(spec.run_name, family, "RUNNING", run_id=run.run_id)
            log_inputs(run, prepared)
            model, metrics, pred = fit_and_score(
                prepared, spec, callbacks=[run.epoch_callback, raise_if_stopped], members=members
            )
            run.log_params(run_params(prepared.cfg, spec, model))
            run.log_metrics(metrics)
            result.model_uri = _log_artifacts_and_model(run, prepared, model, pred)
            if result.model_uri:
                run.set_tags({"model_uri": result.model_uri})
            result.metrics, result.model, result.test_predictions = metrics, model, pred
        result.status = "FINISHED"
        return result
    except Exception as err:
        return ModelResult(
            spec.run_name,
            family,
            "FAILED",
            run_id=locals().get("run").run_id if "run" in locals() else None,
            error=f"{type(err).__name__}: {err}",
        )


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


def log_inputs(run: Any, prepared: Prepared) -> None:
    """The dataset (MLflow's dataset input: name, digest, source, schema, a 1,000-row profile),
    the config and the repair report, on a model run and on its pipeline run. The pipeline run logs
    them first, so that the dataset is stored before its models, which train concurrently, link
    it."""
    run.log_dataset(
        prepared.data.frame.head(1000),
        source=str(prepared.cfg.data.path),
        name=Path(prepared.cfg.data.path).stem,
        digest=prepared.data.dataset_hash,
        context="training",
    )
    run.log_text(dump_config(prepared.cfg), "config.yaml")
    run.log_dict(prepared.data.report.to_dict(), "repair_report.json")


def _log_artifacts_and_model(
    run: Any, prepared: Prepared, model: Forecaster, pred: pd.DataFrame
) -> str | None:
    from forecasting import plotting, serving

    run.log_frame(pred, "predictions/test_predictions.parquet")
    run.log_figure(plotting.forecast_plot(pred, n=3), "plots/forecast.png")
    history = getattr(model, "history_", None)
    if history:
        run.log_figure(plotting.learning_curve(history), "plots/learning_curve.png")
    if not prepared.cfg.tracking.log_models:
        return None
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        bundle = serving.write_bundle(
            model, prepared.scaler, prepared.cfg.data, prepared.data.freq, Path(tmp) / "bundle"
        )
        example = input_example(prepared)
        with run.activated():
            return serving.log_pyfunc(bundle, example, name="model")


def input_example(prepared: Prepared, n_series: int = 1) -> pd.DataFrame:
    """The last lookback rows of the first series in original units (+ future-covariate rows)."""
    frame = prepared.data.frame
    first = frame[SERIES].iloc[0]
    part = frame[frame[SERIES] == first]
    end = prepared.split.borders.loc[first, "test_end"]
    L, H = prepared.spec.lookback, prepared.spec.horizon
    history = part.iloc[end - L - H : end - H].copy()
    if prepared.spec.future:
        future = part.iloc[end - H : end].copy()
        future[TARGET] = np.nan
        history = pd.concat([history, future], ignore_index=True)
    return history.reset_index(drop=True)


def leaderboard(results: list[ModelResult], metric: str = "val_mse") -> pd.DataFrame:
    """One row per model, best first by the selection metric (failed models last)."""
    rows = []
    for r in results:
        row = {"model": r.name, "family": r.family, "status": r.status, "run_id": r.run_id}
        for key in (
            "val_mse",
            "val_mae",
            "test_mse",
            "test_mae",
            "test_mse_orig",
            "test_mae_orig",
            "fit_seconds",
        ):
            row[key] = r.metrics.get(key, np.nan)
        row["error"] = r.error or ""
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["_failed"] = table["status"] != "FINISHED"
    sort_key = metric if metric in table.columns else "val_mse"
    return (
        table.sort_values(["_failed", sort_key], na_position="last")
        .drop(columns="_failed")
        .reset_index(drop=True)
    )


# --- champion selection ---------------------------------------------------------------------------
def gate_origins(prepared: Prepared, max_origins: int = 12) -> list[int]:
    """Positions (within each series) of the validation forecast origins used by the gate."""
    b = prepared.split.borders.iloc[0]
    H = prepared.spec.horizon
    first, last = int(b["train_end"]), int(b["val_end"]) - H
    if last < first:
        return [first]
    return sorted(set(np.linspace(first, last, num=max_origins).astype(int).tolist()))


def gate_score(predict: Any, prepared: Prepared, origins: list[int]) -> float:
    """MSE (original units) of a pyfunc-like ``predict(frame)`` over the same validation origins."""
    frame = prepared.data.frame
    H = prepared.spec.horizon
    pos = frame.groupby(SERIES, sort=False).cumcount().to_numpy()
    errors = []
    for origin in origins:
        # All history before the origin: the incumbent may need a longer lookback than L.
        history = frame[pos < origin]
        if prepared.spec.future:
            future = frame[(pos >= origin) & (pos < origin + H)].copy()
            future[TARGET] = np.nan
            history = pd.concat([history, future], ignore_index=True)
        truth = frame[(pos >= origin) & (pos < origin + H)][[SERIES, TIME, TARGET]]
        forecast = predict(history.reset_index(drop=True))
        merged = truth.merge(forecast[[SERIES, TIME, "yhat"]], on=[SERIES, TIME], how="left")
        errors.append((merged["yhat"].to_numpy(float) - merged[TARGET].to_numpy(float)) ** 2)
    err = np.concatenate(errors)
    return float(np.mean(err)) if np.isfinite(err).all() else float("inf")


@dataclass
class ChampionDecision:
    model: str
    version: str
    alias: str  # champion | challenger
    candidate_score: float
    incumbent_version: str | None
    incumbent_score: float | None
    selection_metric: str
    selection_value: float


def select_champion(
    tracker: Any, prepared: Prepared, results: list[ModelResult], parent_run_id: str | None = None
) -> ChampionDecision:
    """Register the best finished model by validation score; move ``champion`` only if it wins.

    The candidate is reloaded from the registry and smoke-tested before any alias moves. Both it
    and the incumbent champion are re-scored through the same pyfunc path on the same validation
    origins; the decision and both scores are tagged on the new version.
    """
    from forecasting import serving

    metric = prepared.cfg.tracking.selection_metric
    if metric.startswith("test_"):
        raise TrackingError(f"selection_metric {metric!r} is a test metric; choose on validation (val_*)")
    finished = [
        r
        for r in results
        if r.status == "FINISHED" and r.model_uri and np.isfinite(r.metrics.get(metric, np.nan))
    ]
    if not finished:
        failed = ", ".join(f"{r.name} ({r.error})" for r in results)
        raise TrackingError(f"no model finished with a finite {metric}; failures: {failed}")
    best = min(finished, key=lambda r: r.metrics[metric])
    version = tracker.register(
        best.model_uri, best.run_id, tags={"model_family": best.family, metric: best.metrics[metric]}
    )
    uri = f"models:/{tracker.cfg.registered_model}/{version}"
    candidate = serving.load_pyfunc(uri)
    origins = gate_origins(prepared)
    smoke = candidate.predict(input_example(prepared))
    if not np.isfinite(smoke["yhat"].to_numpy(float)).all() or smoke.empty:
        tracker.tag_version(version, {"decision": "rejected: non-finite smoke-test forecast"})
        raise TrackingError(f"version {version} of {tracker.cfg.registered_model} failed its smoke test")
    cand_score = gate_score(candidate.predict, prepared, origins)
    incumbent = tracker.alias_version("champion")
    inc_score = None
    if incumbent is not None:
        try:
            inc_score = gate_score(
                serving.load_pyfunc(f"models:/{tracker.cfg.registered_model}/{incumbent}").predict,
                prepared,
                origins,
            )
        except Exception:
            inc_score = float("inf")
    wins = incumbent is None or cand_score < inc_score
    alias = "champion" if wins else "challenger"
    tracker.set_alias(alias, version)
    tracker.tag_version(
        version,
        {
            "decision": alias,
            "candidate_score": cand_score,
            "incumbent_version": incumbent or "none",
            "incumbent_score": "none" if inc_score is None else inc_score,
            "gate_metric": "val_mse_orig over gate origins",
            "gate_origins": len(origins),
            "selection_metric": metric,
            "selection_value": best.metrics[metric],
            "parent_run_id": parent_run_id or "",
        },
    )
    return ChampionDecision(
        best.name, version, alias, cand_score, incumbent, inc_score, metric, best.metrics[metric]
    )


# --- the whole pipeline, sequentially ------------------------------------------------------------
@dataclass
class PipelineResult:
    prepared: Prepared
    results: list[ModelResult]
    leaderboard: pd.DataFrame
    decision: ChampionDecision | None
    parent_run_id: str | None


def pipeline_tags(prepared: Prepared, flow_run_id: str | None = None) -> dict[str, str]:
    tags = {"role": "pipeline", "dataset_hash": prepared.data.dataset_hash}
    if flow_run_id:
        tags["prefect_flow_run_id"] = flow_run_id
    return tags


def log_pipeline_summary(
    parent: Any, prepared: Prepared, results: list[ModelResult], board: pd.DataFrame
) -> None:
    """Leaderboard table, comparison plot and the best model's name on the parent run."""
    from forecasting import plotting

    parent.log_frame(board, "leaderboard.csv")
    parent.log_text(board.to_string(index=False), "leaderboard.txt")
    frames = {r.name: r.test_predictions for r in results if r.test_predictions is not None}
    if frames:
        parent.log_figure(plotting.comparison_plot(frames), "plots/comparison.png")
    finished = board[board["status"] == "FINISHED"]
    parent.set_tags(
        {
            "best_model": finished["model"].iloc[0] if len(finished) else "none",
            "failed_models": ",".join(board.loc[board["status"] != "FINISHED", "model"]) or "none",
        }
    )
    parent.log_metrics({f"{r.name}.val_mse": r.metrics.get("val_mse") for r in results if r.metrics})


def run_pipeline(cfg: Config, tracker: Any = None, flow_run_id: str | None = None) -> PipelineResult:
    """Ingest, train every configured model, log it all and select the champion.

    Bad input raises before any MLflow run starts, so nothing is left half-logged.
    """
    from forecasting.tracking import Tracker

    prepared = prepare(cfg)
    tracker = tracker or Tracker(cfg.tracking)
    with tracker.run("pipeline", tags=pipeline_tags(prepared, flow_run_id)) as parent:
        parent.log_params(
            {
                "config": cfg.model_dump(mode="json", exclude={"models"}),
                "models": [m.run_name for m in cfg.models],
            }
        )
        log_inputs(parent, prepared)
        results = train_all(
            prepared,
            lambda specs, members: [
                train_model(prepared, spec, tracker, parent.run_id, members=members) for spec in specs
            ],
        )
        board = leaderboard(results, cfg.tracking.selection_metric)
        log_pipeline_summary(parent, prepared, results, board)
        decision = select_champion(tracker, prepared, results, parent.run_id)
        parent.set_tags({"champion_decision": decision.alias, "registered_version": decision.version})
    return PipelineResult(prepared, results, board, decision, parent.run_id)


def asdict(decision: ChampionDecision | None) -> dict[str, Any] | None:
    import dataclasses

    return dataclasses.asdict(decision) if decision is not None else None


def results_from_runs(tracker: Any, parent_run_id: str) -> list[ModelResult]:
    """Rebuild the model results of a finished pipeline run from its child runs in MLflow."""
    runs = tracker.child_runs(parent_run_id)
    results = []
    for _, row in runs.iterrows():
        metrics = {
            k[len("metrics.") :]: float(v) for k, v in row.items() if k.startswith("metrics.") and pd.notna(v)
        }
        results.append(
            ModelResult(
                name=row.get("tags.mlflow.runName", ""),
                family=row.get("tags.model_family", ""),
                status=row["status"],
                run_id=row["run_id"],
                metrics=metrics,
                model_uri=row.get("tags.model_uri") if pd.notna(row.get("tags.model_uri")) else None,
                error=row.get("tags.error") if pd.notna(row.get("tags.error")) else None,
            )
        )
    return results


def leaderboard_from_mlflow(tracking: Any, run_id: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The leaderboard of a pipeline run (the latest when ``run_id`` is None), from MLflow."""
    from forecasting.errors import InputValidationError
    from forecasting.tracking import Tracker

    tracker = Tracker(tracking)
    if run_id is None:
        parents = tracker.pipeline_runs(max_results=1)
        if not parents:
            raise InputValidationError(
                f"no pipeline run in experiment {tracking.experiment!r} yet; run one first"
            )
        run_id = parents[0]
    results = results_from_runs(tracker, run_id)
    if not results:
        raise InputValidationError(
            f"run {run_id!r} has no model runs (is it a pipeline run of {tracking.experiment!r}?)"
        )
    board = leaderboard(results, tracking.selection_metric)
    return run_id, board.to_dict(orient="records")


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
