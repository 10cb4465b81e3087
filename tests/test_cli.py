"""`forecast validate` as a new user runs it: bad files with ETTh1's columns get exit status 2,
one `error: <ErrorName>: ...` line on stderr, no traceback, and the file left untouched."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
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
    assert "'OT'" in line and "row 30" in line and "hot" in line


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
