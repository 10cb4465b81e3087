"""Failpoints: named places where the fault-injection suite kills this process with SIGKILL.

A kill -9 gives a process no chance to clean up, so what it leaves behind is what a crash, an
OOM kill or a pulled plug leaves: runs ``RUNNING`` in the store, half-written checkpoints, a
registered version without a decision. The suite (``tests/test_faults.py``, ``docs/reliability.md``)
needs that to happen at a chosen place, every time; a timer cannot promise which step a run has
reached. The technique is the one of FreeBSD's fail(9), etcd's gofail and TiKV's fail-rs.

``FORECAST_FAILPOINT=<name>[@<n>]`` kills the process the ``n``-th time (default: the first) it
passes ``failpoint(name)``. Unset (always, outside the suite) a failpoint costs one dictionary
lookup. The places:

- ``ingest``: the data has been read and validated, nothing is logged yet;
- ``epoch``: a network has finished an epoch, logged it and written its checkpoint;
- ``select``: the champion step has registered its version and decided nothing yet.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

ENV = "FORECAST_FAILPOINT"
POINTS = ("ingest", "epoch", "select")
_passes: Counter[str] = Counter()
_lock = threading.Lock()


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        return None
    name, _, nth = spec.partition("@")
    if name not in POINTS:
        raise ValueError(f"{ENV}={spec!r}: the failpoints are {', '.join(POINTS)}")
    return name, int(nth or 1)


def failpoint(name: str, *_: object) -> None:
    """Kill this process with SIGKILL if ``FORECAST_FAILPOINT`` arms ``name`` for this pass.

    Extra arguments are ignored, so it can be an epoch callback (``epoch, metrics``)."""
    armed = _armed()
    if armed is None or armed[0] != name:
        return
    with _lock:
        _passes[name] += 1
        due = _passes[name] == armed[1]
    if due:
        os.kill(os.getpid(), signal.SIGKILL)


def epoch_failpoint(*_: object) -> None:
    """``failpoint("epoch")`` as a training callback."""
    failpoint("epoch")
