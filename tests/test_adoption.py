"""Who owns a run, when a run is stale, and what ``training.checkpoints`` changes (the crash
and rerun themselves, with real processes, are in ``tests/test_faults.py``)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient
from test_pipeline import raw_config

from forecasting.config import config_from_dict
from forecasting.pipeline import run_pipeline
from forecasting.pipeline.prepare import prepare
from forecasting.pipeline.run import checkpoint_root, run_key
from forecasting.pipeline.train import train_all, train_job
from forecasting.tracking import (
    HEARTBEAT_TAG,
    HEARTBEAT_TIMEOUT_S,
    OWNER_TAG,
    Tracker,
    is_stale,
    owner_alive,
    owner_id,
)


def _config(tmp_path, experiment: str, store: str, models=None, **training):
    raw = raw_config(tmp_path, experiment, models)
    raw["tracking"]["tracking_uri"] = store
    raw["training"].update(training)
    return config_from_dict(raw)


def _dead_owner() -> str:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return owner_id(int(proc.stdout)).rsplit(":", 1)[0] + ":1"  # its PID, gone now


def test_owner_alive_tells_this_process_from_a_dead_one_and_a_reused_pid():
    assert owner_alive(owner_id()) is True
    assert owner_alive(_dead_owner()) is False
    pid_reused = owner_id().rsplit(":", 1)[0] + ":0"  # our PID, another start time
    assert owner_alive(pid_reused) is False
    assert owner_alive("another-host:1:1") is None and owner_alive(None) is None


def test_a_run_on_another_host_is_stale_only_once_its_heartbeat_is_old():
    now = time.time()
    elsewhere = {OWNER_TAG: "another-host:12:34"}
    assert not is_stale({**elsewhere, HEARTBEAT_TAG: f"{now - 10:.0f}"}, now)
    assert is_stale({**elsewhere, HEARTBEAT_TAG: f"{now - HEARTBEAT_TIMEOUT_S - 1:.0f}"}, now)
    assert not is_stale(elsewhere, now)  # no heartbeat: nobody can tell, leave it
    assert is_stale({OWNER_TAG: _dead_owner()}, now)
    assert not is_stale({OWNER_TAG: owner_id()}, now)


@pytest.mark.slow
def test_stale_runs_of_other_work_are_ended_killed_and_the_same_work_is_adopted(tmp_path, mlflow_globals):
    """A pipeline run whose process is gone: a run on another config ends it KILLED (its RUNNING
    child too); a run on the same config and data adopts it and finishes it."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = _config(tmp_path, "adopt", store, models=[{"name": "naive"}])
    other = _config(tmp_path, "adopt", store, models=[{"name": "ar"}])
    tracker = Tracker(cfg.tracking)
    client = MlflowClient(store)

    def orphan(config) -> tuple[str, str]:
        """A pipeline run and one child as a killed process leaves them."""
        prepared = prepare(config)
        parent = tracker.start("pipeline", tags={"role": "pipeline", "run_key": run_key(prepared)})
        child = tracker.start(config.models[0].run_name, parent.run_id, tags={"role": "model"})
        for run_id in (parent.run_id, child.run_id):
            client.set_tag(run_id, OWNER_TAG, _dead_owner())
        return parent.run_id, child.run_id

    lost_parent, lost_child = orphan(other)
    result = run_pipeline(cfg, tracker)
    assert result.parent_run_id != lost_parent
    for run_id in (lost_parent, lost_child):
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert run.data.tags["ended_by"].startswith("stale-run sweep")

    same_parent, same_child = orphan(cfg)
    # Logging the pyfunc ends a run FINISHED before its model_uri tag: killed in between, the
    # child looks finished but is not whole; it is continued, not reused.
    client.set_terminated(same_child, "FINISHED")
    adopted = run_pipeline(cfg, tracker)
    assert adopted.parent_run_id == same_parent
    parent, child = client.get_run(same_parent), client.get_run(same_child)
    assert parent.info.status == child.info.status == "FINISHED"
    assert parent.data.tags["resumed"] == child.data.tags["resumed"] == "1"
    assert child.data.tags["model_uri"].startswith("models:/")
    assert parent.data.tags[OWNER_TAG] == owner_id()
    assert [r.info.run_id for r in tracker.child_runs_of(same_parent) if r.info.run_name == "naive"] == [
        same_child
    ]


@pytest.mark.slow
@pytest.mark.parametrize("checkpoints", [True, False])
def test_training_checkpoints_puts_one_checkpoint_per_network_in_the_run_folder(
    checkpoints, tmp_path, mlflow_globals
):
    """``training.checkpoints`` (default true): every network of a pipeline run checkpoints in
    the run's folder while it trains, and the folder is gone once the run ends; false: none."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    networks = [{"name": "lstm", "params": {"hidden": 8}}, {"name": "gru", "params": {"hidden": 8}}]
    cfg = _config(
        tmp_path, "checkpoints", store, models=[{"name": "naive"}, *networks], checkpoints=checkpoints
    )
    tracker = Tracker(cfg.tracking)
    seen: list[list[str]] = []

    def train_models(prepared, parent_id, tags):
        results = train_all(prepared, parent_id, lambda jobs: [train_job(j, tracker) for j in jobs], tags)
        found = sorted(prepared.checkpoints.rglob("*.pt")) if prepared.checkpoints is not None else []
        seen.append([p.relative_to(prepared.checkpoints).parts[0].split("-")[0] for p in found])
        return results

    result = run_pipeline(cfg, tracker, train_models=train_models, select=False)
    root = checkpoint_root(cfg, tracker)
    if checkpoints:
        assert seen == [["gru", "lstm"]]
        assert root == tmp_path / "checkpoints"
        assert not (root / result.parent_run_id).exists()
    else:
        assert seen == [[]] and root is None


def test_checkpoint_dir_with_checkpoints_off_is_refused(tmp_path):
    with pytest.raises(Exception, match=r"checkpoint_dir is set but training\.checkpoints is false"):
        _config(tmp_path, "x", "sqlite:///x.db", checkpoints=False, checkpoint_dir=str(tmp_path))
