"""Everything MLflow, in one place: runs, parameters, metrics, artifacts, datasets, registry.

Layout (one experiment per pipeline):
- one parent run per pipeline run, holding the leaderboard, the comparison plot and the best
  model's name as a tag;
- one child run per model with the same keys for every family, so the compare view lines up.

A run whose work raises ends ``FAILED`` (the error goes into the ``error`` tag); a run stopped
by Ctrl-C or SIGTERM ends ``KILLED``; none is left ``RUNNING``.

A process killed outright (kill -9, the OOM killer, a lost machine) ends nothing. Every run
therefore carries its owner (``owner``: host, PID and the process's start time, so a reused PID
is not taken for the owner) and a pipeline run a ``heartbeat`` tag its owner refreshes. A
``RUNNING`` run whose owner is gone (same host) or whose heartbeat is older than
``HEARTBEAT_TIMEOUT_S`` (another host) is *stale*: the next pipeline run on the same config and
data adopts it (``Tracker.reopen``), any other one is ended ``KILLED`` (``end_stale_pipelines``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST, RESOURCE_ALREADY_EXISTS, ErrorCode

from forecasting.config import TrackingConfig
from forecasting.errors import TrackingError, TrackingUnavailableError
from forecasting.interrupts import STOP, on_stop
from forecasting.periodic import every

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARENT_TAG = "mlflow.parentRunId"
_MAX_PARAM_LEN = 6000
OWNER_TAG = "owner"
HEARTBEAT_TAG = "heartbeat"
HEARTBEAT_EVERY_S = 30.0
# A run on another host is stale once its heartbeat is this old (ten missed beats).
HEARTBEAT_TIMEOUT_S = 300.0


def default_store(root: Path = PROJECT_ROOT) -> tuple[str, str]:
    """The embedded default: SQLite under ``<project>/mlruns`` with artifacts beside it."""
    store = root / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri()


def resolve_tracking_uri(cfg: TrackingConfig) -> tuple[str, str | None]:
    """(tracking URI, artifact root for new experiments or None for the server's default).

    The config wins, then ``MLFLOW_TRACKING_URI``, then the embedded SQLite default.
    """
    uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return default_store()
    if uri.startswith("sqlite:///"):
        # A SQLite store keeps its artifacts beside the database, not in ./mlruns of the cwd.
        return uri, (Path(uri[len("sqlite:///") :]).parent / "artifacts").resolve().as_uri()
    return uri, None


# The error codes a write that lost a race to an identical write comes back with: a store's
# unique-row insert that another writer beat raises ``RESOURCE_ALREADY_EXISTS`` where the store
# checks for it (experiments) and ``BAD_REQUEST`` where the database's integrity error reaches
# the caller unnamed (datasets: SQLite, PostgreSQL, and an ``mlflow server`` passing either on).
# Other errors carry these codes too, so the recovery checks itself: it reads the winner's row,
# or repeats the write once, and a write that did not lose a race fails again as before.
_LOST_RACE_CODES = frozenset(ErrorCode.Name(code) for code in (RESOURCE_ALREADY_EXISTS, BAD_REQUEST))


def open_local_store(cfg: TrackingConfig) -> bool:
    """Open the MLflow stores (tracking and model registry) of ``cfg`` ahead of use, when they are
    a SQLite file; whether they opened.

    MLflow keeps one store per URI for the process, so a tracker made later finds them open; on a
    new file this is where MLflow creates its tables and its "Default" experiment (~1-5 s on 2
    cores). Nothing of ours is written (no experiment, no run). A server (HTTP, PostgreSQL, ...)
    is left alone: opening it costs little, and one that is down would spend MLflow's retries
    twice. A store that does not open is left to the tracker to report, with its usual error.
    """
    uri = resolve_tracking_uri(cfg)[0]
    if not uri.startswith("sqlite:"):
        return False
    try:
        open_store_once(uri)
    except Exception:  # the tracker reports it when the run starts
        return False
    return True


# The SQL stores this process has opened (``open_store_once``), and the lock its threads share.
_OPENED: set[str] = set()
_OPENED_LOCK = threading.Lock()
# pg_advisory_lock's key for the first opening of a PostgreSQL store: one fixed number for every
# process of this project (advisory locks are per database, so stores do not wait on each other).
_PG_OPEN_KEY = 0x666F7265636173  # "forecas"


def open_store_once(uri: str) -> None:
    """Open the MLflow stores (tracking and model registry) of a SQLite or PostgreSQL ``uri``
    the first time this process uses it, one process at a time.

    A store's first opening on a new database creates MLflow's tables and runs its migrations,
    which MLflow does not guard against other processes: two ``forecast run`` starting on a new
    store raced (``table _alembic_tmp_latest_metrics already exists``). Here the opening holds an
    exclusive ``flock`` on ``<db path>.lock`` (SQLite) or a PostgreSQL advisory lock, so one
    process migrates and the others wait, then find the tables made. Any other URI is left alone.
    """
    with _OPENED_LOCK:
        if uri in _OPENED:
            return
        with ExitStack() as held:
            if uri.startswith("sqlite:///") and ":memory:" not in uri:
                import fcntl

                db = Path(uri[len("sqlite:///") :].split("?", 1)[0])
                db.parent.mkdir(parents=True, exist_ok=True)
                lock = held.enter_context(open(f"{db}.lock", "a"))
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            elif uri.startswith("postgresql"):
                import sqlalchemy

                engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
                held.callback(engine.dispose)
                try:
                    conn = held.enter_context(engine.connect())
                except sqlalchemy.exc.OperationalError as err:
                    raise TrackingUnavailableError(
                        f"tracking database {engine.url!r} did not answer: {err.orig}; start it, "
                        "or fix tracking.tracking_uri / MLFLOW_TRACKING_URI"
                    ) from None
                # A session lock: it ends with the connection, even if this process dies.
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _PG_OPEN_KEY})
            else:
                return
            client = MlflowClient(uri)  # MLflow keeps both stores open per URI for the process
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
        _OPENED.add(uri)


_PROBE_SECONDS = 5.0


def check_server(uri: str) -> None:
    """Fail in seconds when an http(s) tracking ``uri`` does not answer: MLflow's client retries
    a refused connection for minutes (261 s seen) before it reports it. One ``GET /health`` (MLflow's
    server answers ``OK``) without retries; any HTTP answer counts as reachable and is left to
    MLflow. Any other URI is left alone."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=_PROBE_SECONDS):
            pass
    except urllib.error.HTTPError:
        return  # something answered: auth, a proxy's path... MLflow says what it is
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        if isinstance(reason, ssl.SSLError):
            return  # it answered TLS: MLflow has its own certificate settings for it
        raise TrackingUnavailableError(
            f"tracking server {uri} is unreachable (GET /health, {_PROBE_SECONDS:.0f} s limit: "
            f"{reason}); start it (mlflow server), fix tracking.tracking_uri or "
            "MLFLOW_TRACKING_URI, or unset both to use the local SQLite store"
        ) from None


def _lost_a_race(err: MlflowException) -> bool:
    """Whether ``err`` may be a write that another writer's identical write beat (its error code;
    ``tests/test_tracking.py`` pins the codes real stores raise)."""
    return err.error_code in _LOST_RACE_CODES


_COMMIT: dict[str, str] = {}


def code_version() -> str:
    """The project's commit, read once per process: the code a process runs is the code it
    imported, whatever HEAD says later (and a ``git`` call per run cost 10-30 ms). A ``git`` that
    timed out is asked again at the next run; its other answers (no checkout, no git) stand."""
    if "commit" in _COMMIT:
        return _COMMIT["commit"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
        commit = out.stdout.strip() or "unknown"
    except subprocess.TimeoutExpired:
        return "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return _COMMIT.setdefault("commit", commit)


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), '' where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: after the command name in parentheses


def owner_id(pid: int | None = None) -> str:
    """``host:pid:start`` of this (or ``pid``'s) process: who owns the runs it starts."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def owner_alive(owner: str | None) -> bool | None:
    """Whether the process named by an ``owner`` tag still runs; None when this host cannot tell
    (another host, or no tag)."""
    if not owner or owner.count(":") < 2:
        return None
    host, pid_text, start = owner.rsplit(":", 2)
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    return not start or _start_ticks(pid) == start  # the same PID, not a reused one


def is_stale(tags: Mapping[str, str], now: float | None = None) -> bool:
    """Whether a ``RUNNING`` run with these tags has lost its owner (see the module docstring)."""
    alive = owner_alive(tags.get(OWNER_TAG))
    if alive is not None:
        return not alive
    try:
        beat = float(tags[HEARTBEAT_TAG])
    except (KeyError, ValueError):
        return False  # no way to tell: leave it to its owner
    return (now if now is not None else time.time()) - beat > HEARTBEAT_TIMEOUT_S


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> dotted keys with string values (MLflow params)."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value, default=str) if not isinstance(value, str) else value
            out[name] = text[:_MAX_PARAM_LEN]
    return out


@dataclass
class RunLogger:
    """Logging into one run through the client API (safe from any thread or process)."""

    client: MlflowClient
    run_id: str

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = flatten(params)
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100], synchronous=True)

    def log_metrics(
        self,
        metrics: Mapping[str, float],
        step: int = 0,
        timestamp_ms: int | None = None,
        model_id: str | None = None,
    ) -> None:
        """``timestamp_ms``: the time the values describe (a forecast origin), default now.
        ``model_id``: the logged model (MLflow 3's ``LoggedModel``) the values describe, so that
        the UI shows them on the model as well as on the run."""
        now = _now_ms() if timestamp_ms is None else int(timestamp_ms)
        items = [
            Metric(k, float(v), now, step, model_id=model_id)
            for k, v in metrics.items()
            if v is not None and isinstance(v, int | float) and math.isfinite(float(v))
        ]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i : i + 500], synchronous=True)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, str(v)[:5000]) for k, v in tags.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, tags=items, synchronous=True)

    def epoch_callback(self, epoch: int, metrics: dict[str, float]) -> None:
        """Per-epoch curves with step = epoch (train_loss, val_loss, lr)."""
        self.log_metrics(metrics, step=epoch)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Render a ``matplotlib.figure.Figure`` (built without pyplot, laid out by its own
        fixed margins: no layout pass, no tight-bbox second pass) to PNG and log it."""
        buf = io.BytesIO()
        figure.savefig(buf, format="png", dpi=100)
        self._log_bytes(buf.getvalue(), artifact_file)

    def log_frame(self, frame: pd.DataFrame, artifact_file: str) -> None:
        """A frame as Parquet or CSV (by the name's suffix), written straight to the file MLflow
        logs (no copy of its bytes in memory first: a test frame of millions of rows)."""

        def write(local: Path) -> None:
            if artifact_file.lower().endswith((".parquet", ".pq")):  # as batch prediction names them
                frame.to_parquet(local, index=False)
            else:  # CSV, gzipped when the name ends in .gz
                frame.to_csv(local, index=False)

        self._log_file(write, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._log_bytes(text.encode(), artifact_file)

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self.log_text(json.dumps(data, indent=2, default=str), artifact_file)

    def _log_bytes(self, payload: bytes, artifact_file: str) -> None:
        self._log_file(lambda local: local.write_bytes(payload), artifact_file)

    def _log_file(self, write: Callable[[Path], Any], artifact_file: str) -> None:
        """Log the file ``write`` writes at a temporary path named like ``artifact_file``."""
        path = Path(artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / path.name
            write(local)
            parent = str(path.parent) if str(path.parent) != "." else None
            self.client.log_artifact(self.run_id, str(local), parent)

    def log_dataset(self, frame: pd.DataFrame, source: str, name: str, digest: str, context: str) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        with warnings.catch_warnings():
            # A local path matches two equivalent source types; MLflow warns and picks one.
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest, targets="y")
        # The stored form of the dataset (name, digest, source, source_type, schema, profile), built
        # from its public dict so it is logged to this run, not the thread's active one.
        fields = dataset.to_dict()
        entity = DatasetInput(
            dataset=Dataset(
                name=fields["name"],
                digest=fields["digest"],
                source_type=fields["source_type"],
                source=fields["source"],
                schema=fields.get("schema"),
                profile=fields.get("profile"),
            ),
            tags=[InputTag(key="mlflow.data.context", value=context)],  # what mlflow.log_input sets
        )
        try:
            self.client.log_inputs(self.run_id, datasets=[entity])
        except MlflowException as err:
            # Runs logging the same new dataset at the same moment (the training fan-out's first
            # models on a new store) each insert it; the store keeps one row per experiment, name
            # and digest, so all but one fail and roll back. The dataset is stored now: link it
            # (a write that failed for another reason fails again, with its own error).
            if not _lost_a_race(err):
                raise
            self.client.log_inputs(self.run_id, datasets=[entity])

    @contextmanager
    def activated(self) -> Iterator[None]:
        """Make this run the fluent active run in this thread (for ``mlflow.pyfunc.log_model``)."""
        with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
            yield


# Runs this process has started and not yet ended: after an interrupt, the main thread ends
# them KILLED even if the thread that started them never gets to.
_OPEN_RUNS: dict[str, MlflowClient] = {}
_OPEN_LOCK = threading.Lock()


def kill_open_runs() -> int:
    with _OPEN_LOCK:
        open_runs = list(_OPEN_RUNS.items())
        _OPEN_RUNS.clear()
    for run_id, client in open_runs:
        client.set_terminated(run_id, status="KILLED")
    return len(open_runs)


on_stop(kill_open_runs)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Store:
    """A tracking store opened for reading: no experiment chosen, nothing created."""

    uri: str
    client: MlflowClient


def open_store(cfg: TrackingConfig) -> Store:
    """The store ``cfg`` names (the config, ``MLFLOW_TRACKING_URI``, the local default), checked
    to answer and initialised like a ``Tracker``'s, without choosing or creating an experiment."""
    uri, _ = resolve_tracking_uri(cfg)
    check_server(uri)
    open_store_once(uri)
    return Store(uri, MlflowClient(uri))


class Tracker:
    """The pipeline's handle on an MLflow tracking store and model registry."""

    def __init__(self, cfg: TrackingConfig):
        self.cfg = cfg
        self.uri, artifact_root = resolve_tracking_uri(cfg)
        check_server(self.uri)  # a server that is down fails here, before any work starts
        open_store_once(self.uri)  # a new SQL store: one process creates MLflow's tables
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(self.uri)
        try:
            self.experiment_id = self._experiment(cfg.experiment, artifact_root)
        except MlflowException as err:
            raise TrackingError(
                f"tracking store {self.uri!r} refused experiment {cfg.experiment!r}: {err}"
            ) from None
        mlflow.set_experiment(experiment_id=self.experiment_id)

    def _experiment(self, name: str, artifact_root: str | None) -> str:
        """The experiment's id, created when it does not exist yet. Workers that open a new store
        at the same moment all try to create it; those that lose the race read the winner's."""
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifact_root)
        except MlflowException as err:
            exp = self.client.get_experiment_by_name(name) if _lost_a_race(err) else None
            if exp is None:
                raise
            return exp.experiment_id

    def start(
        self, name: str, parent_id: str | None = None, tags: Mapping[str, Any] | None = None
    ) -> RunLogger:
        all_tags = {"code_version": code_version(), OWNER_TAG: owner_id(), **(tags or {})}
        if parent_id:
            all_tags[PARENT_TAG] = parent_id
        run = self.client.create_run(
            self.experiment_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()}
        )
        with _OPEN_LOCK:
            _OPEN_RUNS[run.info.run_id] = self.client
        return RunLogger(self.client, run.info.run_id)

    def finish(self, run: RunLogger, status: str = "FINISHED", error: BaseException | None = None) -> None:
        if error is not None:
            run.set_tags({"error": f"{type(error).__name__}: {error}"[:5000]})
        self.client.set_terminated(run.run_id, status=status)
        with _OPEN_LOCK:
            _OPEN_RUNS.pop(run.run_id, None)

    def reopen(self, run_id: str, tags: Mapping[str, Any] | None = None) -> RunLogger:
        """Take over a run a dead process left (``RUNNING``, ``FAILED`` or ``KILLED``): it is
        ``RUNNING`` again, owned by this process, and keeps everything it had logged."""
        self.client.update_run(run_id, status="RUNNING")
        previous = self.client.get_run(run_id).data.tags
        logger = RunLogger(self.client, run_id)
        logger.set_tags(
            {
                **(tags or {}),
                OWNER_TAG: owner_id(),
                "previous_owner": previous.get(OWNER_TAG, "unknown"),
                "resumed": int(previous.get("resumed", "0")) + 1,
            }
        )
        with _OPEN_LOCK:
            _OPEN_RUNS[run_id] = self.client
        return logger

    @contextmanager
    def run(
        self,
        name: str,
        parent_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        adopt: str | None = None,
    ) -> Iterator[RunLogger]:
        """A run that always ends: FINISHED, FAILED on an exception, KILLED on an interrupt.

        ``adopt``: the id of a run a dead process left, continued instead of a new one."""
        run = self.reopen(adopt, tags) if adopt else self.start(name, parent_id, tags)
        try:
            yield run
        except Exception as err:
            # An error while the process is stopping is the stop's doing, not the model's.
            status = RunStatus.KILLED if STOP.is_set() else RunStatus.FAILED
            self.finish(run, RunStatus.to_string(status), err)
            raise
        except BaseException as err:  # KeyboardInterrupt, SIGTERM (Terminated), SystemExit
            self.finish(run, RunStatus.to_string(RunStatus.KILLED), err)
            raise
        else:
            self.finish(run)

    def resume(self, run_id: str) -> RunLogger:
        return RunLogger(self.client, run_id)

    def checkpoint_root(self) -> Path:
        """Where pipeline runs checkpoint their networks when ``training.checkpoint_dir`` is not
        set: beside a SQLite store's database, else in this machine's temp folder (one folder
        per store)."""
        if self.uri.startswith("sqlite:///"):
            return Path(self.uri[len("sqlite:///") :]).resolve().parent / "checkpoints"
        digest = hashlib.sha256(self.uri.encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / "forecasting-checkpoints" / digest

    def pipeline_runs(self, max_results: int = 10) -> list[str]:
        """Ids of the latest pipeline (parent) runs, newest first."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string="tags.role = 'pipeline'",
            max_results=max_results,
            order_by=["attributes.start_time DESC"],
        )
        return [r.info.run_id for r in runs]

    @contextmanager
    def heartbeat(self, run_id: str, every_s: float = HEARTBEAT_EVERY_S) -> Iterator[None]:
        """Refresh the run's ``heartbeat`` tag (seconds since the epoch) every ``every_s`` while
        the block runs, so a process on another host can tell when this one is gone."""

        def beat() -> None:
            self.client.set_tag(run_id, HEARTBEAT_TAG, f"{time.time():.0f}")

        with every(every_s, beat, name=f"heartbeat-{run_id[:8]}"):
            yield

    def stale_pipelines(self) -> list[Any]:
        """Pipeline runs left ``RUNNING`` by a process that is gone, newest first."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string="tags.role = 'pipeline' and attributes.status = 'RUNNING'",
            order_by=["attributes.start_time DESC"],
        )
        return [r for r in runs if is_stale(r.data.tags)]

    def end_stale_pipelines(self, keep: str | None = None) -> list[str]:
        """End every stale pipeline run but ``keep``, and its children still ``RUNNING``, as
        KILLED (tag ``ended_by``: who found it). Returns the ids of the pipeline runs ended."""
        ended = []
        for run in self.stale_pipelines():
            run_id = run.info.run_id
            if run_id == keep:
                continue
            for child in self.child_runs_of(run_id):
                if child.info.status == "RUNNING":
                    self.client.set_tag(child.info.run_id, "ended_by", f"stale-run sweep by {owner_id()}")
                    self.client.set_terminated(child.info.run_id, status="KILLED")
            self.client.set_tag(run_id, "ended_by", f"stale-run sweep by {owner_id()}")
            self.client.set_terminated(run_id, status="KILLED")
            ended.append(run_id)
        return ended

    def child_runs_of(self, parent_id: str) -> list[Any]:
        """The child runs of ``parent_id`` as MLflow ``Run`` entities, oldest first."""
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
            order_by=["attributes.start_time ASC"],
        )

    def child_named(self, parent_id: str, run_name: str) -> Any | None:
        """The child of ``parent_id`` called ``run_name`` (the oldest, if several), or None."""
        for run in self.child_runs_of(parent_id):
            if run.info.run_name == run_name:
                return run
        return None

    def load_frame(self, run_id: str, artifact_path: str) -> pd.DataFrame:
        """A Parquet artifact logged by ``RunLogger.log_frame``."""
        with tempfile.TemporaryDirectory() as tmp:
            local = self.client.download_artifacts(run_id, artifact_path, tmp)
            return pd.read_parquet(local)

    def load_dict(self, run_id: str, artifact_path: str) -> Any:
        """A JSON artifact logged by ``RunLogger.log_dict`` (parsed as JSON: data only)."""
        with tempfile.TemporaryDirectory() as tmp:
            local = self.client.download_artifacts(run_id, artifact_path, tmp)
            return json.loads(Path(local).read_text())

    def end_stale_runs(self, parent_id: str) -> int:
        """End any child of ``parent_id`` still RUNNING as KILLED (after a crashed worker)."""
        stale = [r.info.run_id for r in self.child_runs_of(parent_id) if r.info.status == "RUNNING"]
        for run_id in stale:
            self.client.set_terminated(run_id, status="KILLED")
        return len(stale)

    # --- registry -----------------------------------------------------------------------------
    def register(self, model_uri: str, run_id: str, tags: Mapping[str, Any] | None = None) -> str:
        """Register ``model_uri`` as a version of the configured model; returns the version.

        Idempotent per pipeline run: a version already registered from ``run_id`` with the same
        ``parent_run_id`` tag (a retried champion step) is returned instead of a new one.
        """
        name = self.cfg.registered_model
        tags = {k: str(v) for k, v in (tags or {}).items()}
        try:
            try:
                self.client.get_registered_model(name)
            except MlflowException:
                self.client.create_registered_model(
                    name, description="Forecasts chosen by validation score; alias 'champion' serves."
                )
            found = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
            same = [v for v in found if (v.tags or {}).get("parent_run_id") == tags.get("parent_run_id")]
            if same:
                return str(min(int(v.version) for v in same))
            # MLflow 3 logged models: `models:/m-<id>` URIs name the model id the server wants.
            model_id = model_uri.split("/", 1)[1] if model_uri.startswith("models:/m-") else None
            version = self.client.create_model_version(
                name,
                source=model_uri,
                run_id=run_id,
                tags=tags,
                model_id=model_id,
            )
        except MlflowException as err:
            raise TrackingError(f"could not register {model_uri!r} as {name!r}: {err}") from None
        return str(version.version)

    def alias_version(self, alias: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(self.cfg.registered_model, alias).version)
        except MlflowException:
            return None

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.cfg.registered_model, alias, version)

    def tag_version(self, version: str, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.cfg.registered_model, version, key, str(value))

    def version_info(self, version: str) -> Any:
        return self.client.get_model_version(self.cfg.registered_model, version)

    def resolve_model(self, ref: str) -> tuple[str, str, str, str]:
        """``NAME``, ``NAME@alias`` or ``NAME/version`` -> (name, version, run_id, models:/ URI).

        A bare name means its ``champion``. The alias is resolved to a version once, so a batch
        is scored by one version even if the alias moves meanwhile.
        """
        if "@" in ref:
            name, alias = ref.split("@", 1)
            getter = lambda: self.client.get_model_version_by_alias(name, alias)  # noqa: E731
        elif "/" in ref:
            name, number = ref.rsplit("/", 1)
            getter = lambda: self.client.get_model_version(name, number)  # noqa: E731
        else:
            name, alias = ref, "champion"
            getter = lambda: self.client.get_model_version_by_alias(name, alias)  # noqa: E731
        try:
            mv = getter()
        except MlflowException as err:
            from forecasting.errors import InputValidationError

            raise InputValidationError(f"no registered model version for {ref!r}: {err.message}") from None
        return name, str(mv.version), str(mv.run_id), f"models:/{name}/{mv.version}"
