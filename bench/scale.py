"""How the pipeline's cost grows with the number of series: a seeded generator of many hourly
series, then `forecast validate`, `forecast run` and `forecast predict` at each size, measured.

The generator (``generate``, vectorised, written as Parquet row groups of ``CHUNK`` series) varies
what real panels vary: lengths (most series ``--length`` hours, a third shorter, a share of short
series of 120-167 hours, which the pipeline left-pads to a window: ``SHORT``), levels (log-normal
over four orders of magnitude), a daily season of random amplitude and phase, a weekly one on half
the series, trends, noise of 2-30 %, and a share of intermittent series (mostly zeros, demand on
10-50 % of the hours). Every series ends at the same hour, as a panel does on its forecast day.

Each size runs ``configs/many_series.yaml`` (naive, seasonal naive, AR, linear, GRU, TCN and their
ensemble; every setting from the shipped defaults) as a user runs it: subprocesses of the venv's
``forecast`` on fresh MLflow and Prefect stores in ``--work/n<N>/``, so Prefect's and MLflow's costs
are in the figures. Per stage: wall time, peak RSS of the process tree (sampled every 0.2 s) and of
the largest process, series per second; after the run, how many MLflow runs it made. Rows go to
``--out`` (JSON, with commit, machine and load), the table is printed, and ``--plot`` draws wall time
and peak memory against N.

    .venv/bin/python bench/scale.py                          # N = 1k, 10k, 100k (500 hours each)
    .venv/bin/python bench/scale.py --sizes 1000 10000 --stages validate predict
    .venv/bin/python bench/scale.py --generate-only --sizes 100000   # just the Parquet file
    .venv/bin/python bench/scale.py --quick --out /tmp/scale.json   # CI: 200 series, 3 cheap models
    .venv/bin/python bench/scale.py --sizes 10000 --dask-workers 2 --out bench/results/scale_dask.json
    .venv/bin/python bench/scale.py --models naive seasonal_naive ar linear ensemble  # the cheap families

With ``--dask-workers K`` the config runs on a Dask ``LocalCluster`` of K worker processes
(``orchestration.dask_local_workers``): the training tasks, the ETS/Theta series, the chunks of
validation and those of batch prediction go to its workers, whose memory is in the process tree's
peak. Validation and prediction then go in chunks of ``DASK_CHUNK_SERIES`` series
(``orchestration.validate_chunk_series``, ``predict.chunk_series``), so that every worker gets
several at 10,000 series and more.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RESULTS, ROOT, load_average, machine
from m4 import cli_env, run_measured

FORECAST = ROOT / ".venv" / "bin" / "forecast"
CONFIG = ROOT / "configs" / "many_series.yaml"
WORK = ROOT / "outputs" / "scale"
STAGES = ("validate", "run", "predict")
CHUNK = 10_000  # series per Parquet row group (and per generation step: memory stays flat in N)
START = np.datetime64("2026-01-01T00:00")
# Hours of a short series: fewer than a lookback (48) plus a training window and the 4 horizons of
# the counts split (168), so the pipeline left-pads them; at least the 5 horizons (120) that split
# needs of real rows (a series under that is refused by name: SeriesTooShortError).
SHORT = (120, 167)


def generate_chunk(
    rng: np.random.Generator, first: int, n: int, length: int, short_share: float, intermittent_share: float
) -> dict[str, np.ndarray]:
    """``n`` series (ids ``first`` ...) as long columns: series index, hour index, value."""
    lengths = np.full(n, length)
    shorter = rng.random(n) < 1 / 3
    lengths[shorter] = rng.integers(min(max(length // 5, SHORT[1] + 1), length), length + 1, shorter.sum())
    short = rng.random(n) < short_share
    lengths[short] = np.minimum(rng.integers(SHORT[0], SHORT[1] + 1, short.sum()), length)
    sid = np.repeat(np.arange(n), lengths)
    offsets = np.cumsum(lengths) - lengths
    hour = np.arange(lengths.sum()) - np.repeat(offsets, lengths) + np.repeat(length - lengths, lengths)
    level = np.exp(rng.normal(3.0, 1.5, n))
    daily = rng.uniform(0.0, 0.5, n)
    weekly = rng.uniform(0.0, 0.3, n) * (rng.random(n) < 0.5)
    phase_d, phase_w = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n)
    trend = rng.normal(0.0, 1.0, n) / length  # log growth per hour: ~x0.37 to x2.7 over the span
    noise = rng.uniform(0.02, 0.3, n)
    t = hour.astype(np.float64)
    shape = (
        1.0
        + daily[sid] * np.sin(2 * np.pi * t / 24 + phase_d[sid])
        + weekly[sid] * np.sin(2 * np.pi * t / 168 + phase_w[sid])
        + noise[sid] * rng.standard_normal(len(t))
    )
    y = level[sid] * np.exp(trend[sid] * (t - length / 2)) * np.maximum(shape, 0.0)
    intermittent = rng.random(n) < intermittent_share
    if intermittent.any():
        rate = rng.uniform(0.1, 0.5, n)
        rows = intermittent[sid]
        demand = rng.random(rows.sum()) < rate[sid[rows]]
        # Demand sizes: 1 + Poisson with a mean following the series' shape (3 at its level).
        mean = 3 * y[rows] / np.maximum(level[sid[rows]], 1e-9)
        y[rows] = np.where(demand, 1.0 + rng.poisson(np.maximum(mean, 0.1)), 0.0)
    return {"series": sid + first, "hour": hour, "y": y}


def generate(
    n: int,
    path: Path,
    length: int = 500,
    seed: int = 0,
    short_share: float = 0.05,
    intermittent_share: float = 0.1,
) -> dict[str, Any]:
    """Write ``n`` series to ``path`` (Parquet: ``series_id`` dictionary-encoded, ``timestamp``,
    ``y``), ``CHUNK`` series per row group; the same ``seed`` gives the same file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    rows = 0
    schema = pa.schema(
        [
            ("series_id", pa.dictionary(pa.int32(), pa.string())),
            ("timestamp", pa.timestamp("us")),
            ("y", pa.float64()),
        ]
    )
    start = time.perf_counter()
    with pq.ParquetWriter(tmp, schema) as writer:
        for first in range(0, n, CHUNK):
            k = min(CHUNK, n - first)
            part = generate_chunk(rng, first, k, length, short_share, intermittent_share)
            names = pa.array([f"s{i:07d}" for i in range(first, first + k)])
            ids = pa.DictionaryArray.from_arrays(pa.array(part["series"] - first, pa.int32()), names)
            stamps = START + part["hour"].astype("timedelta64[h]")
            writer.write_table(
                pa.table(
                    {"series_id": ids, "timestamp": pa.array(stamps.astype("datetime64[us]")), "y": part["y"]}
                )
            )
            rows += len(part["y"])
    os.replace(tmp, path)
    return {"n_series": n, "rows": rows, "seconds": time.perf_counter() - start, "bytes": path.stat().st_size}


def data_path(work: Path, n: int, length: int, seed: int) -> Path:
    """The generated file of ``n`` series: the name holds every setting that changes its contents."""
    return work / f"series_{n}_len{length}_seed{seed}.parquet"


def quick_config(work: Path, config: Path = CONFIG) -> Path:
    """``config`` with three cheap families and a few steps (``--quick``)."""
    cfg = yaml.safe_load(config.read_text())
    cfg["models"] = [{"name": "naive"}, {"name": "ar", "params": {"max_lag": 8}}, {"name": "linear"}]
    cfg["training"] = {"epochs": 1, "max_steps": 3}
    path = work / "many_series_quick.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


DASK_CHUNK_SERIES = 2_500  # series per validation and prediction task on Dask


def variant_config(work: Path, config: Path, models: list[str] | None, dask_workers: int | None) -> Path:
    """``config`` with only ``models`` (family names) and/or on a Dask ``LocalCluster`` of
    ``dask_workers`` processes (training tasks, ETS/Theta series, validation and prediction chunks
    on it)."""
    cfg = yaml.safe_load(config.read_text())
    if models:
        cfg["models"] = [{"name": m} for m in models]
    if dask_workers:
        cfg.setdefault("orchestration", {}).update(
            dask_local_workers=dask_workers, validate_chunk_series=DASK_CHUNK_SERIES
        )
        cfg.setdefault("predict", {})["chunk_series"] = DASK_CHUNK_SERIES
    data = Path(cfg["data"]["path"])
    if not data.is_absolute():  # relative to the config's folder, which the copy leaves
        cfg["data"]["path"] = str((config.parent / data).resolve())
    tag = "-".join([*(models or []), f"dask{dask_workers}" if dask_workers else ""]).strip("-")
    path = work / f"{config.stem}-{tag}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def count_runs(tracking_uri: str, experiment: str) -> int:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return 0
    return len(client.search_runs([exp.experiment_id], max_results=50_000))


def run_size(n: int, args: argparse.Namespace, config: Path, host: dict[str, Any]) -> list[dict[str, Any]]:
    data = data_path(args.work, n, args.length, args.seed)
    if not data.exists() or args.regenerate:
        made = generate(n, data, args.length, args.seed)
        print(
            f"generated {n:,} series, {made['rows']:,} rows in {made['seconds']:.1f} s ({data})", flush=True
        )
    stores = args.stores or args.work / f"n{n}-{time.strftime('%Y%m%d-%H%M%S')}"
    stores.mkdir(parents=True, exist_ok=True)
    env = cli_env(stores)
    commands = {
        "validate": [str(FORECAST), "validate", str(config), "--data", str(data), "--json"],
        "run": [str(FORECAST), "run", str(config), "--data", str(data), "--no-predict"],
        "predict": [
            str(FORECAST), "predict", "--config", str(config), "--input", str(data),
            "--output", str(stores / "forecast.parquet"),
        ],
    }  # fmt: skip
    rows = []
    import pyarrow.parquet as pq

    n_rows = pq.ParquetFile(data).metadata.num_rows
    for stage in args.stages:
        measured = run_measured(commands[stage], env, stores, stores / f"{stage}.log")
        row = {
            "n_series": n,
            "length": args.length,
            "seed": args.seed,
            "rows": n_rows,
            "stage": stage,
            "returncode": measured.returncode,
            "wall_s": round(measured.wall_s, 2),
            "series_per_s": round(n / measured.wall_s, 1) if measured.wall_s else math.nan,
            "peak_rss_mb": round(measured.tree_rss_mb),
            "largest_process_mb": round(measured.process_hwm_mb),
            "processes": measured.processes,
            "load_before": measured.load_before,
            "load_after": measured.load_after,
            "commit": host["commit"],
            "machine": f"{host['cpu']} ({host['cores']} cores)",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "quick": args.quick,
            "models": " ".join(m["name"] for m in yaml.safe_load(config.read_text())["models"]),
            "dask_workers": args.dask_workers or 0,
        }
        if stage == "run" and measured.returncode == 0:
            experiment = yaml.safe_load(config.read_text())["tracking"]["experiment"]
            row["mlflow_runs"] = count_runs(env["MLFLOW_TRACKING_URI"], experiment)
        rows.append(row)
        print(
            f"| {n:,} | {stage} | {row['wall_s']:.1f} | {row['series_per_s']:,.0f} | {row['peak_rss_mb']:,} "
            f"| {row['largest_process_mb']:,} | {row.get('mlflow_runs', '')} | {row['load_before']} / "
            f"{row['load_after']} |",
            flush=True,
        )
        if measured.returncode != 0:
            tail = measured.log.read_text()[-3000:]
            print(f"{stage} failed ({measured.returncode}); log {measured.log}:\n{tail}")
            break
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for stage in STAGES:
        pts = sorted((r["n_series"], r["wall_s"], r["peak_rss_mb"]) for r in rows if r["stage"] == stage)
        pts = [p for p in pts if p[1] == p[1]]
        if not pts:
            continue
        n, wall, rss = zip(*pts, strict=True)
        ax_t.plot(n, wall, marker="o", label=stage)
        ax_m.plot(n, [r / 1024 for r in rss], marker="o", label=stage)
    ax_m.axhline(8.0, color="0.4", linestyle="--", linewidth=1.0, label="issue 24's 8 GB at 100k")
    per_series = sorted({round(r["rows"] / r["n_series"]) for r in rows if r.get("rows")})
    hours = f"{per_series[0]}" if len(per_series) == 1 else f"{per_series[0]}-{per_series[-1]}"
    for ax, label in ((ax_t, "wall time (s)"), (ax_m, "peak RSS of the process tree (GB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"series ({hours} hours each on average)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.legend()
    low, high = ax_m.get_ylim()
    ax_m.set_yticks([t for t in (0.25, 0.5, 1, 2, 4, 8, 16, 32) if low <= t <= high])
    fig.suptitle("bench/scale.py: configs/many_series.yaml through the CLI")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", nargs="+", type=int, default=[1000, 10_000, 100_000], help="numbers of series"
    )
    parser.add_argument("--length", type=int, default=500, help="hours of the longest series")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--work", type=Path, default=WORK, help="data and fresh stores (git-ignored)")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of wall time and memory against N")
    parser.add_argument(
        "--plot-from",
        nargs="+",
        type=Path,
        default=None,
        help="draw --plot from the rows of these result files (runs nothing)",
    )
    parser.add_argument(
        "--stores",
        type=Path,
        default=None,
        help="an earlier run's stores folder (its MLflow store and champion): time --stages predict again",
    )
    parser.add_argument("--regenerate", action="store_true", help="write the data again even if present")
    parser.add_argument("--generate-only", action="store_true", help="write the Parquet files and stop")
    parser.add_argument("--quick", action="store_true", help="200 series of 200 hours, 3 cheap models")
    parser.add_argument("--models", nargs="+", default=None, help="run only these families (names)")
    parser.add_argument(
        "--dask-workers", type=int, default=None, help="run on a Dask LocalCluster of this many processes"
    )
    args = parser.parse_args()
    if args.plot_from:
        if not args.plot:
            parser.error("--plot-from needs --plot PNG")
        rows = [r for f in args.plot_from for r in json.loads(f.read_text())["rows"] if r["returncode"] == 0]
        plot(rows, args.plot)
        print(f"plot: {args.plot} ({len(rows)} rows from {len(args.plot_from)} files)")
        return
    args.work.mkdir(parents=True, exist_ok=True)
    config = args.config
    if args.quick:
        args.sizes, args.length = [200], 200
        config = quick_config(args.work, args.config)
    if args.stores and len(args.sizes) != 1:
        parser.error("--stores is one run's folder: give one size with it")
    if args.models or args.dask_workers:
        config = variant_config(args.work, config, args.models, args.dask_workers)
    if args.generate_only:
        for n in args.sizes:
            made = generate(n, data_path(args.work, n, args.length, args.seed), args.length, args.seed)
            print(json.dumps(made))
        return
    host = machine()
    print(f"machine: {json.dumps(host)}; load {load_average()}")
    columns = ["series", "stage", "wall s", "series/s", "peak RSS MB (tree)", "largest process MB"]
    print("| " + " | ".join([*columns, "MLflow runs", "load"]) + " |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for n in args.sizes:
        rows += run_size(n, args, config, host)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": host, "config": str(config), "rows": rows}, indent=1))
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
