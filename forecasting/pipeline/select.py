"""The champion gate: register the best model by its validation score and move ``champion`` only
when the candidate beats the incumbent on validation origins that neither trained on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forecasting.data.schema import SERIES, TARGET, TIME, string_ids
from forecasting.errors import TrackingError
from forecasting.evaluation.intervals import selection_key
from forecasting.faults import failpoint
from forecasting.pipeline.prepare import Prepared, input_example, run_key
from forecasting.pipeline.train import ModelResult


@dataclass
class ChampionDecision:
    model: str
    version: str
    alias: str  # champion | challenger | unchanged (the champion already is this model on this data)
    candidate_score: float
    incumbent_version: str | None
    incumbent_score: float | None
    selection_metric: str
    selection_value: float


def gate_origins(prepared: Prepared, max_origins: int = 12) -> np.ndarray:
    """The validation forecast origins the gate scores: (K, S) row positions, row ``k`` the k-th
    origin of every series (in the order of ``prepared.split.borders``).

    Each series' own validation period holds its origins, spread evenly from its first origin
    (the validation border) to its last full horizon, so no origin of any series falls in its
    training or test rows, whatever the series' lengths. (A validation period shorter than a
    horizon, which the split refuses, would score its one origin partly on test rows.)
    """
    b = prepared.split.borders
    H = prepared.spec.horizon
    first = b["train_end"].to_numpy(np.int64)
    last = np.maximum(b["val_end"].to_numpy(np.int64) - H, first)
    origins = np.linspace(first, last, num=max_origins, axis=0).astype(np.int64)  # (K, S)
    return np.unique(origins, axis=0)  # a short validation period repeats origins: once each


def gate_score(predict: Any, prepared: Prepared, origins: np.ndarray, history: int | None = None) -> float:
    """MSE (original units) of a pyfunc-like ``predict(frame)`` over the validation ``origins``
    (``gate_origins``). ``history``: rows before each origin to hand over (the longest lookback
    of the compared models; None: every row), so each call forecasts from what the models read."""
    frame = prepared.data.frame
    H = prepared.spec.horizon
    codes, uniques = pd.factorize(frame[SERIES], sort=False)
    column = prepared.split.borders.index.get_indexer(uniques)[codes]  # each row's series' column
    pos = frame.groupby(SERIES, sort=False).cumcount().to_numpy()
    errors = []
    for row in np.atleast_2d(origins):
        at = row[column]  # (rows,) the origin of each row's series
        before = (pos < at) if history is None else (pos < at) & (pos >= at - history)
        ahead = (pos >= at) & (pos < at + H)
        past = frame[before]
        if prepared.spec.future:
            future = frame[ahead].copy()
            future[TARGET] = np.nan
            past = pd.concat([past, future], ignore_index=True)
        truth = frame[ahead][[SERIES, TIME, TARGET]]
        forecast = predict(string_ids(past.reset_index(drop=True)))
        merged = truth.merge(forecast[[SERIES, TIME, "yhat"]], on=[SERIES, TIME], how="left")
        errors.append((merged["yhat"].to_numpy(float) - merged[TARGET].to_numpy(float)) ** 2)
    err = np.concatenate(errors)
    return float(np.mean(err)) if np.isfinite(err).all() else float("inf")


def lookback_of(pyfunc: Any) -> int | None:
    """The lookback of a forecasting pyfunc (its bundle's), or None when it does not say."""
    try:
        return int(pyfunc.get_raw_model().lookback)
    except Exception:
        return None


def best_result(results: list[ModelResult], metric: str) -> ModelResult:
    """The finished model with the lowest validation ``metric`` (never a test metric); a coverage
    (``val_coverage_95``) by its distance from nominal (``intervals.selection_key``)."""
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
    return min(finished, key=lambda r: selection_key(metric, r.metrics[metric]))


def _evaluated_uri(tracker: Any, version: str) -> str:
    """The model a registered version was evaluated as: its evaluation run's model when the
    version is a refit, else the version itself."""
    tags = tracker.version_info(version).tags or {}
    return tags.get("evaluation_model_uri") or f"models:/{tracker.cfg.registered_model}/{version}"


def select_champion(
    tracker: Any,
    prepared: Prepared,
    results: list[ModelResult],
    parent_run_id: str | None = None,
    refit: ModelResult | None = None,
) -> ChampionDecision:
    """Register the best finished model by validation score; move ``champion`` only if it wins.

    ``refit``: the best model trained again on every row (``pipeline.refit``); it is what gets
    registered and served. The gate compares the *evaluated* models (the candidate's, and the
    incumbent's evaluated model when the incumbent is a refit) on the same validation origins,
    through the same pyfunc path: rows neither of them trained on. The registered candidate is
    reloaded from the registry and smoke-tested before any alias moves; the decision and both
    scores are tagged on the new version, then the alias is set.

    Idempotent per pipeline run (``parent_run_id``), so the flow's retries are safe: a retry finds
    the version the failed try registered (``Tracker.register``) and, once its decision is
    tagged, returns that decision and sets the same alias again instead of gating a second time.
    """
    from forecasting import serving
    from forecasting.tracking import code_version

    metric = prepared.cfg.tracking.selection_metric
    best = best_result(results, metric)
    served = refit if refit is not None else best
    if not served.model_uri:
        raise TrackingError(f"the refit of {best.name!r} logged no model to register")
    key, code = run_key(prepared), code_version()
    unchanged = _unchanged_champion(tracker, key, code, parent_run_id)
    if unchanged is not None:
        return _recorded_decision(tracker, best, unchanged, tracker.version_info(unchanged).tags, "unchanged")
    version = tracker.register(
        served.model_uri,
        served.run_id,
        tags={
            "model_family": best.family,
            "selection_metric": metric,
            metric: best.metrics[metric],  # the metric as the runs log it (scaled unless *_orig)
            "evaluation_run_id": best.run_id,
            "evaluation_model_uri": best.model_uri,
            "refit": refit is not None,
            "parent_run_id": parent_run_id or "",
            "run_key": key,
            "code_version": code,
            "dataset_hash": prepared.data.dataset_hash,
        },
    )
    failpoint("select")
    recorded = tracker.version_info(version).tags or {}
    if "decision" in recorded:
        return _recorded_decision(tracker, best, version, recorded)
    uri = f"models:/{tracker.cfg.registered_model}/{version}"
    candidate = serving.load_pyfunc(uri)
    origins = gate_origins(prepared)
    smoke = candidate.predict(input_example(prepared))
    if not np.isfinite(smoke["yhat"].to_numpy(float)).all() or smoke.empty:
        tracker.tag_version(version, {"decision": "rejected: non-finite smoke-test forecast"})
        raise TrackingError(f"version {version} of {tracker.cfg.registered_model} failed its smoke test")
    evaluated = serving.load_pyfunc(best.model_uri) if refit is not None else candidate
    incumbent = tracker.alias_version("champion")
    rival = None
    if incumbent is not None:
        try:
            rival = serving.load_pyfunc(_evaluated_uri(tracker, incumbent))
        except Exception:
            rival = None
    # Both models forecast from the same rows: as many before each origin as the longer lookback.
    lookbacks = [lookback_of(m) for m in (evaluated, rival) if m is not None]
    history = None if None in lookbacks else max(lookbacks)
    cand_score = gate_score(evaluated.predict, prepared, origins, history)
    inc_score = None
    if incumbent is not None:
        try:
            inc_score = gate_score(rival.predict, prepared, origins, history) if rival else float("inf")
        except Exception:
            inc_score = float("inf")
    wins = incumbent is None or cand_score < inc_score
    alias = "champion" if wins else "challenger"
    tracker.tag_version(
        version,
        {
            "gate_mse_orig": cand_score,
            "incumbent_version": incumbent or "none",
            "incumbent_gate_mse_orig": "none" if inc_score is None else inc_score,
            "gate": "MSE in original units over the validation origins (evaluated models)",
            "gate_origins": len(origins),
        },
    )
    # "decision" last: a retry reads the full record once it is there (set with the other tags).
    tracker.tag_version(version, {"decision": alias})
    tracker.set_alias(alias, version)
    return ChampionDecision(
        best.name, version, alias, cand_score, incumbent, inc_score, metric, best.metrics[metric]
    )


def _unchanged_champion(tracker: Any, key: str, code: str, parent_run_id: str | None) -> str | None:
    """The champion's version when an earlier pipeline run already made it from this model: the
    same run key (config and data) and the same code. A retrain that changed nothing registers
    nothing. (The champion this pipeline run made itself is its retried step's business.)"""
    champion = tracker.alias_version("champion")
    if champion is None:
        return None
    tags = tracker.version_info(champion).tags or {}
    same = tags.get("run_key") == key and tags.get("code_version") == code and code != "unknown"
    same = same and tags.get("parent_run_id") != (parent_run_id or "")
    return champion if same else None


def _recorded_decision(
    tracker: Any, best: ModelResult, version: str, tags: dict[str, str], decision: str | None = None
) -> ChampionDecision:
    """The decision a previous try of this pipeline run's champion step tagged on ``version``;
    its alias is set (again: the same version, so nothing moves) in case that try failed first.
    ``decision="unchanged"``: ``version`` is the champion, already trained on this config and data."""
    recorded = tags["decision"]
    if recorded not in ("champion", "challenger"):
        raise TrackingError(
            f"version {version} of {tracker.cfg.registered_model} has the decision {recorded!r} "
            "from an earlier try of this pipeline run's champion step"
        )
    if decision is None and tracker.alias_version(recorded) != version:
        tracker.set_alias(recorded, version)
    metric = tags["selection_metric"]
    incumbent = tags.get("incumbent_version", "none")
    inc_score = tags.get("incumbent_gate_mse_orig", "none")
    if decision == "unchanged":
        incumbent, inc_score = version, tags["gate_mse_orig"]
    return ChampionDecision(
        best.name,
        version,
        decision or recorded,
        float(tags["gate_mse_orig"]),
        None if incumbent == "none" else incumbent,
        None if inc_score == "none" else float(inc_score),
        metric,
        float(tags[metric]),
    )


def asdict(decision: ChampionDecision | None) -> dict[str, Any] | None:
    import dataclasses

    return dataclasses.asdict(decision) if decision is not None else None
