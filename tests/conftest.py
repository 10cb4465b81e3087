"""Shared fixtures: small synthetic series with known answers, and a sandboxed environment.

Nothing a test does may write into the user's home: Prefect, MLflow and matplotlib are pointed at
temporary folders before any of them is imported.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SANDBOX = Path(tempfile.mkdtemp(prefix="forecasting-tests-"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ["PREFECT_HOME"] = str(_SANDBOX / "prefect")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ["MPLCONFIGDIR"] = str(_SANDBOX / "matplotlib")
os.environ["MPLBACKEND"] = "Agg"
# One throwaway MLflow store for the session; tests that need their own set their own.
(_SANDBOX / "mlruns").mkdir()
MLFLOW_URI = f"sqlite:///{_SANDBOX / 'mlruns' / 'mlflow.db'}"
os.environ["MLFLOW_TRACKING_URI"] = MLFLOW_URI
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import sys  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT / "data" / "ETTh1.csv"


def _torch_threads() -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


_torch_threads()


def make_frame(
    y: np.ndarray, series_id: str = "s0", start: str = "2024-01-01", freq: str = "h", **covariates: np.ndarray
) -> pd.DataFrame:
    """A canonical frame for one series."""
    t = pd.date_range(start, periods=len(y), freq=freq)
    data = {"series_id": series_id, "t": t, "y": np.asarray(y, dtype=np.float64)}
    data.update({k: np.asarray(v, dtype=np.float64) for k, v in covariates.items()})
    return pd.DataFrame(data)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def sine_frame(rng: np.random.Generator) -> pd.DataFrame:
    """Three noisy sines of period 24 with different phases and levels (learnable, not naive)."""
    n = 600
    parts = []
    for k in range(3):
        t = np.arange(n)
        y = 2.0 * np.sin(2 * np.pi * t / 24 + k) + 0.5 * k + 0.1 * rng.standard_normal(n)
        parts.append(make_frame(y, series_id=f"s{k}"))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture
def ar2_frame(rng: np.random.Generator) -> pd.DataFrame:
    """One AR(2) series: y_t = 0.5 + 0.6 y_{t-1} - 0.3 y_{t-2} + e_t, e ~ N(0, 0.1^2)."""
    n = 3000
    y = np.zeros(n)
    e = 0.1 * rng.standard_normal(n)
    for i in range(2, n):
        y[i] = 0.5 + 0.6 * y[i - 1] - 0.3 * y[i - 2] + e[i]
    return make_frame(y[200:])


@pytest.fixture
def gap_frame() -> pd.DataFrame:
    """An hourly series with three missing hours."""
    frame = make_frame(np.sin(np.arange(200) / 5.0))
    return frame.drop(index=[50, 51, 120]).reset_index(drop=True)


@pytest.fixture
def etth1_path() -> Path:
    return ETTH1


@pytest.fixture(autouse=True)
def no_run_left_open():
    """Fail any test that leaves an MLflow run active or RUNNING in the session store."""
    yield
    if "mlflow" not in sys.modules:
        return
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        mlflow.end_run("KILLED")
        pytest.fail(f"test left MLflow run {active.info.run_id} active")
    if not (_SANDBOX / "mlruns" / "mlflow.db").exists():
        return
    client = mlflow.MlflowClient(MLFLOW_URI)
    experiments = [e.experiment_id for e in client.search_experiments()]
    running = (
        client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'") if experiments else []
    )
    if running:
        for run in running:
            client.set_terminated(run.info.run_id, "KILLED")
        pytest.fail(f"test left {len(running)} MLflow run(s) RUNNING: {[r.info.run_name for r in running]}")


@pytest.fixture
def mlflow_globals(monkeypatch):
    """Put back MLflow's process-wide tracking URI and active experiment (the global and
    ``MLFLOW_EXPERIMENT_ID``) after a test whose ``Tracker`` pointed them at its own store."""
    import mlflow
    from mlflow.tracking import fluent

    monkeypatch.setattr(fluent, "_active_experiment_id", fluent._active_experiment_id)
    if "MLFLOW_EXPERIMENT_ID" in os.environ:
        monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", os.environ["MLFLOW_EXPERIMENT_ID"])
    else:
        monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    previous = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test API for the whole session (it takes seconds to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
