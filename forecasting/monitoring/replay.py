"""Replay: operate the pipeline over a stretch of history, to choose a retraining policy before
going live.

``replay(cfg, start, end, ...)`` trains on the rows before ``start``, then walks forward: every
``predict_every`` it batch-predicts from the rows observed so far (the forecasts go to the
archive), every ``monitor_every`` it monitors them against the actuals that have arrived, and it
retrains when the policy says so:

- ``rule``: when a monitoring rule fires (``monitoring``), once per model version;
- ``every:<period>`` (``every:7d``): on a fixed schedule, for comparison;
- ``never``: the first model serves the whole period.

The steps are the real ones (``ReplaySteps``: the pipeline, batch prediction and the monitor; the
CLI passes the Prefect flows), on a store of the replay's own (``<out>/mlflow.db``, experiment
and registered model suffixed ``-replay-<policy>``) so that the user's champion is never touched.
At the end every archived forecast is scored against the actuals: accuracy over the period,
retrains, and the wall time spent training.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecasting.config import Config, SplitConfig
from forecasting.data.schema import SERIES, TARGET, TIME
from forecasting.errors import ConfigError


@dataclass
class ReplaySteps:
    """What a replay calls: each takes the replay's config (and paths) like the flows do."""

    pipeline: Callable[[Config], Any]  # train, select, register (no prediction)
    predict: Callable[[Config, str, str], Any]  # (cfg, input path, output path)
    monitor: Callable[[Config, str], dict[str, Any]]  # (cfg, actuals path) -> report dict


@dataclass
class ReplayReport:
    policy: str
    start: str
    end: str
    predictions: int = 0
    monitors: int = 0
    retrains: int = 0  # after the first training
    train_seconds: float = 0.0
    wall_seconds: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)
    retrained_at: list[str] = field(default_factory=list)
    store: str = ""

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)


def parse_policy(policy: str) -> tuple[str, pd.Timedelta | None]:
    if policy in ("rule", "never"):
        return policy, None
    if policy.startswith("every:"):
        try:
            # "7d" as people write it; pandas 4 spells days "D"
            period = pd.Timedelta(re.sub(r"(?<=\d)d$", "D", policy.removeprefix("every:")))
        except ValueError:
            period = None
        if period is not None and period > pd.Timedelta(0):
            return "every", period
    raise ConfigError(f"replay policy {policy!r}: use rule, never or every:<period> (every:7d)")


def replay_config(cfg: Config, out: Path, policy: str) -> Config:
    """The config the replay runs: its own store, archive, experiment and registered model, the
    data it writes as it goes, and retrains only where the policy decides. A ``borders`` split
    becomes the same shares as fractions, so that each retrain splits the history it has."""
    label = policy.replace(":", "-")
    tracking = cfg.tracking.model_copy(
        update={
            "tracking_uri": f"sqlite:///{(out / 'mlflow.db').resolve()}",
            "experiment": f"{cfg.tracking.experiment}-replay-{label}",
            "registered_model": f"{cfg.tracking.registered_model}-replay-{label}",
        }
    )
    monitoring = cfg.monitoring.model_copy(
        update={
            "archive": True,
            "archive_uri": f"sqlite:///{(out / 'archive.db').resolve()}",
            "retrain": "pipeline" if policy == "rule" else "never",
            "retrain_deployment": None,  # never the user's deployment: the replay's own pipeline
        }
    )
    data = cfg.data.model_copy(
        update={
            "path": (out / "observed.parquet").resolve(),
            "format": "parquet",
            "time_column": TIME,
            "target": TARGET,
            "id_column": SERIES,
            "covariates": cfg.data.covariates,
            "timezone": None,
        }
    )
    predict = cfg.predict.model_copy(
        update={"input": None, "output": out / "forecast.parquet", "model": None}
    )
    split = cfg.split
    if split.method == "borders":  # fixed rows cannot follow a growing history: the same shares
        a, b, c = split.borders
        split = SplitConfig(method="fractions", train_fraction=a / c, test_fraction=(c - b) / c)
    update = {
        "tracking": tracking,
        "monitoring": monitoring,
        "data": data,
        "predict": predict,
        "split": split,
    }
    return cfg.model_copy(update=update)


def replay(
    cfg: Config,
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    steps: ReplaySteps,
    *,
    out: Path,
    predict_every: str = "24h",
    monitor_every: str = "24h",
    policy: str = "rule",
) -> ReplayReport:
    """Operate the pipeline from ``start`` to ``end`` (times in the data's own clock)."""
    from forecasting.data.ingest import ingest

    kind, period = parse_policy(policy)
    frame = ingest(cfg.data).frame
    start, end = _as_data_time(start, frame), _as_data_time(end, frame)
    if not frame[TIME].min() < start < end:
        raise ConfigError(f"replay: start {start} must follow the data's first time and precede end {end}")
    every_predict, every_monitor = pd.Timedelta(predict_every), pd.Timedelta(monitor_every)
    if out.exists() and any(out.iterdir()):
        # An earlier replay's champion was trained up to its end: gating against it would look ahead.
        raise ConfigError(
            f"replay: {out} is not empty (an earlier replay's stores); remove it or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    rcfg = replay_config(cfg, out, policy)
    observed = Path(rcfg.data.path)
    report = ReplayReport(
        policy=policy, start=str(start), end=str(end), store=rcfg.tracking.tracking_uri or ""
    )
    began = time.perf_counter()

    written: list[pd.Timestamp] = []

    def observe(until: pd.Timestamp) -> None:
        """The rows before ``until`` in the data file the flows read (written once per time)."""
        if written[-1:] != [until]:
            frame[frame[TIME] < until].to_parquet(observed, index=False)
            written.append(until)

    def train(at: pd.Timestamp) -> None:
        observe(at)
        t0 = time.perf_counter()
        steps.pipeline(rcfg)
        report.train_seconds += time.perf_counter() - t0

    train(start)
    last_train, next_monitor, now = start, start + every_monitor, start
    while now < end:
        observe(now)
        steps.predict(rcfg, str(observed), str(out / "forecast.parquet"))
        report.predictions += 1
        now = now + every_predict
        if now >= next_monitor:
            next_monitor += every_monitor
            observe(now)
            t0 = time.perf_counter()
            result = steps.monitor(rcfg, str(observed))
            report.monitors += 1
            if kind == "rule" and result.get("retrain"):
                report.retrains += 1
                report.retrained_at.append(str(now))
                report.train_seconds += time.perf_counter() - t0  # the monitor ran the retrain
        if kind == "every" and now - last_train >= period and now < end:  # on its own clock
            train(now)
            last_train = now
            report.retrains += 1
            report.retrained_at.append(str(now))
    report.scores = period_scores(rcfg, frame, start, end)
    report.wall_seconds = time.perf_counter() - began
    return report


def _as_data_time(value: str | pd.Timestamp, frame: pd.DataFrame) -> pd.Timestamp:
    t = pd.Timestamp(value)
    zone = frame[TIME].dt.tz
    if zone is not None and t.tzinfo is None:
        return t.tz_localize(zone)
    if zone is None and t.tzinfo is not None:
        return t.tz_convert("UTC").tz_localize(None)
    return t


def period_scores(
    cfg: Config, frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp
) -> dict[str, float]:
    """Every archived forecast with a target time in [start, end) against its actual: MAE, MSE,
    MASE (scale: each series' mean absolute first difference before ``start``) and the coverage
    of every interval level, pooled over forecasts."""
    from forecasting.monitoring.archive import Archive, archive_uri
    from forecasting.monitoring.monitor import levels_of

    with Archive(archive_uri(cfg)) as archive:
        forecasts = archive.read(cfg.tracking.registered_model)
    forecasts = forecasts[(forecasts[TIME] >= start) & (forecasts[TIME] < end)]
    truth = frame[[SERIES, TIME, TARGET]]
    joined = forecasts.merge(truth, on=[SERIES, TIME], how="inner").dropna(subset=[TARGET])
    before = frame[frame[TIME] < start]
    scale = before.groupby(SERIES)[TARGET].apply(lambda v: v.diff().abs().mean())
    error = joined[TARGET] - joined["yhat"]
    out = {
        "forecasts": float(len(joined)),
        "versions_served": float(joined["model_version"].nunique()),  # champions that forecast
        "mae": float(error.abs().mean()),
        "mse": float((error**2).mean()),
        "mase": float((error.abs() / joined[SERIES].map(scale)).mean()),
    }
    for lv in levels_of(joined):
        banded = joined.dropna(subset=[f"yhat_lo_{lv}", f"yhat_hi_{lv}"])
        inside = (banded[TARGET] >= banded[f"yhat_lo_{lv}"]) & (banded[TARGET] <= banded[f"yhat_hi_{lv}"])
        out[f"coverage_{lv}"] = float(np.mean(inside)) if len(banded) else float("nan")
    return out
