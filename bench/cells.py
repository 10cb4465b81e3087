"""The 32 ETT cells as a user runs them: one generated config per cell, `forecast run`, and the
champion the pipeline registered as each cell's headline.

Cells: ETTh1, ETTh2, ETTm1, ETTm2 x S (OT alone) / M (the seven columns as seven series) x H = 96,
192, 336, 720. Each cell's config (``config.yaml`` in its run folder, ``--print-config CELL`` shows
it) is the ETT protocol (published borders, z-normalisation fitted on the training rows) plus the
shipped defaults and nothing else: ``window.lookback: auto``, every model setting and the training
budget read from the data (``forecasting.pipeline.defaults``), selection, refit and gate as
``forecast run`` does them. The families are the demo's (naive, seasonal naive, AR, linear, RNN,
LSTM, GRU, TCN, transformer and their ensemble), each with no parameter set.

The headline of a cell is **the champion**: the model ``forecast run`` registered (chosen on
validation; no test row chose it), scored by its evaluation run's ``test_mse`` / ``test_mae``,
every test window at stride 1 on the normalised scale, as the published tables score. "Best family
on test" is a column for information only: that choice saw the test rows.

Every cell runs ``forecast run CONFIG --no-predict`` as a subprocess of the venv's ``forecast``, on
fresh MLflow and Prefect stores in ``outputs/cells/<cell>/`` (git-ignored), measured (wall time,
peak RSS of the process tree). Then one row per fitted model (the evaluation runs and the refit)
goes to ``bench/results/cells.csv`` with the commit, machine and load. A cell already in the CSV is
skipped (``--fresh`` starts over), so the grid is resumable; a cell that has no row reads "not run"
in the report. ``bench/gpu.sh`` is the place for the cells that cost too much on 2 cores.

    .venv/bin/python bench/cells.py                            # every cell not yet in the CSV
    .venv/bin/python bench/cells.py --cells ETTh1:S:96 ETTh2:M:192
    .venv/bin/python bench/cells.py --datasets ETTh1 ETTh2 --horizons 96 192
    .venv/bin/python bench/cells.py --report                   # the tables from the CSV only
    .venv/bin/python bench/cells.py --print-config ETTm1:M:720
    .venv/bin/python bench/cells.py --quick --out /tmp/cells.csv   # CI: one tiny cell, seconds
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

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    RESULTS,
    ROOT,
    append_row,
    ett_protocol,
    load_average,
    machine,
    read_rows,
)
from m4 import cli_env, logged_runs, run_measured

DATASETS = ["ETTh1", "ETTh2", "ETTm1", "ETTm2"]
FEATURES = ["S", "M"]
HORIZONS = [96, 192, 336, 720]
FAMILIES = ["naive", "seasonal_naive", "ar", "linear", "rnn", "lstm", "gru", "tcn", "transformer", "ensemble"]
DEEP = ["linear", "rnn", "lstm", "gru", "tcn", "transformer"]
FORECAST = ROOT / ".venv" / "bin" / "forecast"
WORK = ROOT / "outputs" / "cells"

# The best published MSE / MAE of each cell (the lowest MSE over the tables of
# ../shared/benchmarks.md: section 3.5 for S; 3.1, 3.2 and 3.3 for M; the LTSF-Benchmark ARIMA row
# of unstated provenance and the Repeat baseline left out): (model, its lookback, MSE, MAE, section).
BEST_PUBLISHED: dict[tuple[str, str, int], tuple[str, int, float, float, str]] = {
    ("ETTh1", "S", 96): ("NLinear", 336, 0.053, 0.177, "3.5"),
    ("ETTh1", "S", 192): ("NLinear", 336, 0.069, 0.204, "3.5"),
    ("ETTh1", "S", 336): ("PatchTST/64", 512, 0.076, 0.220, "3.5"),
    ("ETTh1", "S", 720): ("NLinear", 336, 0.080, 0.226, "3.5"),
    ("ETTh2", "S", 96): ("FEDformer-f", 96, 0.128, 0.271, "3.5"),
    ("ETTh2", "S", 192): ("PatchTST/42", 336, 0.168, 0.328, "3.5"),
    ("ETTh2", "S", 336): ("PatchTST/64", 512, 0.171, 0.336, "3.5"),
    ("ETTh2", "S", 720): ("LogTrans", 96, 0.218, 0.387, "3.5"),
    ("ETTm1", "S", 96): ("NLinear", 336, 0.026, 0.122, "3.5"),
    ("ETTm1", "S", 192): ("NLinear", 336, 0.039, 0.149, "3.5"),
    ("ETTm1", "S", 336): ("NLinear", 336, 0.052, 0.172, "3.5"),
    ("ETTm1", "S", 720): ("NLinear", 336, 0.073, 0.207, "3.5"),
    ("ETTm2", "S", 96): ("NLinear", 336, 0.063, 0.182, "3.5"),
    ("ETTm2", "S", 192): ("NLinear", 336, 0.090, 0.223, "3.5"),
    ("ETTm2", "S", 336): ("NLinear", 336, 0.117, 0.259, "3.5"),
    ("ETTm2", "S", 720): ("LogTrans", 96, 0.160, 0.321, "3.5"),
    ("ETTh1", "M", 96): ("PatchTST/64", 512, 0.370, 0.400, "3.2"),
    ("ETTh1", "M", 192): ("DLinear", 336, 0.405, 0.416, "3.1"),
    ("ETTh1", "M", 336): ("PatchTST/64", 512, 0.422, 0.440, "3.2"),
    ("ETTh1", "M", 720): ("NLinear", 336, 0.440, 0.453, "3.1"),
    ("ETTh2", "M", 96): ("PatchTST/64", 512, 0.274, 0.337, "3.2"),
    ("ETTh2", "M", 192): ("PatchTST/42", 336, 0.339, 0.379, "3.2"),
    ("ETTh2", "M", 336): ("PatchTST/64", 512, 0.329, 0.384, "3.2"),
    ("ETTh2", "M", 720): ("PatchTST/64", 512, 0.379, 0.422, "3.2"),
    ("ETTm1", "M", 96): ("PatchTST/42", 336, 0.290, 0.342, "3.2"),
    ("ETTm1", "M", 192): ("PatchTST/42", 336, 0.332, 0.369, "3.2"),
    ("ETTm1", "M", 336): ("PatchTST/42", 336, 0.366, 0.392, "3.2"),
    ("ETTm1", "M", 720): ("PatchTST/64", 512, 0.416, 0.420, "3.2"),
    ("ETTm2", "M", 96): ("PatchTST/42", 336, 0.165, 0.255, "3.2"),
    ("ETTm2", "M", 192): ("PatchTST/42", 336, 0.220, 0.292, "3.2"),
    ("ETTm2", "M", 336): ("NLinear", 336, 0.274, 0.327, "3.1"),
    ("ETTm2", "M", 720): ("PatchTST/64", 512, 0.362, 0.385, "3.2"),
}

Cell = tuple[str, str, int]


def cell_name(cell: Cell) -> str:
    return f"{cell[0]}:{cell[1]}:{cell[2]}"


def parse_cell(text: str) -> Cell:
    try:
        dataset, features, horizon = text.split(":")
        cell = (dataset, features, int(horizon))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a cell is DATASET:S|M:H, e.g. ETTh1:S:96; got {text!r}") from None
    if dataset not in DATASETS or features not in FEATURES or cell[2] not in HORIZONS:
        raise argparse.ArgumentTypeError(
            f"unknown cell {text!r}: datasets {DATASETS}, features S or M, horizons {HORIZONS}"
        )
    return cell


def cell_config(cell: Cell, quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    """The cell's config: the ETT protocol and the shipped defaults, nothing chosen by hand.

    ``quick``: three cheap families, a few training steps and 8-step windows (the CI smoke run of
    this script; its figures mean nothing). ``device="cuda"``: the deep families train on the GPU
    with bf16 autocast (``bench/gpu.sh``), everything else as shipped.
    """
    dataset, features, horizon = cell
    slug = f"{dataset}-{features}-{horizon}".lower()
    config: dict[str, Any] = {
        **ett_protocol(dataset, features),
        "window": {"horizon": horizon},
        "models": [{"name": name} for name in FAMILIES],
        "tracking": {"experiment": f"cells-{slug}", "registered_model": f"cells-{slug}"},
    }
    if device != "cpu":
        config["training"] = {"device": device, "amp": True}
    if quick:
        config["window"] = {"horizon": horizon, "lookback": 2 * horizon}
        config["models"] = [{"name": "naive"}, {"name": "ar", "params": {"max_lag": 8}}, {"name": "linear"}]
        config["training"] = {**config.get("training", {}), "max_steps": 3, "epochs": 1}
        config["intervals"] = {"levels": [80]}
    return config


# --- running a cell -----------------------------------------------------------------------------------
def run_cell(cell: Cell, args: argparse.Namespace, host: dict[str, Any]) -> list[dict[str, Any]]:
    """``forecast run`` on the cell's config in fresh stores; one row per logged model run."""
    stores = args.work / f"{cell[0]}-{cell[1]}-{cell[2]}-{time.strftime('%Y%m%d-%H%M%S')}"
    stores.mkdir(parents=True, exist_ok=True)
    config = cell_config(cell, quick=args.quick, device=args.device)
    path = stores / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"\n## {cell_name(cell)}: forecast run {path} (load {load_average()})", flush=True)
    env = cli_env(stores)
    run = run_measured(
        [str(FORECAST), "run", str(path), "--no-predict"], env, stores, stores / "forecast_run.log"
    )
    base = {
        "dataset": cell[0],
        "features": cell[1],
        "horizon": cell[2],
        "quick": args.quick,
        "device": args.device,
        "run_wall_s": round(run.wall_s, 1),
        "run_peak_rss_mb": round(run.tree_rss_mb),
        "load_before": run.load_before,
        "load_after": run.load_after,
        "commit": host["commit"],
        "machine": f"{host['cpu']} ({host['cores']} cores)",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "folder": str(stores.relative_to(ROOT)) if stores.is_relative_to(ROOT) else str(stores),
    }
    if run.returncode != 0:
        tail = run.log.read_text()[-2000:]
        print(f"forecast run failed ({run.returncode}); log {run.log}:\n{tail}", flush=True)
        return [base | {"model": "", "role": "failed", "error": f"exit {run.returncode}"}]
    uri = env["MLFLOW_TRACKING_URI"]
    runs = logged_runs(uri, config["tracking"]["experiment"])
    chosen = champion_of(uri, config["tracking"]["registered_model"])
    experiment = config["tracking"]["experiment"]
    lookback = pipeline_param(uri, experiment, "defaults.window.lookback") or pipeline_param(
        uri, experiment, "config.window.lookback"
    )
    rows = []
    for r in runs:
        m = r.metrics
        rows.append(
            base
            | {
                "model": r.name,
                "family": r.family,
                "role": r.role or "model",
                "status": r.status,
                "champion": r.run_id == chosen.get("evaluation_run_id") and r.role != "refit",
                "lookback": lookback,
                **{
                    k: m.get(k, math.nan)
                    for k in ("val_mse", "val_mae", "test_mse", "test_mae", "fit_seconds")
                },
            }
        )
    return rows


def champion_of(tracking_uri: str, registered_model: str) -> dict[str, str]:
    """The version the alias ``champion`` points at: its family and the evaluation run it came from."""
    from mlflow import MlflowClient

    version = MlflowClient(tracking_uri).get_model_version_by_alias(registered_model, "champion")
    return {"version": version.version, **(version.tags or {})}


def pipeline_param(tracking_uri: str, experiment: str, key: str) -> str:
    """A param of the latest pipeline (parent) run: what the defaults chose, e.g. the lookback."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    parents = client.search_runs(
        [exp.experiment_id], "tags.role = 'pipeline'", order_by=["start_time DESC"], max_results=1
    )
    return parents[0].data.params.get(key, "") if parents else ""


# --- the report ---------------------------------------------------------------------------------------
def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def latest_rows(rows: list[dict[str, str]]) -> dict[Cell, list[dict[str, str]]]:
    """The rows of each cell's latest run (a cell run again replaces its earlier figures): the
    run whose rows were written last (``date``, then their order in the file)."""
    by_cell: dict[Cell, dict[str, list[dict[str, str]]]] = {}
    for row in rows:
        if row.get("quick") == "True":
            continue
        cell = (row["dataset"], row["features"], int(row["horizon"]))
        by_cell.setdefault(cell, {}).setdefault(row["folder"], []).append(row)
    return {cell: list(runs.values())[-1] for cell, runs in by_cell.items()}


def peer_figures(path: Path) -> dict[Cell, str]:
    """``bench/peers.py``'s peers by cell (only the cell it ran: ETTh1 S at its horizon): each
    peer's final test MSE and its lookback, which may differ from the cell's default lookback."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return {}
    protocol = data.get("protocol", {})
    cell = ("ETTh1", "S", int(protocol.get("horizon", 0)))
    peers = {
        row["peer"]: _float(row.get("peer_mse"))
        for row in data.get("summary", [])
        if row.get("peer") and math.isfinite(_float(row.get("peer_mse")))
    }
    if not peers:
        return {}
    text = ", ".join(f"{name} {mse:.4f}" for name, mse in sorted(peers.items(), key=lambda kv: kv[1]))
    return {cell: f"{text} (L={protocol.get('lookback', '?')})"}


def on_gpu(row: dict[str, str]) -> str:
    return " (cuda)" if row.get("device") == "cuda" else ""


def report(rows: list[dict[str, str]], peers: dict[Cell, str]) -> str:
    latest = latest_rows(rows)
    out = []
    reached = deep_ok = deep_total = ran = 0
    for dataset in DATASETS:
        out += [
            f"\n### {dataset}: the champion `forecast run` registered (chosen on validation)\n",
            "| S/M | H | lookback | champion | test MSE / MAE | best published (L) | gap "
            "| deep families within 5 % | best family on test (information only) "
            "| peers (same protocol) | run s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for features in FEATURES:
            for horizon in HORIZONS:
                cell = (dataset, features, horizon)
                model, pub_l, pub_mse, pub_mae, section = BEST_PUBLISHED[cell]
                published = f"{model} ({pub_l}) {pub_mse:.3f} / {pub_mae:.3f} [{section}]"
                runs = [
                    r
                    for r in latest.get(cell, [])
                    if r.get("role") == "model" and r.get("status") == "FINISHED"
                ]
                if not runs:
                    failed = any(r.get("role") == "failed" for r in latest.get(cell, []))
                    status = "failed" if failed else "not run"
                    peer = peers.get(cell, "")
                    out.append(f"| {features} | {horizon} | | {status} | | {published} | | | | {peer} | |")
                    continue
                ran += 1
                champ = next((r for r in runs if r.get("champion") == "True"), None)
                scored = [r for r in runs if math.isfinite(_float(r.get("test_mse")))]
                on_test = min(scored, key=lambda r: _float(r["test_mse"])) if scored else None
                deep = [r for r in scored if r.get("family") in DEEP]
                within = sum(_float(r["test_mse"]) <= 1.05 * pub_mse for r in deep)
                deep_ok, deep_total = deep_ok + within, deep_total + len(deep)
                if champ is None:
                    head, gap = "no champion", ""
                else:
                    mse = _float(champ["test_mse"])
                    reached += mse <= pub_mse
                    head = f"{_float(champ['test_mse']):.4f} / {_float(champ['test_mae']):.4f}"
                    gap = f"{100 * (mse / pub_mse - 1):+.1f} %"
                info = f"{on_test['model']} {_float(on_test['test_mse']):.4f}" if on_test else ""
                out.append(
                    f"| {features} | {horizon} | {runs[0].get('lookback', '')} | "
                    f"{champ['model'] if champ else ''}{on_gpu(runs[0])} | {head} | {published} | {gap} "
                    f"| {within} of {len(deep)} | {info} | {peers.get(cell, '')} "
                    f"| {_float(runs[0].get('run_wall_s')):.0f} |"
                )
    out.insert(
        0,
        f"Cells run: {ran} of {len(BEST_PUBLISHED)}. Champion at or below the best published MSE: "
        f"{reached} of {ran}. Deep family fits within 5 % of the best published: {deep_ok} of {deep_total}.",
    )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", nargs="+", type=parse_cell, help="DATASET:S|M:H (default: the grid below)")
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--features", nargs="+", default=FEATURES, choices=FEATURES)
    parser.add_argument("--horizons", nargs="+", type=int, default=HORIZONS, choices=HORIZONS)
    parser.add_argument("--out", type=Path, default=RESULTS / "cells.csv", help="one row per fit (appended)")
    parser.add_argument("--work", type=Path, default=WORK, help="run folders (fresh stores per cell)")
    parser.add_argument("--peers", type=Path, default=RESULTS / "peers.json", help="bench/peers.py's results")
    parser.add_argument("--fresh", action="store_true", help="run every selected cell again")
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="cuda: deep families on the GPU, bf16 autocast",
    )
    parser.add_argument("--report", action="store_true", help="only print the tables from --out")
    parser.add_argument("--print-config", type=parse_cell, metavar="CELL", help="print a cell's config")
    parser.add_argument(
        "--quick", action="store_true", help="ETTh1 S H=8, three cheap models, 3 steps (CI: the script runs)"
    )
    args = parser.parse_args()
    grid = (args.datasets, args.features, args.horizons) != (DATASETS, FEATURES, HORIZONS)
    if args.quick and (args.cells or grid):
        parser.error(
            "--quick runs its own tiny cell (ETTh1 S H=8): no --cells, --datasets, --features, --horizons"
        )
    if args.quick and args.out == RESULTS / "cells.csv":
        args.out = args.work / "cells_quick.csv"  # never mix smoke rows into the recorded grid
    if args.print_config:
        print(yaml.safe_dump(cell_config(args.print_config, args.quick, args.device), sort_keys=False))
        return
    if not args.report:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        if args.quick:
            cells = [("ETTh1", "S", 8)]
        elif args.cells:
            cells = args.cells
        else:
            cells = [(d, f, h) for d in args.datasets for f in args.features for h in args.horizons]
        done = (
            set()
            if args.fresh
            else {
                (r["dataset"], r["features"], int(r["horizon"]))
                for r in read_rows(args.out)
                if r.get("role") != "failed"
            }
        )
        host = machine()
        for cell in cells:
            if cell in done and not args.quick:
                print(f"{cell_name(cell)}: in {args.out} already (--fresh runs it again)")
                continue
            for row in run_cell(cell, args, host):
                append_row(args.out, row)
                flag = " (champion)" if row.get("champion") else ""
                print(f"  {row['model']}{flag}: val MSE {row.get('val_mse')}, test MSE {row.get('test_mse')}")
    print(report(read_rows(args.out), peer_figures(args.peers)))


if __name__ == "__main__":
    main()
