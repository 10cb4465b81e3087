"""Real servers on loopback for tests: an MLflow tracking server, a PostgreSQL database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_DSN = os.environ.get("FORECAST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started in its own process group, by PID."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server, dropped afterwards. Yields its URL."""
    import psycopg2

    name = f"forecast_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG_DSN)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        base = PG_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
        yield f"{base}/{name}"  # SQLAlchemy 2.1 would pick psycopg 3 for a bare postgresql://
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, log: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 with one worker; yields its http:// URI."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        str(bin_dir / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=120, proc=proc)
        yield f"http://127.0.0.1:{port}"
    except (RuntimeError, TimeoutError) as err:
        raise RuntimeError(f"{err}; server log:\n{log.read_text()[-3000:]}") from None
    finally:
        stop(proc)


def start_forecast_ui(tracking_uri: str, log: Path) -> tuple[subprocess.Popen, str]:
    """`forecast ui` on a free loopback port over ``tracking_uri``, in its own process group.

    Returns (process, base URL); stop it with ``stop(process)``.
    """
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    cmd = [str(bin_dir / "forecast"), "ui", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health", timeout=120, proc=proc)
    except (RuntimeError, TimeoutError) as err:
        stop(proc)
        raise RuntimeError(f"{err}; log:\n{log.read_text()[-3000:]}") from None
    return proc, base


# Debian's Chromium and chromedriver (apt-get install chromium chromium-driver): no downloads.
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_driver(profile: str, *flags: str):
    """A Selenium driver for headless Debian Chromium with the profile folder ``profile`` and
    ``flags`` on top of ``CHROMIUM_FLAGS``. The explicit driver path and SE_OFFLINE keep Selenium
    Manager from ever fetching a browser or a driver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, *flags, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@contextmanager
def models_serve(
    argv: list[str], port: int, env: dict[str, str], log: Path, cwd: Path | None = None
) -> Iterator[str]:
    """``mlflow models serve`` (``argv``, already naming ``port`` on 127.0.0.1) in its own process
    group; yields its base URL once ``/ping`` answers, and stops the whole group afterwards."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        base = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_http(f"{base}/ping", 120, proc)
            except (RuntimeError, TimeoutError) as err:
                raise RuntimeError(f"{err}; server log:\n{log.read_text()[-3000:]}") from None
            yield base
        finally:
            stop(proc)


@contextmanager
def prefect_server(database_url: str, home: Path, log: Path) -> Iterator[str]:
    """``prefect server start`` on 127.0.0.1 (every service, no UI) over ``database_url``
    (``sqlite+aiosqlite:///...`` or ``postgresql+asyncpg://...``), with ``PREFECT_HOME`` at ``home``;
    yields its API URL (``http://127.0.0.1:PORT/api``) and stops the server's process group."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
    }
    env.pop("PREFECT_API_URL", None)
    cmd = [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        try:
            wait_http(f"{api}/health", timeout=120, proc=proc)
        except (RuntimeError, TimeoutError) as err:
            raise RuntimeError(f"{err}; server log:\n{log.read_text()[-3000:]}") from None
        yield api
    finally:
        stop(proc)
