"""Cooperative stopping on SIGTERM and Ctrl-C.

The signal arrives in the main thread, but training may run in a worker thread that the
interpreter would wait for at exit. So the handlers also set ``STOP``, which every training
run checks after each epoch (``raise_if_stopped``): the work stops within an epoch and its
MLflow run ends ``KILLED``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any

STOP = threading.Event()
_CLEANUPS: list[Any] = []


def on_stop(cleanup: Any) -> None:
    """Register ``cleanup()`` to run in the main thread after a stop's grace period."""
    if cleanup not in _CLEANUPS:
        _CLEANUPS.append(cleanup)


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM). A BaseException, like KeyboardInterrupt."""


def raise_if_stopped(*_: Any) -> None:
    """An epoch callback: stop this training run if the process is stopping."""
    if STOP.is_set():
        raise Terminated("stop requested")


def install_handlers() -> None:
    """SIGTERM -> ``Terminated``, SIGINT -> ``KeyboardInterrupt``; both set ``STOP``.

    Main thread only (signal handlers can be installed nowhere else); a no-op elsewhere.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def on_term(signum: int, frame: Any) -> None:
        STOP.set()
        raise Terminated(f"signal {signum}")

    def on_int(signum: int, frame: Any) -> None:
        STOP.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_int)


def run_stoppable(fn: Any, *args: Any, grace_seconds: float = 120.0, **kwargs: Any) -> Any:
    """Run ``fn`` in a worker thread; the main thread keeps the signal handlers.

    Orchestrators (Prefect) install their own SIGTERM handling on the thread that runs a flow
    and wait for running tasks before they unwind. Running the flow off the main thread keeps
    our handlers in charge: a signal sets ``STOP``, training stops at its next epoch, and we
    wait up to ``grace_seconds`` for the runs to be ended before re-raising.
    """
    install_handlers()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as err:
            outcome["error"] = err

    worker = threading.Thread(target=target, name="forecast-flow", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except BaseException:
        STOP.set()
        _wait_out(worker, grace_seconds)
        for cleanup in _CLEANUPS:  # whatever the worker could not close in time
            with contextlib.suppress(Exception):  # best effort on the way out
                cleanup()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _wait_out(worker: threading.Thread, seconds: float) -> None:
    """Join ``worker`` for up to ``seconds``; further signals meanwhile don't cut it short."""
    import time

    deadline = time.monotonic() + seconds
    while worker.is_alive() and time.monotonic() < deadline:
        try:
            worker.join(0.2)
        except BaseException:
            continue
