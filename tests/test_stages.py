"""Stage events (``forecasting.stages``): what a pipeline run reports, in order, to the one
listener the CLI installs; silence without one; the ETAs the live display shows; and what
`forecast run` prints when its output is not a terminal (one plain line per stage) or with
``--quiet`` (nothing)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from test_pipeline import make_config, raw_config

from forecasting import stages
from forecasting.pipeline import run_pipeline

MODELS = [{"name": "naive"}, {"name": "ar"}, {"name": "linear"}, {"name": "ensemble"}]
ESCAPE = re.compile(r"\x1b|\r")  # ANSI escape sequences, carriage-return redraws


def _cfg(*names: str) -> SimpleNamespace:
    """What the reporters read of a Config: the models' run names and the selection metric."""
    return SimpleNamespace(
        models=[SimpleNamespace(run_name=n) for n in names],
        tracking=SimpleNamespace(selection_metric="val_mse"),
    )


def test_silent_without_a_listener_and_a_broken_listener_breaks_nothing():
    assert not stages.active()
    stages.ingested(10, 1)  # nothing listens: returns at once
    stages.model_started(_cfg("naive"), "naive")
    seen = []

    def broken(event: stages.Event) -> None:
        seen.append(event.stage)
        raise RuntimeError("a display bug")

    with stages.listening(broken):
        assert stages.active()
        stages.ingested(10, 1)
        stages.model_finished(_cfg("naive"), "naive", {"val_mse": 0.5, "fit_seconds": 0.1})
    assert seen == ["ingest", "model_finished"] and not stages.active()


def test_epochs_are_the_model_of_their_own_thread():
    """Two models training side by side: each epoch goes to the model its thread started."""
    cfg, events = _cfg("rnn", "lstm"), []
    barrier = threading.Barrier(2)

    def train(name: str) -> None:
        stages.model_started(cfg, name)
        barrier.wait()
        for epoch in (1, 2):
            stages.epoch_started(epoch, 2, label="network")
            stages.epoch_finished(epoch, 2, 0.5, 1.0, None, label="network")
            barrier.wait()
        stages.model_finished(cfg, name, {"val_mse": 1.0, "fit_seconds": 1.0})

    with stages.listening(events.append):
        threads = [threading.Thread(target=train, args=(n,)) for n in ("rnn", "lstm")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for name, k in (("rnn", 1), ("lstm", 2)):
        mine = [e for e in events if e.model == name]
        assert [e.stage for e in mine] == [
            "model_started",
            *["epoch_started", "epoch_finished"] * 2,
            "model_finished",
        ]
        assert {(e.k, e.n) for e in mine if e.stage.startswith("model")} == {(k, 2)}
    assert not [e for e in events if e.model == "network"]


def test_eta_from_epoch_times_and_model_times():
    # 3 of 10 epochs done at 1, 2 and 3 s: 7 left at 2 s each
    assert stages.epoch_eta(3, 10, [1.0, 2.0, 3.0]) == pytest.approx(14.0)
    assert stages.epoch_eta(10, 10, [1.0]) == 0.0
    assert stages.epoch_eta(0, 10, []) is None  # nothing to go on before the first epoch ends
    # 4 models waiting, 3 s each so far, 2 training at once
    assert stages.run_eta(4, [2.0, 4.0], parallel=2) == pytest.approx(6.0)
    assert stages.run_eta(4, [2.0, 4.0]) == pytest.approx(12.0)
    assert stages.run_eta(4, []) is None


def test_a_small_run_reports_its_stages_in_order(tmp_path, mlflow_globals):
    cfg = make_config(tmp_path, "stages", MODELS, training=TRAINING, tracking=_tracking(tmp_path, "stages"))
    events: list[stages.Event] = []
    with stages.listening(events.append):
        result = run_pipeline(cfg)
    assert result.decision is not None

    order = [e.stage for e in events if not e.stage.startswith("epoch")]
    names = [m["name"] for m in MODELS]
    expected = ["ingest", "pipeline"]
    for _ in names:
        expected += ["model_started", "model_finished"]
    expected += ["refit_started", "refit_finished", "champion"]
    assert order == expected
    ingest, pipeline = events[0], events[1]
    assert ingest.info == {"rows": 1500, "series": 3}
    assert pipeline.info["models"] == names and pipeline.info["run_id"] == result.parent_run_id

    started = [e for e in events if e.stage == "model_started"]
    finished = [e for e in events if e.stage == "model_finished"]
    for events_of in (started, finished):  # each model once, k of N in config order
        assert [(e.model, e.k, e.n) for e in events_of] == [(n, k, 4) for k, n in enumerate(names, 1)]
    for e in finished:
        board = result.leaderboard.set_index("model").loc[e.model]
        assert e.info["status"] == "FINISHED" and e.info["metric"] == "val_mse"
        assert e.info["score"] == pytest.approx(board["val_mse"])
        assert e.info["fit_seconds"] == pytest.approx(board["fit_seconds"])
        assert e.info["seconds"] >= e.info["fit_seconds"]

    # the one network's epochs, between its start and its end, 1 and 2 of 2
    epochs = [
        (e.model, e.stage, e.info["epoch"], e.info["epochs"]) for e in events if e.stage.startswith("epoch")
    ]
    trained = [x for x in epochs if x[0] == "linear"]
    assert trained == [
        ("linear", "epoch_started", 1, 2),
        ("linear", "epoch_finished", 1, 2),
        ("linear", "epoch_started", 2, 2),
        ("linear", "epoch_finished", 2, 2),
    ]
    best = result.leaderboard["model"].iloc[0]
    refit = [e for e in events if e.stage.startswith("refit")]
    assert {e.model for e in refit} == {f"{best} refit"}
    assert all(x[0] in ("linear", f"{best} refit") for x in epochs)  # no epoch of nobody
    champion = events[-1]
    assert (champion.model, champion.info["version"]) == (result.decision.model, result.decision.version)


TRAINING = {"epochs": 2, "batch_size": 64, "progress": True, "patience": None, "num_threads": 1}


def _tracking(tmp_path: Path, experiment: str) -> dict:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    return {"experiment": experiment, "registered_model": f"{experiment}-model", "tracking_uri": uri}


# --- the CLI -------------------------------------------------------------------------------------
def _forecast(tmp_path: Path, options: list[str], run_options: list[str]) -> subprocess.CompletedProcess:
    """`forecast OPTIONS run CONFIG RUN_OPTIONS` with its output piped (not a terminal), on a
    small config (naive and linear) and a store under ``tmp_path``."""
    models = [{"name": "naive"}, {"name": "linear"}]
    raw = raw_config(tmp_path, "cli", models, training=TRAINING, tracking=_tracking(tmp_path, "cli"))
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    exe = Path(sys.executable).with_name("forecast")
    return subprocess.run(
        [str(exe), *options, "run", str(path), *run_options],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )


STAGE_LINE = re.compile(r"^\s*\d+:\d\d  (\S+)")


@pytest.mark.slow
def test_forecast_run_not_on_a_terminal_prints_one_plain_line_per_stage(tmp_path):
    proc = _forecast(tmp_path, [], ["--predict"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not ESCAPE.search(proc.stdout), proc.stdout
    lines = [line for line in proc.stdout.splitlines() if STAGE_LINE.match(line)]
    firsts = [STAGE_LINE.match(line).group(1) for line in lines]
    assert len(firsts) == 7, proc.stdout
    assert firsts[:2] == ["ingest:", "pipeline"]
    assert sorted(firsts[2:4]) == ["linear", "naive"]  # each model once, in the order they finished
    assert all(re.search(r"  [12] of 2  val_mse \d", line) and " fit " in line for line in lines[2:4])
    assert firsts[4] in ("linear", "naive") and " refit on every row " in lines[4]
    assert firsts[5:] == ["champion", "prediction:"]
    assert "leaderboard" in proc.stdout  # the end-of-run table is still there
    assert "epoch" not in proc.stdout  # no per-epoch bars, nor lines, in a log


@pytest.mark.slow
def test_forecast_run_quiet_prints_no_stage_line(tmp_path):
    proc = _forecast(tmp_path, ["--quiet"], ["--no-predict"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not [line for line in proc.stdout.splitlines() if STAGE_LINE.match(line)], proc.stdout
    assert "epoch" not in proc.stdout and not ESCAPE.search(proc.stdout)


def _event(
    stage: str, model: str | None = None, k: int | None = None, at: float = 0.0, **info
) -> stages.Event:
    return stages.Event(stage, model, k, 3 if k else None, info, at=at)


def test_the_live_display_shows_each_model_training_on_its_own_line(monkeypatch):
    """Two networks training at once: a line each (epoch k/E, s/epoch, ETA); a finished model
    leaves one line above the live region, and the region forgets it."""
    import io

    from rich.console import Console

    from forecasting import cli

    out = io.StringIO()
    display = cli._PipelineDisplay(Console(file=out, force_terminal=True, width=120), live=True)
    t0 = display.t0
    finished = dict(status="FINISHED", metric="val_mse", fit_seconds=2.0, seconds=3.0, error=None)
    with display:
        display(_event("pipeline", run_id="0123456789abcdef", models=["naive", "rnn", "lstm"], adopted=False))
        display(_event("model_started", "naive", 1, at=t0))
        display(_event("model_finished", "naive", 1, at=t0 + 3, score=0.25, reused=False, **finished))
        for name, k in (("rnn", 2), ("lstm", 3)):
            display(_event("model_started", name, k, at=t0 + 3))
            display(_event("epoch_started", name, epoch=1, epochs=10, label=name))
            display(_event("epoch_finished", name, epoch=1, epochs=10, seconds=2.0, label=name))
            display(_event("epoch_started", name, epoch=2, epochs=10, label=name))
        region = cli.Console(file=io.StringIO(), width=120)
        region.print(display._render())
        shown = region.file.getvalue()
    lines = [line for line in shown.splitlines() if "epoch" in line]
    assert len(lines) == 2 and "rnn" in lines[0] and "lstm" in lines[1]
    assert all("epoch 2/10" in line and "2.0 s/epoch" in line and "about 18 s left" in line for line in lines)
    assert "models: 1 of 3 done, 2 training, 0 waiting" in shown
    assert "naive" not in shown  # finished: above the region, not in it
    printed = out.getvalue()
    assert printed.count("naive  1 of 3  val_mse 0.2500  fit 2.0 s") == 1


def test_a_stage_line_says_what_happened():
    from forecasting.cli import _stage_line

    assert _stage_line(_event("ingest", rows=17420, series=1)) == "ingest: 17,420 rows, 1 series"
    failed = dict(status="FAILED", metric="val_mse", score=None, fit_seconds=None, seconds=1.0, reused=False)
    line = _stage_line(_event("model_finished", "tcn", 2, error="ValueError: boom", **failed), width=5)
    assert line == "tcn    2 of 3  FAILED: ValueError: boom"
    assert _stage_line(_event("epoch_finished", "tcn", epoch=1, epochs=2, seconds=1.0, label="tcn")) is None
