"""Deep families on ETTh1 univariate (target OT), the standard protocol, each with its defaults.

Split at rows 8640 / 11520 / 14400, z-normalised with training statistics, horizon 96; fit with
validation (early stopping), then MSE/MAE over every test window (2785 at H=96), on the
normalised scale like the published tables. Prints a markdown table.

    .venv/bin/python bench/deep_etth1.py                      # every family, L = 96 and 336
    .venv/bin/python bench/deep_etth1.py --models lstm tcn --lookbacks 96
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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


def run(name: str, lookback: int, horizon: int, threads: int, seed: int) -> dict[str, float]:
    cfg = DataConfig(path=ROOT / "data" / "ETTh1.csv", time_column="date", target="OT")
    window = WindowConfig(lookback=lookback, horizon=horizon)
    split = split_frame(
        ingest(cfg).frame, SplitConfig(method="borders", borders=(8640, 11520, 14400)), window
    )
    scaler = fit_scaler(split.train, ["y"])
    train, val, test = (scaler.transform(f) for f in (split.train, split.val, split.test))
    training = TrainingConfig(num_threads=threads, progress=False, seed=seed)
    model = build_model(ModelSpec(name=name), DataSpec(lookback=lookback, horizon=horizon), training)
    t0 = time.perf_counter()
    model.fit(train, val)
    fit_s = time.perf_counter() - t0
    windows = model.make_windows(test)
    batch = windows.batch(np.arange(len(windows)))
    err = model.predict_windows(batch) - batch["target"]
    return {
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
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"ETTh1 OT, H={args.horizon}, {args.threads} threads, seed {args.seed}")
    print("| model | L | test MSE | test MAE | fit s | epochs (best) | params |")
    print("|---|---|---|---|---|---|---|")
    for lookback in args.lookbacks:
        for name in args.models:
            r = run(name, lookback, args.horizon, args.threads, args.seed)
            print(
                f"| {name} | {lookback} | {r['mse']:.4f} | {r['mae']:.4f} | {r['fit_s']:.1f} | "
                f"{r['epochs']} ({r['best']}) | {r['params']:,} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
