"""One small thing two heartbeats share: run an action now, then every few seconds in a daemon
thread, while a block runs (a pipeline run's MLflow heartbeat, an Optuna trial's heartbeat)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress


@contextmanager
def every(seconds: float, action: Callable[[], None], name: str) -> Iterator[None]:
    """Call ``action`` at once and then every ``seconds`` until the block ends. An action that
    raises (a store that blips) is skipped: the next one will do. The thread is joined on exit."""
    done = threading.Event()

    def loop() -> None:
        while True:
            with suppress(Exception):
                action()
            if done.wait(seconds):
                return

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=max(10.0, seconds))
