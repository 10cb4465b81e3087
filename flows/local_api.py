"""Prefect's local API for one CLI command, started before the command's imports.

With no API configured, Prefect starts an ephemeral API server when the first flow begins: the
flow waits while the client imports Prefect's server package (~3 s) and the server process
starts (~4 s on an existing database, ~10 s on a new one, which also runs the migrations).
``start()`` launches the same server process as soon as the command has checked its config,
so its start-up runs beside the command's own imports (torch, pandas, mlflow, prefect) on the
other core; ``LocalAPI.wait()`` blocks until ``/api/health`` answers, just before the flow.

It is exactly what Prefect's ephemeral mode runs (``SubprocessASGIServer`` in
``prefect/server/api/server.py``: uvicorn on ``prefect.server.api.server:create_app`` with the
ephemeral services and no UI) on a free port of 127.0.0.1 (the bound socket is handed over),
against the same database under ``PREFECT_HOME``, so flow and task runs are recorded as before.
Prefect offers no public form of that command (see ``_prefect_server_command``, the one place
that names Prefect's private parts; ``tests/test_local_api.py`` pins them to the installed Prefect).
The process is this command's child, stopped at interpreter exit (also after Ctrl-C/SIGTERM) by
an ``atexit`` hook registered before Prefect is imported, so it runs after Prefect's own exit
hooks have flushed their logs and events to it; on Linux the child is also told to exit if the
command dies without cleaning up.

Nothing is started when an API is configured (``PREFECT_API_URL`` in the environment, the
active profile, ``prefect.toml``, ``pyproject.toml`` or ``.env``): Prefect then talks to that one.
``FORECAST_LOCAL_API=0`` leaves the start-up to Prefect's own ephemeral mode.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forecasting.errors import ForecastingError

_STARTED: list[LocalAPI] = []
# Loopback needs no proxy; an HTTP(S)_PROXY in the environment must not swallow the health check.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LocalAPIError(ForecastingError):
    """The local Prefect API did not come up (its log says why)."""


class LocalAPI:
    """A running (or starting) local Prefect API server process."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.process = process
        self.url = url
        self.log_path = log_path

    def wait(self, timeout: float | None = None) -> None:
        """Block until the API answers its health check; raise ``LocalAPIError`` if it exits or
        does not answer within ``timeout`` seconds (default: Prefect's own start-up limit,
        ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``, which the CLI sets to 90)."""
        if timeout is None:
            timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise LocalAPIError(
                    f"the local Prefect API exited with status {code} before answering; see {self.log_path}"
                )
            try:
                with _NO_PROXY.open(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise LocalAPIError(
            f"the local Prefect API did not answer within {timeout:.0f} s; see {self.log_path}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self in _STARTED:
            _STARTED.remove(self)


def api_configured(cwd: Path | None = None) -> bool:
    """Whether Prefect would talk to a configured API (so no local one should be started).

    Reads the settings sources Prefect reads, without importing Prefect (importing it fixes its
    settings for the process, and takes a second).
    """
    if os.environ.get("PREFECT_API_URL"):
        return True
    cwd = cwd or Path.cwd()
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    profiles_path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    profiles = _read_toml(profiles_path)
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    if profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL"):
        return True
    if _read_toml(cwd / "prefect.toml").get("api", {}).get("url"):
        return True
    if _read_toml(cwd / "pyproject.toml").get("tool", {}).get("prefect", {}).get("api", {}).get("url"):
        return True
    dotenv = cwd / ".env"
    if dotenv.is_file():
        for line in dotenv.read_text(errors="replace").splitlines():
            key, _, value = line.strip().removeprefix("export ").partition("=")
            if key.strip() == "PREFECT_API_URL" and value.strip().strip("'\""):
                return True
    return False


def _read_toml(path: Path) -> dict:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the `toml` package Prefect itself depends on
        import toml

        try:
            return toml.loads(text)
        except toml.TomlDecodeError:
            return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}


def _listening_socket() -> socket.socket:
    """A socket bound to a free port on 127.0.0.1, handed to the server (no port race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:  # runs in the child between fork and exec (Linux only)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# --- Prefect's private parts: the one place that names them --------------------------------------
def _prefect_server_command(prefect_dir: Path, fd: int) -> tuple[list[str], dict[str, str]]:
    """(argv, environment additions) of the server process Prefect's ephemeral mode starts, serving
    on the listening socket ``fd``; ``prefect_dir`` is the installed ``prefect`` package's folder.

    Copied from ``SubprocessASGIServer._run_uvicorn_command`` (``prefect/server/api/server.py``),
    with ``--fd`` for its ``--host``/``--port``. It relies on these private parts of Prefect:

    - ``prefect.server.api.server:create_app``, the app factory uvicorn calls;
    - ``PREFECT__SERVER_EPHEMERAL=1``: ``create_app`` runs the services an ephemeral server runs
      (``RunInEphemeralServers``: the task-run recorder, the event persister...), not all of them;
    - ``PREFECT__SERVER_FINAL=1``: ``create_app`` may apply its last-instance optimisations.

    No public way starts the same process without importing Prefect first (the point here is not
    to): ``prefect server start`` imports Prefect and its CLI in the child, binds its own port (no
    hand-over), and runs either every service (the scheduler, late runs...) or, with
    ``--no-services``, none of the ephemeral ones (task runs would not be recorded);
    ``SubprocessASGIServer`` must be imported and blocks until the server answers.
    """
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(prefect_dir.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--fd",
        str(fd),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    return argv, env


# ---------------------------------------------------------------------------------------------------
def start() -> LocalAPI | None:
    """Start the local API and point this process's Prefect client at it (``PREFECT_API_URL``);
    ``None`` when an API is configured or ``FORECAST_LOCAL_API=0``. Call before importing Prefect."""
    if os.environ.get("FORECAST_LOCAL_API", "1").lower() in ("0", "false", "no") or api_configured():
        return None
    if "prefect" in sys.modules:  # too late: Prefect has read its settings already
        return None
    import importlib.util

    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        return None
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    log_path = home / "logs" / "local-api.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sock = _listening_socket()
    port = sock.getsockname()[1]
    argv, server_env = _prefect_server_command(Path(spec.origin).parent, sock.fileno())
    with sock, open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            env={**os.environ, **server_env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(sock.fileno(),),
            start_new_session=True,  # a terminal's Ctrl-C reaches the command, which winds down first
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    api = LocalAPI(process, f"http://127.0.0.1:{port}/api", log_path)
    os.environ["PREFECT_API_URL"] = api.url
    _STARTED.append(api)
    return api


def without_heartbeats(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with Prefect's flow-run heartbeats off (in the calling thread's settings context).

    Heartbeats let a long-lived server's automations mark runs whose process died. Left on, every
    flow run waits ~1 s at its end for its heartbeat thread to wake from a one-second sleep
    (measured: an empty flow takes 1.35 s with heartbeats, 0.40 s without). They are off for
    every flow run of a command on its own local API (it lives and dies with the command: nothing
    reads them) and, with a server, for the subflows (``train-models``, ``batch-predict-run``,
    ``tune-trials``): they run in their parent's process and thread, so the parent's heartbeats
    already say whether that process lives. An automation that marks silent flow runs crashed
    therefore sees the parent only: a subflow of a killed process stays ``Running`` until
    something ends it (a rerun that adopts a dead pipeline run ends its open subflow runs
    ``Crashed``, ``flows.pipeline._mark_crashed``; a killed ``batch_predict`` or ``tune`` run's
    subflow has no such step).
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        from prefect.settings import temporary_settings

        with temporary_settings(updates={"flows.heartbeat_frequency": None}):
            return fn(*args, **kwargs)

    return call


def stop_all() -> None:
    """Stop every local API this process started (idempotent). Registered with ``atexit`` when
    this module is imported, before Prefect, so it runs after Prefect's exit hooks."""
    for api in list(_STARTED):
        api.stop()


atexit.register(stop_all)
