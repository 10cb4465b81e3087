"""Accuracy against arriving actuals, and the rules that say when to retrain.

``monitor(cfg, actuals)`` reads newly arrived actuals (validated as training data is), joins them
with the forecast archive and scores every archived forecast whose target time has an actual:
per model version, per forecast origin, per horizon step and per series (MAE, MSE, MASE, and the
coverage of every interval level the forecasts carry). Each model version gets one MLflow
monitoring run (``role: monitor``, reopened by each later call) with its per-origin metrics
stepped by origin (the metric's time is the origin's), a plot of rolling accuracy against what
the selection backtest expected, and per-series, per-step and per-origin tables.

The rules (``MonitoringConfig``) judge the current champion only, over the most recent
``window`` origins: rolling MAE above ``error_factor`` times the evaluated model's validation MAE,
or rolling coverage ``coverage_drop`` points under nominal, for ``patience`` origins in a row; or
the recent actuals' level or spread drifting from that of past stretches of the same length
(``drift``). A firing rule is tagged on the version (``monitoring.fired.<rule>``) and, once per firing
(``monitoring.retrained``), starts a retrain through the caller's ``retrain`` function: the flow
layer emits the Prefect event and runs the pipeline (or its deployment).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecasting.config import Config
from forecasting.data.schema import SERIES, TARGET, TIME
from forecasting.errors import NoChampionError

RETRAINED_TAG = "monitoring.retrained"
RETRAINED_ORIGIN_TAG = "monitoring.retrained_origin"
MONITORED_TAG = "monitored_through"


@dataclass
class Firing:
    """One rule that fired for a model version, at the latest origin it judged."""

    rule: str  # error | coverage_<level> | drift
    version: str
    origin: str
    detail: str


@dataclass
class MonitorReport:
    model: str
    champion: str | None
    scored_rows: int
    versions: dict[str, dict[str, float]] = field(default_factory=dict)  # latest rolling figures
    run_ids: dict[str, str] = field(default_factory=dict)  # version -> monitoring run
    firings: list[Firing] = field(default_factory=list)
    retrain: str | None = None  # what the retrain started (its id), None when none started
    retrain_skipped: str | None = None  # why a firing did not retrain

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)


# --- scoring --------------------------------------------------------------------------------------
def levels_of(frame: pd.DataFrame) -> list[str]:
    """Interval levels (column suffixes, "80") with both bounds in ``frame``."""
    lows = {c.removeprefix("yhat_lo_") for c in frame.columns if c.startswith("yhat_lo_")}
    return sorted((lv for lv in lows if f"yhat_hi_{lv}" in frame.columns), key=float)


def naive_scales(actuals: pd.DataFrame, until: pd.Series) -> pd.Series:
    """MASE's scale of each series: the mean absolute first difference of its actuals up to
    ``until`` (series -> time; its first forecast origin), all of them when fewer than two."""
    frame = actuals.sort_values([SERIES, TIME])
    cut = frame[SERIES].map(until)
    before = frame[frame[TIME] <= cut] if len(until) else frame
    diff = before.groupby(SERIES, sort=False)[TARGET].diff().abs()
    scale = diff.groupby(before[SERIES]).mean()
    full = frame.groupby(SERIES, sort=False)[TARGET].apply(lambda v: v.diff().abs().mean())
    return scale.reindex(full.index).fillna(full)


def utc_naive(values: pd.Series) -> pd.Series:
    """Timestamps on one clock: zone-aware ones converted to UTC and made naive, naive ones kept
    (the archive and the actuals may carry either kind)."""
    values = pd.to_datetime(values)
    return values.dt.tz_convert("UTC").dt.tz_localize(None) if values.dt.tz is not None else values


def complete(forecasts: pd.DataFrame, joined: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``joined`` whose forecast origin has an actual for every archived step of
    every series: an origin is scored once, whole, never on its first steps alone."""
    key = ["model_version", "origin"]
    have = joined.groupby(key).size()
    want = forecasts.groupby(key).size().reindex(have.index)
    whole = have.index[(have == want).to_numpy()]
    return joined[pd.MultiIndex.from_frame(joined[key]).isin(whole)]


def join(forecasts: pd.DataFrame, actuals: pd.DataFrame) -> pd.DataFrame:
    """Archived forecasts whose target time has an actual, with ``y``, the error and the series'
    MASE scale; times on one clock (``utc_naive``)."""
    truth = (
        actuals[[SERIES, TIME, TARGET]].dropna(subset=[TARGET]).assign(**{TIME: lambda f: utc_naive(f[TIME])})
    )
    forecasts = forecasts.assign(
        **{TIME: utc_naive(forecasts[TIME]), "origin": utc_naive(forecasts["origin"])}
    )
    joined = forecasts.merge(truth, on=[SERIES, TIME], how="inner")
    first_origin = forecasts.groupby(SERIES)["origin"].min()
    joined["scale"] = joined[SERIES].map(naive_scales(truth, first_origin))
    joined["error"] = joined[TARGET] - joined["yhat"]
    return joined


def _sums(joined: pd.DataFrame, by: list[str], levels: list[str]) -> pd.DataFrame:
    """Sums and counts per group, from which any window's pooled figures follow."""
    parts = {
        "n": joined["error"].notna().astype(float),
        "abs": joined["error"].abs(),
        "sq": joined["error"] ** 2,
        "scaled": joined["error"].abs() / joined["scale"].replace(0, np.nan),
    }
    for lv in levels:
        has = joined[f"yhat_lo_{lv}"].notna() & joined[f"yhat_hi_{lv}"].notna()
        inside = (joined[TARGET] >= joined[f"yhat_lo_{lv}"]) & (joined[TARGET] <= joined[f"yhat_hi_{lv}"])
        parts[f"in_{lv}"] = (inside & has).astype(float)
        parts[f"has_{lv}"] = has.astype(float)
    frame = pd.DataFrame(parts)
    frame[by] = joined[by]
    return frame.groupby(by, sort=True).sum(min_count=1)


def _figures(sums: pd.DataFrame, levels: list[str]) -> pd.DataFrame:
    out = pd.DataFrame(index=sums.index)
    out["n"] = sums["n"]
    out["mae"] = sums["abs"] / sums["n"]
    out["mse"] = sums["sq"] / sums["n"]
    out["mase"] = sums["scaled"] / sums["n"]
    for lv in levels:
        out[f"coverage_{lv}"] = sums[f"in_{lv}"] / sums[f"has_{lv}"].replace(0, np.nan)
    return out


def per_origin(joined: pd.DataFrame, levels: list[str], window: int) -> pd.DataFrame:
    """Figures per forecast origin of one version, oldest first, and their rolling values over
    the last ``window`` origins (pooled over the window's forecasts)."""
    sums = _sums(joined, ["origin"], levels)
    out = _figures(sums, levels)
    rolled = sums.rolling(window, min_periods=1).sum()
    rolling = _figures(rolled, levels)
    for col in ["mae", *(f"coverage_{lv}" for lv in levels)]:
        out[f"rolling_{col}"] = rolling[col]
    out["origins_in_window"] = np.minimum(np.arange(1, len(out) + 1), window)
    return out


def per_group(joined: pd.DataFrame, by: str, levels: list[str]) -> pd.DataFrame:
    return _figures(_sums(joined, [by], levels), levels)


# --- rules ----------------------------------------------------------------------------------------
def error_rule(
    origins: pd.DataFrame, expected_mae: float | None, factor: float | None, patience: int, window: int
) -> str | None:
    """Why the error rule fires (or None): the last ``patience`` rolling MAEs, each over a full
    window of ``window`` origins, all above ``factor`` x the expected MAE."""
    if factor is None or expected_mae is None or not np.isfinite(expected_mae) or len(origins) < patience:
        return None
    full = origins[origins["origins_in_window"] == window]
    last = full["rolling_mae"].tail(patience)
    if len(last) < patience or not (last > factor * expected_mae).all():
        return None
    return (
        f"rolling MAE {last.iloc[-1]:.4g} above {factor:g} x the backtest's {expected_mae:.4g} "
        f"for {patience} origin(s) in a row"
    )


def coverage_rule(
    origins: pd.DataFrame, level: str, drop: float | None, patience: int, window: int
) -> str | None:
    col = f"rolling_coverage_{level}"
    if drop is None or col not in origins or len(origins) < patience:
        return None
    full = origins[origins["origins_in_window"] == window]
    last = full[col].tail(patience)
    floor = float(level) / 100 - drop / 100
    if len(last) < patience or not (last < floor).all():
        return None
    return (
        f"rolling {level} % coverage {last.iloc[-1]:.3f} under {floor:.3f} for {patience} origin(s) in a row"
    )


def drift_rule(recent: pd.DataFrame, reference: pd.DataFrame, drift: float | None) -> str | None:
    """Why the drift rule fires (or None). Each series' recent actuals (its last ``window``
    origins' stretch) against every stretch of the same length in its actuals before it: the
    median over series of how many standard deviations of those stretches' means the recent
    mean lies from their average, above ``drift``; or of how far the recent spread is from their
    median spread (the larger of the ratio and its inverse), above ``1 + drift``. Like against
    like: a day is compared with days, not with a year's spread."""
    if drift is None or recent.empty or reference.empty:
        return None
    history = {sid: part.to_numpy(float) for sid, part in reference.groupby(SERIES)[TARGET]}
    levels, spreads = [], []
    for sid, part in recent.groupby(SERIES):
        y, ref = part[TARGET].to_numpy(float), history.get(sid)
        n = len(y)
        if n < 2 or ref is None or len(ref) < 2 * n:
            continue
        stretches = pd.Series(ref).rolling(n)
        means, stds = stretches.mean().dropna(), stretches.std().dropna()
        if means.std() > 0:
            levels.append(abs(y.mean() - means.mean()) / means.std())
        typical, now = float(stds.median()), float(y.std(ddof=1))
        if typical > 0 and now > 0:
            spreads.append(max(now / typical, typical / now))
    if levels and float(np.median(levels)) > drift:
        moved = float(np.median(levels))
        return f"recent level {moved:.2f} std(s) of past stretches' levels away (median; rule: {drift:g})"
    if spreads and float(np.median(spreads)) > 1 + drift:
        factor = float(np.median(spreads))
        return f"recent spread {factor:.2f}x off past stretches' spread (median; rule: {1 + drift:g}x)"
    return None


# --- the monitor ----------------------------------------------------------------------------------
def expected_figures(tracker: Any, version: str) -> dict[str, float]:
    """What selection measured for a version on validation rows: the evaluated model's
    ``val_mae_orig`` and ``val_coverage_*`` (empty when the version does not say)."""
    tags = tracker.version_info(version).tags or {}
    run_id = tags.get("evaluation_run_id")
    if not run_id:
        return {}
    metrics = tracker.client.get_run(run_id).data.metrics
    out = {"mae": metrics.get("val_mae_orig", np.nan)}
    out |= {k.removeprefix("val_"): v for k, v in metrics.items() if k.startswith("val_coverage_")}
    return out


def _monitor_run_id(tracker: Any, name: str, version: str) -> str | None:
    found = tracker.client.search_runs(
        [tracker.experiment_id],
        filter_string=(
            f"tags.role = 'monitor' and tags.model_name = '{name}' and tags.model_version = '{version}'"
        ),
        max_results=1,
    )
    return found[0].info.run_id if found else None


def _log_version(
    tracker: Any,
    name: str,
    version: str,
    joined: pd.DataFrame,
    origins: pd.DataFrame,
    expected: dict[str, float],
    levels: list[str],
    archived_origins: pd.Index,
) -> str | None:
    """The version's monitoring run: the origins not logged before (each origin's metric step is
    its place among the version's archived origins: the same in every call), then the tables and
    the plot. Nothing new: the run is left as it is (None)."""
    from forecasting import plotting

    existing = _monitor_run_id(tracker, name, version)
    done = tracker.client.get_run(existing).data.tags.get(MONITORED_TAG) if existing else None
    new = origins if done is None else origins[origins.index > pd.Timestamp(done)]
    if new.empty:
        return existing
    steps = archived_origins.get_indexer(new.index)
    tags = {"role": "monitor", "model_name": name, "model_version": version}
    with tracker.run(f"monitor {name} v{version}", tags=tags, adopt=existing) as run:
        for step, (origin, row) in zip(steps, new.iterrows(), strict=True):
            values = {k: float(v) for k, v in row.items() if k != "origins_in_window" and pd.notna(v)}
            if np.isfinite(expected.get("mae", np.nan)):
                values["expected_mae"] = expected["mae"]
            stamp = int(pd.Timestamp(origin).tz_localize("UTC").timestamp() * 1000)
            run.log_metrics(values, step=int(step), timestamp_ms=stamp)
        run.set_tags({MONITORED_TAG: str(origins.index.max())})
        run.log_frame(per_group(joined, SERIES, levels).reset_index(), "monitoring/per_series.parquet")
        run.log_frame(per_group(joined, "step", levels).reset_index(), "monitoring/per_step.parquet")
        run.log_frame(origins.reset_index().astype({"origin": str}), "monitoring/per_origin.parquet")
        figure = plotting.monitoring_plot(origins, expected, levels, title=f"{name} v{version}")
        run.log_figure(figure, "plots/rolling_accuracy.png")
        return run.run_id


def monitor(
    cfg: Config,
    actuals_path: str | Path | None = None,
    *,
    retrain: Callable[[Config, Firing], str | None] | None = None,
    notify: Callable[[Firing], None] | None = None,
    tracker: Any = None,
) -> MonitorReport:
    """Score the archive against the actuals in ``actuals_path`` (default ``data.path``), log a
    monitoring run per model version, judge the champion by the rules and, once per firing,
    call ``retrain(cfg, firing)`` when one fires (``monitoring.retrain: pipeline``). Default
    ``retrain``: the forecast pipeline in this process (``run_pipeline``). ``notify(firing)`` is
    called for every firing before any retrain (the flow emits a Prefect event)."""
    from forecasting.data.ingest import ingest
    from forecasting.monitoring.archive import Archive, archive_uri
    from forecasting.tracking import Tracker

    tracker = tracker or Tracker(cfg.tracking)
    name = cfg.tracking.registered_model
    mcfg = cfg.monitoring
    actuals = ingest(cfg.data, actuals_path).frame
    with Archive(archive_uri(cfg)) as archive:
        forecasts = archive.read(name)
    champion = tracker.alias_version("champion")
    report = MonitorReport(model=name, champion=champion, scored_rows=0)
    if forecasts.empty:
        if champion is None:
            raise NoChampionError(
                f"nothing to monitor: no forecast of {name!r} is archived and no version is the "
                "champion; run the pipeline and a batch prediction first"
            )
        return report
    forecasts = forecasts.assign(origin=utc_naive(forecasts["origin"]))
    joined = complete(forecasts, join(forecasts, actuals))
    report.scored_rows = len(joined)
    levels = levels_of(forecasts)
    champion_origins = pd.Index([])
    for version, part in joined.groupby("model_version", sort=True):
        version = str(version)
        origins = per_origin(part, levels, mcfg.window)
        expected = expected_figures(tracker, version)
        archived = pd.Index(sorted(forecasts.loc[forecasts["model_version"] == version, "origin"].unique()))
        run_id = _log_version(tracker, name, version, part, origins, expected, levels, archived)
        if run_id is not None:
            report.run_ids[version] = run_id
        last = origins.iloc[-1]
        report.versions[version] = {
            "origins": float(len(origins)),
            **{k: float(last[k]) for k in origins.columns if k.startswith("rolling_")},
            "expected_mae": float(expected.get("mae", np.nan)),
        }
        if version == champion:
            champion_origins = origins.index
            report.firings += _judge(cfg, version, origins, expected, levels, actuals)
    for firing in report.firings:
        if notify is not None:
            notify(firing)
    if report.firings:
        _act(cfg, tracker, report, retrain, champion_origins)
    return report


def _judge(
    cfg: Config,
    version: str,
    origins: pd.DataFrame,
    expected: dict[str, float],
    levels: list[str],
    actuals: pd.DataFrame,
) -> list[Firing]:
    mcfg = cfg.monitoring
    latest = str(origins.index.max())
    firings = []
    why = error_rule(origins, expected.get("mae"), mcfg.error_factor, mcfg.patience, mcfg.window)
    if why:
        firings.append(Firing("error", version, latest, why))
    for lv in levels:
        why = coverage_rule(origins, lv, mcfg.coverage_drop, mcfg.patience, mcfg.window)
        if why:
            firings.append(Firing(f"coverage_{lv}", version, latest, why))
    if mcfg.drift is not None:
        since = origins.index[-mcfg.window :].min()
        after = utc_naive(actuals[TIME]) > since
        why = drift_rule(actuals[after], actuals[~after], mcfg.drift)
        if why:
            firings.append(Firing("drift", version, latest, why))
    return firings


def _act(
    cfg: Config,
    tracker: Any,
    report: MonitorReport,
    retrain: Callable[[Config, Firing], str | None] | None,
    origins: pd.Index,
) -> None:
    """Tag every firing on its version; retrain once per firing (``monitoring.retrained``): not
    again within ``window`` origins of the last retrain of the version. ``origins``: the
    champion's scored origins."""
    for firing in report.firings:
        tracker.tag_version(
            firing.version, {f"monitoring.fired.{firing.rule}": f"{firing.origin}: {firing.detail}"}
        )
    first = report.firings[0]
    if cfg.monitoring.retrain == "never":
        report.retrain_skipped = "monitoring.retrain is never"
        return
    tags = tracker.version_info(first.version).tags or {}
    if RETRAINED_TAG in tags:
        since = pd.Timestamp(tags.get(RETRAINED_ORIGIN_TAG, first.origin))
        later = int((origins > since).sum())
        if later < cfg.monitoring.window:  # the same firing: its retrain was started already
            report.retrain_skipped = (
                f"version {first.version} was retrained already ({tags[RETRAINED_TAG]}); "
                f"{later} of {cfg.monitoring.window} origins since"
            )
            return
    # Tagged before the retrain starts: at most one retrain per firing, even if this process
    # dies during it (a retrain that failed is the pipeline's own record to read). A champion
    # that keeps its place (the retrain lost the gate) and fires again a full window later is a
    # new firing.
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tracker.tag_version(
        first.version,
        {RETRAINED_TAG: f"{stamp} on {first.rule} at {first.origin}", RETRAINED_ORIGIN_TAG: first.origin},
    )
    report.retrain = (retrain or _retrain_here)(cfg, first)


def _retrain_here(cfg: Config, firing: Firing) -> str | None:
    from forecasting.pipeline import run_pipeline

    return run_pipeline(cfg).parent_run_id
