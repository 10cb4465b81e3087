"""Deep families on ETTh1 univariate (target OT), the standard protocol, each with its defaults.

Split at rows 8640 / 11520 / 14400, z-normalised with training statistics, horizon 96; fit with
validation (early stopping), then MSE/MAE over every test window (2785 at H=96), on the
normalised scale like the published tables. Prints a markdown table.

    .venv/bin/python bench/deep_etth1.py                      # every family, L = 96 and 336
    .venv/bin/python bench/deep_etth1.py --models lstm tcn --lookbacks 96
    .venv/bin/python bench/deep_etth1.py --quick --out rows.json
        # every family, L=96, 3 steps, 20 days each of validation and test (seconds); rows as JSON
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forecasting.config import DataConfig, ModelSpec, SplitConfig, TrainingConfig, WindowConfig
from forecasting.data.ingest import ingest
from forecasting.data.scaling import fit_scaler
from forecasting.data.splits import split_frame
from forecasting.models.base import DataSpec
from forecasting.models.registry import build_model

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["naive", "linear", "rnn", "lstm", "gru", "tcn", "transformer"]
BORDERS = (8640, 11520, 14400)  # the standard ETTh split
QUICK_BORDERS = (8640, 9120, 9600)  # --quick: 20 days each of validation and test


def run(
    name: str,
    lookback: int,
    horizon: int,
    threads: int,
    seed: int,
    max_steps: int | None = None,
    borders: tuple[int, int, int] = BORDERS,
) -> dict[str, Any]:
    cfg = DataConfig(path=ROOT / "data" / "ETTh1.csv", time_column="date", target="OT")
    window = WindowConfig(lookback=lookback, horizon=horizon)
    split = split_frame(ingest(cfg).frame, SplitConfig(method="borders", borders=borders), window)
    scaler = fit_scaler(split.train, ["y"])
    train, val, test = (scaler.transform(f) for f in (split.train, split.val, split.test))
    training = TrainingConfig(num_threads=threads, progress=False, seed=seed, max_steps=max_steps)
    model = build_model(ModelSpec(name=name), DataSpec(lookback=lookback, horizon=horizon), training)
    t0 = time.perf_counter()
    model.fit(train, val)
    fit_s = time.perf_counter() - t0
    windows = model.make_windows(test)
    batch = windows.batch(np.arange(len(windows)))
    err = model.predict_windows(batch) - batch["target"]
    return {
        "model": name,
        "lookback": lookback,
        "mse": float(np.mean(err**2)),
        "mae": float(np.mean(np.abs(err))),
        "fit_s": fit_s,
        "epochs": len(model.history_),
        "best": model.best_epoch_ or 0,
        "params": model.n_params,
        "windows": len(windows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=FAMILIES)
    parser.add_argument("--lookbacks", nargs="+", type=int, default=[96, 336])
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--threads", type=int, default=None, help="default 2 (--quick: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None, help="cap optimiser steps per fit")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="L=96 only, 3 optimiser steps per fit, 20-day validation and test, 1 thread (seconds)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    borders = QUICK_BORDERS if args.quick else BORDERS
    if args.quick:
        args.lookbacks, args.max_steps = [96], 3
    if args.threads is None:
        args.threads = 1 if args.quick else 2
    torch.set_num_threads(args.threads)

    steps = f", at most {args.max_steps} steps" if args.max_steps else ""
    steps += f", borders {list(borders)}" if borders != BORDERS else ""
    print(f"ETTh1 OT, H={args.horizon}, {args.threads} threads, seed {args.seed}{steps}")
    print("| model | L | test MSE | test MAE | fit s | epochs (best) | params |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for lookback in args.lookbacks:
        for name in args.models:
            r = run(name, lookback, args.horizon, args.threads, args.seed, args.max_steps, borders)
            rows.append(r)
            print(
                f"| {name} | {lookback} | {r['mse']:.4f} | {r['mae']:.4f} | {r['fit_s']:.1f} | "
                f"{r['epochs']} ({r['best']}) | {r['params']:,} |",
                flush=True,
            )
            if args.out is not None:  # after every row: an interrupted run keeps what it measured
                settings = {"horizon": args.horizon, "threads": args.threads, "seed": args.seed}
                settings.update(max_steps=args.max_steps, borders=borders)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps({**settings, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
