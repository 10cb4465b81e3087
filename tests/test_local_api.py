"""The local Prefect API the CLI starts for its flows: only when no API is configured, recorded
runs in the same database as Prefect's ephemeral mode, and never left running."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_pipeline import raw_config

from flows.local_api import _prefect_server_command, api_configured

FORECAST = Path(sys.executable).with_name("forecast")


@pytest.fixture
def no_prefect_env(monkeypatch, tmp_path):
    for key in ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "cwd").mkdir()
    return tmp_path


def test_nothing_configured(no_prefect_env):
    assert api_configured(no_prefect_env / "cwd") is False


@pytest.mark.parametrize(
    "where",
    ["env", "profile", "prefect.toml", "pyproject.toml", ".env"],
)
def test_each_settings_source_counts(where, no_prefect_env, monkeypatch):
    cwd, home, url = no_prefect_env / "cwd", no_prefect_env / "home", "http://10.0.0.5:4200/api"
    if where == "env":
        monkeypatch.setenv("PREFECT_API_URL", url)
    elif where == "profile":
        (home / "profiles.toml").write_text(f'active = "team"\n[profiles.team]\nPREFECT_API_URL = "{url}"\n')
    elif where == "prefect.toml":
        (cwd / "prefect.toml").write_text(f'[api]\nurl = "{url}"\n')
    elif where == "pyproject.toml":
        (cwd / "pyproject.toml").write_text(f'[tool.prefect.api]\nurl = "{url}"\n')
    else:
        (cwd / ".env").write_text(f"OTHER=1\nexport PREFECT_API_URL='{url}'\n")
    assert api_configured(cwd) is True


def test_inactive_profile_does_not_count(no_prefect_env):
    (no_prefect_env / "home" / "profiles.toml").write_text(
        'active = "local"\n[profiles.local]\n[profiles.team]\nPREFECT_API_URL = "http://x/api"\n'
    )
    assert api_configured(no_prefect_env / "cwd") is False


def _config(tmp_path: Path, models: list[dict], training: dict) -> Path:
    raw = raw_config(tmp_path, "local-api", models)
    raw["training"].update(training)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    return env


def _servers_of(prefect_home: Path) -> list[int]:
    """PIDs of live processes running Prefect's API app with this PREFECT_HOME."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().split(") ")[-1][:1]
        except OSError:
            continue
        ours = f"PREFECT_HOME={prefect_home}".encode() in environ.split(b"\0")
        if ours and b"prefect.server.api.server:create_app" in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_cli_flow_runs_on_local_api_and_stops_it(tmp_path):
    cfg = _config(tmp_path, [{"name": "naive"}, {"name": "linear"}], {"epochs": 1})
    proc = subprocess.run(
        [str(FORECAST), "--quiet", "run", str(cfg), "--no-predict"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Error logging to API" not in proc.stderr
    home = tmp_path / "prefect"
    assert (home / "logs" / "local-api.log").exists()
    assert _servers_of(home) == []  # stopped with the command
    # the runs went into Prefect's database under PREFECT_HOME, as in ephemeral mode
    with sqlite3.connect(home / "prefect.db") as db:
        flows = {
            name for (name,) in db.execute("SELECT f.name FROM flow_run r JOIN flow f ON r.flow_id = f.id")
        }
        states = dict(db.execute("SELECT name, state_type FROM task_run"))
    assert {"forecast_pipeline", "train-models"} <= flows
    assert states.get("train-naive") == "COMPLETED" and states.get("train-linear") == "COMPLETED", states


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_exits_when_the_command_is_killed(tmp_path):
    """SIGKILL leaves no chance to clean up: the server is told by the kernel to exit."""
    cfg = _config(tmp_path, [{"name": "lstm"}], {"epochs": 500, "patience": None})
    home = tmp_path / "prefect"
    proc = subprocess.Popen(
        [str(FORECAST), "--quiet", "run", str(cfg), "--no-predict"],
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not _servers_of(home) and time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(0.2)
        servers = _servers_of(home)
        assert servers, "the local API never started"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _servers_of(home) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _servers_of(home) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _servers_of(home):
            os.kill(pid, signal.SIGKILL)


def test_without_heartbeats_turns_them_off_only_inside():
    from prefect.settings import get_current_settings

    from flows.local_api import without_heartbeats

    before = get_current_settings().flows.heartbeat_frequency
    assert before is not None  # Prefect's default: on
    inside = without_heartbeats(lambda x: (x, get_current_settings().flows.heartbeat_frequency))
    assert inside(7) == (7, None)
    assert get_current_settings().flows.heartbeat_frequency == before


def test_server_command_is_the_one_prefects_ephemeral_mode_runs(monkeypatch):
    """Pins the private parts of Prefect that ``_prefect_server_command`` copies: the command and
    environment Prefect's own ``SubprocessASGIServer`` starts (captured, not started), with
    ``--fd`` for its ``--host``/``--port``, and the app factory reading those variables. A Prefect
    upgrade that changes any of them fails here, not in a user's first flow."""
    import inspect

    import prefect
    from prefect.server.api import server

    started: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(
        server.subprocess, "Popen", lambda args, env, **kwargs: started.append((list(args), env))
    )
    port = 4999
    prefects = server.SubprocessASGIServer(port)
    try:
        prefects._run_uvicorn_command()
    finally:
        server.SubprocessASGIServer._instances.pop(port, None)
    ((their_argv, their_env),) = started

    ours, our_env = _prefect_server_command(Path(prefect.__file__).parent, 7)
    at = their_argv.index("--host")
    assert their_argv[at : at + 4] == ["--host", "127.0.0.1", "--port", str(port)]
    assert ours == [*their_argv[:at], "--fd", "7", *their_argv[at + 4 :]]
    assert {key: their_env.get(key) for key in our_env} == our_env

    # the factory uvicorn is told to call, and the variables it reads
    assert callable(server.create_app)
    assert {"ephemeral", "final"} <= set(inspect.signature(server.create_app).parameters)
    source = inspect.getsource(server.create_app)
    assert 'os.getenv("PREFECT__SERVER_EPHEMERAL")' in source
    assert 'os.getenv("PREFECT__SERVER_FINAL")' in source


def test_uvicorn_serves_on_a_handed_over_socket():
    """``--fd`` (the bound socket handed to the server, so no other process can take its port)
    is an option of the installed uvicorn's command line."""
    from uvicorn.main import main

    assert "fd" in {param.name for param in main.params}
