"""Per-series work in chunks of series: in this process, or spread over a Dask cluster.

Batch prediction reads its input, then splits it by series into chunks of
``predict.chunk_series`` series, in the order of the series' ids (the canonical order, so the
chunks' forecasts concatenate to the forecast of the whole file). Each chunk is validated,
forecast and written (a Parquet row group) before the next, so memory holds the input, one
chunk's canonical frame and windows, and the forecasts, not the whole file's windows.

With ``orchestration.dask_address`` (a running ``dask scheduler``) or ``dask_local_workers`` (a
``LocalCluster`` started for the call), every chunk is a task on the cluster's workers. Only
bytes and plain values cross: a chunk goes out as an Arrow IPC stream and its forecasts come
back as one (``to_ipc`` / ``from_ipc``), and the task is a function of this package named by
reference, never code built at run time. At most ``IN_FLIGHT_PER_WORKER`` chunks per worker are
out at once, and results are taken back in chunk order, so the output is the same file whatever
the number of workers.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from forecasting.errors import ForecastingError, InputValidationError

IN_FLIGHT_PER_WORKER = 2  # chunks sent to a worker before the first comes back
SCATTER_ABOVE = 1 << 20  # a bytes argument of every task larger than this is stored once on the cluster


# --- chunks --------------------------------------------------------------------------------------
def series_chunks(ids: pd.Series, size: int) -> list[np.ndarray]:
    """Row positions of each chunk of at most ``size`` series, series in the order of their ids as
    text (the canonical order), rows of a series in file order. Rows with no id (NaN) go with the
    first chunk, where validation names them."""
    codes, uniques = pd.factorize(ids.astype("str"), sort=True, use_na_sentinel=True)
    codes = np.where(codes < 0, 0, codes)  # a missing id: validated (and refused) with chunk 0
    order = np.argsort(codes, kind="stable")
    n_series = max(len(uniques), 1)
    cuts = np.append(np.arange(0, n_series, size), n_series)  # the first code of every chunk, then the end
    edges = np.searchsorted(codes[order], cuts)
    return [order[a:b] for a, b in itertools.pairwise(edges) if b > a]


# --- bytes across a process boundary ------------------------------------------------------------
def to_ipc(frame: pd.DataFrame) -> bytes:
    """A frame as an Arrow IPC stream (columns, dtypes and time zones kept; no pickle). A column
    of mixed Python objects (a wide CSV read in blocks can give numbers and text in one column)
    goes as text, each value as ``str`` gives it and missing ones missing, for validation to read
    exactly as it reads the file."""
    mixed = {
        c: frame[c].map(lambda v: None if pd.isna(v) else str(v))
        for c in frame.columns
        if frame[c].dtype == object
    }
    table = pa.Table.from_pandas(frame.assign(**mixed) if mixed else frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pd.DataFrame:
    """The frame ``to_ipc`` wrote."""
    with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
        return reader.read_all().to_pandas()


# --- where chunks run ----------------------------------------------------------------------------
ChunkMap = Callable[..., Iterator[Any]]


def local_map(fn: Callable[..., Any], items: Iterable[Any], *args: Any) -> Iterator[Any]:
    """``fn(item, *args)`` for every item, one after another in this process."""
    for item in items:
        yield fn(item, *args)


@contextlib.contextmanager
def chunk_map(dask_address: str | None = None, dask_local_workers: int | None = None) -> Iterator[ChunkMap]:
    """A ``map(fn, items, *args)`` that yields ``fn(item, *args)`` in the order of ``items``: on the
    workers of the Dask scheduler at ``dask_address``, of a ``LocalCluster`` of
    ``dask_local_workers`` processes started (and stopped) here, or in this process. Called
    from a task on a Dask worker (the flows run their tasks on the configured cluster), it uses
    that worker's cluster."""
    if not dask_address and not dask_local_workers:
        yield local_map
        return
    try:
        from distributed import Client, LocalCluster, get_worker, worker_client
    except ImportError:
        raise InputValidationError(
            "orchestration asks for Dask but dask.distributed is not installed: pip install '.[dask]'"
        ) from None

    with contextlib.ExitStack() as stack:
        try:
            get_worker()  # this call is itself a task on a worker (the flow's tasks on Dask)
            inside = True
        except ValueError:
            inside = False
        if inside:  # the cluster it runs on; its thread is given back while it waits
            client = stack.enter_context(worker_client())
        elif dask_address:
            try:
                client = stack.enter_context(Client(dask_address, set_as_default=False))
            except (OSError, TimeoutError) as err:
                raise ForecastingError(
                    f"cannot reach the Dask scheduler at orchestration.dask_address {dask_address!r}: {err}"
                ) from None
        else:
            cluster = stack.enter_context(
                LocalCluster(n_workers=dask_local_workers, threads_per_worker=1, processes=True)
            )
            client = stack.enter_context(Client(cluster, set_as_default=False))
        yield _dask_map(client)


@contextlib.contextmanager
def worker_cluster() -> Iterator[tuple[ChunkMap, int] | None]:
    """Inside a task on a Dask worker (the training fan-out on ``orchestration.dask_address``):
    a map over that worker's cluster and its number of workers, when it has more than one (the
    task gives its thread back while it waits, so the caller should only dispatch and gather
    inside the block). None elsewhere: not on a worker, or a cluster of one worker. How the
    per-series families spread a fit over the cluster a training task runs on."""
    if "distributed" not in sys.modules:  # a Dask worker has imported it: this is no worker
        yield None
        return
    from distributed import get_client, get_worker, worker_client

    try:
        get_worker()
    except ValueError:
        yield None
        return
    # Counted before the task gives its thread back: on a cluster of one it keeps it and works.
    workers = len(get_client().nthreads())  # every worker (scheduler_info may list only a few)
    if workers <= 1:
        yield None
        return
    with worker_client() as client:
        yield _dask_map(client), workers


def _dask_map(client: Any) -> ChunkMap:
    def run(fn: Callable[..., Any], items: Iterable[Any], *args: Any) -> Iterator[Any]:
        window = IN_FLIGHT_PER_WORKER * max(len(client.nthreads()), 1)
        # Bytes shared by every task (a model's archive) are stored once on the cluster and fetched
        # once by each worker that needs them, not sent with every task (no hashing of the bytes).
        args = tuple(
            client.scatter([a], hash=False)[0] if isinstance(a, bytes) and len(a) > SCATTER_ABOVE else a
            for a in args
        )
        pending: deque[Any] = deque()
        try:
            for item in items:
                pending.append(client.submit(fn, item, *args, pure=False))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # an error (or the caller stopping) cancels what is still out
                future.cancel()

    return run
