"""What one model run's MLflow work costs against the number of series, and where it goes.

For each size N, the seeded panel of ``bench/scale.py`` (N series of up to ``--length`` hours) is
prepared once with ``configs/many_series.yaml`` (its split, horizon and defaults), then
``--family`` is trained, scored and logged as a model run into a fresh SQLite MLflow store,
``--repeats`` times after one warm-up run (the process's first pyfunc pays imports). Per size it
prints and records ``log_seconds`` (the run's own MLflow work: inputs, params, the test-prediction
and per-series Parquet, the figures, the pyfunc; ``pipeline.train.train_model``), the fit-and-score
time beside it, and with ``--profile`` the functions that take the most of one measured run.

    .venv/bin/python bench/log_cost.py --sizes 1000 10000 100000 --length 200
    .venv/bin/python bench/log_cost.py --sizes 100000 --profile 25          # where the time goes
    .venv/bin/python bench/log_cost.py --quick --out /tmp/log_cost.json     # CI: 50 series

``bench/scale.py`` measures the same metric inside whole ``forecast run`` subprocesses; this one
isolates a model run, so that a change to logging is measured in a minute, not in an hour.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RESULTS, load_average, machine, peak_rss_mb
from scale import CONFIG, WORK, data_path, generate


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    from forecasting.config import ModelSpec, config_from_dict
    from forecasting.pipeline import prepare
    from forecasting.pipeline.train import train_model
    from forecasting.tracking import Tracker

    path = data_path(args.work, n, args.length, args.seed)
    if not path.exists():
        generate(n, path, length=args.length, seed=args.seed)
    raw = yaml.safe_load(CONFIG.read_text())
    raw["data"]["path"] = str(path)
    raw["models"] = [{"name": args.family}]
    load_before = load_average()
    with tempfile.TemporaryDirectory(dir=args.work) as store:
        raw["tracking"] = {"experiment": "log-cost", "tracking_uri": f"sqlite:///{store}/mlflow.db"}
        cfg = config_from_dict(raw, source=f"log-cost-{n}")
        start = time.perf_counter()
        prepared = prepare(cfg)
        prepare_s = time.perf_counter() - start
        tracker = Tracker(cfg.tracking)
        spec = ModelSpec(name=args.family)
        train_model(prepared, spec, tracker)  # warm-up: the process's first pyfunc and imports
        runs, profile = [], ""
        for i in range(args.repeats):
            profiler = cProfile.Profile() if args.profile and i == 0 else None
            start = time.perf_counter()
            if profiler:
                profiler.enable()
            result = train_model(prepared, spec, tracker)
            if profiler:
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.profile)
                profile = out.getvalue()
            if result.status != "FINISHED":
                raise RuntimeError(f"{args.family} at {n} series: {result.error}")
            runs.append(
                {
                    "log_seconds": result.metrics["log_seconds"],
                    "fit_seconds": result.metrics.get("fit_seconds", float("nan")),
                    "run_seconds": time.perf_counter() - start,
                }
            )
    row = {
        "series": n,
        "rows": len(prepared.data.frame),
        "family": args.family,
        "prepare_s": round(prepare_s, 2),
        "log_seconds": [round(r["log_seconds"], 3) for r in runs],
        "log_seconds_median": round(statistics.median(r["log_seconds"] for r in runs), 3),
        "run_seconds_median": round(statistics.median(r["run_seconds"] for r in runs), 3),
        "fit_seconds_median": round(statistics.median(r["fit_seconds"] for r in runs), 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_before": load_before,
        "load_after": load_average(),
    }
    print(
        f"{n:>8} series {row['rows']:>11,} rows  log_seconds median {row['log_seconds_median']:.3f} s "
        f"{row['log_seconds']}  model run {row['run_seconds_median']:.2f} s "
        f"(fit {row['fit_seconds_median']:.2f} s)  load {row['load_after']}",
        flush=True,
    )
    if profile:
        print(profile, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[1_000, 10_000, 100_000])
    parser.add_argument("--length", type=int, default=200, help="hours of the longest series")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", default="naive")
    parser.add_argument("--repeats", type=int, default=3, help="measured model runs per size")
    parser.add_argument("--profile", type=int, default=0, metavar="K", help="print the top K functions")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=RESULTS / "log_cost.json")
    parser.add_argument("--quick", action="store_true", help="50 series, one measured run")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats = [50], 1
    args.work.mkdir(parents=True, exist_ok=True)
    host = machine()
    print(json.dumps(host), flush=True)
    rows = [measure(n, args) for n in args.sizes]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": host, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
