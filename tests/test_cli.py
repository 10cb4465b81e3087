"""`forecast validate` as a new user runs it: bad files with ETTh1's columns get exit status 2,
one `error: <ErrorName>: ...` line on stderr, no traceback, and the file left untouched; `forecast
leaderboard` found by run id or experiment with no config; `forecast predict` before any champion."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from forecasting.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def etth1() -> pd.DataFrame:
    return pd.read_csv(ROOT / "data" / "ETTh1.csv", dtype=str)


def _write(tmp_path: Path, frame: pd.DataFrame, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _digest(path: Path) -> tuple[str, float]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime


def _breakers() -> dict[str, tuple[str, object]]:
    """name -> (expected error, function breaking a copy of ETTh1's text frame)."""

    def at(df, row, col, value):
        df.loc[row, col] = value
        return df

    return {
        "text_in_target": ("NonNumericValueError", lambda df: at(df, 30, "OT", "hot")),
        "inf_in_covariate": ("NonFiniteValueError", lambda df: at(df, 40, "HUFL", "inf")),
        "huge_last_target": ("ValueOutOfRangeError", lambda df: at(df, len(df) - 1, "OT", "1e308")),
        "huge_in_covariate": ("ValueOutOfRangeError", lambda df: at(df, 41, "HUFL", "-2e35")),
        "nan_in_target": ("MissingValueError", lambda df: at(df, 50, "OT", "")),
        "bad_timestamp": ("TimestampParseError", lambda df: at(df, 60, "date", "not a date")),
        "mixed_formats": ("TimestampParseError", lambda df: at(df, 61, "date", "07/03/2016 13:00")),
        "missing_column": ("CovariateNotFoundError", lambda df: df.drop(columns=["HULL"])),
        "missing_target": ("MissingColumnError", lambda df: df.drop(columns=["OT"])),
        "gap": ("GapError", lambda df: df.drop(index=[100, 101]).reset_index(drop=True)),
        "off_grid": ("IrregularSamplingError", lambda df: at(df, 70, "date", "2016-07-03 22:30:00")),
        "conflicting_duplicate": (
            "DuplicateTimestampError",
            lambda df: pd.concat(
                [df.iloc[:80], df.iloc[[79]].assign(OT="1.0"), df.iloc[80:]], ignore_index=True
            ),
        ),
        "unsorted": (
            "UnsortedTimestampsError",
            lambda df: df.iloc[[*range(0, 10), 11, 10, *range(12, len(df))]],
        ),
        "mixed_timezones": ("MixedTimezoneError", lambda df: at(df, 5, "date", "2016-07-01 05:00:00+02:00")),
        "too_short": ("SeriesTooShortError", lambda df: df.iloc[:500]),
        "constant": ("ConstantSeriesError", lambda df: df.assign(OT="3.0")),
        "stacked_series": (
            "MixedSeriesError",
            lambda df: pd.concat([df, df.assign(OT="2.0")], ignore_index=True),
        ),
    }


@pytest.mark.parametrize("case", sorted(_breakers()))
def test_validate_bad_file_exits_2_with_one_error_line(case, etth1, tmp_path, capsys):
    expected, breaker = _breakers()[case]
    path = _write(tmp_path, breaker(etth1.copy()))
    before = _digest(path)
    code = main(["validate", str(DEMO), "--data", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith(f"error: {expected}: "), err[0]
    assert "Traceback" not in err[0]
    assert _digest(path) == before  # the input is never modified


def test_error_names_the_offending_row_and_column(etth1, tmp_path, capsys):
    path = _write(tmp_path, _breakers()["text_in_target"][1](etth1.copy()))
    assert main(["validate", str(DEMO), "--data", str(path)]) == 2
    line = capsys.readouterr().err
    assert "'OT'" in line and "row 30" in line and "text of 3 characters" in line and "hot" not in line


def test_validate_good_data_prints_summary(capsys):
    assert main(["validate", str(DEMO), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"rows": 17420' in out and '"freq": "h"' in out
    assert '"test": 2976' in out  # 2880 test rows + 96 rows of lookback history


def test_unknown_config_key_is_named(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(DEMO.read_text().replace("  stride: 1", "  stride: 1\n  strid: 2"))
    assert main(["validate", str(cfg), "--data", str(ROOT / "data" / "ETTh1.csv")]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: ConfigError: ") and "window.strid" in line


def test_unknown_model_param_is_named(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(DEMO.read_text().replace("params: {season_length: 24}", "params: {season_lenght: 24}"))
    assert main(["validate", str(cfg)]) == 2
    assert "season_lenght" in capsys.readouterr().err


def test_missing_file_is_named(tmp_path, capsys):
    assert main(["validate", str(DEMO), "--data", str(tmp_path / "nope.csv")]) == 2
    assert capsys.readouterr().err.startswith("error: UnreadableFileError: ")


def test_value_out_of_range_names_column_and_rows(etth1, tmp_path, capsys):
    path = _write(tmp_path, _breakers()["huge_last_target"][1](etth1.copy()))
    assert main(["validate", str(DEMO), "--data", str(path)]) == 2
    line = capsys.readouterr().err
    last = len(etth1) - 1
    assert "column 'OT' of series 'OT' holds values beyond +/-1e+30" in line and f"row {last}" in line


def test_a_non_table_file_is_never_quoted(tmp_path, capsys):
    """``data.path: /etc/passwd`` with ``format: csv``: the error names the configured columns only."""
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:SECRET:/root:/bin/bash\nbin:x:1:1:SECRET2:/bin:/sbin/nologin\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(DEMO.read_text().replace("  path: ../data/ETTh1.csv", f"  path: {secret}\n  format: csv"))
    assert main(["validate", str(cfg)]) == 2
    line = capsys.readouterr().err
    assert line.startswith("error: MissingColumnError: ") and "'date', 'OT' not found" in line
    assert "SECRET" not in line and "root:x" not in line and "nologin" not in line


@pytest.mark.parametrize("kind", ["folder", "device"])
def test_a_data_path_that_is_not_a_file_exits_2(kind, tmp_path, capsys):
    path = tmp_path if kind == "folder" else Path("/dev/zero")
    if not path.exists():
        pytest.skip(f"no {path} here")
    assert main(["validate", str(DEMO), "--data", str(path)]) == 2  # /dev/zero: at once, nothing read
    line = capsys.readouterr().err
    assert line.startswith("error: UnreadableFileError: ") and str(path) in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permission bits")
def test_an_unreadable_data_file_exits_2(etth1, tmp_path, capsys):
    path = _write(tmp_path, etth1.iloc[:10])
    path.chmod(0)
    try:
        assert main(["validate", str(DEMO), "--data", str(path)]) == 2
    finally:
        path.chmod(0o600)
    line = capsys.readouterr().err
    assert line.startswith("error: UnreadableFileError: ") and "Permission denied" in line


def test_season_length_zero_is_refused_with_the_config(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(DEMO.read_text().replace("params: {season_length: 24}", "params: {season_length: 0}"))
    assert main(["validate", str(cfg)]) == 2
    line = capsys.readouterr().err
    assert line.startswith("error: ConfigError: ") and "season_length" in line and "models[1]" in line


def test_value_out_of_range_stops_the_pipeline_before_any_mlflow_run(etth1, tmp_path):
    """`forecast run`'s pipeline ingests before its tracker opens the store: nothing is logged."""
    from forecasting.config import load_config
    from forecasting.errors import ValueOutOfRangeError
    from forecasting.pipeline import run_pipeline

    path = _write(tmp_path, _breakers()["huge_last_target"][1](etth1.copy()))
    db = tmp_path / "mlruns" / "mlflow.db"
    cfg = load_config(DEMO, {"data": {"path": str(path)}, "tracking": {"tracking_uri": f"sqlite:///{db}"}})
    with pytest.raises(ValueOutOfRangeError, match="'OT'"):
        run_pipeline(cfg)
    assert not db.exists()


def test_console_script_in_a_fresh_process(tmp_path, etth1):
    """The installed `forecast` entry point, as a user's shell runs it."""
    path = _write(tmp_path, etth1.iloc[:400])
    exe = Path(sys.executable).with_name("forecast")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    proc = subprocess.run(
        [str(exe), "validate", str(DEMO), "--data", str(path)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: SeriesTooShortError: ")
    assert proc.stdout == ""


@pytest.mark.parametrize(("args", "status"), [(["validate", str(DEMO)], 0), (["validate", "nope.yaml"], 2)])
def test_console_script_exits_with_the_status_after_freezing_the_heap(args, status, tmp_path):
    """`forecast` (forecasting.cli:console_script) exits with main()'s status, the objects alive
    at the command's end frozen (more than after its import alone), so that Python's shutdown does
    not walk them; the exit hooks still run after that."""
    script = (
        "import atexit, gc, sys\n"
        "from forecasting import cli\n"
        "imported = len(gc.get_objects())\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count(), imported, flush=True))\n"
        f"sys.argv = ['forecast', *{args!r}]\n"
        "cli.console_script()\n"
    )
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode == status, proc.stderr
    _, frozen, imported = proc.stdout.strip().splitlines()[-1].split()
    assert int(frozen) > int(imported) > 0  # frozen after the command (pandas, config), not before


def test_spinner_only_on_a_terminal(monkeypatch):
    """No spinner thread when output goes to a file (it would take the GIL from training for
    nothing), 4 redraws a second on a terminal, none with --quiet."""
    import io

    from rich.console import Console
    from rich.status import Status

    from forecasting import cli

    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):  # rich reads these as a terminal
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(cli._state, "quiet", False)
    monkeypatch.setattr(cli, "console", Console(file=io.StringIO()))
    assert not isinstance(cli._status("working"), Status)
    monkeypatch.setattr(cli, "console", Console(file=io.StringIO(), force_terminal=True))
    status = cli._status("working")
    assert isinstance(status, Status)
    assert status._live.refresh_per_second == 4
    monkeypatch.setitem(cli._state, "quiet", True)
    assert not isinstance(cli._status("working"), Status)


def test_tracking_store_is_opened_while_the_api_starts(tmp_path, monkeypatch, mlflow_globals):
    """On a SQLite store the CLI opens the flow's MLflow stores (tracking tables, model registry)
    before the flow, in MLflow's per-URI caches that the flow's tracker then reuses, and writes
    nothing of ours; a server is left to the flow, and so is a store that does not open."""
    import sqlite3

    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from forecasting import tracking
    from forecasting.config import load_config
    from forecasting.tracking import Tracker, open_local_store

    tracking_cache = tracking_utils._tracking_store_registry._get_store_with_resolved_uri
    registry_cache = registry_utils._get_store_registry()._get_store_with_resolved_uri
    db = tmp_path / "ahead.db"
    uri = f"sqlite:///{db}"
    cfg = load_config(DEMO, {"tracking": {"tracking_uri": uri, "experiment": "ahead"}})
    before = (tracking_cache.cache_info().misses, registry_cache.cache_info().misses)
    assert open_local_store(cfg.tracking) is True
    opened = (tracking_cache.cache_info().misses, registry_cache.cache_info().misses)
    assert opened == (before[0] + 1, before[1] + 1)  # one tracking store, one registry store
    with sqlite3.connect(db) as con:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        experiments = [row[0] for row in con.execute("SELECT name FROM experiments")]
        runs = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert {"experiments", "runs", "metrics", "registered_models", "model_versions"} <= tables
    assert experiments == ["Default"] and runs == 0  # MLflow's own default experiment, nothing else

    # (the tracker points MLflow's process-wide URI and experiment here: ``mlflow_globals``)
    Tracker(cfg.tracking).client.search_registered_models()  # what the flow opens
    assert (tracking_cache.cache_info().misses, registry_cache.cache_info().misses) == opened

    opened_with = []
    monkeypatch.setattr(tracking, "MlflowClient", lambda *a, **k: opened_with.append(a))
    server = load_config(DEMO, {"tracking": {"tracking_uri": "http://127.0.0.1:1"}})
    assert open_local_store(server.tracking) is False and opened_with == []
    monkeypatch.undo()
    unopenable = tmp_path / "a-file"
    unopenable.write_text("not a directory")
    broken = load_config(DEMO, {"tracking": {"tracking_uri": f"sqlite:///{unopenable}/store.db"}})
    assert open_local_store(broken.tracking) is False
    assert unopenable.read_text() == "not a directory"


# --- forecast leaderboard ---------------------------------------------------------------------------
def _experiments() -> set[str]:
    from mlflow import MlflowClient

    return {e.name for e in MlflowClient().search_experiments()}


@pytest.fixture(scope="module")
def two_pipelines(tmp_path_factory) -> dict[str, str]:
    """One naive pipeline run in each of two experiments of the session's store (the store
    MLFLOW_TRACKING_URI names, as it would for a user without a config): experiment -> run id."""
    import mlflow
    from test_pipeline import make_config

    from forecasting.pipeline import run_pipeline

    previous = mlflow.get_tracking_uri()
    runs = {}
    for name in ("board-a", "board-b"):
        cfg = make_config(tmp_path_factory.mktemp(name), name, [{"name": "naive"}])
        runs[name] = run_pipeline(cfg, select=False).parent_run_id
    mlflow.set_tracking_uri(previous)
    return runs


def test_leaderboard_of_a_run_id_needs_no_config(two_pipelines, capsys):
    """`--run-id` alone: the run knows its experiment; the output says which one it read, and
    nothing is created in the store (not the demo's experiment, not the default one)."""
    before = _experiments()
    run_id = two_pipelines["board-b"]
    assert main(["leaderboard", "--run-id", run_id, "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert [row["model"] for row in json.loads(out)] == ["naive"]
    assert err.startswith(f"leaderboard of pipeline run {run_id} (experiment 'board-b', store sqlite:")
    assert main(["leaderboard", "--run-id", run_id]) == 0
    table = " ".join(capsys.readouterr().out.split())
    assert run_id in table and "experiment 'board-b'" in table and "naive" in table
    assert _experiments() == before


def test_leaderboard_of_an_experiment_is_its_latest_pipeline_run(two_pipelines, capsys):
    assert main(["leaderboard", "--experiment", "board-a", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("model,") and "naive" in out
    assert two_pipelines["board-a"] in err and "experiment 'board-a'" in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--run-id", "0123456789abcdef0123456789abcdef"], "no run '0123456789abcdef0123456789abcdef'"),
        (["--experiment", "no-such-experiment"], "experiment 'no-such-experiment' does not exist"),
    ],
)
def test_leaderboard_of_nothing_is_a_named_error(two_pipelines, capsys, args, says):
    before = _experiments()
    assert main(["leaderboard", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: NoPipelineRunError: ") and says in err[0], err
    assert _experiments() == before  # the experiment asked for was not created


def test_leaderboard_of_a_model_run_names_its_pipeline_run(two_pipelines, capsys):
    from mlflow import MlflowClient

    parent = two_pipelines["board-a"]
    run = MlflowClient().get_run(parent)
    child = MlflowClient().search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")[0]
    assert main(["leaderboard", "--run-id", child.info.run_id]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: NoPipelineRunError: ") and "is a model run, not a pipeline run" in line
    assert f"--run-id {parent}" in line


# --- forecast predict before any champion ----------------------------------------------------------
def test_predict_before_any_champion_is_one_named_error(tmp_path, capsys, mlflow_globals):
    """A new store (no registered model), then a registered model whose versions hold no
    `champion` alias: exit status 2, one line naming the model and alias and what to do."""
    import yaml
    from mlflow import MlflowClient
    from test_pipeline import raw_config

    raw = raw_config(tmp_path, "predict-first", [{"name": "naive"}])
    db = tmp_path / "store" / "mlflow.db"
    raw["tracking"]["tracking_uri"] = f"sqlite:///{db}"
    config = tmp_path / "predict-first.yaml"
    config.write_text(yaml.safe_dump(raw))
    output = tmp_path / "forecast.parquet"
    client = MlflowClient(f"sqlite:///{db}")
    client.search_experiments()  # a new, empty store (its tables made here: MLflow logs that)
    capsys.readouterr()

    assert main(["predict", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: NoChampionError: "), err
    assert "no model is registered as 'predict-first-model'" in err[0] and "forecast run" in err[0]

    client.create_registered_model("predict-first-model")
    assert main(["predict", "--config", str(config), "--model", "predict-first-model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: NoChampionError: "), err
    assert "'predict-first-model' has no version with alias 'champion' (its aliases: none)" in err[0]
    assert not output.exists()


# --- forecast ui -------------------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, ...; None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...)."""
    parent = {}
    for entry in Path("/proc").iterdir():
        fields = _stat_fields(int(entry.name)) if entry.name.isdigit() else None
        if fields and fields[0] != "Z":
            parent[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ui_stops_with_all_its_children(sig, tmp_path):
    """SIGINT or SIGTERM to `forecast ui` stops the MLflow server and every worker it started."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",  # a throwaway store
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    exe = Path(sys.executable).with_name("forecast")
    log = open(tmp_path / "ui.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [str(exe), "ui", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    children: dict[int, str] = {}  # pid -> start time (/proc stat field 22)
    try:
        deadline = time.monotonic() + 120
        while not _answers(port):
            assert proc.poll() is None, (tmp_path / "ui.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the UI did not answer within 120 s"
            time.sleep(0.3)
        # `mlflow ui`, its server and the server's workers
        children = {p: f[19] for p in _descendants(proc.pid) if (f := _stat_fields(p))}
        assert len(children) >= 2, children
        proc.send_signal(sig)  # to the `forecast` process only, as `kill -INT <pid>` does
        proc.wait(timeout=15)
        deadline = time.monotonic() + 15
        while any(map(_alive, children)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in children if _alive(p)], "processes of the UI outlived `forecast ui`"
        assert not _answers(port)
        assert proc.returncode == (130 if sig == signal.SIGINT else 143)
    finally:
        for pid, started in children.items():  # whatever is left, by its id (this test started it)
            fields = _stat_fields(pid)
            if fields and fields[19] == started:  # the same process, not a reused id
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_an_unchanged_champion_is_reported_as_such(capsys):
    """A retrain of the same config, data and code registers nothing; the last line says so
    instead of 'registered ... -> alias unchanged'."""
    from forecasting.cli import _report

    row = {"model": "ar", "status": "FINISHED", "val_mse": 0.1, "test_mse": 0.2, "fit_seconds": 1.0}
    decision = {
        "model": "ar",
        "version": "3",
        "alias": "unchanged",
        "candidate_score": 9.4,
        "incumbent_version": "3",
        "incumbent_score": 9.4,
    }
    _report({"leaderboard": [row], "decision": decision})
    out = " ".join(capsys.readouterr().out.split())
    assert "champion unchanged: ar version 3 was trained on this config, data and code already" in out
    assert "registered ar" not in out


# --- forecast monitor ------------------------------------------------------------------------------
@pytest.mark.slow
def test_monitor_scores_the_archive_and_names_a_missing_champion(
    tmp_path, capsys, prefect_harness, mlflow_globals
):
    """`forecast monitor` on a new store is one named error; after a run and a prediction whose
    hours then arrive, it prints each version's rolling accuracy against the backtest's."""
    import yaml
    from mlflow import MlflowClient
    from test_pipeline import raw_config, synthetic_csv

    from forecasting.config import load_config
    from forecasting.pipeline import batch_predict, run_pipeline

    raw = raw_config(tmp_path, "watched", [{"name": "naive"}])
    raw["tracking"]["tracking_uri"] = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    config = tmp_path / "watched.yaml"
    config.write_text(yaml.safe_dump(raw))
    MlflowClient(raw["tracking"]["tracking_uri"]).search_experiments()  # a new store (MLflow logs that)
    capsys.readouterr()
    assert main(["monitor", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: NoChampionError: nothing to monitor"), err

    cfg = load_config(config)
    run_pipeline(cfg)
    batch_predict(cfg)  # the 12 hours after the data, archived
    synthetic_csv(tmp_path / "arrived.csv", n=512)
    assert main(["monitor", str(config), "--actuals", str(tmp_path / "arrived.csv")]) == 0
    out = capsys.readouterr().out
    assert "monitoring watched-model" in out and "scored 36 forecasts; no rule fired" in out
