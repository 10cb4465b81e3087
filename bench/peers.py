"""Ours against NeuralForecast's RNN, LSTM, TCN, VanillaTransformer, PatchTST and DLinear: the same
windows, the same protocol, the same machine, one after another in one invocation.

Protocol (both sides): ETTh1, OT alone; lookback L and horizon H (96/96 by default); the standard
ETT borders (train rows [0, 8640), validation [8640 - L, 11520), test [11520 - L, 14400));
z-normalisation fitted on the training rows only (mean, population std); every test window at
stride 1 (2880 - H + 1 of them); MSE and MAE on the normalised scale. Both sides' test targets are
checked against the same (origin, step) array before anything is reported.

- **Ours**: ``ett_config("ETTh1", "S", L, H)`` + ``prepare``, ``ModelSpec(name=family)`` with no
  params and the shipped training defaults (10 epochs of batch 128, lr 1e-3 scaled to the batch,
  warm-up + cosine, early stopping on the validation windows with patience 3), 2 threads, seed 0.
- **Peer**: NeuralForecast with each model's own defaults (loss MAE, ``max_steps``,
  ``learning_rate``, ``windows_batch_size``, ``scaler_type``: ``robust`` window scaling for
  RNN/LSTM/TCN, ``identity`` for the others, PatchTST's RevIN on, ``random_seed=1``, no early
  stopping) fed the z-normalised series; ``input_size=L``, ``h=H``, ``val_size`` = the validation
  rows; test forecasts at every origin with ``cross_validation(..., step_size=1, refit=False,
  use_fitted=True)``. Only Lightning's display and its log folder are turned off.

Trace, the same way on both sides: a separate fit at each step budget of ``--budgets`` below the
side's default budget, then one at the default (ours: 10 epochs with early stopping, the steps it
runs; the peer: its ``max_steps``), each recording its fit wall time and test MSE. A family's
ladder stops early when its next fit would take its fits past ``--family-seconds`` (the table says
so: "cut"). "Time to reach X" is the fit time of the smallest budget whose test MSE <= X.

Cold and warm: each side trains each family in a fresh worker process. Its first fit, of the
smallest budget (1 step), is the cold one; every budget is then fitted in the same process (warm).
The first-fit overhead is cold minus warm at that budget (lazy imports, first-call set-up). A cold
time to reach is what a fresh process waits for that fit: its start-up (interpreter, imports, data;
also reported apart) + the first-fit overhead + the warm fit time. The target: ours reaches the
peer's final test MSE, cold, in <= 1/10 of the time the peer needs to reach it, cold.

The two sides run in separate environments: ours in the project's ``.venv``, the peer in
``.venv-peers/`` (git-ignored) built by this script from ``bench/peers-constraints.txt`` (torch
held at the project's build). Workers exchange JSON and ``.npy`` files (``allow_pickle=False``).
The project's tests never import this file.

    .venv/bin/python bench/peers.py                  # builds .venv-peers when missing (~1-2 min)
    .venv/bin/python bench/peers.py --quick          # L=H=32, 2 families, 1/10 steps; no peers
                                                     # unless .venv-peers exists
    .venv/bin/python bench/peers.py --build-peers --quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import BORDERS, RESULTS, ROOT, ett_config, ett_path, fmt, load_average, machine

PEER_VENV = ROOT / ".venv-peers"
PEER_PY = PEER_VENV / "bin" / "python"
PEER_STAMP = PEER_VENV / ".installed"
CONSTRAINTS = ROOT / "bench" / "peers-constraints.txt"
# Our family -> the NeuralForecast models it is held against.
FAMILIES: dict[str, list[str]] = {
    "linear": ["DLinear"],
    "rnn": ["RNN"],
    "lstm": ["LSTM"],
    "tcn": ["TCN"],
    "transformer": ["VanillaTransformer", "PatchTST"],
}
# 1 step first: the cold fit of each worker, then again warm, measures the first-fit overhead.
BUDGETS = [1, 25, 50, 100, 200, 400, 800, 1600, 3200]
# DLinear's moving average (25 rows on both sides) needs a lookback of at least 25.
QUICK = {"families": ["linear", "rnn"], "lookback": 32, "horizon": 32, "budgets": [1, 10], "max_budget": 10}
TARGET_RATIO = 0.1
DARTS = "not installed or trained: its default budgets (n_epochs=100 at batch 32) do not fit this run"
# NeuralForecast passes these on to Lightning's Trainer: display and log folder only.
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False, "accelerator": "cpu"}


# --- the protocol (pure) -----------------------------------------------------------------------------
def split_rows(lookback: int, horizon: int) -> dict[str, int]:
    """Row counts of the ETTh borders: training end, validation end, test end, test windows."""
    train_end, val_end, test_end = BORDERS["h"]
    return {
        "lookback": lookback,
        "horizon": horizon,
        "train_end": train_end,
        "val_end": val_end,
        "test_end": test_end,
        "val_rows": val_end - train_end,
        "n_test": test_end - val_end - horizon + 1,
    }


def normalise(y: Any, train_end: int) -> Any:
    """(T,) z-normalised with the mean and population std of the first ``train_end`` rows."""
    train = y[:train_end]
    return (y - train.mean()) / train.std()


def test_targets(z: Any, protocol: dict[str, int]) -> Any:
    """(n_test, H): the target of every test origin (first target row ``val_end``) and step."""
    import numpy as np

    start, h = protocol["val_end"], protocol["horizon"]
    return np.lib.stride_tricks.sliding_window_view(z[start : protocol["test_end"]], h).copy()


def ladder(budgets: list[int], default: int, cap: int | None) -> list[int]:
    """Step budgets below the side's default, then the default (``cap`` bounds the default)."""
    top = default if cap is None else min(default, cap)
    return [b for b in budgets if b < top] + [top]


def first_reaching(rows: list[dict[str, Any]], mse: float) -> dict[str, Any] | None:
    """The warm fit of the smallest budget whose test MSE <= ``mse`` (None: never)."""
    hits = [r for r in rows if not r["cold"] and r["test_mse"] <= mse]
    return min(hits, key=lambda r: r["budget"]) if hits else None


def scores(y: Any, yhat: Any) -> dict[str, float]:
    import numpy as np

    err = np.asarray(yhat, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    return {"test_mse": float(np.mean(err**2)), "test_mae": float(np.mean(np.abs(err)))}


# --- workers: one family, one side, one fresh process --------------------------------------------------
def expected_seconds(rows: list[dict[str, Any]], budget: int) -> float | None:
    """A fit's time at ``budget`` steps, on the line through the last two warm budgets
    (fixed cost + cost per step); None before there are two."""
    warm = {r["budget"]: r["fit_s"] for r in rows if not r["cold"]}
    if len(warm) < 2:
        return None
    (b1, f1), (b2, f2) = sorted(warm.items())[-2:]
    per_step = max((f2 - f1) / (b2 - b1), 0.0)
    return f2 + per_step * (budget - b2)


def run_ladder(
    fit: Any, budgets: list[int], default: int, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], Any, str | None]:
    """Fit ``budgets`` (``ladder``): the smallest once cold, then each warm; stop before a fit that
    would take the fits past ``args.family_seconds`` (``expected_seconds``; the first two warm
    budgets always run). ``fit(budget)`` returns (row, y).
    Returns the rows, the test targets and why the ladder was cut (None: it was not)."""
    plan = ladder(budgets, default, args.max_budget)
    rows: list[dict[str, Any]] = []
    row, y = fit(plan[0])
    rows.append(row | {"cold": True})
    spent, cut = row["fit_s"], None
    for budget in plan:
        expected = expected_seconds(rows, budget)
        if expected is not None and spent + expected > args.family_seconds:
            cut = (
                f"stopped before {budget} steps (default {default}): about {expected:.0f} s more "
                f"would pass --family-seconds {args.family_seconds:.0f} after {spent:.0f} s"
            )
            break
        row, y = fit(budget)
        rows.append(row | {"cold": False})
        spent += row["fit_s"]
    return rows, y, cut


def worker_ours(args: argparse.Namespace) -> dict[str, Any]:
    """Our ``args.model`` family on the protocol, in the project's environment."""
    import numpy as np
    import torch

    from forecasting.config import ModelSpec
    from forecasting.evaluation.metrics import predict_all_windows
    from forecasting.models.registry import build_model
    from forecasting.pipeline import prepare
    from forecasting.training.loop import steps_per_epoch

    torch.set_num_threads(args.threads)
    cfg = ett_config("ETTh1", "S", args.lookback, args.horizon, {"num_threads": args.threads, "seed": 0})
    prepared = prepare(cfg)
    test = prepared.windows(prepared.test)
    n_train = len(prepared.windows(prepared.train))
    per_epoch = steps_per_epoch(n_train, cfg.training)
    default = cfg.training.epochs * per_epoch
    started = time.time() - args.spawned_at

    def fit(budget: int) -> tuple[dict[str, Any], Any]:
        # The default budget is the shipped setting (max_steps None), not a cap that equals it.
        steps = None if budget == default else budget
        training = cfg.training.model_copy(update={"max_steps": steps})
        model = build_model(ModelSpec(name=args.model), prepared.spec, training)
        load = load_average()
        t0 = time.perf_counter()
        model.fit(prepared.train, prepared.val)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        y, yhat = predict_all_windows(model, test)  # (N, H) each
        row = {
            "budget": budget,
            "steps": min(budget, len(model.history_) * per_epoch),
            "epochs": len(model.history_),
            "best_epoch": model.best_epoch_,
            "fit_s": fit_s,
            "predict_s": time.perf_counter() - t0,
            "n_params": model.n_params,
            "load_before": load,
            "load_after": load_average(),
            **scores(y, yhat),
        }
        return row, y

    rows, y, cut = run_ladder(fit, args.budgets, default, args)
    np.save(args.tmp / f"y-ours-{args.model}.npy", np.asarray(y, dtype=np.float64), allow_pickle=False)
    return {
        "startup_s": started,
        "default_budget": default,
        "default_label": f"{cfg.training.epochs} epochs x {per_epoch} steps, early stopping",
        "cut": cut,
        "rows": rows,
        "versions": {"torch": torch.__version__},
    }


def worker_peer(args: argparse.Namespace) -> dict[str, Any]:
    """NeuralForecast's ``args.model`` on the protocol, in ``.venv-peers`` (never imports ours)."""
    import inspect
    import logging
    import warnings

    import numpy as np
    import pandas as pd
    import torch
    from neuralforecast import NeuralForecast
    from neuralforecast import models as nf_models

    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    protocol = json.loads((args.tmp / "protocol.json").read_text())
    z = np.load(args.tmp / "series.npy", allow_pickle=False)  # (test_end,) z-normalised
    df = pd.DataFrame({"unique_id": "OT", "ds": np.arange(len(z)), "y": z})
    fit_df = df.iloc[: protocol["val_end"]]  # NeuralForecast holds out the last val_size rows
    cls = getattr(nf_models, args.model)
    default = inspect.signature(cls).parameters["max_steps"].default
    n_test, h = protocol["n_test"], protocol["horizon"]
    started = time.time() - args.spawned_at

    def fit(budget: int) -> tuple[dict[str, Any], Any]:
        model = cls(h=h, input_size=protocol["lookback"], max_steps=budget, **QUIET)
        nf = NeuralForecast(models=[model], freq=1)
        load = load_average()
        t0 = time.perf_counter()
        nf.fit(fit_df, val_size=protocol["val_rows"])
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cv = nf.cross_validation(df, n_windows=n_test, step_size=1, refit=False, use_fitted=True)
        predict_s = time.perf_counter() - t0
        cutoffs = cv["cutoff"].to_numpy().reshape(n_test, h)[:, 0]
        expected = np.arange(protocol["val_end"] - 1, protocol["val_end"] - 1 + n_test)
        if not np.array_equal(cutoffs, expected):
            raise RuntimeError(f"{args.model}: test origins {cutoffs[:3]}... are not {expected[:3]}...")
        y = cv["y"].to_numpy(np.float64).reshape(n_test, h)
        yhat = cv[args.model].to_numpy(np.float64).reshape(n_test, h)
        row = {
            "budget": budget,
            "steps": budget,  # no early stopping by default: max_steps are run
            "fit_s": fit_s,
            "predict_s": predict_s,
            "n_params": sum(p.numel() for p in model.parameters()),
            "load_before": load,
            "load_after": load_average(),
            **scores(y, yhat),
        }
        return row, y

    rows, y, cut = run_ladder(fit, args.budgets, default, args)
    np.save(args.tmp / f"y-peer-{args.model}.npy", y, allow_pickle=False)
    import neuralforecast
    import pytorch_lightning

    return {
        "startup_s": started,
        "default_budget": default,
        "default_label": f"max_steps {default}",
        "cut": cut,
        "rows": rows,
        "settings": {k: repr(v.default) for k, v in inspect.signature(cls).parameters.items()},
        "versions": {
            "torch": torch.__version__,
            "neuralforecast": neuralforecast.__version__,
            "pytorch_lightning": pytorch_lightning.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
    }


# --- the peer environment -------------------------------------------------------------------------------
def pinned(package: str) -> str:
    """``package``'s exact version in ``bench/peers-constraints.txt``."""
    for line in CONSTRAINTS.read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise SystemExit(f"{CONSTRAINTS} pins no version of {package}; add a line '{package}==X.Y.Z'")


def build_peer_venv() -> float:
    """Create ``.venv-peers`` with torch first (the project's CPU build), then NeuralForecast under
    the constraints, so that pip cannot change torch. Returns the seconds it took."""
    t0 = time.perf_counter()
    torch_pin, nf_pin = pinned("torch"), pinned("neuralforecast")
    print(f"building {PEER_VENV.name}: torch=={torch_pin}, then neuralforecast=={nf_pin}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
    pip = [str(PEER_PY), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"torch=={torch_pin}"], check=True)
    subprocess.run([*pip, "-c", str(CONSTRAINTS), f"neuralforecast=={nf_pin}"], check=True)
    check = "import torch; print(torch.__version__.split('+')[0])"
    got = subprocess.run([str(PEER_PY), "-c", check], capture_output=True, text=True, check=True)
    if got.stdout.strip() != torch_pin:
        raise SystemExit(f"{PEER_VENV.name} has torch {got.stdout.strip()}, not {torch_pin}: remove it")
    PEER_STAMP.touch()
    return time.perf_counter() - t0


# --- the parent: spawn, check, compare, report ----------------------------------------------------------
def spawn(side: str, model: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    python = PEER_PY if side == "peer" else ROOT / ".venv" / "bin" / "python"
    cmd = [str(python if python.exists() else sys.executable), str(Path(__file__).resolve())]
    cmd += ["--worker", side, "--model", model, "--tmp", str(tmp), "--spawned-at", repr(time.time())]
    cmd += ["--lookback", str(args.lookback), "--horizon", str(args.horizon), "--threads", str(args.threads)]
    cmd += ["--budgets", *map(str, args.budgets), "--family-seconds", str(args.family_seconds)]
    cmd += ["--max-budget", str(args.max_budget)] if args.max_budget else []
    log = tmp / f"{side}-{model}.log"
    t0 = time.perf_counter()
    with log.open("w") as err:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=tmp)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["failed"]
        return {"side": side, "model": model, "error": f"{tail[0]} (log: {log.name})", "wall_s": wall}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result | {"side": side, "model": model, "wall_s": wall}


def check_targets(y_ref: Any, y: Any, who: str) -> float:
    """Both sides must score the same (origin, step) targets: the largest difference (float32 data)."""
    import numpy as np

    if y.shape != y_ref.shape:
        raise SystemExit(f"{who}: test targets of shape {y.shape}, the protocol has {y_ref.shape}")
    diff = float(np.max(np.abs(y - y_ref)))
    if diff > 1e-5:
        raise SystemExit(f"{who}: test targets differ from the protocol's by up to {diff:.2e}")
    return diff


def compare(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    """One line of the summary: the peer's final MSE and both sides' time to reach it.

    Warm: the fit time of the reaching budget. Cold: what a fresh process waits for the same fit,
    its start-up plus its first-fit overhead plus that warm time."""

    def side(proc: dict[str, Any]) -> dict[str, Any]:
        warm = [r for r in proc["rows"] if not r["cold"]]
        cold = proc["rows"][0]
        overhead = cold["fit_s"] - next(r["fit_s"] for r in warm if r["budget"] == cold["budget"])
        return {"final": warm[-1], "warm": warm, "one_time": proc["startup_s"] + overhead}

    o, p = side(ours), side(peer)
    target = p["final"]["test_mse"]
    p_reach, o_reach = first_reaching(p["warm"], target), first_reaching(o["warm"], target)
    out = {
        "family": ours["model"],
        "peer": peer["model"],
        "peer_budget": p["final"]["budget"],
        "peer_default_budget": peer["default_budget"],
        "peer_cut": peer["cut"],
        "peer_mse": target,
        "peer_mae": p["final"]["test_mae"],
        "peer_fit_s": p["final"]["fit_s"],
        "peer_one_time_s": p["one_time"],  # start-up + first-fit overhead
        "peer_reach_budget": p_reach["budget"],
        "peer_reach_warm_s": p_reach["fit_s"],
        "peer_reach_cold_s": p_reach["fit_s"] + p["one_time"],
        "ours_budget": o["final"]["budget"],
        "ours_steps": o["final"]["steps"],
        "ours_mse": o["final"]["test_mse"],
        "ours_mae": o["final"]["test_mae"],
        "ours_fit_s": o["final"]["fit_s"],
        "ours_one_time_s": o["one_time"],
        "ours_reach_budget": o_reach["budget"] if o_reach else None,
        "ours_reach_warm_s": o_reach["fit_s"] if o_reach else None,
        "ours_reach_cold_s": o_reach["fit_s"] + o["one_time"] if o_reach else None,
    }
    if o_reach:
        out["ratio_cold"] = out["ours_reach_cold_s"] / out["peer_reach_cold_s"]
        out["ratio_warm"] = out["ours_reach_warm_s"] / out["peer_reach_warm_s"]
    out["target_met"] = bool(o_reach) and out["ratio_cold"] <= TARGET_RATIO
    return out


def print_report(
    procs: list[dict[str, Any]], summary: list[dict[str, Any]], args: argparse.Namespace
) -> None:
    if summary:
        print(
            f"\n### Ours against NeuralForecast: ETTh1 OT, L={args.lookback}, H={args.horizon}, "
            f"every test window at stride 1, {args.threads} threads"
        )
        if args.max_budget:
            print(f"(--max-budget {args.max_budget}: both sides' default budgets are capped at it)")
        print(
            "| ours -> peer | peer budget (default) | peer test MSE / MAE | peer fit s "
            "| peer time to its MSE, cold (warm) s | ours budget (steps run) | ours test MSE / MAE "
            "| ours fit s | ours time to peer's MSE, cold (warm) s | ratio cold (warm) "
            f"| target <= {TARGET_RATIO:g} |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in summary:
        cut = " cut" if s["peer_cut"] else ""
        reach = (
            f"{s['ours_reach_cold_s']:.1f} ({s['ours_reach_warm_s']:.1f}) at {s['ours_reach_budget']}"
            if s["ours_reach_budget"]
            else "not reached"
        )
        ratio = f"{s['ratio_cold']:.3f} ({s['ratio_warm']:.3f})" if "ratio_cold" in s else "n/a"
        print(
            f"| {s['family']} -> {s['peer']} | {s['peer_budget']} ({s['peer_default_budget']}{cut}) "
            f"| {s['peer_mse']:.4f} / {s['peer_mae']:.4f} | {s['peer_fit_s']:.1f} "
            f"| {s['peer_reach_cold_s']:.1f} ({s['peer_reach_warm_s']:.1f}) at {s['peer_reach_budget']} "
            f"| {s['ours_budget']} ({s['ours_steps']}) | {s['ours_mse']:.4f} / {s['ours_mae']:.4f} "
            f"| {s['ours_fit_s']:.1f} | {reach} | {ratio} | {'met' if s['target_met'] else 'NOT met'} |"
        )
    print("\n### Worker processes (each a fresh process: start-up, then the cold first fit)")
    print(
        "| side | model | start-up s (interpreter, imports, data) | cold first fit s (steps) "
        "| same budget warm s | first-fit overhead s | default budget | ladder | process wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for p in procs:
        if "error" in p:
            print(f"| {p['side']} | {p['model']} | failed: {p['error']} ||||||")
            continue
        cold = p["rows"][0]
        warm = next(r for r in p["rows"][1:] if r["budget"] == cold["budget"])
        budgets = ", ".join(str(r["budget"]) for r in p["rows"][1:])
        print(
            f"| {p['side']} | {p['model']} | {p['startup_s']:.1f} | {cold['fit_s']:.1f} ({cold['budget']}) "
            f"| {warm['fit_s']:.1f} | {cold['fit_s'] - warm['fit_s']:.1f} | {p['default_label']} "
            f"| {budgets}{' (cut: ' + p['cut'] + ')' if p['cut'] else ''} | {p['wall_s']:.0f} |"
        )
    print("\n### Every fit (test MSE / MAE on the normalised scale)")
    print("| side | model | budget | steps run | cold | fit s | test MSE | test MAE | load before / after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in procs:
        for r in p.get("rows", []):
            print(
                f"| {p['side']} | {p['model']} | {r['budget']} | {r['steps']} "
                f"| {'cold' if r['cold'] else 'warm'} | {r['fit_s']:.2f} "
                f"| {fmt(r['test_mse'])} | {fmt(r['test_mae'])} "
                f"| {r['load_before']} / {r['load_after']} |"
            )


def main_parent(args: argparse.Namespace) -> None:
    import numpy as np
    import pandas as pd

    t_run = time.perf_counter()
    load = load_average()
    info = machine()
    build_s = None
    if args.build_peers or (not args.quick and not PEER_STAMP.exists()):
        build_s = build_peer_venv()
    peers = PEER_STAMP.exists()
    if not peers:
        print(f"peers skipped: {PEER_VENV.name} is absent (--build-peers builds it); ours only", flush=True)
    print(f"Darts: skipped ({DARTS})", flush=True)
    protocol = split_rows(args.lookback, args.horizon)
    y = pd.read_csv(ett_path("ETTh1"), usecols=["OT"])["OT"].to_numpy(np.float64)[: protocol["test_end"]]
    z = normalise(y, protocol["train_end"])
    y_ref = test_targets(z, protocol)
    print(json.dumps(info | {"protocol": protocol, "peer_venv_build_s": build_s}), flush=True)
    procs: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    target_diff: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="peers-") as name:
        tmp = Path(name)
        np.save(tmp / "series.npy", z, allow_pickle=False)
        (tmp / "protocol.json").write_text(json.dumps(protocol))

        def run_worker(side: str, name: str) -> dict[str, Any] | None:
            """One worker: spawned, its targets checked against the reference; None if it failed."""
            result = spawn(side, name, args, tmp)
            procs.append(result)
            if "error" in result:
                print(f"{side} {name} failed: {result['error']}", flush=True)
                return None
            y = np.load(tmp / f"y-{side}-{name}.npy", allow_pickle=False)
            target_diff[f"{side}:{name}"] = check_targets(y_ref, y, f"{side} {name}")
            print(f"{side} {name}: {len(result['rows'])} fits in {result['wall_s']:.0f} s", flush=True)
            return result

        for family in args.families:
            ours = run_worker("ours", family)
            if ours is None:
                continue
            for model in FAMILIES[family] if peers else []:
                peer = run_worker("peer", model)
                if peer is not None:
                    summary.append(compare(ours, peer))
    print_report(procs, summary, args)
    worst = max(target_diff.values(), default=float("nan"))
    print(
        f"\nTest targets: every worker scored the protocol's {protocol['n_test']} x {args.horizon} "
        f"(origin, step) targets (largest difference {worst:.1e}, float32 data)"
    )
    versions = {"ours": next((p["versions"] for p in procs if p["side"] == "ours" and "versions" in p), {})}
    versions["peer"] = next((p["versions"] for p in procs if p["side"] == "peer" and "versions" in p), {})
    rows = [
        {"side": p["side"], "model": p["model"], **r} for p in procs for r in p.get("rows", [])
    ]  # one per fit
    result = {
        "commit": info["commit"],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": info,
        "load_before": load,
        "load_after": load_average(),
        "seconds": time.perf_counter() - t_run,
        "protocol": protocol,
        "options": {k: v for k, v in vars(args).items() if k not in ("worker", "model", "tmp", "spawned_at")},
        "versions": versions,
        "peers": "neuralforecast" if peers else f"skipped: {PEER_VENV.name} absent",
        "darts": f"skipped: {DARTS}",
        "peer_venv_build_s": build_s,
        "target_max_abs_diff": target_diff,
        "processes": [{k: v for k, v in p.items() if k != "rows"} for p in procs],
        "summary": summary,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"\n{len(rows)} fits in {result['seconds'] / 60:.1f} min; load {load} -> {result['load_after']}")
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="L=H=32, linear and rnn, 1/10 steps")
    parser.add_argument("--build-peers", action="store_true", help=f"(re)build {PEER_VENV.name} first")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), help="ours (peers follow)")
    parser.add_argument("--lookback", type=int, help="L (default 96; 32 with --quick)")
    parser.add_argument("--horizon", type=int, help="H (default 96; 32 with --quick)")
    parser.add_argument("--budgets", type=int, nargs="+", help=f"step budgets (default {BUDGETS})")
    parser.add_argument("--max-budget", type=int, help="cap each side's default budget (10 with --quick)")
    parser.add_argument(
        "--family-seconds", type=float, default=600, help="fit time one family's ladder may take per side"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "peers.json")
    # internal: one side's family in this (fresh) process, JSON on stdout's last line
    parser.add_argument("--worker", choices=["ours", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--spawned-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    preset = QUICK if args.quick else {"families": list(FAMILIES), "lookback": 96, "horizon": 96}
    preset = {"budgets": BUDGETS, "max_budget": None} | preset
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.budgets = sorted(set(args.budgets))
    if args.worker:
        work = worker_ours if args.worker == "ours" else worker_peer
        print(json.dumps(work(args)))
        return
    main_parent(args)


if __name__ == "__main__":
    main()
