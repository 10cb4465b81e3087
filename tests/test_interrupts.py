"""A pipeline stopped by SIGTERM (a scheduler killing it) or Ctrl-C leaves its MLflow runs
KILLED, never RUNNING, and exits non-zero."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from test_pipeline import synthetic_csv

pytestmark = pytest.mark.slow


def _config(tmp_path: Path) -> Path:
    synthetic_csv(tmp_path / "sales.csv", n=2000)
    raw = {
        "data": {
            "path": str(tmp_path / "sales.csv"),
            "time_column": "ts",
            "target": "sales",
            "id_column": "store",
        },
        "split": {"method": "fractions", "train_fraction": 0.6, "test_fraction": 0.2},
        "window": {"lookback": 96, "horizon": 24},
        # Long enough to be interrupted mid-training.
        "models": [{"name": "lstm", "params": {"hidden": 128}}],
        "training": {"epochs": 500, "patience": None, "batch_size": 32, "progress": False},
        "tracking": {"experiment": "interrupted"},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_runs_killed(sig, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PREFECT_HOME": str(tmp_path / "prefect")}
    exe = Path(sys.executable).with_name("forecast")
    proc = subprocess.Popen(
        [str(exe), "run", str(_config(tmp_path)), "--no-predict"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = MlflowClient(uri)
    deadline = time.monotonic() + 420  # Prefect start-up + first epoch on a busy machine
    child = None
    while time.monotonic() < deadline and child is None:
        time.sleep(1)
        assert proc.poll() is None, proc.communicate()
        exp = client.get_experiment_by_name("interrupted") if (tmp_path / "mlflow.db").exists() else None
        if exp is not None:
            runs = client.search_runs([exp.experiment_id], "tags.role = 'model'")
            # Wait until training has logged at least one epoch.
            if runs and client.get_metric_history(runs[0].info.run_id, "train_loss"):
                child = runs[0]
    assert child is not None, "training never started"
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=200)
    assert proc.returncode != 0
    assert "Traceback" not in err and "Logging error" not in err
    runs = client.search_runs([child.info.experiment_id])
    statuses = {r.data.tags["role"]: r.info.status for r in runs}
    assert statuses == {"pipeline": "KILLED", "model": "KILLED"}, (statuses, err[-2000:])
    assert {r.info.run_name for r in runs if r.data.tags["role"] == "model"} == {"lstm"}
