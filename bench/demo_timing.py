"""Where the demo's wall time goes: imports, Prefect start-up, data, training per family, MLflow
logging and registry, the refit, prediction; then ``forecast demo`` itself, timed whole from outside.

Instrumented from outside the library: a fresh process runs the pipeline's one body
(``run_pipeline``, as the flow does, with its training, refit and champion steps passed in) and
``batch_predict`` with timers around them; ``fit_and_score`` is wrapped so that a family's
training time and its MLflow logging time are told apart. Every run uses a throwaway
``MLFLOW_TRACKING_URI`` (SQLite) and ``PREFECT_HOME`` in a temp dir (under ``$TMPDIR``), so the
project's ``mlruns/`` and ``.prefect/`` are untouched and every store starts empty (what a first
``make demo`` sees). Prefect's share is the whole ``forecast demo`` wall time minus the library
phases.

``--quick``: the same four measurements on a small demo (``QUICK_DEMO``: three families, short
validation and test periods, three optimiser steps), with ``forecast run <that config>`` in place
of ``forecast demo`` and no warm rerun; a minute instead of several, figures that mean nothing
(what CI runs).

    .venv/bin/python bench/demo_timing.py            # phases, compute only, forecast demo cold + warm
    .venv/bin/python bench/demo_timing.py --no-warm
    .venv/bin/python bench/demo_timing.py --quick --out timing.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RESULTS, ROOT, load_average, machine, quiet_env

DEMO_CONFIG = ROOT / "configs" / "demo.yaml"
FORECAST = Path(sys.executable).with_name("forecast")
# --quick (and bench/intervals.py --quick --overhead): the demo config with these overrides.
# A baseline, one network (the torch loop) and the ensemble over them; 20 days each of
# validation and test; three optimiser steps.
QUICK_DEMO: dict[str, Any] = {
    "models": [{"name": "naive"}, {"name": "linear"}, {"name": "ensemble"}],
    "split": {"borders": [8640, 9120, 9600]},
    "training": {"epochs": 1, "max_steps": 3},
}


def write_quick_config(folder: Path) -> Path:
    """The demo config with ``QUICK_DEMO`` applied, as a file ``forecast run`` can take."""
    import yaml

    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["data"]["path"] = str((DEMO_CONFIG.parent / raw["data"]["path"]).resolve())
    raw["models"] = QUICK_DEMO["models"]
    raw["split"].update(QUICK_DEMO["split"])
    raw["training"].update(QUICK_DEMO["training"])
    path = folder / "demo_quick.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def env_for(tmp: Path) -> dict[str, str]:
    """The CLI's embedded defaults, with both stores in ``tmp``."""
    (tmp / "mlruns").mkdir(parents=True, exist_ok=True)
    return quiet_env(
        tmp / "prefect",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}",
        PREFECT_LOGGING_LEVEL="WARNING",
    )


IMPORTS = """
import json, time
t = {}
for name in ["numpy", "pandas", "torch", "mlflow", "prefect", "forecasting.pipeline", "forecasting.tracking",
             "forecasting.serving", "flows.pipeline", "forecasting.cli"]:
    t0 = time.perf_counter(); __import__(name); t[name] = time.perf_counter() - t0
print(json.dumps(t))
"""


def worker_phases(config: Path) -> dict[str, Any]:
    """The library calls of the demo, one by one, with timers (run in a fresh process)."""
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    import torch

    import forecasting.pipeline as lib
    import forecasting.pipeline.train as train_module
    from forecasting.config import load_config
    from forecasting.tracking import Tracker

    phases["imports (torch, pandas, mlflow, library)"] = time.perf_counter() - t0
    torch.set_num_threads(os.cpu_count() or 1)  # phases one after another: one model at a time, every core

    t0 = time.perf_counter()
    from flows import local_api

    api = local_api.start()  # what the CLI does (nothing when an API is configured)
    if api is not None:
        api.wait()
    from prefect import flow

    @flow(name="bench-noop")
    def noop() -> int:
        return 1

    noop()
    phases["prefect import + local API start + one empty flow"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cfg = load_config(config)
    prepared = lib.prepare(cfg)
    phases["data (config, ingest, validate, split, scale)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tracker = Tracker(cfg.tracking)
    phases["mlflow: store + experiment set-up"] = time.perf_counter() - t0

    # ``train_model`` calls ``fit_and_score`` through its own module: wrapped there, a family's
    # training and scoring are told apart from its MLflow logging.
    fit_time: dict[str, float] = {}
    original = train_module.fit_and_score

    def timed_fit(prepared_: Any, spec: Any, callbacks: Any = None, members: Any = None) -> Any:
        start = time.perf_counter()
        try:
            return original(prepared_, spec, callbacks, members)
        finally:
            fit_time[spec.run_name] = time.perf_counter() - start

    per_family: dict[str, dict[str, Any]] = {}
    steps: dict[str, float] = {}

    def train_models(p: Any, parent_id: str, tags: dict[str, str]) -> list[Any]:
        def train_many(jobs: list[Any]) -> list[Any]:  # one model at a time, as the phases are told
            out = []
            for job in jobs:
                start = time.perf_counter()
                result = lib.train_job(job, tracker)
                total = time.perf_counter() - start
                fit = fit_time.get(job.spec.run_name, 0.0)
                per_family[job.spec.run_name] = {
                    "train_and_score_s": fit,
                    "mlflow_logging_s": total - fit,
                    "status": result.status,
                    "test_mse": result.metrics.get("test_mse"),
                }
                out.append(result)
            return out

        return lib.train_all(p, parent_id, train_many, tags)

    def refit_step(p: Any, best: Any, results: list[Any], parent_id: str, tags: dict[str, str]) -> Any:
        start = time.perf_counter()
        try:
            return lib.refit_model(p, best, results, tracker, parent_id, tags)
        finally:
            steps["refit"] = time.perf_counter() - start

    def select_step(tracker_: Any, p: Any, results: list[Any], parent_id: Any, refit: Any = None) -> Any:
        start = time.perf_counter()
        try:
            return lib.select_champion(tracker_, p, results, parent_id, refit)
        finally:
            steps["select"] = time.perf_counter() - start

    train_module.fit_and_score = timed_fit
    t_pipeline = time.perf_counter()
    try:
        result = lib.run_pipeline(
            cfg,
            tracker,
            prepared=prepared,
            train_models=train_models,
            refit_step=refit_step,
            select_step=select_step,
        )
    finally:
        train_module.fit_and_score = original
    pipeline_total = time.perf_counter() - t_pipeline
    training = sum(v["train_and_score_s"] for v in per_family.values())
    phases["training + scoring (all families)"] = training
    phases["refit (the champion on every row, logged)"] = steps.get("refit", 0.0)
    phases["mlflow: register + gate champion (reload, smoke test, re-score)"] = steps.get("select", 0.0)
    phases["mlflow: logging (runs, params, metrics, plots, models)"] = (
        pipeline_total - training - steps.get("refit", 0.0) - steps.get("select", 0.0)
    )
    t0 = time.perf_counter()
    prediction = lib.batch_predict(cfg)
    phases["prediction (champion from the registry, all series, logged)"] = time.perf_counter() - t0
    decision = result.decision
    return {
        "phases": phases,
        "families": per_family,
        "champion": f"{decision.model} v{decision.version} -> {decision.alias}",
        "prediction_rows": prediction["rows"],
    }


def worker_compute(config: Path) -> dict[str, Any]:
    """The demo's work without orchestration or tracking: the same data, the same families fitted
    and scored on the same windows, the champion chosen by validation MSE, refit on every row when
    the config refits (``selection.refit``), and its forecast of the next horizon, in one process,
    with as many models training at once and as many torch threads each as the flow's task runner
    (``workers_and_threads``)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    import forecasting.pipeline as lib
    from forecasting.config import load_config

    cfg = load_config(config)
    workers, threads = lib.workers_and_threads(cfg)
    torch.set_num_threads(threads)
    prepared = lib.prepare(cfg)

    def one(job: Any) -> Any:
        model, metrics, _test_pred = lib.fit_and_score(job.prepared, job.spec, members=job.members)
        calibration = model.calibration_.to_dict() if model.calibration_ is not None else None
        return lib.ModelResult(
            job.spec.run_name,
            job.spec.name,
            "FINISHED",
            metrics=metrics,
            model=model,
            weights=dict(model.weights_) if model.weights_ else None,
            calibration=calibration,
        )

    with ThreadPoolExecutor(workers) as pool:
        results = lib.train_all(prepared, None, lambda jobs: list(pool.map(one, jobs)))
    best = min(results, key=lambda r: r.metrics["val_mse"])
    if cfg.selection.refit:
        model, scaler, _ = lib.refit(prepared, best, results)
        forecast = model.predict(scaler.transform(prepared.data.frame), cfg.window.horizon)
    else:
        forecast = best.model.predict(prepared.test, cfg.window.horizon)
    return {"champion_val_mse": best.metrics["val_mse"], "forecast_rows": len(forecast)}


def run_worker(flag: str, cwd: Path, tmp: Path, config: Path) -> dict[str, Any]:
    """This script as ``--worker``/``--worker-compute`` in a fresh process, timed from outside."""
    load = load_average()
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), flag, "--config", str(config)],
        cwd=cwd,
        env=env_for(tmp),
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{flag} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "wall_s": wall, "load_before": load, "load_after": load_average()}


def run_demo(tmp: Path, config: Path | None = None) -> dict[str, Any]:
    """``forecast demo`` (or ``forecast run CONFIG``) in a fresh process, timed from outside."""
    work = tmp / "cwd"
    work.mkdir(parents=True, exist_ok=True)
    command = [str(FORECAST), "demo"] if config is None else [str(FORECAST), "run", str(config)]
    load = load_average()
    t0 = time.perf_counter()
    out = subprocess.run(command, cwd=work, env=env_for(tmp), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "returncode": out.returncode,
        "tail": (out.stdout + out.stderr)[-3000:],
        "load_before": load,
        "load_after": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-warm", action="store_true", help="skip the second (warm-store) forecast demo")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small demo (QUICK_DEMO) through `forecast run`, no warm rerun (seconds)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "demo_timing.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-compute", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker_phases(args.config)))
        return
    if args.worker_compute:
        print(json.dumps(worker_compute(args.config)), flush=True)
        # shut down as the `forecast` script does (forecasting.cli.console_script): what that saves is not
        # orchestration or tracking, so the work without them must save it too
        import gc

        gc.freeze()
        return

    info = machine()
    print(json.dumps(info))
    results: dict[str, Any] = {"machine": info}
    base = Path(tempfile.mkdtemp(prefix="demo-bench-"))
    try:
        config = write_quick_config(base / "config") if args.quick else DEMO_CONFIG
        if args.quick:
            results["quick"] = QUICK_DEMO
        # 1. imports, in a fresh interpreter (python start-up = wall - the imports themselves)
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", IMPORTS],
            cwd=ROOT,
            env=env_for(base / "imports"),
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        imports = json.loads(out.stdout.strip().splitlines()[-1])
        results["imports"] = {"modules_s": imports, "process_wall_s": wall}
        print(
            f"\nimports (fresh interpreter {wall:.1f} s): "
            + ", ".join(f"{k} {v:.2f}" for k, v in imports.items())
        )

        # 2. the phases, by library calls with timers
        phases = run_worker("--worker", base, base / "phases", config)
        phases["process_wall_s"] = phases.pop("wall_s")
        results["phases"] = phases

        # 3. the same work with no orchestration and no tracking, whole process from outside
        results["compute_only"] = run_worker("--worker-compute", ROOT, base / "compute", config)

        # 4. forecast demo, whole, on empty stores; then again on the stores it left (warm)
        results["demo_cold"] = run_demo(base / "demo", config if args.quick else None)
        if not (args.no_warm or args.quick):
            results["demo_warm"] = run_demo(base / "demo")
    finally:
        shutil.rmtree(base, ignore_errors=True)

    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(report(results))


def report(results: dict[str, Any]) -> str:
    p = results["phases"]
    demo = results["demo_cold"]
    lines = [
        f"\n### Demo breakdown (library phases in one instrumented process: {p['process_wall_s']:.0f} s "
        "wall, "
        f"load {p['load_before']} -> {p['load_after']})",
        "| phase | seconds | share of `forecast demo` (cold) |",
        "|---|---|---|",
    ]
    total = demo["wall_s"]
    python_start = results["imports"]["process_wall_s"] - sum(results["imports"]["modules_s"].values())
    library = (
        python_start
        + sum(p["phases"].values())
        - p["phases"]["prefect import + local API start + one empty flow"]
    )
    lines.append(f"| python start-up | {python_start:.1f} | {python_start / total:.0%} |")
    for name, secs in p["phases"].items():
        lines.append(f"| {name} | {secs:.1f} | {secs / total:.0%} |")
    prefect_rest = total - library
    lines.append(
        "| Prefect, by difference (`forecast demo` wall - the library phases; start-up, flow and task "
        "overhead) "
        f"| {prefect_rest:.1f} | {prefect_rest / total:.0%} |"
    )
    mlflow = sum(v for k, v in p["phases"].items() if k.startswith("mlflow"))
    lines.append(
        f"| **orchestration + tracking** (Prefect by difference + every mlflow phase) | "
        f"{prefect_rest + mlflow:.1f} | **{(prefect_rest + mlflow) / total:.0%}** (target <= 15%) |"
    )
    lines.append(
        f"| **`forecast demo`, whole, empty stores** (rc {demo['returncode']}, load {demo['load_before']} -> "
        f"{demo['load_after']}) | **{total:.1f}** | target <= 180 s |"
    )
    if "demo_warm" in results:
        w = results["demo_warm"]
        lines.append(
            f"| `forecast demo` again on the same stores (rc {w['returncode']}, load {w['load_before']} -> "
            f"{w['load_after']}) | {w['wall_s']:.1f} | |"
        )
    if "compute_only" in results:
        c = results["compute_only"]
        lines += [
            "",
            "Marginal cost, whole processes timed from outside: `forecast demo` minus the same work "
            "without Prefect and MLflow (`--worker-compute`: python start-up, imports, data, every model "
            "of the demo config fitted and scored, champion by validation, its forecast).",
            "",
            "| run | wall s | orchestration + tracking s | share |",
            "|---|---|---|---|",
            f"| compute only (load {c['load_before']} -> {c['load_after']}) | {c['wall_s']:.1f} | | |",
        ]
        runs = (("demo_cold", "`forecast demo`, empty stores"), ("demo_warm", "`forecast demo`, warm"))
        for key, label in runs:
            if key in results:
                d = results[key]["wall_s"]
                extra = d - c["wall_s"]
                lines.append(f"| {label} | {d:.1f} | {extra:.1f} | **{extra / d:.0%}** |")
    lines += ["", "| family | train + score s | MLflow logging s | test MSE |", "|---|---|---|---|"]
    for name, f in p["families"].items():
        mse = f"{f['test_mse']:.4f}" if f["test_mse"] is not None else f["status"]
        lines.append(f"| {name} | {f['train_and_score_s']:.1f} | {f['mlflow_logging_s']:.1f} | {mse} |")
    lines.append(f"\nchampion: {p['champion']}; {p['prediction_rows']} forecast rows")
    if "quick" in results:
        lines.append(
            "--quick: `forecast demo` above is `forecast run` on the demo config with "
            f"{json.dumps(results['quick'])}; the figures mean nothing"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
