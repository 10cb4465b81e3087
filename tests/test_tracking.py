"""The tracker under concurrent writers: the training fan-out logs from several threads (or Dask
processes) into one store, and the first writers on a new store race to create the same rows."""

from __future__ import annotations

import threading
from contextlib import ExitStack

import mlflow
import pandas as pd
import pytest
from servers import mlflow_server, postgres_database

from forecasting.config import TrackingConfig
from forecasting.tracking import Tracker, code_version

WRITERS = 8


@pytest.fixture(
    params=[
        "sqlite",
        "postgresql",
        pytest.param("http-postgresql", marks=[pytest.mark.server, pytest.mark.slow]),
    ]
)
def own_store(request, tmp_path, mlflow_globals):
    """A new store for this test: a SQLite file, a PostgreSQL database, or a real ``mlflow server``
    on a PostgreSQL database (the scale-out configuration). Yields the tracking URI and the
    database's URI. MLflow's process-wide URI and active experiment (which a Tracker sets) are put
    back afterwards (``mlflow_globals``)."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            db = f"sqlite:///{tmp_path / 'store.db'}"
            uri = db
        else:
            db = stack.enter_context(postgres_database())
            uri = db
            if request.param == "http-postgresql":
                log = tmp_path / "server.log"
                uri = stack.enter_context(mlflow_server(db, tmp_path / "artifacts", log))
        yield uri, db


def _digests(db: str) -> list[str]:
    """The datasets the store's database holds, read from the database itself."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(db)
    try:
        with engine.connect() as con:
            return sorted(row[0] for row in con.execute(sqlalchemy.text("SELECT digest FROM datasets")))
    finally:
        engine.dispose()


def _together(fn, n: int = WRITERS) -> tuple[list, list[BaseException]]:
    """Run ``fn(i)`` in ``n`` threads released at the same moment; results and errors."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def body(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_concurrent_runs_log_the_same_dataset_once(own_store):
    """The first models of a pipeline on a new store log the same dataset at the same time: every
    run gets its input, and the store holds the dataset once (a unique row per experiment, name and
    digest, which concurrent first inserts used to violate: one run FAILED)."""
    tracker = Tracker(TrackingConfig(tracking_uri=own_store[0], experiment="race"))
    runs = [tracker.start(f"model-{i}") for i in range(WRITERS)]
    frame = pd.DataFrame(
        {"series_id": ["a"] * 3, "t": pd.date_range("2020", periods=3, freq="h"), "y": [1.0, 2, 3]}
    )

    for attempt in range(3):  # the race is timing-dependent: give it several chances to show
        digest = f"digest-{attempt}"
        _, errors = _together(
            lambda i, d=digest: runs[i].log_dataset(
                frame, source="data.csv", name="data", digest=d, context="training"
            )
        )
        assert errors == []
        for run in runs:
            inputs = tracker.client.get_run(run.run_id).inputs.dataset_inputs
            assert [i.dataset.digest for i in inputs].count(digest) == 1
    assert _digests(own_store[1]) == ["digest-0", "digest-1", "digest-2"]
    for run in runs:
        tracker.finish(run)


def test_concurrent_trackers_share_one_new_experiment(own_store):
    """Several workers opening the same new experiment at once all get the same one (they used to
    fail with a TrackingError for each worker whose create lost the race)."""
    client = mlflow.MlflowClient(own_store[0])
    client.search_experiments()  # the store exists: the workers race on the experiment alone
    for attempt in range(3):
        name = f"new-{attempt}"
        ids, errors = _together(
            lambda i, n=name: Tracker(TrackingConfig(tracking_uri=own_store[0], experiment=n)).experiment_id
        )
        assert errors == []
        assert len(set(ids)) == 1
        assert ids[0] == client.get_experiment_by_name(name).experiment_id
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "new-0", "new-1", "new-2"]


def test_code_version_is_read_once_per_process(monkeypatch):
    """The commit is read when the first run starts (one ``git`` call per process, not per run):
    the code a process runs is the code it imported, whatever HEAD says later. A ``git`` that
    timed out is asked again."""
    import subprocess

    from forecasting import tracking

    monkeypatch.setattr(tracking, "_COMMIT", {})
    real_run = subprocess.run

    def timed_out(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], 5)

    monkeypatch.setattr(tracking.subprocess, "run", timed_out)
    assert code_version() == "unknown"
    monkeypatch.setattr(tracking.subprocess, "run", real_run)
    first = code_version()
    git = real_run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tracking.PROJECT_ROOT, capture_output=True, text=True
    )
    assert first == (git.stdout.strip() or "unknown")

    def no_more_git(*args, **kwargs):
        raise AssertionError("git asked again")

    monkeypatch.setattr(tracking.subprocess, "run", no_more_git)
    assert code_version() == first
