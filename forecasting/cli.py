"""The `forecast` command. Every user-facing failure is one line on stderr:

    error: <ErrorName>: <message>

and a non-zero exit status (2 for bad input or config, 1 otherwise); ``--debug`` shows the
traceback.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from flows import local_api
from forecasting import stages
from forecasting.errors import ForecastingError, InputValidationError
from forecasting.interrupts import Terminated

if TYPE_CHECKING:
    from forecasting.config import Config
    from forecasting.stages import Event

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, compare, register and serve time-series forecasters.",
)
console = Console()
_state = {"debug": False, "quiet": False}


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    _state["debug"] = debug
    _state["quiet"] = quiet


def _overrides(data: Path | None) -> dict:
    return {"data": {"path": str(data.resolve())}} if data is not None else {}


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help="YAML config.")],
    data: Annotated[Path | None, typer.Option("--data", help="Data file replacing data.path.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Ingest and validate the data; print a summary (series, rows, frequency, span, repairs)."""
    from forecasting.config import load_config
    from forecasting.pipeline.prepare import ingest_data, prepare

    cfg = load_config(config, _overrides(data))
    result = ingest_data(cfg)
    prepared = prepare(cfg, result)  # the defaults that read the data, padding, split
    split = prepared.split
    summary = result.summary()
    summary["path"] = str(cfg.data.path)
    summary["split_rows"] = dict(split.rows)
    summary["defaults"] = prepared.choices
    summary["padded_series"] = {str(k): int(v) for k, v in prepared.padded.items()}
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    table = Table(title=f"[bold]{cfg.data.path.name}[/] is valid", show_header=False)
    for key in ("series", "rows", "freq", "start", "end", "min_length", "max_length"):
        table.add_row(key, str(summary[key]))
    table.add_row("covariates", ", ".join(f"{c} ({r})" for c, r in cfg.data.covariates.items()) or "none")
    table.add_row("split rows", ", ".join(f"{k} {v}" for k, v in summary["split_rows"].items()))
    for key, value in summary["defaults"].items():
        if key not in ("padded_series", "flat_train_series"):  # counts, shown in their own rows
            table.add_row(f"default {key}", str(value))
    if summary["padded_series"]:
        table.add_row("short series", f"{len(summary['padded_series'])} left-padded (window.pad_short)")
    if summary["defaults"].get("flat_train_series"):
        flat = summary["defaults"]["flat_train_series"]
        table.add_row(
            "flat series",
            f"{flat} constant on their training rows: centred, scaled by the panel's median spread",
        )
    repairs = summary["repairs"]
    table.add_row("repairs", ", ".join(f"{k}: {v}" for k, v in repairs.items()) if repairs else "none")
    table.add_row("dataset hash", result.dataset_hash)
    console.print(table)
    for note in result.report.notes:
        console.print(f"  repaired {note}")


DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _setup_environment() -> None:
    """Embedded defaults: Prefect's home inside the project, quiet telemetry, capped threads."""
    import os

    root = Path(__file__).resolve().parents[1]
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Threads still winding down at exit may log into closed handlers; don't print that noise.
    logging.raiseExceptions = False


class BoardFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


BOARD_COLUMNS = ("model", "status", "val_mse", "val_mae", "test_mse", "test_mae", "fit_seconds")


def _cell(col: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if col == "fit_seconds" else f"{value:.4f}"
    return str(value)


def _print_leaderboard(rows: list[dict], title: str, fmt: str = "table") -> None:
    """The leaderboard as a table, CSV or JSON; every name and figure in full at any terminal
    width and when piped (a table wider than the terminal is printed at its own width, and the
    terminal wraps it)."""
    if fmt == "json":
        print(json.dumps(rows, indent=2, default=str))
        return
    if fmt == "csv":
        import pandas as pd

        print(pd.DataFrame(rows).to_csv(index=False), end="")
        return
    cells = [[_cell(col, row.get(col)) for col in BOARD_COLUMNS] for row in rows]
    table = Table(title=title)
    for i, col in enumerate(BOARD_COLUMNS):
        longest = max([len(col), *(len(r[i]) for r in cells)])
        justify = "left" if col in ("model", "status") else "right"
        table.add_column(col, justify=justify, no_wrap=True, min_width=longest)
    for row in cells:
        table.add_row(*row)
    from rich.measure import Measurement

    width = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if width <= console.width:
        console.print(table)
        return
    # rich fits a table to its console's width; a console as wide as the table prints it whole.
    wide = Console(
        width=width, file=console.file, force_terminal=console.is_terminal, no_color=console.no_color
    )
    wide.print(table, crop=False)


def _run_pipeline(config: Path, data: Path | None, predict: bool = True) -> dict:
    _setup_environment()
    from forecasting.config import load_config
    from forecasting.interrupts import run_stoppable

    cfg = load_config(config, _overrides(data))  # fail fast on a bad config, before any flow starts
    with _pipeline_progress():  # from here on the terminal says what is happening
        _probe_tracking(cfg)  # and on a tracking server that does not answer
        api = local_api.start()  # Prefect's local API starts while the imports below run
        from flows.pipeline import forecast_pipeline

        log_file = _log_flows_to_file()
        flow_fn = _ready(api, forecast_pipeline, cfg)
        outcome = run_stoppable(
            flow_fn, config=cfg, data_path=str(data.resolve()) if data else None, predict=predict
        )
    outcome["log_file"] = str(log_file)
    return outcome


def _ready(api: local_api.LocalAPI | None, flow_fn: Any, cfg: Config) -> Any:
    """The flow to run once this command's local API (if it started one) answers: imports and the
    MLflow stores' set-up done while it starts, and flow heartbeats off (see
    ``local_api.without_heartbeats``)."""
    if api is None:
        return flow_fn
    _import_ahead()
    _open_tracking_store(cfg)
    api.wait()
    return local_api.without_heartbeats(flow_fn)


def _import_ahead() -> None:
    """Import what the flow's first steps import anyway (the tracker, with MLflow; torch's compiler
    stack, which the first optimizer pulls in), while the local API is still starting on the other
    core: ~2 s that would otherwise sit between the flow's tasks."""
    import torch._dynamo  # noqa: F401

    import forecasting.tracking  # noqa: F401


def _probe_tracking(cfg: Config) -> None:
    """``TrackingUnavailableError`` in seconds when the tracking server does not answer: before
    Prefect's API starts and torch is imported, which take most of a command's first 20 s."""
    from forecasting.tracking import check_server, resolve_tracking_uri

    check_server(resolve_tracking_uri(cfg.tracking)[0])


def _open_tracking_store(cfg: Config) -> None:
    """Open the flow's MLflow stores while the local API starts (``tracking.open_local_store``:
    SQLite only; a store that does not open is left to the flow to report)."""
    from forecasting.tracking import open_local_store

    open_local_store(cfg.tracking)


def _status(text: str) -> Any:
    """A spinner on a terminal (4 redraws a second: its thread takes the GIL from training on a
    small machine); nothing when output goes to a file or with ``--quiet``."""
    if _state["quiet"] or not console.is_terminal:
        return _nullcontext()
    return console.status(text, spinner="dots", refresh_per_second=4)


def _log_flows_to_file() -> Path:
    """Send Prefect's and the flows' log records to a file instead of the terminal.

    The terminal gets this CLI's own progress and one-line errors; the file keeps everything
    (task retries, crashes with their tracebacks) for whoever investigates a run.
    """
    import logging
    import os

    path = Path(os.environ["PREFECT_HOME"]) / "logs" / "flows.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "distributed"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if isinstance(old, logging.StreamHandler) and not isinstance(old, logging.FileHandler):
                logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return path


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --- progress of `run` and `demo` ---------------------------------------------------------------
@contextmanager
def _pipeline_progress() -> Iterator[None]:
    """The pipeline's stages as they happen (``forecasting.stages``): one live display on a
    terminal, a plain line per finished stage elsewhere (a file, CI), nothing with ``--quiet``
    (nor the networks' own per-epoch bars, which a listener replaces)."""
    display = _PipelineDisplay(console, live=console.is_terminal) if not _state["quiet"] else None
    with display or _nullcontext(), stages.listening(display or (lambda event: None)):
        yield


def _duration(seconds: float) -> str:
    """``0.3 s``, ``12 s``, ``2 min 05 s``."""
    minutes, rest = divmod(round(seconds), 60)
    if minutes:
        return f"{minutes} min {rest:02d} s"
    return f"{seconds:.1f} s" if seconds < 10 else f"{rest} s"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _stage_line(event: Event, width: int = 0) -> str | None:
    """The line a finished stage leaves on the terminal or in a log; None for an event that
    only moves the live display (a model or an epoch starting, an epoch ending)."""
    info, stage = event.info, event.stage
    if stage == "ingest":
        return f"ingest: {info['rows']:,} rows, {info['series']:,} series"
    if stage == "pipeline":
        how = "resumes the interrupted" if info["adopted"] else "in"
        return f"pipeline run {info['run_id'][:8]} {how} MLflow: {len(info['models'])} models"
    if stage == "model_finished":
        name = f"{event.model:<{width}}" + (f"  {event.k} of {event.n}" if event.k else "")
        if info["reused"]:
            return f"{name}  finished before the restart (reused)"
        if info["error"]:
            return f"{name}  FAILED: {info['error']}"
        fit = info["fit_seconds"] or 0.0
        return f"{name}  {info['metric']} {_number(info['score'])}  fit {_duration(fit)}"
    if stage == "refit_finished":
        fit = info["fit_seconds"] or 0.0
        return f"{event.model} on every row ({info['rows'] or 0:,.0f}): fit {_duration(fit)}"
    if stage == "champion":
        head = f"champion gate: {event.model} version {info['version']}"
        if info["alias"] == "unchanged":
            return f"{head} is the champion already (same config, data and code)"
        gate = f"gate MSE {_number(info['candidate_score'])}"
        if info["incumbent_score"] is not None:
            gate += f" vs {_number(info['incumbent_score'])} for version {info['incumbent_version']}"
        return f"{head} -> {info['alias']} ({gate})"
    if stage == "prediction":
        return f"prediction: {info['rows']:,} rows for {info['series']:,} series -> {info['output']}"
    return None


@dataclass
class _Training:
    """A model in training, as the live display shows it."""

    k: int | None
    n: int | None
    started: float
    spinner: Any
    label: str = ""  # the network training (its family), when it is not the model's own name
    epoch: int = 0  # the epoch running (1-based; 0: none yet, or not a network)
    done: int = 0  # epochs finished
    epochs: int = 0
    epoch_seconds: list[float] = field(default_factory=list)  # of this network's finished epochs


class _PipelineDisplay:
    """The listener of ``forecasting.stages`` for `run` and `demo`.

    On a terminal: one rich ``Live`` region (redrawn at most 4 times a second: its thread takes
    the GIL from training on a small machine) with a line per model in training (epoch k/E, s per
    epoch, its ETA) and a footer (models done and waiting, an ETA for those waiting); each
    finished stage is printed above it, once. Elsewhere: the finished stages, one plain line each.
    """

    def __init__(self, out: Console, live: bool):
        self.out = out
        self.t0 = time.monotonic()
        self.width = 0  # of the longest model name
        self.n = 0
        self.finished = 0  # models finished (reused ones too)
        self.seconds: list[float] = []  # of each model trained to the end in this process
        self.training: dict[str, _Training] = {}
        self.next = "loading MLflow and Prefect, starting Prefect's local API"
        self._lock = threading.Lock()  # the listener's thread and the Live's redraw thread
        self._footer = Spinner("dots", style="cyan")
        self._live = (
            Live(console=out, get_renderable=self._render, refresh_per_second=4, transient=True)
            if live
            else None
        )

    def __enter__(self) -> _PipelineDisplay:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._update(event)
        line = _stage_line(event, self.width)
        if line is None:
            return
        clock = _clock(event.at - self.t0)
        if self._live is None:  # not print(): a flow with log_prints would send it to its log
            self.out.file.write(f"{clock:>5}  {line}\n")
            self.out.file.flush()
            return
        failed = event.stage == "model_finished" and event.info["error"]
        mark = ("✗ ", "bold red") if failed else ("✓ ", "green")
        self._live.refresh()  # the region without the model that finished, then the line above it
        self._live.console.print(Text.assemble(mark, line, (f"  {clock}", "dim")), soft_wrap=True)

    def _update(self, event: Event) -> None:
        info, stage, model = event.info, event.stage, event.model or ""
        running = self.training.get(model)
        if stage in ("model_started", "refit_started"):
            self.training[model] = _Training(event.k, event.n, event.at, Spinner("dots", style="cyan"))
            self.n = event.n or self.n
        elif stage == "epoch_started" and running is not None:
            if info["epoch"] <= running.epoch:  # a new network in this run (an ensemble's refit)
                running.epoch_seconds.clear()
                running.done = 0
            running.epoch, running.epochs = info["epoch"], info["epochs"]
            running.label = "" if info["label"] == model else f"{info['label']} "
        elif stage == "epoch_finished" and running is not None:
            running.done = info["epoch"]
            running.epoch_seconds.append(info["seconds"])
        elif stage in ("model_finished", "refit_finished"):
            self.training.pop(model, None)
            if stage == "model_finished":
                self.finished += 1
                if not info["reused"]:
                    self.seconds.append(info["seconds"])
        if stage == "ingest":
            self.next = "opening the pipeline run in MLflow"
        elif stage == "pipeline":
            self.n = len(info["models"])
            self.width = max(map(len, info["models"]), default=0)
            self.next = "training the models"
        elif stage == "model_finished" and self.finished >= self.n and not self.training:
            self.next = "leaderboard and plots, then the champion"
        elif stage == "refit_started":
            self.next = "the best model again on every row, then the champion gate"
        elif stage == "refit_finished":
            self.next = "champion gate: the candidate against the champion"
        elif stage == "champion":
            self.next = "batch prediction with the champion"
        elif stage == "prediction":
            self.next = "finishing"

    def _render(self) -> Any:
        now = time.monotonic()
        with self._lock:
            rows = Table.grid(padding=(0, 2))
            for name, t in self.training.items():
                cells = [f"{t.k} of {t.n}" if t.k else "all rows"]
                if t.epoch and t.done >= t.epochs:
                    cells.append(f"{t.label}{t.epochs} epochs done: scoring, logging")
                elif t.epoch:
                    eta = stages.epoch_eta(max(t.done, t.epoch - 1), t.epochs, t.epoch_seconds)
                    cells.append(f"{t.label}epoch {t.epoch}/{t.epochs}")
                    if t.epoch_seconds:
                        cells.append(f"{sum(t.epoch_seconds) / len(t.epoch_seconds):.1f} s/epoch")
                    if eta is not None:
                        cells.append(f"about {_duration(eta)} left")
                else:
                    cells.append(_duration(now - t.started))
                t.spinner.update(text=Text(f"{name:<{self.width}}"))
                rows.add_row(t.spinner, *cells)
            models = [t for t in self.training.values() if t.k is not None]
            waiting = self.n - self.finished - len(models)
            if models or (self.finished and waiting > 0):
                eta = stages.run_eta(waiting, self.seconds, parallel=max(len(models), 1))
                text = f"models: {self.finished} of {self.n} done, {len(models)} training, {waiting} waiting"
                if waiting and eta is not None:
                    text += f" (about {_duration(eta)} for those)"
            else:
                text = self.next
            self._footer.update(text=Text(f"{text}  ·  {_clock(now - self.t0)}"))
            return Group(rows, self._footer) if self.training else self._footer


def _report(outcome: dict) -> None:
    _print_leaderboard(outcome["leaderboard"], "leaderboard (best validation MSE first; scaled units)")
    decision = outcome.get("decision")
    if decision and decision["alias"] == "unchanged":
        console.print(
            f"champion unchanged: [bold]{decision['model']}[/] version {decision['version']} was "
            "trained on this config, data and code already; no new version registered"
        )
    elif decision:
        console.print(
            f"registered [bold]{decision['model']}[/] as version {decision['version']} -> alias "
            f"[bold]{decision['alias']}[/] (gate MSE {decision['candidate_score']:.4f}"
            + (
                f" vs incumbent {decision['incumbent_score']:.4f})"
                if decision.get("incumbent_score") is not None
                else ")"
            )
        )
    prediction = outcome.get("prediction")
    if prediction:
        rows, model = prediction["rows"], prediction["model"]
        console.print(f"forecasts: [bold]{prediction['output']}[/] ({rows} rows, model {model})")
    console.print(
        "compare the runs in the MLflow UI: [bold]forecast ui[/] (or make ui), then open http://127.0.0.1:5000"
    )
    if outcome.get("log_file"):
        console.print(f"flow logs: {outcome['log_file']}")


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="YAML config.")],
    data: Annotated[Path | None, typer.Option("--data", help="Data file replacing data.path.")] = None,
    predict: Annotated[
        bool, typer.Option("--predict/--no-predict", help="Batch-predict with the champion.")
    ] = True,
) -> None:
    """Run the forecast pipeline flow: ingest, train every model, select the champion, predict."""
    _report(_run_pipeline(config, data, predict))


@app.command()
def tune(
    config: Annotated[Path, typer.Argument(help="YAML config with a search section.")],
    data: Annotated[Path | None, typer.Option("--data", help="Data file replacing data.path.")] = None,
    retrain: Annotated[
        bool | None,
        typer.Option(
            "--retrain/--no-retrain",
            help="Retrain the best trial and gate it as champion (default: search.retrain_best).",
        ),
    ] = None,
) -> None:
    """Search hyper-parameters and architectures (the config's search section) as the Prefect flow
    `tune`; a study that was interrupted resumes where it stopped."""
    _setup_environment()
    from forecasting.config import load_config
    from forecasting.interrupts import run_stoppable
    from forecasting.tuning import check_search

    cfg = load_config(config, _overrides(data))
    check_search(cfg)  # fail fast on a bad config, before any flow
    _probe_tracking(cfg)
    api = local_api.start()
    from flows.tune import tune as tune_flow

    with _status("tuning (Prefect flow `tune`)..."):
        flow_fn = _ready(api, tune_flow, cfg)
        out = run_stoppable(flow_fn, config=cfg, retrain=retrain)
    table = Table(title=f"study [bold]{out['study_name']}[/] ({out['storage']})", show_header=False)
    table.add_row(
        "trials", f"{out['n_complete']} complete, {out['n_pruned']} pruned, {out['n_failed']} failed"
    )
    table.add_row("epochs trained", str(out["total_epochs"]))
    if out["best_trial"] is not None:
        table.add_row("best trial", f"{out['best_trial']} (val {out['best_value']:.4f})")
        for key, value in out["best_params"].items():
            table.add_row(f"  {key}", str(value))
    table.add_row("MLflow parent run", out["parent_run_id"])
    for error in out["errors"]:
        table.add_row("a trial failed", error)
    console.print(table)
    decision = out.get("decision")
    if decision and decision["alias"] == "unchanged":
        console.print(f"champion unchanged: version {decision['version']} already is this model on this data")
    elif decision:
        console.print(
            f"retrained the best as [bold]{decision['model']}[/], version {decision['version']} -> alias "
            f"[bold]{decision['alias']}[/] (gate MSE {decision['candidate_score']:.4f})"
        )


@app.command()
def demo() -> None:
    """The main job on the embedded default: bundled ETTh1, local MLflow store, local Prefect API."""
    _report(_run_pipeline(DEMO_CONFIG, None, True))


@app.command()
def leaderboard(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Config naming the store and experiment (default: the run's own experiment with "
            "--run-id or --experiment, else configs/demo.yaml).",
        ),
    ] = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="A pipeline (parent) run id, in any experiment.")
    ] = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="The latest pipeline run of this experiment.")
    ] = None,
    fmt: Annotated[
        BoardFormat, typer.Option("--format", help="table (full names at any width), csv or json.")
    ] = BoardFormat.table,
) -> None:
    """Show the leaderboard of the latest (or a given) pipeline run, read back from MLflow.

    The tracking store is the config's, else MLFLOW_TRACKING_URI, else the project's local store."""
    _setup_environment()
    from forecasting.config import TrackingConfig, load_config
    from forecasting.pipeline import leaderboard_from_mlflow

    if config is None and (run_id or experiment):
        tracking = TrackingConfig()  # the run (or --experiment) names the experiment
    else:
        tracking = load_config(config or DEMO_CONFIG).tracking
    board = leaderboard_from_mlflow(tracking, run_id, experiment)
    where = f"experiment {board.experiment!r}, store {board.uri}"
    if fmt is not BoardFormat.table:  # stdout is data: where it came from goes to stderr
        print(f"leaderboard of pipeline run {board.run_id} ({where})", file=sys.stderr)
    _print_leaderboard(board.rows, f"leaderboard of pipeline run {board.run_id}\n({where})", fmt.value)


@app.command()
def ui(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 5000,
) -> None:
    """Open the MLflow UI on the project's store (bound to 127.0.0.1 by default)."""
    import contextlib
    import os
    import signal
    import subprocess
    import time

    _setup_environment()
    from forecasting.config import TrackingConfig
    from forecasting.interrupts import install_handlers
    from forecasting.tracking import resolve_tracking_uri

    uri, artifacts = resolve_tracking_uri(TrackingConfig())
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        # No background job consumers for a UI: they keep CPUs busy and outlive Ctrl-C.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    cmd = [str(bin_dir / "mlflow"), "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if artifacts:
        cmd += ["--default-artifact-root", artifacts]
    console.print(f"MLflow UI on http://{host}:{port} (store {uri}); Ctrl-C to stop")
    # The UI runs in a process group of its own (its server and workers), which is stopped as a
    # whole however this command ends: Ctrl-C, SIGTERM, or the UI exiting. Signalling only the
    # `mlflow` process would leave its workers listening.
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    install_handlers()  # SIGTERM -> Terminated, SIGINT -> KeyboardInterrupt
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    group = proc.pid

    def signal_group(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)

    def group_alive() -> bool:
        proc.poll()  # reap the leader, or it lingers as a zombie of the group
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    try:
        code = proc.wait()
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        signal_group(signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while group_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if group_alive():
            signal_group(signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            while group_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    raise typer.Exit(code if code >= 0 else 128 - code)


@app.command()
def predict(
    model: Annotated[str | None, typer.Option("--model", help="NAME, NAME@alias or NAME/version.")] = None,
    input: Annotated[Path | None, typer.Option("--input", help="History (CSV/Parquet).")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Forecast file (.csv/.parquet).")] = None,
    config: Annotated[
        Path, typer.Option("--config", help="Config naming the store and defaults.")
    ] = DEMO_CONFIG,
) -> None:
    """Batch forecasts from the registry (default: the config's model @champion)."""
    _setup_environment()
    from forecasting.config import load_config
    from forecasting.pipeline import batch_predict

    cfg = load_config(config)
    out = batch_predict(cfg, model, input, output)
    console.print(
        f"wrote {out['rows']} forecasts for {out['series']} series to [bold]{out['output']}[/] "
        f"with {out['model']} (MLflow run {out['prediction_run_id']})"
    )


@app.command()
def monitor(
    config: Annotated[Path, typer.Argument(help="YAML config (its store, archive and monitoring rules).")],
    actuals: Annotated[
        Path | None, typer.Option("--actuals", help="Arrived actuals (CSV/Parquet; default: data.path).")
    ] = None,
) -> None:
    """Score the archived forecasts against arrived actuals (Prefect flow `monitor`): a monitoring
    run per model version in MLflow; a firing rule tags the version and retrains once."""
    _setup_environment()
    from forecasting.config import load_config
    from forecasting.interrupts import run_stoppable

    cfg = load_config(config)
    _probe_tracking(cfg)
    api = local_api.start()
    from flows.monitoring import monitor as monitor_flow

    _log_flows_to_file()  # the terminal gets the table or one error line; the file the rest
    flow_fn = _ready(api, monitor_flow, cfg)
    out = run_stoppable(flow_fn, config=cfg, actuals_path=str(actuals.resolve()) if actuals else None)
    table = Table(title=f"monitoring [bold]{out['model']}[/] (champion: version {out['champion']})")
    for column in ("version", "origins", "rolling MAE", "expected MAE", "rolling coverage"):
        table.add_column(column)
    for version, figures in out["versions"].items():
        coverage = ", ".join(
            f"{k.removeprefix('rolling_coverage_')} %: {v:.3f}"
            for k, v in figures.items()
            if k.startswith("rolling_coverage_")
        )
        table.add_row(
            version,
            f"{figures['origins']:.0f}",
            f"{figures.get('rolling_mae', float('nan')):.4g}",
            f"{figures['expected_mae']:.4g}",
            coverage or "-",
        )
    console.print(table)
    for firing in out["firings"]:
        console.print(
            f"[bold red]rule {firing['rule']}[/] fired for version {firing['version']}: {firing['detail']}"
        )
    if out["retrain"]:
        console.print(f"retrain started: {out['retrain']}")
    elif out["retrain_skipped"]:
        console.print(f"no retrain: {out['retrain_skipped']}")
    if not out["firings"]:
        console.print(f"scored {out['scored_rows']} forecasts; no rule fired")


@app.command()
def replay(
    config: Annotated[Path, typer.Argument(help="YAML config (its data, models and monitoring rules).")],
    start: Annotated[str, typer.Option("--start", help="First forecast time (the data's clock).")],
    end: Annotated[str, typer.Option("--end", help="End of the replayed period.")],
    predict_every: Annotated[str, typer.Option("--predict-every", help="Batch prediction period.")] = "24h",
    monitor_every: Annotated[str, typer.Option("--monitor-every", help="Monitoring period.")] = "24h",
    policy: Annotated[
        list[str] | None,
        typer.Option("--policy", help="rule, never or every:<period> (repeat to compare policies)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the replay's stores.")] = Path(
        "outputs/replay"
    ),
) -> None:
    """Operate the pipeline over a historical period with the real flows (train before --start,
    predict, feed the actuals, monitor, retrain by the policy) and compare retraining policies."""
    _setup_environment()
    from forecasting.config import load_config
    from forecasting.interrupts import run_stoppable
    from forecasting.monitoring.replay import parse_policy

    cfg = load_config(config)
    policies = policy or ["rule"]
    for p in policies:
        parse_policy(p)  # a bad policy fails before any flow
    api = local_api.start()
    from flows.monitoring import replay as replay_flow

    log_file = _log_flows_to_file()
    flow_fn = _ready(api, replay_flow, cfg)
    table = Table(
        title=f"replay {start} .. {end}: predict every {predict_every}, monitor every {monitor_every}"
    )
    for column in ("policy", "retrains", "champions", "MAE", "MSE", "MASE", "coverage", "train s", "wall s"):
        table.add_column(column)
    for p in policies:
        r = run_stoppable(
            flow_fn,
            config=cfg,
            start=start,
            end=end,
            out=str(out.resolve()),
            predict_every=predict_every,
            monitor_every=monitor_every,
            policy=p,
        )
        scores = r["scores"]
        coverage = ", ".join(
            f"{k.removeprefix('coverage_')} %: {v:.3f}"
            for k, v in scores.items()
            if k.startswith("coverage_")
        )
        table.add_row(
            p,
            str(r["retrains"]),
            f"{scores.get('versions_served', 0):.0f}",
            f"{scores.get('mae', float('nan')):.4g}",
            f"{scores.get('mse', float('nan')):.4g}",
            f"{scores.get('mase', float('nan')):.4g}",
            coverage or "-",
            f"{r['train_seconds']:.0f}",
            f"{r['wall_seconds']:.0f}",
        )
    console.print(table)
    console.print(f"stores under {out.resolve()}; flow log: {log_file}")


@app.command()
def serve(
    config: Annotated[Path, typer.Argument(help="YAML config with orchestration.schedules.")],
    limit: Annotated[int | None, typer.Option(help="Most flow runs at once.")] = None,
) -> None:
    """Serve the config's cron-scheduled deployments (Prefect serve; Ctrl-C to stop)."""
    _setup_environment()
    from forecasting.config import load_config
    from forecasting.errors import ConfigError

    cfg = load_config(config)
    if not cfg.orchestration.schedules:
        raise ConfigError(f"{config}: orchestration.schedules is empty; nothing to serve")
    from flows.deployments import serve as serve_deployments

    for s in cfg.orchestration.schedules:
        console.print(f"serving {s.flow} as [bold]{s.name or s.flow}[/] on cron {s.cron!r} ({s.timezone})")
    serve_deployments(config, cfg, limit=limit)


@app.command()
def deploy(
    config: Annotated[Path, typer.Argument(help="YAML config with orchestration.schedules.")],
    pool: Annotated[str, typer.Option(help="Work pool whose workers run the flows.")] = "forecasting",
) -> None:
    """Register the config's cron-scheduled deployments to a work pool, for `prefect worker`."""
    _setup_environment()
    from forecasting.config import load_config
    from forecasting.errors import ConfigError

    cfg = load_config(config)
    if not cfg.orchestration.schedules:
        raise ConfigError(f"{config}: orchestration.schedules is empty; nothing to deploy")
    from flows.deployments import deploy as deploy_deployments
    from flows.deployments import deployment_name

    deploy_deployments(config, cfg, work_pool=pool)
    for s in cfg.orchestration.schedules:
        console.print(
            f"deployed {s.flow}/[bold]{deployment_name(s)}[/] to work pool {pool!r} "
            f"on cron {s.cron!r} ({s.timezone})"
        )
    console.print(f"run them with: prefect worker start --pool {pool} --type process")


def _fail(err: BaseException, code: int) -> int:
    if _state["debug"]:
        import traceback

        traceback.print_exception(err)
    message = " ".join(str(err).split()) or "(no message)"
    print(f"error: {type(err).__name__}: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one command (``argv``, default the process's arguments); returns the exit status."""
    import click

    try:
        code = app(args=argv, standalone_mode=False)
        if code == 130:  # typer turns KeyboardInterrupt into a returned 130 in this mode
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            return code
    except InputValidationError as err:
        return _fail(err, 2)
    except ForecastingError as err:
        return _fail(err, 1)
    # Typer raises its own exceptions (its fork of click, from 0.2x), older Typers click's.
    except (typer.Exit, click.exceptions.Exit) as err:
        return err.exit_code
    except (typer.TyperException, click.ClickException) as err:  # usage errors: exit status 2
        print(f"error: {type(err).__name__}: {err.format_message()}", file=sys.stderr)
        return err.exit_code
    except (typer.Abort, click.exceptions.Abort, KeyboardInterrupt):
        print("error: Interrupted: stopped by the user (runs in progress were ended KILLED)", file=sys.stderr)
        return 130
    except Terminated:
        print("error: Terminated: stopped by SIGTERM (runs in progress were ended KILLED)", file=sys.stderr)
        return 143
    except Exception as err:
        return _fail(err, 1)
    return 0


def console_script() -> None:
    """The ``forecast`` console script: ``main()``, then exit without the interpreter's last
    full garbage collection.

    When the command returns, its work is done and its files are closed. What is left is Python's
    shutdown, whose collector walks every object torch, pandas, MLflow and Prefect created: 4.5-5 s
    after a demo on a 2-core machine (bench/BENCHMARKS.md §6). ``gc.freeze()`` moves the
    objects alive now out of the collector's reach, so that walk is skipped. The exit hooks still
    run (Prefect's flush of logs and events, the local API's shutdown, logging's flush), and so
    does the clean-up of every object freed by reference counting; objects caught in reference
    cycles are left to the operating system, as they are after ``os._exit``.
    """
    import gc

    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console_script()
