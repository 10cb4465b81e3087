"""Orchestration cost at scale: the fixed cost of one pipeline run and the added cost per model
task, under Prefect's ephemeral API and against a running Prefect server, and MLflow's logging of
one model run.

One worker process per API (imports and the API's start paid once, and reported apart) times, on
a tiny data set (``--series`` hourly series of 480 rows; 2 by default) with N models whose own fit
is negligible (``naive`` under N distinct labels), for each N of ``--models``:

- **flow**: the pipeline flow as ``forecast run`` calls it (``flows.pipeline.forecast_pipeline``:
  ingest task, the ``train-models`` subflow with one task per model, refit, champion gate, the
  batch prediction subflow, Prefect artifacts; Prefect's log records to the API and a file);
- **plain**: the same work without Prefect, in the same process: ``run_pipeline`` with a plain
  thread pool as large as the flow's task runner (``workers_and_threads``), then ``batch_predict``.

The medians over ``--repeats`` give, by a least-squares line over N, intercept = the fixed cost of
a pipeline run and slope = the cost added by one model; flow - plain gives Prefect's part of each:
the fixed orchestration cost and the per-task cost beyond the model's own fit and logging. Runs
alternate (flow/plain, N up/down) so that a drifting load spreads over both. Every run of one kind
goes to one experiment and registered model, so each finds an incumbent champion, as a scheduled
pipeline does. The first flow and plain runs of a process are timed apart (``first ...``), after a
plain run has paid the library's one-time costs (imports on first use, the store's set-up).

APIs (``--apis``):

- ``ephemeral``: no API configured, so the worker starts Prefect's local API the way
  ``forecast run`` does (``flows/local_api.py``: the server process of Prefect's ephemeral mode,
  on a new database under a temporary ``PREFECT_HOME``; flow-run heartbeats off); its start is
  timed apart (``local API start``);
- ``server``: ``prefect server start`` on 127.0.0.1 (a free port, its own temporary
  ``PREFECT_HOME``), started here and stopped at the end; the worker runs with ``PREFECT_API_URL``
  pointing at it, as ``forecast run`` and ``forecast serve``'s runs do with a server (heartbeats on).

MLflow logging of one model run (``mlflow log: ...``, API ``none``): in a process of its own with no
Prefect, ``train_model`` of one ``naive`` model on the local SQLite store, minus its fit and scoring
(``fit_and_score``, wrapped), median of ``--log-repeats`` after one untimed run, split into the
run's inputs (dataset, config, repair report), its forecast figure, its two frames (test
predictions, per-series scores), its pyfunc model, and the rest (the run itself, params, metrics,
tags, the interval calibration).

Rows are appended to ``--out`` (CSV, one row per figure: ``api``, ``what``, ``n_models``,
``seconds``, the samples, the median 1-minute load average over them, commit, machine, date;
``--label`` tells before/after runs apart). Nothing here asserts a figure.

    .venv/bin/python bench/orchestration.py                       # N = 1 2 4 8, 3 repeats, both APIs
    .venv/bin/python bench/orchestration.py --series 200 --models 1 4 --apis ephemeral
    .venv/bin/python bench/orchestration.py --quick --out /tmp/orch.csv   # N = 1 2, ephemeral only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RESULTS, append_row, load1, load_average, machine, quiet_env

APIS = ("ephemeral", "server")
NO_PREFECT = "none"  # the worker that times MLflow's logging, without Prefect
# (api, figure, seconds): a pipeline run's fixed cost, the cost a model task adds beyond the
# model's own fit and logging, and the logging of one model run.
TARGETS = (
    ("server", "fixed cost (flow)", 3.0),
    ("server", "per model (orchestration)", 0.3),
    (NO_PREFECT, "mlflow log: model run, logging only", 0.5),
)
MODELS = (1, 2, 4, 8)
QUICK = {"models": (1, 2), "repeats": 1, "log_repeats": 2, "apis": ("ephemeral",)}
SERVER_START_TIMEOUT_S = 120.0
ROWS_PER_SERIES = 480
# Loopback needs no proxy.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --- the work ---------------------------------------------------------------------------------
def write_data(path: Path, n_series: int = 2, n: int = ROWS_PER_SERIES) -> Path:
    """Two hourly sines with noise: enough rows for a 24-step lookback and 12-step horizon."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    t = np.arange(n)
    parts = [
        pd.DataFrame(
            {
                "series": f"s{k}",
                "ts": pd.date_range("2024-01-01", periods=n, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
                "y": 10 + 3 * np.sin(2 * np.pi * t / 24 + k) + 0.2 * rng.standard_normal(n),
            }
        )
        for k in range(n_series)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(parts).to_csv(path, index=False)
    return path


def config_for(folder: Path, n_models: int, experiment: str, max_workers: int | None = None) -> Any:
    """The pipeline config of N ``naive`` models (labels ``naive-0`` ...) on the tiny data set."""
    from forecasting.config import config_from_dict

    raw = {
        "data": {"path": str(folder / "data.csv"), "time_column": "ts", "target": "y", "id_column": "series"},
        "split": {"method": "fractions", "train_fraction": 0.6, "test_fraction": 0.2},
        "window": {"lookback": 24, "horizon": 12},
        "models": [{"name": "naive", "label": f"naive-{i}"} for i in range(n_models)],
        "training": {"progress": False},
        "tracking": {
            "tracking_uri": f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}",
            "experiment": experiment,
            "registered_model": f"{experiment}-model",
        },
        "orchestration": {"max_workers": max_workers},
        "predict": {"output": str(folder / "outputs" / f"{experiment}-forecast.csv")},
    }
    return config_from_dict(raw, source=f"orchestration-bench-{n_models}")


def plain_pipeline(cfg: Any) -> None:
    """What the flow does, without Prefect: the library's one pipeline body with the models on a
    thread pool as large as the flow's (one shared tracker), then the batch prediction."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    import forecasting.pipeline as lib
    from forecasting.tracking import Tracker

    tracker = Tracker(cfg.tracking)
    workers, threads = lib.workers_and_threads(cfg)
    torch.set_num_threads(threads)
    with ThreadPoolExecutor(workers) as pool:

        def train_models(p: Any, parent_id: str, tags: dict[str, str]) -> list[Any]:
            many = lambda jobs: list(pool.map(lambda job: lib.train_job(job, tracker), jobs))  # noqa: E731
            return lib.train_all(p, parent_id, many, tags)

        result = lib.run_pipeline(cfg, tracker, train_models=train_models)
    if result.decision is not None:
        lib.batch_predict(cfg)


def worker(
    api: str,
    folder: Path,
    ns: list[int],
    repeats: int,
    log_repeats: int,
    max_workers: int | None,
    series: int,
) -> dict:
    """Every timing of one API, in this (fresh) process; returns them as a dict."""
    out: dict[str, Any] = {"api": api, "runs": [], "first": {}}
    t0 = time.perf_counter()
    from flows import local_api

    local = local_api.start()  # what `forecast run` does: nothing when PREFECT_API_URL is set
    import flows.pipeline as fp
    import forecasting.pipeline
    import forecasting.tracking  # noqa: F401
    from forecasting.cli import _log_flows_to_file

    _log_flows_to_file()  # Prefect's log records as `forecast run` sends them: to the API and a file

    if local is not None:
        local.wait()
        flow_fn = local_api.without_heartbeats(fp.forecast_pipeline)
        out["api_start_s"] = time.perf_counter() - t0  # beside the imports, as the CLI runs it
    else:
        flow_fn = fp.forecast_pipeline
    out["api_url"] = os.environ.get("PREFECT_API_URL", "")
    write_data(folder / "data.csv", n_series=series)

    def timed(kind: str, n: int) -> dict[str, Any]:
        # one experiment (and registered model) per kind: after the first runs, every run finds
        # its experiment and an incumbent champion, as a scheduled pipeline does
        cfg = config_for(folder, n, kind, max_workers)
        load = load1()
        start = time.perf_counter()
        if kind == "flow":
            outcome = flow_fn(config=cfg, predict=True)
            if outcome["decision"] is None or "prediction" not in outcome:
                raise RuntimeError(f"the flow run with {n} models did not finish its work: {outcome}")
        else:
            plain_pipeline(cfg)
        return {"kind": kind, "n": n, "s": time.perf_counter() - start, "load1": load}

    # One-time costs: the plain run first (the library's first use: imports, the store's set-up),
    # then the flow (Prefect's: its client, the events and logs workers, the first flow run).
    first_n = ns[0]
    out["first"]["plain"] = timed("plain", first_n)
    out["first"]["flow"] = timed("flow", first_n)
    for rep in range(repeats):
        order = ns if rep % 2 == 0 else ns[::-1]  # alternate, so drifting load spreads over N
        for i, n in enumerate(order):
            kinds = ("flow", "plain") if (rep + i) % 2 == 0 else ("plain", "flow")
            for kind in kinds:
                out["runs"].append({**timed(kind, n), "rep": rep})
    return out


def mlflow_logging(folder: Path, repeats: int, series: int) -> dict[str, Any]:
    """``train_model`` of one ``naive`` model ``repeats`` times under one parent run on the SQLite
    store, its parts timed by wrapping what ``train_model`` calls; seconds per sample. Run in a
    process of its own without Prefect (no API process beside it), after one model run that is
    not timed (the first pays for imports and the store's first use)."""
    import forecasting.pipeline as lib
    import forecasting.pipeline.train as train_module
    from forecasting import plotting
    from forecasting.tracking import RunLogger, Tracker

    write_data(folder / "data.csv", n_series=series)
    cfg = config_for(folder, 1, "mlflow-log")
    prepared = lib.prepare(cfg)
    tracker = Tracker(cfg.tracking)
    # What ``train_model`` calls, looked up where it looks them up (module globals, methods).
    parts = {
        "fit": (train_module, "fit_and_score"),
        "inputs": (train_module, "log_inputs"),
        "model": (train_module, "log_model"),
        "draw": (plotting, "forecast_plot"),
        "figure": (RunLogger, "log_figure"),
        "frame": (RunLogger, "log_frame"),
    }
    originals = {key: getattr(owner, name) for key, (owner, name) in parts.items()}
    spent: dict[str, float] = {}

    def wrap(key: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return originals[key](*args, **kwargs)
            finally:
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - start

        return call

    samples: list[dict[str, float]] = []
    with tracker.run("mlflow-log-bench", tags={"role": "pipeline"}) as parent:
        lib.log_inputs(parent, prepared)  # as the pipeline run does before its models
        for key, (owner, name) in parts.items():
            setattr(owner, name, wrap(key))
        try:
            for i in range(-1, repeats):  # -1: the untimed first
                spent.clear()
                load = load1()
                start = time.perf_counter()
                spec = cfg.models[0].model_copy(update={"label": f"naive-log-{i}"})
                result = lib.train_model(prepared, spec, tracker, parent.run_id)
                total = time.perf_counter() - start
                if result.status != "FINISHED":
                    raise RuntimeError(f"the logged model run failed: {result.error}")
                if i < 0:
                    continue
                t = {key: spent.get(key, 0.0) for key in parts}
                logging = total - t["fit"]
                figure = t["draw"] + t["figure"]
                samples.append(
                    {
                        "model run, logging only": logging,
                        "inputs (dataset, config, repair report)": t["inputs"],
                        "forecast figure (draw, save, log)": figure,
                        "frames (test predictions, per-series scores)": t["frame"],
                        "pyfunc model": t["model"],
                        "run, params, metrics, tags, calibration": logging
                        - t["inputs"]
                        - figure
                        - t["frame"]
                        - t["model"],
                        "fit and score (not logging)": t["fit"],
                        "load1": load,
                    }
                )
        finally:
            for key, (owner, name) in parts.items():
                setattr(owner, name, originals[key])
    return {"samples": samples}


# --- the server ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"prefect server exited with status {process.returncode} before answering")
        try:
            with _NO_PROXY.open(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"prefect server did not answer {url}/health within {timeout:.0f} s")


def start_server(home: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, float]:
    """``prefect server start`` on a free loopback port; (process, API URL, seconds to answer)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    home.mkdir(parents=True, exist_ok=True)
    server_env = {**env, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false"}
    server_env.pop("PREFECT_API_URL", None)
    prefect = Path(sys.executable).with_name("prefect")
    start = time.perf_counter()
    process = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env,
        stdin=subprocess.DEVNULL,
        stdout=(home / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped whole, by its id
    )
    wait_health(url, process, SERVER_START_TIMEOUT_S)
    return process, url, time.perf_counter() - start


def stop_server(process: subprocess.Popen[bytes]) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


# --- the driver -----------------------------------------------------------------------------------
def bench_env(folder: Path) -> dict[str, str]:
    env = quiet_env(folder / "prefect", TMPDIR=str(folder / "tmp"))
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_LOGGING_LEVEL", None)  # Prefect's default (INFO), as `forecast run` leaves it
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    return env


def run_worker(args: argparse.Namespace, api: str, folder: Path, env: dict[str, str]) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        api,
        "--folder",
        str(folder),
        "--models",
        *map(str, args.models),
        "--repeats",
        str(args.repeats),
        "--log-repeats",
        str(args.log_repeats),
        "--series",
        str(args.series),
    ]
    if args.max_workers:
        command += ["--max-workers", str(args.max_workers)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {api} worker failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


def line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of seconds over N."""
    xs, ys = [float(n) for n, _ in points], [s for _, s in points]
    if len(set(xs)) < 2:
        return ys[0], float("nan")
    slope, intercept = statistics.linear_regression(xs, ys)
    return intercept, slope


def figures(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One worker's timings as rows: per N (flow, plain, their difference), the fitted lines, the
    first runs, the API start, MLflow's logging of one model run."""
    rows: list[dict[str, Any]] = []
    api = result["api"]

    def row(
        what: str, seconds: float, n: int | str = "", samples: list[float] | None = None, loads=()
    ) -> None:
        rows.append(
            {
                "api": api,
                "what": what,
                "n_models": n,
                "seconds": round(seconds, 4),
                "samples": [round(s, 4) for s in samples or []],
                "load1_median": round(statistics.median(loads), 2) if loads else "",
            }
        )

    medians: dict[str, list[tuple[int, float]]] = {"flow": [], "plain": [], "orchestration": []}
    for n in sorted({r["n"] for r in result["runs"]}):
        got = {k: [r for r in result["runs"] if r["n"] == n and r["kind"] == k] for k in ("flow", "plain")}
        flow = statistics.median(r["s"] for r in got["flow"])
        plain = statistics.median(r["s"] for r in got["plain"])
        loads = [r["load1"] for r in got["flow"] + got["plain"]]
        row("flow run", flow, n, [r["s"] for r in got["flow"]], [r["load1"] for r in got["flow"]])
        row("plain run", plain, n, [r["s"] for r in got["plain"]], [r["load1"] for r in got["plain"]])
        row("orchestration (flow - plain)", flow - plain, n, loads=loads)
        medians["flow"].append((n, flow))
        medians["plain"].append((n, plain))
        medians["orchestration"].append((n, flow - plain))
    all_loads = [r["load1"] for r in result["runs"]]
    for key, label in (("flow", "flow"), ("plain", "plain"), ("orchestration", "orchestration")):
        intercept, slope = line(medians[key])
        row(f"fixed cost ({label})", intercept, loads=all_loads)
        row(f"per model ({label})", slope, loads=all_loads)
    for kind in ("plain", "flow"):
        first = result["first"][kind]
        row(f"first {kind} run in the process", first["s"], first["n"], loads=[first["load1"]])
    if "api_start_s" in result:
        row("local API start (beside the imports)", result["api_start_s"])
    if "server_start_s" in result:
        row("prefect server start (to /health)", result["server_start_s"])
    return rows


def mlflow_figures(result: dict[str, Any]) -> list[dict[str, Any]]:
    """MLflow's logging of one model run and its parts: medians, with every sample."""
    samples = result["samples"]
    loads = [s["load1"] for s in samples]
    rows = []
    for part in (k for k in samples[0] if k != "load1"):
        values = [s[part] for s in samples]
        rows.append(
            {
                "api": NO_PREFECT,
                "what": f"mlflow log: {part}",
                "n_models": 1,
                "seconds": round(statistics.median(values), 4),
                "samples": [round(v, 4) for v in values],
                "load1_median": round(statistics.median(loads), 2),
            }
        )
    return rows


def report(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = [
        f"\n### Orchestration cost ({info['cpu']}, {info['cores']} cores, {info['date']}, "
        f"commit {info['commit']}, load {info['load']} -> {info['load_after']})",
        "",
        "| API | what | N | seconds (median) | samples | 1-min load |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        samples = ", ".join(f"{s:.3f}" for s in r["samples"])
        cells = [r["api"], r["what"], r["n_models"], f"{r['seconds']:.3f}", samples, r["load1_median"]]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    found = {(r["api"], r["what"]): r["seconds"] for r in rows}
    lines += ["", "Targets (issue 24; judged with a running server, figures not asserted):"]
    for api, what, target in TARGETS:
        got = found.get((api, what))
        verdict = "not run" if got is None else f"{got:.3f} s ({'met' if got <= target else 'not met'})"
        lines.append(f"- {api}: {what} <= {target} s: {verdict}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", type=int, nargs="+", default=list(MODELS), help="the N to time (models per run)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each N and kind (median)")
    parser.add_argument("--log-repeats", type=int, default=7, help="model runs logged for MLflow's figure")
    parser.add_argument(
        "--apis", nargs="*", choices=APIS, default=list(APIS), help="none given: MLflow's logging only"
    )
    parser.add_argument("--series", type=int, default=2, help="series in the data set (480 hourly rows each)")
    parser.add_argument(
        "--max-workers", type=int, default=None, help="orchestration.max_workers (default: cores)"
    )
    parser.add_argument("--label", default="", help="recorded with every row (e.g. before / after)")
    parser.add_argument("--quick", action="store_true", help="N = 1 2, one repeat, the ephemeral API only")
    parser.add_argument("--out", type=Path, default=RESULTS / "orchestration.csv")
    parser.add_argument("--worker", choices=[*APIS, NO_PREFECT], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == NO_PREFECT:
        print(json.dumps(mlflow_logging(args.folder, args.log_repeats, args.series)), flush=True)
        return
    if args.worker:
        result = worker(
            args.worker,
            args.folder,
            args.models,
            args.repeats,
            args.log_repeats,
            args.max_workers,
            args.series,
        )
        print(json.dumps(result), flush=True)
        return
    if args.quick:
        args.models, args.repeats = list(QUICK["models"]), QUICK["repeats"]
        args.log_repeats, args.apis = QUICK["log_repeats"], list(QUICK["apis"])

    info = machine()
    print(json.dumps(info), flush=True)
    base = Path(tempfile.mkdtemp(prefix="orchestration-bench-"))
    rows: list[dict[str, Any]] = []
    try:
        for api in args.apis:
            folder = base / api
            env = bench_env(folder)
            server = None
            try:
                if api == "server":
                    server, url, started = start_server(folder / "server-home", env)
                    env["PREFECT_API_URL"] = url
                load_before = load_average()
                result = run_worker(args, api, folder, env)
                if server is not None:
                    result["server_start_s"] = started
            finally:
                if server is not None:
                    stop_server(server)
            for r in figures(result):
                rows.append({**r, "load_before": load_before, "load_after": load_average()})
            print(f"{api}: worker process {result['process_s']:.1f} s", flush=True)
        if args.log_repeats > 0:
            folder = base / NO_PREFECT
            load_before = load_average()
            result = run_worker(args, NO_PREFECT, folder, bench_env(folder))
            for r in mlflow_figures(result):
                rows.append({**r, "load_before": load_before, "load_after": load_average()})
            print(f"MLflow logging: worker process {result['process_s']:.1f} s", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    info["load_after"] = load_average()
    common = {
        "date": info["date"],
        "commit": info["commit"],
        "cpu": info["cpu"],
        "cores": info["cores"],
        "label": args.label,
        "quick": args.quick,
        "repeats": args.repeats,
        "max_workers": args.max_workers or "",
        "series": args.series,
        "rows": args.series * ROWS_PER_SERIES,
    }
    for r in rows:
        append_row(args.out, {**common, **r})
    print(report(rows, info))
    print(f"\nrows appended to {args.out}")


if __name__ == "__main__":
    main()
