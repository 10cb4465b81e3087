"""Stage events: what a pipeline run is doing, for whoever shows it.

The pipeline reports each stage with a one-line call (``ingested``, ``model_started``,
``epoch_finished``, ...). By default nothing listens and every call returns at once: library use
and the tests stay silent. A front end (the CLI's live display) installs one process-wide listener
with ``listening`` for the length of a command. Models train in parallel threads, so calls come
from any thread; they reach the listener one at a time (under a lock), so a listener need not be
thread-safe towards itself.

An epoch is attributed to the model its thread is training (``model_started`` /
``refit_started`` on that thread), so the networks of models training side by side never mix.

No torch, MLflow or Prefect here: the training loop and the pipeline both report through it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from forecasting.config import Config
    from forecasting.pipeline.select import ChampionDecision

Stage = Literal[
    "ingest",  # rows, series
    "pipeline",  # run_id, models (run names, config order), adopted
    "model_started",
    "epoch_started",  # epoch, epochs, label (the network's family)
    "epoch_finished",  # epoch, epochs, seconds, train_loss, val_loss, label
    "model_finished",  # status, metric, score, fit_seconds, seconds, error, reused
    "refit_started",
    "refit_finished",  # rows, fit_seconds, seconds
    "champion",  # version, alias, candidate_score, incumbent_version, incumbent_score
    "prediction",  # rows, series, output, model_ref
]


@dataclass(frozen=True)
class Event:
    """One stage reported by the pipeline."""

    stage: Stage
    model: str | None = None  # the model (its run name; a refit: "<name> refit") it concerns
    k: int | None = None  # model k of n, in config order (None: a model the config does not list)
    n: int | None = None
    info: Mapping[str, Any] = field(default_factory=dict)  # the stage's figures (see ``Stage``)
    at: float = field(default_factory=time.monotonic)  # when it was reported, time.monotonic() s


Listener = Callable[[Event], None]

_lock = threading.RLock()
_listener: Listener | None = None
_thread = threading.local()  # .model, .started: what this thread is training, since when
_log = logging.getLogger(__name__)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send every stage reported in this process to ``listener`` until the block ends."""
    global _listener
    with _lock:
        previous, _listener = _listener, listener
    try:
        yield
    finally:
        with _lock:
            _listener = previous


def active() -> bool:
    """Whether a listener is installed (the training loop then reports instead of drawing a bar)."""
    return _listener is not None


def report(
    stage: Stage, model: str | None = None, k: int | None = None, n: int | None = None, **info: Any
) -> None:
    """Hand one event to the listener, if there is one."""
    if _listener is None:
        return
    event = Event(stage, model, k, n, info)
    with _lock:
        if _listener is None:
            return
        try:
            _listener(event)
        except Exception:  # a broken display must not fail the work it shows (a model run FAILED)
            _log.debug("stage listener failed on %s", event, exc_info=True)


# --- what the pipeline reports ----------------------------------------------------------------
def model_names(cfg: Config) -> list[str]:
    return [m.run_name for m in cfg.models]


def position(cfg: Config, name: str) -> tuple[int | None, int]:
    """(k, n): ``name`` is model k of the config's n (1-based, config order)."""
    names = model_names(cfg)
    return (names.index(name) + 1 if name in names else None), len(names)


def ingested(rows: int, series: int) -> None:
    report("ingest", rows=rows, series=series)


def pipeline_started(run_id: str, cfg: Config, adopted: bool = False) -> None:
    report("pipeline", run_id=run_id, models=model_names(cfg), adopted=adopted)


def model_started(cfg: Config, name: str) -> None:
    if _listener is None:
        return
    _thread.model, _thread.started = name, time.monotonic()
    report("model_started", name, *position(cfg, name))


def model_finished(
    cfg: Config,
    name: str,
    metrics: Mapping[str, float] | None = None,
    error: str | None = None,
    reused: bool = False,
) -> None:
    """A model's end: its validation score and fit time (``metrics``), or its ``error``, or
    ``reused`` (it finished before the process that started the run was killed)."""
    if _listener is None:
        return
    seconds = time.monotonic() - getattr(_thread, "started", time.monotonic())
    _thread.model = None
    metric = cfg.tracking.selection_metric
    metrics = metrics or {}
    report(
        "model_finished",
        name,
        *position(cfg, name),
        status="FAILED" if error else "FINISHED",
        metric=metric,
        score=metrics.get(metric),
        fit_seconds=metrics.get("fit_seconds"),
        seconds=seconds,
        error=error,
        reused=reused,
    )


def epoch_started(epoch: int, epochs: int, label: str) -> None:
    """Epoch ``epoch`` (1-based) of ``epochs`` begins in the network labelled ``label`` (its
    family: an ensemble's refit trains several, one after another)."""
    if _listener is None:
        return
    model = getattr(_thread, "model", None) or label
    report("epoch_started", model, epoch=epoch, epochs=epochs, label=label)


def epoch_finished(
    epoch: int, epochs: int, seconds: float, train_loss: float, val_loss: float | None, label: str
) -> None:
    if _listener is None:
        return
    report(
        "epoch_finished",
        getattr(_thread, "model", None) or label,
        epoch=epoch,
        epochs=epochs,
        seconds=seconds,
        train_loss=train_loss,
        val_loss=val_loss,
        label=label,
    )


def refit_started(name: str) -> None:
    """The refit run ``name`` ("<model> refit") begins training on every row."""
    if _listener is None:
        return
    _thread.model, _thread.started = name, time.monotonic()
    report("refit_started", name)


def refit_finished(name: str, metrics: Mapping[str, float]) -> None:
    if _listener is None:
        return
    seconds = time.monotonic() - getattr(_thread, "started", time.monotonic())
    _thread.model = None
    rows, fit = metrics.get("refit_rows"), metrics.get("fit_seconds")
    report("refit_finished", name, rows=rows, fit_seconds=fit, seconds=seconds)


def champion_decided(decision: ChampionDecision) -> None:
    """The champion gate's outcome: the model registered, its version and alias (``champion``,
    ``challenger``, or ``unchanged`` when the champion is already this model)."""
    report(
        "champion",
        decision.model,
        version=decision.version,
        alias=decision.alias,
        candidate_score=decision.candidate_score,
        incumbent_version=decision.incumbent_version,
        incumbent_score=decision.incumbent_score,
    )


def predicted(rows: int, series: int, output: str, model_ref: str) -> None:
    report("prediction", rows=rows, series=series, output=output, model_ref=model_ref)


# --- reading them -------------------------------------------------------------------------------
def epoch_eta(done: int, epochs: int, epoch_seconds: Sequence[float]) -> float | None:
    """Seconds a network has left: its remaining epochs × its mean epoch time so far (None
    before its first epoch ends). Early stopping can end it sooner."""
    if not epoch_seconds:
        return None
    return max(epochs - done, 0) * sum(epoch_seconds) / len(epoch_seconds)


def run_eta(waiting: int, model_seconds: Sequence[float], parallel: int = 1) -> float | None:
    """About how long the models not yet started will take: their number × the mean time of
    the models finished so far, shared among the ``parallel`` models that train at once (None
    before the first model finishes)."""
    if not model_seconds:
        return None
    return waiting * sum(model_seconds) / len(model_seconds) / max(parallel, 1)
