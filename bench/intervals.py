"""Prediction intervals on the ETT protocol: coverage, MSIS and quantile loss of every family and
of the champion, and what intervals cost a pipeline run.

Each cell (``--cells ETTh1:S:96 ETTh1:M:96``: dataset, features, horizon) runs the pipeline's own
training path (``train_all`` with ``train_model``, no tracking) on the standard ETT split with the
configured families, so every number is what a child run logs:

- ``val_coverage_*``: out-of-fold coverage on the validation windows (each validation fold banded
  by a calibration of the others);
- ``test_*``: coverage, scaled width and MSIS (alpha = 1 - level, scaled by the training series'
  seasonal-naive MAE, season 24 for hourly data) and the weighted quantile loss on the test
  windows, banded by the calibration of all validation windows. No choice is made on them.

The champion is the family with the lowest ``val_mse`` (as the pipeline selects), never a test
figure. Targets (issue 21): test coverage within 2 points of nominal at 80 % and 95 % for the
champion and every family. benchmarks.md holds no published interval figure for ETT, so the
point MSE beside them is the only published comparison.

``--overhead``: the demo pipeline (``configs/demo.yaml``: every family, MLflow logging, the
refit, the champion gate) run twice in fresh stores, with the default intervals and with
``intervals: {levels: [], quantiles: []}``; the wall times and their ratio (target: at most 1.20).

    .venv/bin/python bench/intervals.py                              # ETTh1 S and M, H=96
    .venv/bin/python bench/intervals.py --cells ETTh1:S:96 --families naive ar linear
    .venv/bin/python bench/intervals.py --overhead --cells           # only the overhead
    .venv/bin/python bench/intervals.py --quick --overhead --out rows.csv   # seconds (what CI runs)

``--quick``: one small cell (ETTh1:S:24, L=48, 20 days each of validation and test) with four
families (``QUICK_FAMILIES``), one epoch of 256 windows; with ``--overhead``, the small demo of
``bench/demo_timing.py --quick`` (``QUICK_DEMO``). Seconds; the figures mean nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, append_row, best_published, ett_config, fmt, machine
from demo_timing import QUICK_DEMO

FAMILIES = ["naive", "seasonal_naive", "ar", "linear", "rnn", "lstm", "gru", "tcn", "transformer", "ensemble"]
LEVELS = (80, 95)
TOLERANCE = 0.02  # coverage within 2 points of nominal
CELLS = ["ETTh1:S:96", "ETTh1:M:96"]
QUICK_CELLS = ["ETTh1:S:24"]
QUICK_FAMILIES = ["naive", "ar", "linear", "ensemble"]  # a baseline, AR, the torch loop, the ensemble


def run_cell(cell: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    from forecasting.pipeline.prepare import prepare
    from forecasting.pipeline.train import train_all, train_model

    dataset, features, horizon = cell.split(":")
    training = {"epochs": args.epochs, "max_train_windows": args.max_train_windows, "seed": 0}
    models = [{"name": f} for f in args.families]
    cfg = ett_config(dataset, features, args.lookback, int(horizon), training, models)
    if args.quick:  # short validation and test periods
        split = cfg.split.model_copy(update={"borders": tuple(QUICK_DEMO["split"]["borders"])})
        cfg = cfg.model_copy(update={"split": split})
    prepared = prepare(cfg)
    started = time.perf_counter()

    def train_many(jobs: list[Any]) -> list[Any]:
        out = []
        for job in jobs:
            t0 = time.perf_counter()
            result = train_model(job.prepared, job.spec, None, members=job.members)
            print(f"  {job.spec.run_name:15s} {result.status} {time.perf_counter() - t0:6.1f} s", flush=True)
            out.append(result)
        return out

    results = train_all(prepared, None, train_many)
    finished = [r for r in results if r.status == "FINISHED"]
    champion = min(finished, key=lambda r: r.metrics["val_mse"])  # as ``best_result``: validation only
    rows = []
    for r in results:
        m = r.metrics
        rows.append(
            {
                "cell": cell,
                "lookback": args.lookback,
                "model": r.name,
                "champion": r.name == champion.name,
                "status": r.status,
                "val_mse": m.get("val_mse"),
                "test_mse": m.get("test_mse"),
                **{f"val_coverage_{lv}": m.get(f"val_coverage_{lv}") for lv in LEVELS},
                **{f"test_coverage_{lv}": m.get(f"test_coverage_{lv}") for lv in LEVELS},
                **{f"test_width_{lv}": m.get(f"test_width_{lv}") for lv in LEVELS},
                "test_msis": m.get("test_msis"),
                "test_wql": m.get("test_wql"),
                "fit_seconds": m.get("fit_seconds"),
                "calibrate_seconds": m.get("calibrate_seconds"),
                "error": r.error or "",
            }
        )
    print(f"  cell done in {time.perf_counter() - started:.0f} s", flush=True)
    return rows


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        if row["status"] != "FINISHED":
            lines.append(f"- {row['cell']} {row['model']}: failed ({row['error']})")
            continue
        for lv in LEVELS:
            cov = row[f"test_coverage_{lv}"]
            gap = cov - lv / 100
            if abs(gap) > TOLERANCE:
                what = "too wide" if gap > 0 else "too narrow"
                lines.append(
                    f"- {row['cell']} {row['model']}: {lv} % coverage {cov:.3f} ({gap:+.3f}, {what})"
                )
    return lines or ["- every family and the champion within 2 points of nominal at 80 % and 95 %"]


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| cell | model | val cov 80 / 95 | test cov 80 / 95 | width 80 / 95 | test MSIS (95) | "
        "test wQL | test MSE | published MSE |"
    )
    out = [head, "|" + "---|" * 9]
    for row in rows:
        dataset, features, horizon = row["cell"].split(":")
        pub = best_published(dataset, features, int(horizon))
        name = row["model"] + (" (champion)" if row["champion"] else "")
        out.append(
            f"| {row['cell']} L={row['lookback']} | {name} | "
            f"{fmt(row['val_coverage_80'], 3)} / {fmt(row['val_coverage_95'], 3)} | "
            f"{fmt(row['test_coverage_80'], 3)} / {fmt(row['test_coverage_95'], 3)} | "
            f"{fmt(row['test_width_80'], 2)} / {fmt(row['test_width_95'], 2)} | {fmt(row['test_msis'], 2)} | "
            f"{fmt(row['test_wql'], 4)} | {fmt(row['test_mse'])} | {fmt(pub[2]) if pub else '-'} |"
        )
    return "\n".join(out)


def overhead(args: argparse.Namespace) -> dict[str, float]:
    """Wall time of the demo pipeline with and without intervals, each in fresh stores."""
    from forecasting.config import load_config
    from forecasting.pipeline import run_pipeline

    root = Path(__file__).resolve().parents[1]
    times = {}
    for label, intervals in (("intervals", None), ("no intervals", {"levels": [], "quantiles": []})):
        with tempfile.TemporaryDirectory() as tmp:
            overrides: dict[str, Any] = {
                "tracking": {"tracking_uri": f"sqlite:///{tmp}/mlflow.db"},
                "training": {"progress": False},
            }
            if args.quick:  # a few families, a few steps: the same pipeline, in seconds
                overrides.update(models=QUICK_DEMO["models"], split=QUICK_DEMO["split"])
                overrides["training"].update(QUICK_DEMO["training"])
            if intervals is not None:
                overrides["intervals"] = intervals
            cfg = load_config(root / "configs" / "demo.yaml", overrides)
            os.environ["MLFLOW_TRACKING_URI"] = overrides["tracking"]["tracking_uri"]
            started = time.perf_counter()
            run_pipeline(cfg)
            times[label] = time.perf_counter() - started
            print(f"  demo pipeline, {label}: {times[label]:.1f} s", flush=True)
    times["ratio"] = times["intervals"] / times["no intervals"]
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="*", default=None, help=f"default {' '.join(CELLS)}")
    parser.add_argument("--families", nargs="+", default=None, help="default: every family")
    parser.add_argument("--lookback", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--max-train-windows", type=int, default=16384, help="training windows drawn per epoch"
    )
    parser.add_argument(
        "--overhead", action="store_true", help="time the demo pipeline with/without intervals"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"cell {QUICK_CELLS[0]} at L=48, 1 epoch of 256 windows; --overhead on a small demo (seconds)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "intervals.csv")
    args = parser.parse_args(argv)
    if args.quick:
        args.lookback, args.epochs, args.max_train_windows = 48, 1, 256
    if args.cells is None:
        args.cells = QUICK_CELLS if args.quick else CELLS
    if args.families is None:
        args.families = QUICK_FAMILIES if args.quick else FAMILIES
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    info = machine()
    print(f"# Prediction intervals ({info.get('date', '')}, {info.get('cpu', '')})", flush=True)
    rows: list[dict[str, Any]] = []
    for cell in args.cells:
        print(f"\n## {cell} L={args.lookback}", flush=True)
        cell_rows = run_cell(cell, args)
        for row in cell_rows:
            append_row(args.out, {**row, "date": info.get("date", ""), "commit": info.get("commit", "")})
        rows += cell_rows
    if rows:
        print("\n" + table(rows))
        print("\nTargets (test coverage within 2 points of nominal):")
        print("\n".join(verdicts(rows)))
    if args.overhead:
        print("\n## Overhead: the demo pipeline with and without intervals", flush=True)
        t = overhead(args)
        verdict = "meets" if t["ratio"] <= 1.20 else "misses"
        print(f"ratio {t['ratio']:.3f} ({verdict} the 1.20 target)")


if __name__ == "__main__":
    main()
