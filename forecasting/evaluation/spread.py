"""Scoring spread over a Dask cluster: a fitted model forecasts chunks of windows on the workers.

Inside a training task on a Dask worker (``orchestration.dask_address``) whose cluster has other
workers, ``collect_forecasts`` sends the windows of a scoring pass with more than
``orchestration.score_chunk_windows`` windows out in chunks, one task each
(``forecast_windows``). What crosses is bytes only: the chunk's arrays and its forecasts as
``.npz`` bytes read without pickle (``pack_arrays``), and the
model as an archive of its saved folder (``model_archive``: ``Forecaster.save``'s JSON and
arrays in an uncompressed tar, stored once on the cluster and fetched once by each worker; no
pickle of the model, no code). A worker loads it once (``Forecaster.load``) and forecasts its
chunk in the batches the caller's process would have used, so a per-series family gives the
forecasts of one process to the last digit. The targets, window scales and metrics stay with
the caller, and each chunk's forecasts are copied into place as they come back.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from forecasting.data.windows import Windows
    from forecasting.models.base import Forecaster

Forecasts = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]  # yhat, native, bands


def pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    """Named arrays as the bytes of an ``.npz`` (numeric arrays only: ``unpack_arrays`` reads them
    without pickle), what a scoring task takes and gives back."""
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    return buf.getvalue()


def unpack_arrays(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def model_archive(model: Forecaster) -> bytes:
    """``model``'s saved folder (``Forecaster.save``) as the bytes of an uncompressed tar."""
    with tempfile.TemporaryDirectory(prefix="forecasting-score-") as tmp:
        folder = model.save(Path(tmp) / "model")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(folder, arcname="model")
        return buf.getvalue()


# The models a worker process has loaded for ``forecast_windows``, by their archive's digest, the
# most recently used last: two training tasks scoring at once on one cluster do not evict each
# other's model at every chunk. Each is loaded once, under its own lock, outside the cache's.
_KEEP = 2
_LOADED: OrderedDict[str, Forecaster] = OrderedDict()
_LOADING: dict[str, threading.Lock] = {}
_LOCK = threading.Lock()


def _model_of(archive: bytes) -> Forecaster:
    digest = hashlib.sha256(archive).hexdigest()
    with _LOCK:
        if digest in _LOADED:
            _LOADED.move_to_end(digest)
            return _LOADED[digest]
        loading = _LOADING.setdefault(digest, threading.Lock())
    with loading:
        with _LOCK:
            model = _LOADED.get(digest)
        if model is None:
            model = _load(archive)
            with _LOCK:
                _LOADED[digest] = model
                while len(_LOADED) > _KEEP:
                    _LOADED.popitem(last=False)
                _LOADING.pop(digest, None)
    return model


def _load(archive: bytes) -> Forecaster:
    """The model of an archive ``model_archive`` wrote: its files extracted to a temporary folder
    (plain files and folders under it only), then ``Forecaster.load``."""
    from forecasting.errors import ModelLoadError
    from forecasting.models.base import Forecaster

    with tempfile.TemporaryDirectory(prefix="forecasting-score-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
            members = tar.getmembers()
            unsafe = [
                m.name
                for m in members
                if not (m.isfile() or m.isdir()) or Path(m.name).is_absolute() or ".." in Path(m.name).parts
            ]
            if unsafe:
                raise ModelLoadError(
                    f"a scoring archive holds {len(unsafe)} entries that are not plain files"
                )
            if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+
                tar.extractall(tmp, members=members, filter="data")
            else:
                tar.extractall(tmp, members=members)  # members checked above
        return Forecaster.load(Path(tmp) / "model")


def loaded_digests() -> list[str]:
    """The archives this process holds a model of (a Dask worker's cache; for tests)."""
    with _LOCK:
        return list(_LOADED)


def forecast_windows(chunk: bytes, archive: bytes, batch_size: int, native: bool, bands: bool) -> bytes:
    """A task of ``spread_forecasts``: the model's point forecasts (N, H) of a chunk of windows
    (``Windows.batch``'s arrays without the targets, series as the model's positions, packed by
    ``pack_arrays``), in batches of ``batch_size``, with its native quantiles and calibrated bands
    when asked and the model has them; packed the same way (``yhat``, ``native``, ``bands``)."""
    return pack_arrays(forecast_arrays(unpack_arrays(chunk), archive, batch_size, native, bands))


def forecast_arrays(
    chunk: dict[str, np.ndarray], archive: bytes, batch_size: int, native: bool, bands: bool
) -> dict[str, np.ndarray]:
    """What ``forecast_windows`` computes, on unpacked arrays."""
    model = _model_of(archive)
    n = len(chunk["y"])
    points, natives, banded = [], [], []
    for lo in range(0, n, batch_size):
        batch = {k: v[lo : lo + batch_size] for k, v in chunk.items()}
        yhat = model.predict_windows(batch)
        points.append(yhat)
        if native:
            natives.append(model.native_quantiles(batch))
        if bands:
            banded.append(model.predict_bands(batch, yhat))
    out = {"yhat": np.concatenate(points)}
    if native and all(q is not None for q in natives):
        out["native"] = np.concatenate(natives)
    if bands:
        out["bands"] = np.concatenate(banded)
    return out


def spread_forecasts(
    model: Forecaster,
    windows: Windows,
    to_model: np.ndarray,
    batch_size: int,
    chunk_windows: int,
    *,
    native: bool,
    bands: bool,
    on_chunk: Callable[[np.ndarray, dict[str, np.ndarray]], None],
    on_result: Callable[[np.ndarray, Forecasts], None],
) -> bool:
    """Forecast every window on the workers of the cluster this task runs on, chunk by chunk:
    ``on_chunk(idx, arrays)`` sees each chunk's arrays (targets included) before they go out and
    ``on_result(idx, forecasts)`` each chunk's forecasts as they come back, in order. False, with
    nothing done, when this is not a task on a Dask worker with others beside it
    (``partition.worker_cluster``).

    A chunk holds ``chunk_windows`` windows, rounded down to whole batches of ``batch_size``
    when larger than one, so that a worker forecasts the batches this task would have. A chunk
    smaller than a batch is one batch: nothing changes for the per-series families (each
    window's forecast reads its own rows), a network's forecasts may move in the last bits."""
    from forecasting.partition import worker_cluster

    size = chunk_windows if chunk_windows < batch_size else chunk_windows // batch_size * batch_size
    order = [np.arange(lo, min(lo + size, len(windows))) for lo in range(0, len(windows), size)]
    with worker_cluster() as cluster:
        if cluster is None:
            return False
        run, _ = cluster

        def chunks() -> Iterator[dict[str, np.ndarray]]:
            for idx in order:
                batch = windows.batch(idx)
                batch["series"] = to_model[batch["series"]]
                on_chunk(idx, batch)
                yield pack_arrays({k: v for k, v in batch.items() if k != "target"})

        archive = model_archive(model)
        results = run(forecast_windows, chunks(), archive, batch_size, native, bands)
        for idx, packed in zip(order, results, strict=True):
            out = unpack_arrays(packed)
            on_result(idx, (out["yhat"], out.get("native"), out.get("bands")))
    return True
