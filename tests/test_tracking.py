"""The tracker under concurrent writers: the training fan-out logs from several threads (or Dask
processes) into one store, and the first writers on a new store race to create the same rows."""

from __future__ import annotations

import threading
import uuid
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from servers import mlflow_server, postgres_database

from forecasting.config import TrackingConfig
from forecasting.tracking import Tracker, _lost_a_race, code_version

WRITERS = 8


@contextmanager
def _new_store(kind: str, tmp_path) -> Iterator[tuple[str, str]]:
    """A new store: a SQLite file, a PostgreSQL database, or a real ``mlflow server`` on a
    PostgreSQL database (the scale-out configuration). Yields the tracking URI and the database's
    URI."""
    with ExitStack() as stack:
        if kind == "sqlite":
            db = f"sqlite:///{tmp_path / 'store.db'}"
            uri = db
        else:
            db = stack.enter_context(postgres_database())
            uri = db
            if kind == "http-postgresql":
                log = tmp_path / "server.log"
                uri = stack.enter_context(mlflow_server(db, tmp_path / "artifacts", log))
        yield uri, db


@pytest.fixture(
    params=[
        "sqlite",
        "postgresql",
        pytest.param("http-postgresql", marks=[pytest.mark.server, pytest.mark.slow]),
    ]
)
def own_store(request, tmp_path, mlflow_globals):
    """A new store for this test (``_new_store``). MLflow's process-wide URI and active experiment
    (which a Tracker sets) are put back afterwards (``mlflow_globals``)."""
    with _new_store(request.param, tmp_path) as store:
        yield store


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_store(request, tmp_path, mlflow_globals):
    """A new store this process writes to through SQLAlchemy itself (so a test can step in)."""
    with _new_store(request.param, tmp_path) as store:
        yield store


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


@contextmanager
def _a_winner_before_each_dataset_insert(db: str) -> Iterator[list[str]]:
    """The race, made to happen every time: just before the store inserts a dataset (after it
    looked for one and found none), another connection stores the same experiment, name and
    digest and commits. Yields the winners' ``dataset_uuid`` values."""
    import sqlalchemy

    winner = sqlalchemy.create_engine(db)
    winners: list[str] = []

    def insert_first(conn, cursor, statement, parameters, context, executemany):
        if conn.engine is winner or not statement.lstrip().upper().startswith("INSERT INTO DATASETS"):
            return
        row = {**context.compiled_parameters[0], "dataset_uuid": uuid.uuid4().hex}
        columns = ", ".join(row)
        with winner.begin() as other:
            other.execute(
                sqlalchemy.text(
                    f"INSERT INTO datasets ({columns}) VALUES ({', '.join(f':{c}' for c in row)})"
                ),
                row,
            )
        winners.append(row["dataset_uuid"])

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", insert_first)
    try:
        yield winners
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", insert_first)
        winner.dispose()


def test_a_lost_insert_is_told_by_its_error_code(sql_store):
    """Pins what the recovery relies on, against the installed MLflow and real databases: a
    dataset insert another writer beat, and an experiment another writer created, fail with an
    error code ``_lost_a_race`` knows; ``log_dataset`` then links the run to the winner's row."""
    import sqlalchemy
    from mlflow.entities import Dataset, DatasetInput
    from mlflow.exceptions import MlflowException

    tracker = Tracker(TrackingConfig(tracking_uri=sql_store[0], experiment="lost"))
    with pytest.raises(MlflowException) as created:
        tracker.client.create_experiment("lost")
    assert _lost_a_race(created.value), created.value.error_code

    run = tracker.start("model")
    entity = DatasetInput(Dataset(name="data", digest="raw", source_type="local", source="{}"))
    with _a_winner_before_each_dataset_insert(sql_store[1]) as winners:
        with pytest.raises(MlflowException) as inserted:
            tracker.client.log_inputs(run.run_id, datasets=[entity])
        assert isinstance(inserted.value.__cause__, sqlalchemy.exc.IntegrityError)
        assert _lost_a_race(inserted.value), inserted.value.error_code

        frame = pd.DataFrame(
            {"series_id": ["a"], "t": pd.date_range("2020", periods=1, freq="h"), "y": [1.0]}
        )
        run.log_dataset(frame, source="data.csv", name="data", digest="tracked", context="training")
    engine = sqlalchemy.create_engine(sql_store[1])
    try:
        with engine.connect() as con:
            stored = con.execute(
                sqlalchemy.text("SELECT dataset_uuid FROM datasets WHERE digest = 'tracked'")
            )
            assert [row[0] for row in stored] == winners[1:]  # the winner's row, linked, not a second one
    finally:
        engine.dispose()
    inputs = tracker.client.get_run(run.run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("data", "tracked")]
    tracker.finish(run)


def test_a_dataset_is_stored_as_mlflow_log_input_stores_it(tmp_path, mlflow_globals):
    """``log_dataset`` logs to its own run through the client; what it stores is what MLflow's
    fluent ``mlflow.log_input`` stores for the same data (fields, schema, profile, context tag)."""
    tracker = Tracker(TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'store.db'}", experiment="same"))
    frame = pd.DataFrame(
        {"series_id": ["a"] * 3, "t": pd.date_range("2020", periods=3, freq="h"), "y": [1.0, 2, 3]}
    )
    run = tracker.start("ours")
    run.log_dataset(frame, source="data.csv", name="data", digest="ours", context="training")
    tracker.finish(run)
    with warnings.catch_warnings():  # a local path matches two source types (log_dataset hides it)
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source="data.csv", name="data", digest="fluent", targets="y")
    with mlflow.start_run(experiment_id=tracker.experiment_id) as fluent:
        mlflow.log_input(dataset, context="training")

    def stored(run_id: str) -> tuple[dict, list]:
        (given,) = tracker.client.get_run(run_id).inputs.dataset_inputs
        fields = {k: v for k, v in given.dataset.to_dictionary().items() if k != "digest"}
        return fields, sorted((tag.key, tag.value) for tag in given.tags)

    assert stored(run.run_id) == stored(fluent.info.run_id)


def test_a_frame_is_logged_in_the_format_its_name_says(tmp_path, mlflow_globals):
    """``log_frame``: Parquet for .parquet / .pq (any case, as batch prediction accepts them), CSV
    otherwise, gzipped for .csv.gz; each read back equal to the frame."""
    import gzip

    tracker = Tracker(TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'store.db'}", experiment="frames"))
    frame = pd.DataFrame({"series_id": ["a", "b"], "yhat": [1.5, 2.5]})
    run = tracker.start("frames")
    names = ["f.parquet", "f.PQ", "f.csv", "f.csv.gz"]
    for name in names:
        run.log_frame(frame, f"out/{name}")
    tracker.finish(run)
    local = Path(
        mlflow.artifacts.download_artifacts(run_id=run.run_id, artifact_path="out", dst_path=str(tmp_path))
    )
    for name in names[:2]:
        assert (local / name).read_bytes()[:4] == b"PAR1"
        pd.testing.assert_frame_equal(pd.read_parquet(local / name), frame)
    assert (local / "f.csv").read_text().startswith("series_id,yhat")
    with gzip.open(local / "f.csv.gz", "rt") as fh:
        pd.testing.assert_frame_equal(pd.read_csv(fh), frame)


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


# A process opening a store on first use: it says it is ready, then waits on a shared lock of the
# gate file that the test holds exclusively, so every process is released at the same moment.
_FIRST_USE = """
import fcntl, sys
from pathlib import Path
from forecasting.config import TrackingConfig
from forecasting.tracking import Tracker

uri, gate, ready = sys.argv[1:]
Path(ready).touch()
with open(gate) as fh:
    fcntl.flock(fh, fcntl.LOCK_SH)
tracker = Tracker(TrackingConfig(tracking_uri=uri, experiment="first-use"))
with tracker.run("first"):
    pass
"""


@pytest.mark.slow
def test_processes_opening_a_new_store_at_once_all_succeed(sql_store, tmp_path):
    """Four processes (four ``forecast run``) start on the same new store at the same moment: one
    creates MLflow's tables, the others wait for it (``open_store_once``), and all of them log.
    Without the lock MLflow's migrations raced and all but one failed (``duplicate column name``,
    ``table _alembic_tmp_latest_metrics already exists``)."""
    import fcntl
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    gate = tmp_path / "gate"
    gate.touch()
    ready = [tmp_path / f"ready-{i}" for i in range(4)]
    with open(gate) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _FIRST_USE, sql_store[0], str(gate), str(flag)],
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for flag in ready
        ]
        deadline = time.monotonic() + 180
        while not all(flag.exists() for flag in ready):  # every process has imported MLflow
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.05)
    outcomes = [p.communicate(timeout=300) for p in procs]  # the gate opened: they race now
    failures = [err[-2000:] for p, (_, err) in zip(procs, outcomes, strict=True) if p.returncode]
    assert failures == []

    client = mlflow.MlflowClient(sql_store[0])
    experiment = client.get_experiment_by_name("first-use")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"] * 4
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "first-use"]
    client.create_registered_model("works")  # the registry's tables are whole too


def test_an_unreachable_tracking_server_fails_at_once(monkeypatch, mlflow_globals):
    """A tracker on a server that does not answer raises the named error after one short probe,
    before MLflow sends anything: its client retries a refused connection for minutes (261 s)."""
    import requests
    from servers import free_port

    from forecasting.errors import TrackingUnavailableError

    sent = []
    monkeypatch.setattr(requests.Session, "send", lambda self, request, **kw: sent.append(request.url))
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(TrackingUnavailableError, match=f"tracking server {uri} is unreachable"):
        Tracker(TrackingConfig(tracking_uri=uri, experiment="down"))
    assert sent == []  # MLflow's HTTP client was never used, so it never retried
