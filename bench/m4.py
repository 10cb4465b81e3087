"""M4 Weekly: many series nobody tuned for, run as a user would, scored as the competition did.

Data: ``../shared/data/m4/`` (``$M4_DIR``), an unmodified copy of the competition's Weekly files
(its README gives the sha256 of each, the protocol and the published figures; a file whose hash
differs is refused). 359 series of 80 to 2,597 weekly values, horizon 13, forecasts made once from
the end of each training series.

Steps (``--out``, default ``outputs/m4/``, git-ignored, holds everything written):

1. ``Weekly-train.csv`` (wide: ``V1`` the id, then the values, then empty cells) becomes the
   pipeline's long format ``series_id, t, y`` as ``weekly_train.parquet``. M4 gives no dates: every
   series is stamped weekly (``W-SUN``) from the same Sunday, 2000-01-02; the series are unaligned
   anyway, and the config turns calendar features off since these dates mean nothing.
2. ``forecast run configs/m4_weekly.yaml --data weekly_train.parquet`` in a fresh folder of stores
   (``run-<UTC time>/``: ``MLFLOW_TRACKING_URI=sqlite:///.../mlflow.db``, ``PREFECT_HOME``), a
   subprocess of the venv's ``forecast``, so Prefect's and MLflow's overheads are in its wall time.
   Peak memory of its process tree (``psutil``, sampled every 0.2 s: the sum of the tree's RSS, and
   the largest one process's high-water mark ``VmHWM``).
3. ``forecast predict --config ... --input weekly_train.parquet --output forecast.parquet``: the
   registered champion's batch forecasts, scored against ``Weekly-test.csv``.

Scoring (the README's definitions): sMAPE (%) = mean over series of the mean over the 13 steps of
200 |y - f| / (|y| + |f|); MASE = mean over series of mean |y - f| over the horizon divided by the
mean |x_t - x_{t-1}| of that series' *training* values (m = 1 for weekly data); OWA = (sMAPE / 9.161
+ MASE / 2.777) / 2, Naive2's figures (Naive2 = Naive for weekly data). The scorer is checked by
scoring Naive (the last training value) with it: it must give 9.161 and 2.777.

Prediction intervals, wherever point forecasts are scored and the forecast carries the bounds
(``yhat_lo_95, yhat_hi_95, yhat_lo_80, yhat_hi_80``, the pipeline's default ``intervals.levels``):
MSIS at 95 % (alpha 0.05, each series' interval score divided by the same scale as MASE, averaged
over series and steps), ACD = |coverage at 95 % - 0.95|, coverage at 80 % and the weighted quantile
loss over the four bounds (tau 0.025, 0.1, 0.9, 0.975). The metric functions are the pipeline's own
(``forecasting/evaluation/intervals.py``). A forecast without bounds gets ``None`` for these.

Per family. Only the champion is served, so two more views are printed, each labelled:

- internal split (always): each model's child run logs its forecasts of the pipeline's own test
  split (``predictions/test_predictions.parquet``, ``yhat_orig`` in original units), the last 13
  weeks of each *training* series: a different period from M4's test file. Scored with the same
  definitions, MASE scaled by the values before those 13 weeks, OWA against Naive on that period.
- official test file (``--per-family``): each child run's logged model (trained on the train split,
  never refit) forecasts the 13 official weeks from the full training history; nothing is registered.

    .venv/bin/python bench/m4.py                  # the full benchmark (~6-10 min on 2 cores)
    .venv/bin/python bench/m4.py --per-family     # + every family on the official test file
    .venv/bin/python bench/m4.py --quick          # CI: 20 series, naive/seasonal_naive/ar/linear, 1 epoch
    .venv/bin/python bench/m4.py --convert-only   # just write outputs/m4/weekly_train.parquet
    .venv/bin/python bench/m4.py --rescore outputs/m4/run-20261206-1200  # score a finished run again

Printed as markdown beside the README's published table, with wall time, peak RSS, commit, machine
and date; the same goes to ``<run folder>/results.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from forecasting.evaluation.intervals import bound_taus, coverage, level_label, msis, weighted_quantile_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, load_average, machine

M4_DIR = Path(os.environ.get("M4_DIR", ROOT.parent / "shared" / "data" / "m4"))
CONFIG = ROOT / "configs" / "m4_weekly.yaml"
FORECAST = Path(sys.executable).with_name("forecast")
SHA256 = {  # from the data folder's README.md
    "Weekly-train.csv": "d478d3f6ed673e6ed3c2cb0fbed5425f72eedd51318ebebeb0b5ecfcefc37714",
    "Weekly-test.csv": "3b2bc4be8e636e802260dcd843ca3c5da40536a1fbe1ecb3229a97dae4f44688",
}
HORIZON = 13
START, FREQ = "2000-01-02", "W-SUN"  # a Sunday: every series' first stamp
NAIVE2 = {"smape": 9.161, "mase": 2.777}  # the README: Naive2 = Naive for Weekly
# The README's table ("Evaluation and Ranks" workbook): method, sMAPE, MASE, OWA.
PUBLISHED = [
    ("best Weekly entry (M4 id 235)", 6.582, 2.107, 0.739),
    ("second (id 36)", 6.726, 2.133, 0.751),
    ("third (id 237)", 6.919, 2.158, 0.766),
    ("Damped (benchmark)", 8.866, 2.404, 0.917),
    ("Theta (benchmark)", 9.093, 2.637, 0.971),
    ("Naive / Naive2", 9.161, 2.777, 1.000),
]
# The README's 95 % interval table: method, MSIS, ACD.
PUBLISHED_INTERVALS = [
    ("best Weekly entry (id 36)", 16.200, 0.012),
    ("second (id 24)", 16.902, 0.004),
]
TARGETS = {"champion_owa": 0.739, "family_owa": 0.971, "run_s": 600.0, "fit_s": 120.0}
# The champion's 95 % interval at least as good as the best entry's MSIS, nearly as well calibrated;
# the champion's and every family's coverage within 2 points of nominal at both levels.
INTERVAL_TARGETS = {"champion_msis": 16.2, "champion_acd": 0.01, "coverage_tol": 0.02}
INTERVAL_LEVELS = (95.0, 80.0)  # the pipeline's default intervals.levels; 95 % is the competition's
INTERVAL_FIELDS = ("msis", "acd", "coverage_95", "coverage_80", "wql")
# The learned families issue 20 judges against the Theta benchmark; the baselines, the statistical
# references (ets, theta) and the ensemble are reported beside them, not judged.
LEARNED = {"ar", "linear", "rnn", "lstm", "gru", "tcn", "transformer"}
QUICK_SERIES = 20
# AR batched: for 20 series the default solver fits each with statsmodels (~15 s).
QUICK_MODELS = [
    {"name": "naive"},
    {"name": "seasonal_naive"},
    {"name": "ar", "params": {"solver": "batched"}},
    {"name": "linear"},
]


class ChecksumError(RuntimeError):
    """A data file is not the byte-for-byte copy the README describes."""


# --- data -----------------------------------------------------------------------------------------
def verify_files(data_dir: Path = M4_DIR) -> None:
    """Check both files' sha256 against the README; raise ``ChecksumError`` naming a mismatch."""
    for name, expected in SHA256.items():
        path = data_dir / name
        if not path.exists():
            raise ChecksumError(f"{path} not found; point M4_DIR at the folder holding the M4 Weekly files")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise ChecksumError(
                f"{path}: sha256 {digest} is not the README's {expected}; refusing to score a modified copy"
            )


def read_wide(path: Path) -> dict[str, np.ndarray]:
    """An M4 wide CSV as ``{id: values (n,) float64}`` in file order, trailing empty cells dropped."""
    table = pd.read_csv(path, index_col="V1")
    series = {}
    for sid, row in zip(table.index, table.to_numpy(dtype=np.float64), strict=True):
        n = int(np.flatnonzero(~np.isnan(row))[-1]) + 1
        if np.isnan(row[:n]).any():
            raise ValueError(f"{path.name}: series {sid} has an empty cell before its last value")
        series[str(sid)] = row[:n]
    return series


def to_long(series: dict[str, np.ndarray]) -> pd.DataFrame:
    """The pipeline's long format: ``series_id``, ``t`` (weekly from ``START``), ``y``."""
    stamps = pd.date_range(START, periods=max(len(v) for v in series.values()), freq=FREQ)
    return pd.DataFrame(
        {
            "series_id": np.repeat(list(series), [len(v) for v in series.values()]),
            "t": np.concatenate([stamps[: len(v)] for v in series.values()]),
            "y": np.concatenate(list(series.values())),
        }
    )


def write_long(series: dict[str, np.ndarray], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    to_long(series).to_parquet(path, index=False)
    return path


# --- the competition's scoring (pure) -------------------------------------------------------------
def smape_per_series(y: np.ndarray, f: np.ndarray) -> np.ndarray:
    """(S,) mean over steps of 200 |y - f| / (|y| + |f|); ``y``, ``f``: (S, H)."""
    return np.mean(200.0 * np.abs(y - f) / (np.abs(y) + np.abs(f)), axis=1)


def mase_scale(history: list[np.ndarray]) -> np.ndarray:
    """(S,) the in-sample mean |x_t - x_{t-1}| of each ``history`` (m = 1): MASE's and MSIS's scale."""
    return np.array([np.mean(np.abs(np.diff(h))) for h in history])


def mase_per_series(y: np.ndarray, f: np.ndarray, history: list[np.ndarray]) -> np.ndarray:
    """(S,) mean |y - f| over the horizon / in-sample mean |x_t - x_{t-1}| of each ``history``."""
    return np.mean(np.abs(y - f), axis=1) / mase_scale(history)


def score(y: np.ndarray, f: np.ndarray, history: list[np.ndarray], ref: dict[str, float] = NAIVE2) -> dict:
    """sMAPE (%), MASE and OWA against ``ref`` (Naive2's figures unless given), over series."""
    if not np.isfinite(f).all():
        return {"smape": math.nan, "mase": math.nan, "owa": math.nan, "series": len(y)}
    s, m = float(smape_per_series(y, f).mean()), float(mase_per_series(y, f, history).mean())
    return {"smape": s, "mase": m, "owa": (s / ref["smape"] + m / ref["mase"]) / 2, "series": len(y)}


def score_intervals(
    y: np.ndarray, bounds: dict[float, tuple[np.ndarray, np.ndarray]], history: list[np.ndarray]
) -> dict[str, float | None]:
    """The interval scores of ``INTERVAL_FIELDS``: ``y`` (S, H); ``bounds`` {level in %: (lo, hi)},
    each (S, H) (``bound_matrices``). ``msis``: MSIS at 95 % (alpha 0.05) scaled per series by
    ``mase_scale(history)``, mean over series and steps; ``acd``: |coverage_95 - 0.95|; ``wql``: the
    weighted quantile loss over the bounds of both levels. A level not in ``bounds``: its fields None
    (``wql`` needs both)."""
    out: dict[str, float | None] = dict.fromkeys(INTERVAL_FIELDS)
    for level, (lo, hi) in bounds.items():
        out[f"coverage_{level_label(level)}"] = coverage(y, lo, hi)
    if 95.0 in bounds:
        lo, hi = bounds[95.0]
        out["msis"] = msis(y, lo, hi, mase_scale(history), 95.0)
        out["acd"] = abs(out["coverage_95"] - 0.95)
    if all(level in bounds for level in INTERVAL_LEVELS):
        quantiles = sorted(
            (tau, q)
            for level in INTERVAL_LEVELS
            for tau, q in zip(bound_taus(level), bounds[level], strict=True)
        )
        bands = np.stack([q for _, q in quantiles], axis=-1)  # (S, H, 4), tau ascending
        out["wql"] = weighted_quantile_loss(y, bands, [tau for tau, _ in quantiles])
    return out


def naive_forecast(history: list[np.ndarray], horizon: int = HORIZON) -> np.ndarray:
    """(S, H) the last value of each series repeated."""
    return np.repeat(np.array([h[-1] for h in history])[:, None], horizon, axis=1)


def forecast_matrix(frame: pd.DataFrame, ids: list[str], value: str = "yhat") -> np.ndarray:
    """(S, H) each series' forecasts in time order, rows in the order of ``ids``."""
    frame = frame.assign(series_id=frame["series_id"].astype(str)).sort_values(["series_id", "t"])
    counts = frame.groupby("series_id").size()
    missing = sorted(set(ids) - set(counts.index))
    if missing or (counts.loc[ids] != HORIZON).any():
        raise ValueError(f"forecasts must hold {HORIZON} steps of every series; missing: {missing[:5]}")
    rows = frame.set_index("series_id")[value]
    return np.stack([rows.loc[sid].to_numpy(dtype=np.float64) for sid in ids])


def bound_matrices(
    frame: pd.DataFrame, ids: list[str], suffix: str = ""
) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """{level: (lo, hi)}, each (S, H), from the columns ``yhat_lo_<level><suffix>`` and
    ``yhat_hi_<level><suffix>`` of the levels in ``INTERVAL_LEVELS``; a level without both columns is
    left out (a forecast without bounds: {})."""
    bounds = {}
    for level in INTERVAL_LEVELS:
        lo, hi = (f"yhat_{side}_{level_label(level)}{suffix}" for side in ("lo", "hi"))
        if lo in frame.columns and hi in frame.columns:
            bounds[level] = (forecast_matrix(frame, ids, lo), forecast_matrix(frame, ids, hi))
    return bounds


def score_forecast(
    y: np.ndarray,
    frame: pd.DataFrame,
    ids: list[str],
    history: list[np.ndarray],
    ref: dict[str, float] = NAIVE2,
    suffix: str = "",
) -> dict:
    """``score`` of ``frame``'s ``yhat<suffix>`` and ``score_intervals`` of its bounds, one dict."""
    f = forecast_matrix(frame, ids, "yhat" + suffix)
    return score(y, f, history, ref) | score_intervals(y, bound_matrices(frame, ids, suffix), history)


# --- running the CLI, measured --------------------------------------------------------------------
@dataclass
class Measured:
    command: list[str]
    returncode: int
    wall_s: float
    tree_rss_mb: float  # the largest sum of the process tree's RSS seen
    process_hwm_mb: float  # the largest single process's peak (VmHWM)
    processes: int  # most processes seen at once
    log: Path
    load_before: str = ""
    load_after: str = ""


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_measured(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> Measured:
    """Run ``command``, its output to ``log``; wall time and the peak memory of its process tree."""
    try:
        import psutil
    except ImportError:  # the venv has it (MLflow's dependency); without it only ru_maxrss is known
        psutil = None
    peak = {"tree": 0.0, "hwm": 0.0, "procs": 0}
    load = load_average()
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            root = psutil.Process(proc.pid)
            while not done.wait(0.2):
                try:
                    tree = [root, *root.children(recursive=True)]
                except psutil.Error:
                    continue
                rss = 0
                for p in tree:
                    try:
                        rss += p.memory_info().rss
                    except psutil.Error:
                        continue
                    peak["hwm"] = max(peak["hwm"], _hwm_mb(p.pid))
                peak["tree"] = max(peak["tree"], rss / 2**20)
                peak["procs"] = max(peak["procs"], len(tree))

        sampler = threading.Thread(target=sample, daemon=True) if psutil else None
        if sampler:
            sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if sampler:
            sampler.join()
    wall = time.perf_counter() - start
    # ru_maxrss (kB) of the largest process waited for: a floor when sampling missed a short peak.
    hwm = max(peak["hwm"], usage.ru_maxrss / 1024)
    return Measured(
        command, proc.returncode, wall, peak["tree"], hwm, peak["procs"], log, load, load_average()
    )


# Settings that would point the CLI at stores other than the fresh ones (a server, an experiment).
_FOREIGN_STORES = ("PREFECT_API_URL", "PREFECT_PROFILE", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


def cli_env(stores: Path) -> dict[str, str]:
    """The user's environment with both stores in ``stores`` (fresh: nothing from earlier runs)."""
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_STORES}
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{stores / 'mlflow.db'}",
        PREFECT_HOME=str(stores / "prefect"),
        MPLBACKEND="Agg",
    )
    return env


def quick_config(out: Path) -> Path:
    """The documented config with a few fast models and one epoch (``--quick``)."""
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["data"]["path"] = str((out / "weekly_train.parquet").resolve())
    cfg["models"] = QUICK_MODELS
    cfg["training"] |= {"epochs": 1, "max_train_windows": 2048}
    path = out / "m4_weekly_quick.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# --- what the run logged ----------------------------------------------------------------------------
@dataclass
class ModelRun:
    name: str
    family: str
    role: str  # model | refit
    run_id: str
    status: str
    model_uri: str | None
    metrics: dict[str, float] = field(default_factory=dict)


def logged_runs(tracking_uri: str, experiment: str) -> list[ModelRun]:
    """The model and refit runs under the latest pipeline run of ``experiment``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise RuntimeError(f"experiment {experiment!r} not found in {tracking_uri}")
    parents = client.search_runs(
        [exp.experiment_id], "tags.role = 'pipeline'", order_by=["start_time DESC"], max_results=1
    )
    if not parents:
        raise RuntimeError(f"no pipeline run in experiment {experiment!r}")
    children = client.search_runs(
        [exp.experiment_id],
        f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'",
        order_by=["start_time ASC"],
        max_results=1000,
    )
    runs = []
    for r in children:
        tags = r.data.tags
        runs.append(
            ModelRun(
                name=tags.get("mlflow.runName", ""),
                family=tags.get("model_family", ""),
                role=tags.get("role", ""),
                run_id=r.info.run_id,
                status=r.info.status,
                model_uri=tags.get("model_uri"),
                metrics=dict(r.data.metrics),
            )
        )
    return runs


def champion(tracking_uri: str, registered_model: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    version = client.get_model_version_by_alias(registered_model, "champion")
    run = client.get_run(version.run_id)
    return {"version": version.version, "run_id": version.run_id, "run_name": run.data.tags["mlflow.runName"]}


def internal_scores(
    runs: list[ModelRun], tracking_uri: str, train: dict[str, np.ndarray], work: Path
) -> dict[str, dict]:
    """Each model run's logged test forecasts (the pipeline's test split: the last 13 weeks of each
    training series), scored with the competition's definitions; OWA against Naive on that period."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    ids = list(train)
    history = [train[s][:-HORIZON] for s in ids]
    truth = np.stack([train[s][-HORIZON:] for s in ids])
    naive = naive_forecast(history)
    ref = score(truth, naive, history)
    scores = {"Naive, recomputed (the reference)": score(truth, naive, history, ref)}
    for run in runs:
        if run.role != "model" or run.status != "FINISHED":
            continue
        dst = work / "predictions" / run.name
        dst.mkdir(parents=True, exist_ok=True)
        path = client.download_artifacts(run.run_id, "predictions/test_predictions.parquet", str(dst))
        pred = pd.read_parquet(path)
        logged_truth = forecast_matrix(pred, ids, "y_orig")
        # the logged truth, unscaled again, must be the file's values: the periods line up
        if not np.allclose(logged_truth, truth, rtol=1e-6, atol=1e-6):
            raise ValueError(f"{run.name}: logged test targets are not the last {HORIZON} training weeks")
        scores[run.name] = score_forecast(truth, pred, ids, history, ref, suffix="_orig")
    return scores


def official_per_family(
    runs: list[ModelRun],
    train_path: Path,
    ids: list[str],
    test: np.ndarray,
    history: list[np.ndarray],
    work: Path,
) -> dict[str, dict]:
    """``--per-family``: each model run's logged model (fitted on the train split) forecasts the
    official 13 weeks from the full training history; nothing is registered."""
    from forecasting import serving

    scores = {}
    for run in runs:
        if run.role != "model" or not run.model_uri:
            continue
        out = work / "per_family" / f"{run.name}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        frame = serving.batch_predict(run.model_uri, train_path, out)
        scores[run.name] = score_forecast(test, frame, ids, history) | {
            "predict_s": time.perf_counter() - start
        }
    return scores


# --- the report -------------------------------------------------------------------------------------
def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.2e}" if abs(x) >= 1e5 else f"{x:.{digits}f}"  # an exploded forecast stays short


def verdict(value: float, target: float, unit: str = "", digits: int = 3) -> str:
    if not math.isfinite(value):
        return "**not met** (no finite figure)"
    if value <= target:
        return f"**met** ({value:.{digits}f}{unit} ≤ {target:g}{unit})"
    gap = (value - target) / target * 100
    return f"**not met** ({value:.{digits}f}{unit} vs {target:g}{unit}, +{gap:.1f} %)"


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _against(name: str, value: float, target: float) -> str:
    """``"MSIS 15.100 ≤ 16.2"``, or how far above: ``"MSIS 18.000 vs 16.2: +1.800 (+11.1 %)"``."""
    if value <= target + 1e-12:
        return f"{name} {value:.3f} ≤ {target:g}"
    return f"{name} {value:.3f} vs {target:g}: +{value - target:.3f} (+{(value / target - 1) * 100:.1f} %)"


def coverage_misses(s: dict) -> list[str]:
    """Each level (80 %, 95 %) whose coverage in ``s`` is absent or off nominal by more than the
    tolerance, said with how far off: ``["80 %: 0.712 (-8.8 points, 6.8 beyond ±2)"]``."""
    tol, misses = INTERVAL_TARGETS["coverage_tol"], []
    for level in sorted(INTERVAL_LEVELS):
        c, nominal = s.get(f"coverage_{level_label(level)}"), level / 100
        if not _finite(c):
            misses.append(f"{level:g} %: no bounds")
        elif abs(c - nominal) > tol + 1e-12:
            off = (c - nominal) * 100
            misses.append(
                f"{level:g} %: {c:.3f} ({off:+.1f} points, {abs(off) - tol * 100:.1f} beyond ±{tol * 100:g})"
            )
    return misses


def interval_targets(r: dict[str, Any]) -> dict[str, dict]:
    """The interval targets, each ``{"target": text, "met": bool, "detail": text}``: the champion's
    MSIS and ACD on the official test file, the champion's coverage at 80 % and 95 %, and every
    family's coverage (internal split; official test too with ``--per-family``)."""
    t, c = INTERVAL_TARGETS, r["official"]["champion"]
    tol = f"±{t['coverage_tol'] * 100:g} points at 80 % and 95 %"
    out = {}
    if _finite(c.get("msis")) and _finite(c.get("acd")):
        met = c["msis"] <= t["champion_msis"] and c["acd"] <= t["champion_acd"] + 1e-12
        detail = "; ".join(
            [_against("MSIS", c["msis"], t["champion_msis"]), _against("ACD", c["acd"], t["champion_acd"])]
        )
    else:
        met, detail = False, "no finite MSIS/ACD (no 95 % bounds in the forecast?)"
    out["champion_msis"] = {
        "target": f"champion MSIS ≤ {t['champion_msis']:g}, ACD ≤ {t['champion_acd']:g} (official test)",
        "met": met,
        "detail": detail,
    }
    misses = coverage_misses(c)
    out["champion_coverage"] = {
        "target": f"champion coverage within {tol} (official test)",
        "met": not misses,
        "detail": "; ".join(misses) or f"80 %: {c['coverage_80']:.3f}, 95 %: {c['coverage_95']:.3f}",
    }
    views = [("internal", "internal split", r["internal"])]
    if r.get("official_per_family"):
        views.append(("official_per_family", "official test, `--per-family`", r["official_per_family"]))
    for key, where, scores in views:
        families = {k: v for k, v in scores.items() if k in r["runs"]}
        misses = {k: m for k, v in families.items() if (m := coverage_misses(v))}
        out[f"family_coverage_{key}"] = {
            "target": f"every family's coverage within {tol} ({where})",
            "met": bool(families) and not misses,
            "detail": "; ".join(f"{k} {', '.join(m)}" for k, m in misses.items())
            or f"all {len(families)} families",
        }
    return out


def interval_row(label: str, s: dict) -> str:
    return (
        f"| {label} | {fmt(s.get('msis'))} | {fmt(s.get('acd'))} | {fmt(s.get('coverage_95'))} | "
        f"{fmt(s.get('coverage_80'))} | {fmt(s.get('wql'), 4)} |"
    )


def interval_report(r: dict[str, Any]) -> list[str]:
    """The interval tables as markdown lines: the official test beside the published figures, then
    the families on the pipeline's own test split."""
    champ = r["champion"]
    columns = "| MSIS (95 %) | ACD (95 %) | coverage 95 % | coverage 80 % | wQL |\n|---|---|---|---|---|---|"
    lines = [
        "",
        "95 % prediction intervals on the official test file, the competition's MSIS (alpha 0.05, "
        "scaled as MASE) and ACD = |coverage - 0.95|; coverage at 80 % and the weighted quantile loss "
        "over the four bounds (tau 0.025, 0.1, 0.9, 0.975) beside them:",
        "",
        "| method " + columns,
    ]
    lines += [f"| {name} (published) | {m:.3f} | {a:.3f} | — | — | — |" for name, m, a in PUBLISHED_INTERVALS]
    lines.append(
        interval_row(
            f"**ours: champion** `{champ['run_name']}` (v{champ['version']})", r["official"]["champion"]
        )
    )
    for name, s in r.get("official_per_family", {}).items():
        lines.append(interval_row(f"ours: {name} (train-split fit, `--per-family`)", s))
    lines += [
        "",
        f"Each family's intervals on the pipeline's own test split (the last {HORIZON} weeks of each "
        "*training* series, `*_orig` bounds, MSIS scaled by the values before those weeks):",
        "",
        "| model " + columns,
    ]
    lines += [interval_row(name, s) for name, s in r["internal"].items() if name in r["runs"]]
    return lines


def report(r: dict[str, Any]) -> str:
    """The results as markdown: the official table beside the published one, then the families."""
    m, lines = r["machine"], []
    champ = r["champion"]
    lines += [
        f"M4 Weekly, {r['series']} series, H={HORIZON}: `{r['command']}`",
        f"{m['date']}, commit {m['commit']}, {m['cpu']} ({m['cores']} cores), Python {m['python']}, "
        f"torch {m['torch']}; load before/after the run {r['run']['load_before']} / {r['run']['load_after']}",
        "",
        "Official test file (`Weekly-test.csv`), the competition's sMAPE / MASE / OWA:",
        "",
        "| method | sMAPE | MASE | OWA |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} (published) | {s:.3f} | {k:.3f} | {o:.3f} |" for name, s, k, o in PUBLISHED]
    c = r["official"]["champion"]
    lines.append(
        f"| **ours: champion** `{champ['run_name']}` (v{champ['version']}) | **{fmt(c['smape'])}** | "
        f"**{fmt(c['mase'])}** | **{fmt(c['owa'])}** |"
    )
    for label, n in r["official"].items():
        if label != "champion":
            lines.append(f"| ours: {label} | {fmt(n['smape'])} | {fmt(n['mase'])} | {fmt(n['owa'])} |")
    for name, s in r.get("official_per_family", {}).items():
        lines.append(
            f"| ours: {name} (train-split fit, `--per-family`) | {fmt(s['smape'])} | "
            f"{fmt(s['mase'])} | {fmt(s['owa'])} |"
        )
    lines += [
        "",
        f"Each family on the pipeline's own test split (the last {HORIZON} weeks of each *training* "
        "series, not M4's test period; OWA against Naive on that period):",
        "",
        "| model | sMAPE | MASE | OWA | val MASE (selection) | fit s | best epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in r["internal"].items():
        run = r["runs"].get(name, {})
        lines.append(
            f"| {name} | {fmt(s['smape'])} | {fmt(s['mase'])} | {fmt(s['owa'])} | "
            f"{fmt(run.get('val_mase'))} | {fmt(run.get('fit_seconds'), 1)} | "
            f"{fmt(run.get('best_epoch'), 0)} |"
        )
    lines += interval_report(r)
    run, pred = r["run"], r["predict"]
    lines += [
        "",
        f"`forecast run`: {run['wall_s']:.1f} s wall, peak RSS {run['tree_rss_mb']:.0f} MB (process tree, "
        f"up to {run['processes']} processes), largest process {run['process_hwm_mb']:.0f} MB; "
        f"`forecast predict`: {pred['wall_s']:.1f} s, {pred['tree_rss_mb']:.0f} MB. "
        f"Longest fit: {r['longest_fit'][0]} {r['longest_fit'][1]:.1f} s. "
        f"Whole benchmark {r['bench_s']:.0f} s.",
        "",
        "| target | result |",
        "|---|---|",
        f"| champion OWA ≤ {TARGETS['champion_owa']} (official test) | "
        f"{verdict(c['owa'], TARGETS['champion_owa'])} |",
    ]

    def learned(scores: dict[str, dict]) -> dict[str, dict]:
        return {k: v for k, v in scores.items() if k in r["runs"] and r["runs"][k]["family"] in LEARNED}

    views = [("internal split", r["internal"])]
    if r.get("official_per_family"):
        views.append(("official test, `--per-family`", r["official_per_family"]))
    for where, scores in views:
        fam = learned(scores)
        if not fam:
            target = TARGETS["family_owa"]
            lines.append(f"| every learned family OWA < {target} ({where}) | no learned family ran |")
            continue
        above = [k for k, v in fam.items() if not v["owa"] < TARGETS["family_owa"]]
        worst = max(fam, key=lambda k: fam[k]["owa"] if math.isfinite(fam[k]["owa"]) else math.inf)
        lines.append(
            f"| every learned family OWA < {TARGETS['family_owa']} ({where}) | "
            + ("**met**" if not above else f"**not met**: {', '.join(above)}")
            + f" (worst: {worst} {fmt(fam[worst]['owa'])}) |"
        )
    lines += [
        f"| whole run ≤ {TARGETS['run_s']:.0f} s (`forecast run` + `forecast predict`) | "
        f"{verdict(run['wall_s'] + pred['wall_s'], TARGETS['run_s'], ' s', 1)} |",
        f"| no fit over {TARGETS['fit_s']:.0f} s | "
        f"{verdict(r['longest_fit'][1], TARGETS['fit_s'], ' s', 1)} |",
    ]
    for target in r.get("interval_targets", interval_targets(r)).values():
        lines.append(
            f"| {target['target']} | {'**met**' if target['met'] else '**not met**'}: {target['detail']} |"
        )
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------------
def run_cli(stores: Path, config: Path, data: Path) -> tuple[Measured, Measured]:
    """``forecast run`` then ``forecast predict``, in ``stores`` (its own working directory)."""
    env = cli_env(stores)
    run = run_measured(
        [str(FORECAST), "run", str(config), "--data", str(data)], env, stores, stores / "forecast_run.log"
    )
    if run.returncode != 0:
        raise SystemExit(f"forecast run failed ({run.returncode}):\n{run.log.read_text()[-4000:]}")
    predict = run_measured(
        [
            str(FORECAST),
            "predict",
            "--config",
            str(config),
            "--input",
            str(data),
            "--output",
            str(stores / "forecast.parquet"),
        ],
        env,
        stores,
        stores / "forecast_predict.log",
    )
    if predict.returncode != 0:
        raise SystemExit(
            f"forecast predict failed ({predict.returncode}):\n{predict.log.read_text()[-4000:]}"
        )
    return run, predict


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "m4", help="work folder (git-ignored)")
    parser.add_argument(
        "--quick", action="store_true", help=f"first {QUICK_SERIES} series, 4 fast models, 1 epoch"
    )
    parser.add_argument("--per-family", action="store_true", help="every family on the official test file")
    parser.add_argument("--convert-only", action="store_true", help="write the long Parquet and stop")
    parser.add_argument("--rescore", type=Path, help="a finished run folder: score it again, run nothing")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    verify_files()
    train, test = read_wide(M4_DIR / "Weekly-train.csv"), read_wide(M4_DIR / "Weekly-test.csv")
    if list(train) != list(test):
        raise ValueError("Weekly-train.csv and Weekly-test.csv list different series")
    # The scorer's check, on all 359 series whatever the mode.
    ids_all = list(train)
    naive_all = score(
        np.stack([test[s] for s in ids_all]),
        naive_forecast([train[s] for s in ids_all]),
        [train[s] for s in ids_all],
    )
    if (round(naive_all["smape"], 3), round(naive_all["mase"], 3)) != (NAIVE2["smape"], NAIVE2["mase"]):
        raise ValueError(f"the scorer gives Naive {naive_all}, not the README's {NAIVE2}")

    if args.quick:
        train = {s: train[s] for s in list(train)[:QUICK_SERIES]}
    out = args.out.resolve()
    data = write_long(train, out / ("weekly_train_quick.parquet" if args.quick else "weekly_train.parquet"))
    if args.convert_only:
        print(f"wrote {data} ({len(train)} series, {sum(len(v) for v in train.values())} rows)")
        return {"data": str(data)}
    config = quick_config(out) if args.quick else CONFIG
    cfg = yaml.safe_load(config.read_text())

    if args.rescore:
        stores = args.rescore.resolve()
        saved = stores / "results.json"
        if saved.exists():
            previous = json.loads(saved.read_text())
            run, predict = previous["run"], previous["predict"]
        else:  # the run finished but was never scored: its measurements are lost
            unknown = {"wall_s": math.nan, "tree_rss_mb": math.nan, "process_hwm_mb": math.nan}
            run = predict = unknown | {"processes": 0, "load_before": "?", "load_after": "?"}
    else:
        stores = out / f"run-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}{'-quick' if args.quick else ''}"
        stores.mkdir(parents=True)
        run_m, predict_m = run_cli(stores, config, data)
        run, predict = (
            {k: v for k, v in vars(m).items() if k not in ("command", "log")} for m in (run_m, predict_m)
        )
    tracking_uri = cli_env(stores)["MLFLOW_TRACKING_URI"]
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # for --per-family's model loading

    ids = list(train)
    truth = np.stack([test[s] for s in ids])
    history = [train[s] for s in ids]
    forecasts = pd.read_parquet(stores / "forecast.parquet")
    official = {
        "champion": score_forecast(truth, forecasts, ids, history),
        f"Naive, scorer check (all {len(ids_all)} series)": naive_all,
    }
    if args.quick:
        official[f"Naive on these {len(ids)} series"] = score(truth, naive_forecast(history), history)
    runs = logged_runs(tracking_uri, cfg["tracking"]["experiment"])
    fits = [
        (r.name + (" (refit)" if r.role == "refit" else ""), r.metrics.get("fit_seconds", 0.0)) for r in runs
    ]
    result: dict[str, Any] = {
        "command": "bench/m4.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "series": len(ids),
        "stores": str(stores),
        "run": run,
        "predict": predict,
        "champion": champion(tracking_uri, cfg["tracking"]["registered_model"]),
        "official": official,
        "internal": internal_scores(runs, tracking_uri, train, stores),
        "runs": {
            r.name: {"family": r.family, "role": r.role, **r.metrics} for r in runs if r.role == "model"
        },
        "longest_fit": max(fits, key=lambda f: f[1]),
    }
    if args.per_family:
        result["official_per_family"] = official_per_family(runs, data, ids, truth, history, stores)
    result["interval_targets"] = interval_targets(result)
    result["bench_s"] = time.perf_counter() - t0
    text = report(result)
    (stores / "results.json").write_text(json.dumps(result, indent=2, default=str))
    (stores / "results.md").write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
