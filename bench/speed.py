"""Speed and memory: training throughput against plain PyTorch, time to accuracy, batched AR,
batch prediction on 10,000 series, and peak memory on ETTm1 multivariate.

Sections (``--only`` picks some; all by default):

- ``train``: windows/s per optimiser step and fit wall time (process start-up included) of every
  deep family at one fixed size (hidden 64, 2 layers, lookback 96, horizon 96, batch 32, 1000 steps,
  2 threads, ETTh1 OT training windows), each in a fresh process so that peak RSS is its own; beside
  them a plain-PyTorch loop (no framework: gather, forward, MSE, backward, AdamW step) over the same
  windows. ``ours-recipe`` is the family as shipped (segments/patches), ``ours-same`` the family
  configured as the same network as the plain loop (segment_len 1: one recurrent/conv step per hour),
  which isolates the loop's overhead.
- ``tta``: time to accuracy on ETTh1 univariate, lookback 96, horizon 96, against a popular
  library's figures; each family's recipe is in ``TTA_RECIPES``.
- ``ar``: batched AR(p) least squares vs the per-series statsmodels loop (``bench/ar_batched.py``'s
  panel) on 1,000 and 10,000 series.
- ``predict``: series/s of each family on 10,000 synthetic series (300 hourly rows each), through
  ``model.predict`` (scaled canonical frame) and through ``Bundle.forecast`` (raw frame: validation,
  scaling, forecast, inverse scaling); each model is trained briefly on 200 of the series.
- ``memory``: peak RSS of training (and scoring) a deep family on ETTm1 M (7 x 69,680 rows), in a
  fresh process, and a check that the windows are views of the data, not copies.

Results go to ``bench/results/speed.json`` (``--out``; one object per section, each with the load
average before and after); the printed markdown is what BENCHMARKS.md records.

``--quick`` (what CI runs; the figures mean nothing): every section at toy sizes, in well under a
minute: 5 optimiser steps, one thread, the families of ``QUICK_FAMILIES``, 100 series for ``ar``
and ``predict``, 20-day validation and test periods for ``tta`` and ``memory``, and ``memory`` on
the bundled ETTh1 M instead of ETTm1 M.

    .venv/bin/python bench/speed.py                     # everything (about 20-30 min on 2 cores)
    .venv/bin/python bench/speed.py --quick --out /tmp/speed.json
    .venv/bin/python bench/speed.py --only train tta
    .venv/bin/python bench/speed.py --only train --device cuda --amp   # what bench/gpu.sh runs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    FREQ,
    RESULTS,
    ROOT,
    SEASON,
    current_rss_mb,
    ett_config,
    ett_path,
    load_average,
    machine,
    peak_rss_mb,
)

DEEP = ["linear", "rnn", "lstm", "gru", "tcn", "transformer"]
ALL = ["naive", "seasonal_naive", "ar", *DEEP]
SECTIONS = ["train", "tta", "ar", "predict", "memory"]
# --quick: a baseline, AR and one network that runs every path of every section (the plain loop,
# the recipe, the same net, the memory worker); bench/gpu.sh --dry-run runs the train section of linear.
QUICK_FAMILIES = ["naive", "ar", "lstm"]
QUICK_STEPS = 5
QUICK_SERIES = 100
QUICK_BORDERS = (8640, 9120, 9600)  # 20 days each of validation and test (tta, memory)
QUICK_THREADS = 1  # a CI machine's cores are shared

# --- fixed-size training ------------------------------------------------------------------------------
SIZE = {"hidden": 64, "layers": 2, "lookback": 96, "horizon": 96, "batch": 32, "steps": 1000}
# The family as shipped, at the fixed size.
RECIPE_PARAMS: dict[str, dict[str, Any]] = {
    "linear": {"kind": "dlinear"},
    "rnn": {"hidden": 64, "layers": 2},  # 24-step segments: a 4-step recurrence
    "lstm": {"hidden": 64, "layers": 2},
    "gru": {"hidden": 64, "layers": 2},
    "tcn": {"hidden": 64, "layers": 2},  # 8-step segments: 12 tokens, 2 dilated blocks see 13
    "transformer": {"hidden": 64, "layers": 2, "heads": 4, "ff_mult": 4, "dropout": 0.1},
}
# The family configured as the plain loop's network (one step per hour for rnn/lstm/gru/tcn).
SAME_PARAMS: dict[str, dict[str, Any]] = {
    "rnn": {"hidden": 64, "layers": 2, "segment_len": 1, "residual": False},
    "lstm": {"hidden": 64, "layers": 2, "segment_len": 1, "residual": False},
    "gru": {"hidden": 64, "layers": 2, "segment_len": 1, "residual": False},
    "tcn": {"hidden": 64, "segment_len": 1},  # 96 tokens: 5 blocks to cover them, as the plain TCN
}


def _training_cfg(args: argparse.Namespace, **over: Any) -> dict[str, Any]:
    cfg = {
        "batch_size": SIZE["batch"],
        "base_batch_size": 32,
        "lr": 1e-3,
        "epochs": 1000,
        "max_steps": args.steps,
        "patience": None,
        "num_threads": args.threads,
        "device": args.device,
        "amp": args.amp,
        "seed": 0,
    }
    cfg.update(over)
    return cfg


def worker_ours(family: str, params: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """In a fresh process: prepare ETTh1 OT, fit ``family`` for ``args.steps`` steps, no validation."""
    t_imports = time.perf_counter()
    import torch

    from forecasting.config import ModelSpec
    from forecasting.models.registry import build_model
    from forecasting.pipeline import prepare

    torch.set_num_threads(args.threads)
    imports_s = time.perf_counter() - t_imports
    t0 = time.perf_counter()
    cfg = ett_config("ETTh1", "S", SIZE["lookback"], SIZE["horizon"], _training_cfg(args))
    prepared = prepare(cfg)
    data_s = time.perf_counter() - t0
    model = build_model(ModelSpec(name=family, params=params), prepared.spec, cfg.training)
    t0 = time.perf_counter()
    model.fit(prepared.train)  # no validation: training steps only
    fit_s = time.perf_counter() - t0
    train_s = sum(h["seconds"] for h in model.history_)
    steps = args.steps
    return {
        "imports_s": imports_s,
        "data_s": data_s,
        "fit_s": fit_s,
        "train_s": train_s,
        "steps": steps,
        "windows_per_s": steps * SIZE["batch"] / train_s,
        "ms_per_step": 1000 * train_s / steps,
        "n_params": model.n_params,
        "peak_rss_mb": peak_rss_mb(),
    }


def worker_plain(family: str, args: argparse.Namespace) -> dict[str, Any]:
    """In a fresh process: the same windows and sizes in plain PyTorch (no framework)."""
    t_imports = time.perf_counter()
    import math

    import numpy as np
    import pandas as pd
    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    imports_s = time.perf_counter() - t_imports
    L, H, D, layers, B = SIZE["lookback"], SIZE["horizon"], SIZE["hidden"], SIZE["layers"], SIZE["batch"]
    t0 = time.perf_counter()
    y = pd.read_csv(ett_path("ETTh1"), usecols=["OT"])["OT"].to_numpy(np.float32)
    train = y[:8640]
    train = (train - train.mean()) / train.std()
    windows = np.lib.stride_tricks.sliding_window_view(train, L + H)  # a view: (8449, L + H)
    data_s = time.perf_counter() - t0
    device = torch.device(args.device)

    class Recurrent(nn.Module):
        def __init__(self, cell: type[nn.RNNBase]):
            super().__init__()
            self.rnn = cell(1, D, layers, batch_first=True)
            self.head = nn.Linear(D, H)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(x.unsqueeze(-1))  # (B, L, D)
            return self.head(out[:, -1])

    class Block(nn.Module):
        def __init__(self, dilation: int):
            super().__init__()
            self.pad = 2 * dilation
            self.c1 = nn.Conv1d(D, D, 3, dilation=dilation)
            self.c2 = nn.Conv1d(D, D, 3, dilation=dilation)

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            z = torch.relu(self.c1(nn.functional.pad(h, (self.pad, 0))))
            z = torch.relu(self.c2(nn.functional.pad(z, (self.pad, 0))))
            return torch.relu(h + z)

    class TCN(nn.Module):  # textbook TCN over every hour: 5 blocks of kernel 3 cover 96 steps
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv1d(1, D, 1)
            self.blocks = nn.Sequential(*[Block(2**i) for i in range(5)])
            self.head = nn.Linear(D, H)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.blocks(self.embed(x.unsqueeze(1)))  # (B, D, L)
            return self.head(h[:, :, -1])

    class PatchTransformer(nn.Module):  # PatchTST-style: patches 16 / stride 8, 2 encoder layers
        def __init__(self):
            super().__init__()
            self.n = (L - 16) // 8 + 1
            self.embed = nn.Linear(16, D)
            self.pos = nn.Parameter(torch.randn(1, self.n, D) * 0.02)
            layer = nn.TransformerEncoderLayer(D, 4, 4 * D, dropout=0.1, batch_first=True, activation="gelu")
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = nn.Linear(self.n * D, H)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.embed(x.unfold(-1, 16, 8)) + self.pos  # (B, N, D)
            return self.head(self.encoder(tokens).flatten(1))

    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(L, H)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x)

    build = {
        "rnn": lambda: Recurrent(nn.RNN),
        "lstm": lambda: Recurrent(nn.LSTM),
        "gru": lambda: Recurrent(nn.GRU),
        "tcn": TCN,
        "transformer": PatchTransformer,
        "linear": Linear,
    }
    torch.manual_seed(0)
    model = build[family]().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    amp = args.amp and device.type == "cuda"
    t0 = time.perf_counter()
    loss = torch.zeros(())
    for _ in range(args.steps):
        batch = torch.from_numpy(windows[rng.integers(0, len(windows), B)]).to(device)  # (B, L + H)
        x, target = batch[:, :L], batch[:, L:]
        loc, scale = x.mean(1, keepdim=True), x.std(1, keepdim=True) + 1e-5  # instance norm
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            yhat = model((x - loc) / scale)
        loss = nn.functional.mse_loss(yhat.float() * scale + loc, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    final = float(loss.detach())  # syncs the device
    train_s = time.perf_counter() - t0
    assert math.isfinite(final)
    return {
        "imports_s": imports_s,
        "data_s": data_s,
        "fit_s": train_s,
        "train_s": train_s,
        "steps": args.steps,
        "windows_per_s": args.steps * B / train_s,
        "ms_per_step": 1000 * train_s / args.steps,
        "n_params": sum(p.numel() for p in model.parameters()),
        "peak_rss_mb": peak_rss_mb(),
    }


def _spawn(extra: list[str], args: argparse.Namespace, timeout: float = 1800) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *extra, "--threads", str(args.threads)]
    cmd += ["--steps", str(args.steps), "--device", args.device] + (["--amp"] if args.amp else [])
    cmd += ["--quick"] if args.quick else []
    load = load_average()
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        return {
            "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed",
            "wall_s": wall,
        }
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(process_wall_s=wall, load_before=load, load_after=load_average())
    return result


def section_train(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    print(
        f"\n### Training at a fixed size: hidden {SIZE['hidden']}, {SIZE['layers']} layers, "
        f"L={SIZE['lookback']}, H={SIZE['horizon']}, batch {SIZE['batch']}, {args.steps} steps, "
        f"{args.threads} threads, {args.device}"
    )
    print(
        "| family | impl | windows/s per step | ms/step | fit s (loop) | process wall s (start-up incl.) "
        "| peak RSS MB | params | load before / after |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    try:
        _train_rows(args, rows)
    except KeyboardInterrupt:  # a time limit (gpu.sh sends SIGINT): keep the rows measured so far
        print(f"interrupted after {len(rows)} rows", flush=True)
        return {"size": SIZE | {"steps": args.steps}, "rows": rows, "interrupted": True}
    return {"size": SIZE | {"steps": args.steps}, "rows": rows}


def _train_rows(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    for family in args.families:
        if family not in DEEP:
            continue
        impls = [("plain PyTorch", ["--worker", "plain", "--family", family])]
        impls.append(
            (
                "ours (recipe)",
                ["--worker", "ours", "--family", family, "--params", json.dumps(RECIPE_PARAMS[family])],
            )
        )
        if family in SAME_PARAMS:
            impls.append(
                (
                    "ours (same net)",
                    ["--worker", "ours", "--family", family, "--params", json.dumps(SAME_PARAMS[family])],
                )
            )
        for impl, extra in impls:
            r = _spawn(extra, args)
            r.update(family=family, impl=impl)
            rows.append(r)
            if "error" in r:
                print(f"| {family} | {impl} | failed: {r['error']} |||||||")
                continue
            print(
                f"| {family} | {impl} | {r['windows_per_s']:,.0f} | {r['ms_per_step']:.1f} | "
                f"{r['fit_s']:.1f} | "
                f"{r['process_wall_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['n_params']:,} | "
                f"{r['load_before']} / {r['load_after']} |",
                flush=True,
            )


# --- time to accuracy ---------------------------------------------------------------------------------
# (family, label, params, training overrides, reference: (library model, MSE, fit seconds)).
_TTA_TRAIN = {"batch_size": 256, "base_batch_size": 32, "lr": 5e-4, "epochs": 2, "patience": 1}
TTA_RECIPES: list[tuple[str, str, dict[str, Any], dict[str, Any], tuple[str, float, float]]] = [
    ("linear", "nlinear", {"kind": "nlinear"}, _TTA_TRAIN, ("DLinear", 0.0585, 10)),
    ("rnn", "seg24", {"hidden": 64, "layers": 2}, _TTA_TRAIN, ("RNN", 0.0689, 37)),
    ("lstm", "seg24-h32", {"hidden": 32, "layers": 2}, _TTA_TRAIN, ("LSTM", 0.0691, 28)),
    ("gru", "seg24-h32", {"hidden": 32, "layers": 2}, _TTA_TRAIN, ("LSTM (no GRU figure)", 0.0691, 28)),
    ("tcn", "seg24", {"hidden": 32, "segment_len": 24}, _TTA_TRAIN, ("TCN", 0.0648, 31)),
    (
        "transformer",
        "patch16-16",
        {"hidden": 16, "layers": 1, "patch_len": 16, "stride": 16},
        _TTA_TRAIN,
        ("PatchTST", 0.0601, 55),
    ),
]
# The vanilla Transformer reference (0.116 in 245 s) is met by the same patched transformer run.
VANILLA = ("vanilla Transformer", 0.116, 245)


def section_tta(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    import torch

    from forecasting.config import ModelSpec
    from forecasting.pipeline import fit_and_score, prepare

    torch.set_num_threads(args.threads)
    cfg = ett_config(
        "ETTh1", "S", 96, 96, {"num_threads": args.threads, "device": args.device, "amp": args.amp, "seed": 0}
    )
    if args.quick:
        cfg = with_quick_borders(cfg)
    prepared = prepare(cfg)
    # The first fit in a process pays torch's one-time start-up (the optimiser imports torch._dynamo):
    # pay it here, time it, and report it apart from the fits below.
    warm_cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"max_steps": 1})})
    t0 = time.perf_counter()
    fit_and_score(dataclasses.replace(prepared, cfg=warm_cfg), ModelSpec(name="linear"))
    first_fit_overhead = time.perf_counter() - t0
    rows = []
    print(
        f"\n(first fit in this process, 1 step of linear, paid before the timings: "
        f"{first_fit_overhead:.1f} s)"
    )
    split = f"split {list(QUICK_BORDERS)}" if args.quick else "standard split"
    print(f"\n### Time to accuracy: ETTh1 OT, L=96, H=96, {split}, every test window")
    print(
        "| family | recipe | test MSE | fit s | reference (library) MSE / fit s "
        "| target: MSE <= ref in <= ref/10 s | epochs (best) | load before / after |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for family, label, params, training, ref in TTA_RECIPES:
        if family not in args.families:
            continue
        if args.quick:
            training = {**training, "max_steps": args.steps}
        run_cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update=training)})
        load = load_average()
        model, metrics, _ = fit_and_score(
            dataclasses.replace(prepared, cfg=run_cfg), ModelSpec(name=family, label=label, params=params)
        )
        row = {
            "family": family,
            "recipe": label,
            "params": params,
            "training": training,
            "test_mse": metrics["test_mse"],
            "test_mae": metrics["test_mae"],
            "fit_s": metrics["fit_seconds"],
            "epochs": len(model.history_),
            "best_epoch": model.best_epoch_,
            "reference": ref,
            "load_before": load,
            "load_after": load_average(),
        }
        refs = [ref, VANILLA] if family == "transformer" else [ref]
        for name, mse, secs in refs:
            ok = row["test_mse"] <= mse and row["fit_s"] <= secs / 10
            row.setdefault("met", []).append({"reference": name, "met": ok})
            print(
                f"| {family} | {label} `{json.dumps(params)}` | {row['test_mse']:.4f} | {row['fit_s']:.1f} | "
                f"{name} {mse:.4f} / {secs} s | {'met' if ok else 'NOT met'} (<= {secs / 10:.1f} s) | "
                f"{row['epochs']} ({row['best_epoch']}) | {row['load_before']} / {row['load_after']} |",
                flush=True,
            )
        rows.append(row)
    return {"common_training": _TTA_TRAIN, "first_fit_overhead_s": first_fit_overhead, "rows": rows}


# --- batched AR -----------------------------------------------------------------------------------
def section_ar(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from ar_batched import make_panel

    from forecasting.models.ar import fit_batched, fit_statsmodels

    rows = []
    sizes = [QUICK_SERIES] if args.quick else [1000, 10000]
    print("\n### Batched AR(p) vs a per-series statsmodels loop (order by BIC up to 8, trend 'c')")
    print(
        "| series | rows | statsmodels loop s | batched s | speed-up | max abs coef diff | orders agree "
        "| load before / after |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        y, offsets = make_panel(n, 0)
        x = np.zeros((len(y), 0))
        load = load_average()
        t0 = time.perf_counter()
        batched = fit_batched(y, x, offsets, 8, "bic", None)
        t_batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        reference = fit_statsmodels(y, x, offsets, 8, "bic", None)
        t_loop = time.perf_counter() - t0
        row = {
            "series": n,
            "rows": len(y),
            "statsmodels_s": t_loop,
            "batched_s": t_batched,
            "speedup": t_loop / t_batched,
            "max_coef_diff": float(np.abs(batched.coef - reference.coef).max()),
            "orders_agree": float(np.mean(batched.order == reference.order)),
            "load_before": load,
            "load_after": load_average(),
        }
        rows.append(row)
        print(
            f"| {n:,} | {len(y):,} | {t_loop:.1f} | {t_batched:.3f} | {row['speedup']:.0f}x | "
            f"{row['max_coef_diff']:.1e} | {row['orders_agree']:.2%} | {load} / {row['load_after']} |",
            flush=True,
        )
    return {"rows": rows}


# --- batch prediction -----------------------------------------------------------------------------
def synthetic_panel(n_series: int, rows: int, seed: int = 0) -> Any:
    """Hourly series: level + daily cycle + AR(1) noise, ids ``s00000``..; long format (series_id, t, y)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    level = rng.normal(50, 10, (n_series, 1))
    amp = rng.uniform(1, 5, (n_series, 1))
    phase = rng.uniform(0, 2 * np.pi, (n_series, 1))
    noise = rng.standard_normal((n_series, rows))
    for k in range(1, rows):
        noise[:, k] += 0.7 * noise[:, k - 1]
    y = level + amp * np.sin(2 * np.pi * t / 24 + phase) + noise
    start = pd.Timestamp("2024-01-01")
    return pd.DataFrame(
        {
            "series_id": np.repeat([f"s{i:05d}" for i in range(n_series)], rows),
            "t": np.tile(pd.date_range(start, periods=rows, freq="h").to_numpy(), n_series),
            "y": y.reshape(-1).astype(np.float64),
        }
    )


def section_predict(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    import torch

    from forecasting.config import DataConfig, ModelSpec, TrainingConfig
    from forecasting.data.scaling import fit_scaler
    from forecasting.models.base import DataSpec
    from forecasting.models.registry import build_model
    from forecasting.serving import load_bundle, write_bundle

    torch.set_num_threads(args.threads)
    n_series = QUICK_SERIES if args.quick else 10000
    rows_per = 300
    L, H = 96, 24
    panel = synthetic_panel(n_series, rows_per)
    train_ids = panel["series_id"].unique()[:200]
    train = panel[panel["series_id"].isin(train_ids)].reset_index(drop=True)
    scaler = fit_scaler(train, ["y"])
    scaled_train = scaler.transform(train)
    scaled_all = scaler.transform(panel, unseen="fit")
    data_cfg = DataConfig(
        path=Path("synthetic.csv"), time_column="t", target="y", id_column="series_id", freq="h"
    )
    training = TrainingConfig(
        batch_size=256,
        epochs=2,
        max_steps=args.steps if args.quick else 100,
        patience=None,
        progress=False,
        num_threads=args.threads,
        device=args.device,
    )
    spec = DataSpec(lookback=L, horizon=H)
    out = []
    print(
        f"\n### Batch prediction: {n_series:,} synthetic hourly series x {rows_per} rows "
        f"({len(panel):,} rows), "
        f"L={L}, H={H}; each model fitted briefly on {len(train_ids)} of them"
    )
    print(
        "| family | model.predict s | series/s | Bundle.forecast s (validate + scale + predict) | series/s "
        "| load before / after |"
    )
    print("|---|---|---|---|---|---|")
    params = {"seasonal_naive": {"season_length": 24}, "ar": {"max_lag": 24, "ic": "aic"}}
    for family in args.families:
        model = build_model(ModelSpec(name=family, params=params.get(family, {})), spec, training)
        model.fit(scaled_train)
        load = load_average()
        t0 = time.perf_counter()
        pred = model.predict(scaled_all)
        t_predict = time.perf_counter() - t0
        assert pred["series_id"].nunique() == n_series
        with tempfile.TemporaryDirectory() as tmp:
            write_bundle(model, scaler, data_cfg, "h", Path(tmp) / "bundle")
            bundle = load_bundle(Path(tmp) / "bundle")
            t0 = time.perf_counter()
            forecast = bundle.forecast(panel)
            t_bundle = time.perf_counter() - t0
        assert len(forecast) == n_series * H
        row = {
            "family": family,
            "series": n_series,
            "predict_s": t_predict,
            "predict_series_per_s": n_series / t_predict,
            "bundle_s": t_bundle,
            "bundle_series_per_s": n_series / t_bundle,
            "load_before": load,
            "load_after": load_average(),
        }
        out.append(row)
        print(
            f"| {family} | {t_predict:.2f} | {row['predict_series_per_s']:,.0f} | {t_bundle:.2f} | "
            f"{row['bundle_series_per_s']:,.0f} | {load} / {row['load_after']} |",
            flush=True,
        )
    return {"series": n_series, "rows_per_series": rows_per, "lookback": L, "horizon": H, "rows": out}


# --- memory ---------------------------------------------------------------------------------------
def worker_memory(family: str, args: argparse.Namespace) -> dict[str, Any]:
    """In a fresh process: RSS after imports, data, training and scoring on ETTm1 M (``--quick``:
    ETTh1 M, which the repository bundles, for a few steps)."""
    import numpy as np
    import torch

    from forecasting.config import ModelSpec
    from forecasting.evaluation.metrics import evaluate_windows
    from forecasting.models.registry import build_model
    from forecasting.pipeline import prepare

    torch.set_num_threads(args.threads)
    marks = {"imports": current_rss_mb()}
    L, H = 336, 96
    training = {
        "num_threads": args.threads,
        "epochs": 1 if args.quick else 2,
        "max_steps": args.steps if args.quick else None,
        "max_train_windows": 16384,
        "batch_size": 128,
        "device": args.device,
    }
    cfg = ett_config(memory_dataset(args), "M", L, H, training)
    if args.quick:
        cfg = with_quick_borders(cfg)
    prepared = prepare(cfg)
    marks["data"] = current_rss_mb()
    windows = prepared.windows(prepared.train)
    views = bool(np.shares_memory(windows._y, windows.arrays.y))
    materialised_mb = len(windows) * (L + H) * 4 / 2**20
    model = build_model(ModelSpec(name=family), prepared.spec, cfg.training)
    t0 = time.perf_counter()
    model.fit(prepared.train, prepared.val)
    fit_s = time.perf_counter() - t0
    marks["after_fit"] = current_rss_mb()
    peak_fit = peak_rss_mb()
    # Then score it as fit_and_score does: every val window (metrics only) and every test window
    # with the long prediction frame (one row per window and step: 7.7 million rows here).
    score = dict(scaler=prepared.scaler, train=prepared.train, season=SEASON[FREQ[memory_dataset(args)]])
    evaluate_windows(model, prepared.windows(prepared.val), predictions=False, **score)
    metrics, _ = evaluate_windows(model, prepared.windows(prepared.test), **score)
    marks["after_scoring"] = current_rss_mb()
    return {
        "family": family,
        "rows": len(prepared.data.frame),
        "series": int(prepared.data.frame["series_id"].nunique()),
        "train_windows": len(windows),
        "windows_are_views": views,
        "materialised_windows_mb": materialised_mb,
        "rss_mb": marks,
        "peak_rss_fit_mb": peak_fit,
        "peak_rss_mb": peak_rss_mb(),
        "fit_s": fit_s,
        "test_mse": metrics["mse"],
    }


def with_quick_borders(cfg: Any) -> Any:
    """``cfg`` with short validation and test periods (``QUICK_BORDERS``)."""
    return cfg.model_copy(update={"split": cfg.split.model_copy(update={"borders": QUICK_BORDERS})})


def memory_dataset(args: argparse.Namespace) -> str:
    return "ETTh1" if args.quick else "ETTm1"


def section_memory(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    rows_per = {"ETTh1": "17,420", "ETTm1": "69,680"}[memory_dataset(args)]
    print(
        f"\n### Memory: {memory_dataset(args)} M (7 series x {rows_per} rows), L=336, H=96, "
        "fresh process per family"
    )
    print(
        "| family | train windows | windows are views | would be if copied MB "
        "| RSS after imports / data / fit MB | peak RSS training MB "
        "| peak RSS incl. scoring (as fit_and_score) MB | target <= 1,536 MB | load before / after |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for family in [f for f in ("lstm", "transformer") if f in args.families]:
        r = _spawn(["--worker", "memory", "--family", family], args)
        r["family"] = family
        rows.append(r)
        if "error" in r:
            print(f"| {family} | failed: {r['error']} ||||||||")
            continue
        m = r["rss_mb"]
        print(
            f"| {family} | {r['train_windows']:,} | {r['windows_are_views']} | "
            f"{r['materialised_windows_mb']:.0f} | "
            f"{m['imports']:.0f} / {m['data']:.0f} / {m['after_fit']:.0f} | {r['peak_rss_fit_mb']:.0f} | "
            f"{r['peak_rss_mb']:.0f} | {'met' if r['peak_rss_mb'] <= 1536 else 'NOT met'} | "
            f"{r['load_before']} / {r['load_after']} |",
            flush=True,
        )
    return {"dataset": memory_dataset(args), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_STEPS} steps, {QUICK_SERIES} series, families {' '.join(QUICK_FAMILIES)}, "
        "memory on ETTh1 (seconds)",
    )
    parser.add_argument(
        "--families", nargs="+", default=None, choices=ALL, help="default: all (--quick: QUICK_FAMILIES)"
    )
    parser.add_argument("--threads", type=int, default=None, help=f"default 2 (--quick: {QUICK_THREADS})")
    parser.add_argument(
        "--steps", type=int, default=None, help="optimiser steps per training run (default 1000)"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    parser.add_argument("--out", type=Path, default=RESULTS / "speed.json")
    # internal: run one measurement in this (fresh) process and print it as JSON
    parser.add_argument("--worker", choices=["ours", "plain", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps is None:
        args.steps = QUICK_STEPS if args.quick else SIZE["steps"]
    if args.threads is None:
        args.threads = QUICK_THREADS if args.quick else 2
    if args.families is None:
        args.families = QUICK_FAMILIES if args.quick else ALL
    if args.worker == "ours":
        print(json.dumps(worker_ours(args.family, json.loads(args.params), args)))
        return
    if args.worker == "plain":
        print(json.dumps(worker_plain(args.family, args)))
        return
    if args.worker == "memory":
        print(json.dumps(worker_memory(args.family, args)))
        return

    info = machine()
    print(json.dumps(info))
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    runners = {
        "train": section_train,
        "tta": section_tta,
        "ar": section_ar,
        "predict": section_predict,
        "memory": section_memory,
    }
    for name in args.only:
        load = load_average()
        t0 = time.perf_counter()
        section = runners[name](args)
        section.update(
            machine=info,
            device=args.device,
            amp=args.amp,
            quick=args.quick,
            threads=args.threads,
            load_before=load,
            load_after=load_average(),
            seconds=time.perf_counter() - t0,
            date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        )
        results[name] = section
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
