"""The fault-injection suite: real ``forecast`` processes on real stores, killed with SIGKILL at
chosen places (``forecasting/faults.py``), started together on a new store, pointed at a
tracking server that is not there, and fed tampered files. ``docs/reliability.md`` records what
each case is expected to do and what it did.

Each test prints one ``observed:`` line (run pytest with ``-s`` to see them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from servers import free_port, postgres_database
from test_pipeline import synthetic_csv

pytestmark = pytest.mark.slow

FORECAST = Path(sys.executable).with_name("forecast")
EXPERIMENT = "faults"
MODEL = "faults-model"
MODELS = [
    {"name": "naive"},
    {"name": "ar"},
    {"name": "lstm", "params": {"hidden": 16}},
    {"name": "ensemble"},
]


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fault-data") / "sales.csv"
    synthetic_csv(path, n=600)
    return path


def _config(folder: Path, data: Path, models: list[dict] | None = None) -> Path:
    raw = {
        "data": {"path": str(data), "time_column": "ts", "target": "sales", "id_column": "store"},
        "split": {"method": "fractions", "train_fraction": 0.6, "test_fraction": 0.2},
        "window": {"lookback": 48, "horizon": 12},
        "models": models or MODELS,
        "training": {"epochs": 4, "patience": None, "batch_size": 64, "progress": False},
        "tracking": {"experiment": EXPERIMENT, "registered_model": MODEL},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _forecast(
    *args: str, store: str, folder: Path, failpoint: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``forecast ARGS`` in its own session; whatever it leaves running is killed afterwards."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PREFECT_HOME": str(folder / "prefect")}
    env.pop("FORECAST_FAILPOINT", None)
    if failpoint:
        env["FORECAST_FAILPOINT"] = failpoint
    proc = subprocess.Popen(
        [str(FORECAST), "--quiet", *args],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # e.g. Prefect's API server of a killed command
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _runs(store: str) -> list:
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def _name(run) -> str:
    """A model's run name, ``pipeline`` for the pipeline run (named for its experiment and time)."""
    return "pipeline" if run.data.tags.get("role") == "pipeline" else run.info.run_name


def _outcome(store: str) -> dict:
    """What a finished pipeline left in the store, in the terms the suite compares."""
    client = MlflowClient(store)
    runs = _runs(store)
    parents = [r for r in runs if r.data.tags.get("role") == "pipeline"]
    children = [r for r in runs if r.data.tags.get("role") in ("model", "refit")]
    names = [r.info.run_name for r in children]
    versions = client.search_model_versions(f"name = '{MODEL}'")
    champion = client.get_model_version_by_alias(MODEL, "champion")
    return {
        "running": [_name(r) for r in runs if r.info.status == "RUNNING"],
        "parents": len(parents),
        "duplicates": sorted({n for n in names if names.count(n) > 1}),
        "statuses": {r.info.run_name: r.info.status for r in children},
        "versions": len(versions),
        "champion_family": champion.tags.get("model_family"),
        "val_mse": {
            r.info.run_name: r.data.metrics["val_mse"] for r in children if "val_mse" in r.data.metrics
        },
        "lstm_epochs": [
            m.step
            for r in children
            if r.info.run_name == "lstm"
            for m in client.get_metric_history(r.info.run_id, "train_loss")
        ],
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_csv) -> dict:
    """The same pipeline, never interrupted."""
    folder = tmp_path_factory.mktemp("fault-reference")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    done = _forecast("run", str(_config(folder, data_csv)), "--no-predict", store=store, folder=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return _outcome(store)


def _flow_run_states(prefect_home: Path) -> dict[str, str]:
    """Every flow run's state name, read from the Prefect database the command's local API used
    (the API is gone with the command)."""
    import sqlite3

    con = sqlite3.connect(prefect_home / "prefect.db")
    try:
        return dict(con.execute("SELECT id, state_name FROM flow_run").fetchall())
    finally:
        con.close()


def _sqlite(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.mark.parametrize(
    ("point", "backend"),
    [("ingest", "sqlite"), ("epoch@2", "sqlite"), ("select", "sqlite"), ("epoch@2", "postgresql")],
)
def test_kill_9_then_rerun_finishes_the_same_work_once(point, backend, tmp_path, data_csv, reference):
    """SIGKILL while ingesting, mid-training (after the lstm's second epoch) or in the champion
    step, then the same command again: nothing RUNNING, one pipeline run, one run per model, one
    registered version, and the champion and every score of an uninterrupted run."""
    with (
        postgres_database() if backend == "postgresql" else contextlib.nullcontext(_sqlite(tmp_path)) as store
    ):
        cfg = str(_config(tmp_path, data_csv))
        killed = _forecast("run", cfg, "--no-predict", store=store, folder=tmp_path, failpoint=point)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        left = [_name(r) for r in _runs(store) if r.info.status == "RUNNING"]
        flow_runs = [r.data.tags.get("prefect_flow_run_id") for r in _runs(store) if _name(r) == "pipeline"]
        if point != "ingest":
            assert "pipeline" in left  # what kill -9 leaves behind
        rerun = _forecast("run", cfg, "--no-predict", store=store, folder=tmp_path)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        outcome = _outcome(store)
    if flow_runs:  # the killed command's Prefect flow runs are ended, not left Running for good
        states = _flow_run_states(tmp_path / "prefect")
        assert states[flow_runs[0]] == "Crashed"
        assert "Running" not in states.values(), states
    assert outcome["running"] == []
    assert outcome["parents"] == 1
    assert outcome["duplicates"] == []
    assert set(outcome["statuses"].values()) == {"FINISHED"}
    assert outcome["versions"] == 1
    assert outcome["champion_family"] == reference["champion_family"]
    assert outcome["val_mse"] == pytest.approx(reference["val_mse"], rel=1e-9)
    assert outcome["lstm_epochs"] == [1, 2, 3, 4]  # resumed in its own run, every epoch once
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())
    print(f"observed: kill -9 at {point} on {backend}: left RUNNING {left}; after rerun {outcome}")


def test_four_first_runs_at_once_on_a_new_store_all_succeed(tmp_path, data_csv):
    """Four ``forecast run`` started together on a store that does not exist yet."""
    store = _sqlite(tmp_path)
    cfg = str(_config(tmp_path, data_csv, models=[{"name": "naive"}, {"name": "ar"}]))
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    env.pop("FORECAST_FAILPOINT", None)
    procs = [
        subprocess.Popen(
            [str(FORECAST), "--quiet", "run", cfg, "--no-predict"],
            cwd=tmp_path,
            env={**env, "PREFECT_HOME": str(tmp_path / f"prefect-{i}")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for i in range(4)
    ]
    outcomes = [p.communicate(timeout=600) for p in procs]
    codes = [p.returncode for p in procs]
    assert codes == [0, 0, 0, 0], [err[-1500:] for _, err in outcomes]
    runs = _runs(store)
    parents = [r for r in runs if r.data.tags.get("role") == "pipeline"]
    assert [r.info.status for r in parents] == ["FINISHED"] * 4
    assert all(r.info.status == "FINISHED" for r in runs)
    print(f"observed: 4 first runs at once: exit codes {codes}, {len(parents)} pipeline runs FINISHED")


def test_an_unreachable_tracking_server_is_a_named_error_before_any_work(tmp_path, data_csv):
    store = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    done = _forecast("run", str(_config(tmp_path, data_csv)), store=store, folder=tmp_path)
    seconds = time.monotonic() - start
    assert done.returncode == 1
    assert "TrackingUnavailableError" in done.stderr and store in done.stderr
    assert "Traceback" not in done.stderr
    print(f"observed: tracking unreachable: exit 1 after {seconds:.1f} s: {done.stderr.strip()[-200:]}")


# A pickle that runs a shell command when unpickled (the classic protocol-0 form, written by hand).
def _hostile_pickle(marker: Path) -> bytes:
    return f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()


def test_a_tampered_checkpoint_is_refused_and_runs_nothing(tmp_path, data_csv):
    """kill -9 mid-training, then the lstm's checkpoint is replaced by a hostile pickle: the
    rerun refuses it (torch ``weights_only``), the lstm run fails with a named error, the others
    finish, and the command in the pickle never runs."""
    store = _sqlite(tmp_path)
    cfg = str(_config(tmp_path, data_csv))
    killed = _forecast("run", cfg, "--no-predict", store=store, folder=tmp_path, failpoint="epoch@2")
    assert killed.returncode == -signal.SIGKILL
    (checkpoint,) = (tmp_path / "checkpoints").rglob("*.pt")
    marker = tmp_path / "executed"
    checkpoint.write_bytes(_hostile_pickle(marker))
    rerun = _forecast("run", cfg, "--no-predict", store=store, folder=tmp_path)
    assert not marker.exists()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    lstm = next(r for r in _runs(store) if r.info.run_name == "lstm")
    assert lstm.info.status == "FAILED"
    assert lstm.data.tags["error"].startswith("ModelLoadError: checkpoint")
    assert [r.info.status for r in _runs(store)].count("RUNNING") == 0
    print(f"observed: tampered checkpoint: lstm FAILED ({lstm.data.tags['error'][:80]}...), marker absent")


def test_a_hostile_file_in_prefects_storage_is_never_read(tmp_path, data_csv):
    """Prefect keeps result files (cloudpickles) under ``PREFECT_HOME/storage``; no task or flow
    here persists or reads one, so a crafted file there is never unpickled."""
    store = _sqlite(tmp_path)
    marker = tmp_path / "executed"
    storage = tmp_path / "prefect" / "storage"
    storage.mkdir(parents=True)
    for name in ("ingest", "result", "0123456789abcdef"):
        (storage / name).write_bytes(_hostile_pickle(marker))
    done = _forecast(
        "run", str(_config(tmp_path, data_csv, models=[{"name": "naive"}])), store=store, folder=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not marker.exists()
    print("observed: hostile files in PREFECT_HOME/storage: run exit 0, marker absent")
