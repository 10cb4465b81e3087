"""TPE + Hyperband against grid search on ETTh1 univariate (target OT), horizon 96, lookback 96.

Every search covers the same declared space (the family among linear and rnn, their settings,
the learning rate and the batch size: 32 points) through ``forecasting.tuning``, with one worker,
a fresh study and a throwaway MLflow store each. The grid trains every point for the full epochs
(early stopping still applies). TPE + Hyperband gets as many trials as the grid has points and
stops unpromising trials at its rungs: after 1 and 3 epochs (``min_epochs`` 1) or after 2 and 6
(``min_epochs`` 2; after one epoch the learning-rate warm-up has only just ended). Printed: trials,
epochs trained in total, wall time, the best validation MSE, and the epochs a search had trained
(in trial order) when it first reached the grid's best validation MSE, or came within 1% of it.

    .venv/bin/python bench/tune_vs_grid.py             # 2048 training windows per epoch
    .venv/bin/python bench/tune_vs_grid.py --full      # every training window each epoch (slower)
    .venv/bin/python bench/tune_vs_grid.py --quick --out tune.json
        # a 4-point space, 3 epochs of 128 windows, 20 days each of validation and test, 1 thread
        # (seconds); the table also as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPACE = {
    "space": {"lr": [0.0001, 0.0003, 0.001, 0.003], "batch_size": [64, 256]},
    "families": {
        "linear": {"settings": {"kind": ["nlinear", "dlinear"]}},
        "rnn": {"hidden": [32, 64], "params": {"segment_len": 24}},
    },
}
# --quick: the same families and dimensions with one or two values each (4 points).
QUICK_SPACE = {
    "space": {"lr": [0.001, 0.003], "batch_size": [64]},
    "families": {
        "linear": {"settings": {"kind": ["nlinear"]}},
        "rnn": {"hidden": [16], "params": {"segment_len": 24}},
    },
}
BORDERS = [8640, 11520, 14400]  # the standard ETTh split
QUICK_BORDERS = [8640, 9120, 9600]  # --quick: 20 days each of validation and test


def base_config(
    epochs: int, windows: int | None, threads: int, store: Path, borders: list[int] = BORDERS
) -> dict:
    return {
        "data": {"path": str(ROOT / "data" / "ETTh1.csv"), "time_column": "date", "target": "OT"},
        "split": {"method": "borders", "borders": borders},
        "window": {"lookback": 96, "horizon": 96},
        "training": {
            "epochs": epochs,
            "patience": 3,
            "base_batch_size": 32,
            "max_train_windows": windows,
            "num_threads": threads,
            "progress": False,
            "seed": 0,
        },
        "tracking": {
            "experiment": "bench-tune",
            "tracking_uri": f"sqlite:///{store / 'mlflow.db'}",
            "log_models": False,
        },
    }


def search(
    sampler: str, pruner: str, n_trials: int | None, min_epochs: int = 1, space: dict | None = None
) -> dict:
    return {
        "sampler": sampler,
        "pruner": pruner,
        "n_trials": n_trials,
        "min_epochs": min_epochs,
        "reduction_factor": 3,
        "startup_trials": 8,
        "seed": 0,
        "retrain_best": False,
        **(space or SPACE),
    }


def run(raw: dict) -> tuple[dict, object]:
    from forecasting import tuning
    from forecasting.config import config_from_dict

    cfg = config_from_dict(raw)
    start = time.perf_counter()
    result = tuning.tune(cfg)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, **result.summary}, result.trials.sort_values("number")


def epochs_to_reach(trials, target: float, rtol: float = 0.0) -> int | None:
    """Epochs trained (in trial order) up to the first trial whose value is within ``rtol`` of target."""
    spent = 0
    for _, t in trials.iterrows():
        spent += int(t["epochs"])
        if t["state"] == "COMPLETE" and t["value"] <= target * (1 + rtol):
            return spent
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--full", action="store_true", help="train on every window each epoch")
    parser.add_argument("--windows", type=int, default=2048, help="training windows per epoch")
    parser.add_argument("--threads", type=int, default=None, help="default 2 (--quick: 1)")
    parser.add_argument("--trials", action="store_true", help="print every trial of every search")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a 4-point space, 3 epochs of 128 windows, 20-day validation and test, 1 thread (seconds)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this JSON file")
    args = parser.parse_args()
    os.environ.setdefault("MPLBACKEND", "Agg")
    space = QUICK_SPACE if args.quick else SPACE
    if args.quick:
        args.epochs, args.windows, args.full = 3, 128, False
    if args.threads is None:
        args.threads = 1 if args.quick else 2
    windows = None if args.full else args.windows
    borders = QUICK_BORDERS if args.quick else BORDERS

    from forecasting.config import SearchConfig
    from forecasting.tuning import grid_points

    n_points = len(grid_points(SearchConfig.model_validate(search("grid", "none", None, space=space))))
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
        rows = {}
        searches = {
            "grid": ("grid", "none", None, 1),
            "tpe+hyperband (min_epochs 1)": ("tpe", "hyperband", n_points, 1),
            "tpe+hyperband (min_epochs 2)": ("tpe", "hyperband", n_points, 2),
        }
        for i, (label, (sampler, pruner, n_trials, min_epochs)) in enumerate(searches.items()):
            store = Path(tmp) / str(i)
            store.mkdir()
            raw = base_config(args.epochs, windows, args.threads, store, borders)
            raw["search"] = search(sampler, pruner, n_trials, min_epochs, space)
            rows[label] = run(raw)
            print(f"{label}: done in {rows[label][0]['seconds']:.0f} s", flush=True)

    target = rows["grid"][0]["best_value"]
    print()
    print(
        f"ETTh1 S, H=96, L=96, borders {borders}; {n_points}-point space; {args.epochs} epochs max, "
        "patience 3; "
        f"{'all' if windows is None else windows} training windows per epoch; {args.threads} threads"
    )
    header = (
        "| search | trials (complete/pruned) | total epochs | wall s | best val MSE "
        "| epochs to grid best | epochs to within 1% |"
    )
    print(header)
    print("|---|---|---|---|---|---|---|")
    table = {}
    for label, (summary, trials) in rows.items():
        reach = epochs_to_reach(trials, target) or "not reached"
        near = epochs_to_reach(trials, target, rtol=0.01) or "not reached"
        table[label] = {
            "trials": len(trials),
            **{k: summary[k] for k in ("n_complete", "n_pruned", "total_epochs", "seconds", "best_value")},
            "best_params": summary["best_params"],
            "epochs_to_grid_best": reach,
            "epochs_to_within_1pct": near,
        }
        print(
            f"| {label} | {len(trials)} ({summary['n_complete']}/{summary['n_pruned']}) "
            f"| {summary['total_epochs']} | {summary['seconds']:.0f} | {summary['best_value']:.5f} "
            f"| {reach} | {near} |"
        )
    for label, (summary, trials) in rows.items():
        print(f"{label} best: {summary['best_params']}")
        if args.trials:
            columns = ["number", "state", "value", "last_val_loss", "epochs"]
            columns += [c for c in trials.columns if c.startswith("param.")]
            print(trials[columns].to_string(index=False))
    if args.out is not None:
        settings = {"points": n_points, "epochs": args.epochs, "windows": windows, "borders": borders}
        settings["threads"] = args.threads
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**settings, "searches": table}, indent=1, default=str))


if __name__ == "__main__":
    main()
