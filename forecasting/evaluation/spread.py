"""Scoring spread over a Dask cluster: a fitted model forecasts chunks of windows on the workers.

Inside a training task on a Dask worker (``orchestration.dask_address``) whose cluster has other
workers, ``collect_forecasts`` sends the windows of a scoring pass with more than
``orchestration.score_chunk_windows`` windows out in chunks, one task each
(``forecast_windows``). What crosses: the chunk's arrays (numpy, as Dask sends them) and the
model as an archive of its saved folder (``model_archive``: ``Forecaster.save``'s JSON and
arrays in an uncompressed tar, sent to each worker once; no pickle of the model, no code). A
worker loads it once (``Forecaster.load``) and forecasts its chunk in the batches the caller's
process would have used, so a per-series family gives the forecasts of one process to the last
digit. The targets, window scales and metrics stay with the caller.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from forecasting.data.windows import Windows
    from forecasting.models.base import Forecaster

Forecasts = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]  # yhat, native, bands


def model_archive(model: Forecaster) -> bytes:
    """``model``'s saved folder (``Forecaster.save``) as the bytes of an uncompressed tar."""
    with tempfile.TemporaryDirectory(prefix="forecasting-score-") as tmp:
        folder = model.save(Path(tmp) / "model")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(folder, arcname="model")
        return buf.getvalue()


# The model a worker process has loaded for ``forecast_windows``, by its archive's digest.
_LOADED: dict[str, Forecaster] = {}
_LOCK = threading.Lock()


def _model_of(archive: bytes) -> Forecaster:
    from forecasting.models.base import Forecaster

    digest = hashlib.sha256(archive).hexdigest()
    with _LOCK:
        model = _LOADED.get(digest)
        if model is None:
            with tempfile.TemporaryDirectory(prefix="forecasting-score-") as tmp:
                with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
                    tar.extractall(tmp, filter="data")  # plain files under tmp only
                model = Forecaster.load(Path(tmp) / "model")
            _LOADED.clear()
            _LOADED[digest] = model
    return model


def loaded_digests() -> list[str]:
    """The archives this process holds a model of (a Dask worker's cache; for tests)."""
    with _LOCK:
        return list(_LOADED)


def forecast_windows(
    chunk: dict[str, np.ndarray], archive: bytes, batch_size: int, native: bool, bands: bool
) -> Forecasts:
    """A task of ``spread_forecasts``: the model's point forecasts (N, H) of a chunk of windows
    (``Windows.batch``'s arrays without the targets, series as the model's positions), in batches
    of ``batch_size``, with its native quantiles and calibrated bands when asked (None when the
    model has none)."""
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
    has_native = native and all(q is not None for q in natives)
    return (
        np.concatenate(points),
        np.concatenate(natives) if has_native else None,
        np.concatenate(banded) if bands else None,
    )


def spread_forecasts(
    model: Forecaster,
    windows: Windows,
    to_model: np.ndarray,
    batch_size: int,
    chunk_windows: int,
    *,
    native: bool,
    bands: bool,
    on_chunk: Any,
) -> Iterator[tuple[np.ndarray, Forecasts]] | None:
    """The forecasts of every window, chunk by chunk, from the workers of the cluster this task
    runs on: ``(idx, forecasts)`` in order. None when this is not a task on a Dask worker with
    others beside it (``partition.worker_cluster``). ``on_chunk(idx, batch)`` sees each chunk's
    arrays (targets included) before they go out. Chunks hold ``chunk_windows`` windows, a
    whole number of ``batch_size`` batches when larger than one."""
    from forecasting.partition import worker_cluster

    size = chunk_windows if chunk_windows < batch_size else chunk_windows // batch_size * batch_size
    cuts = list(range(0, len(windows), size))
    with worker_cluster() as cluster:
        if cluster is None:
            return None
        run, _ = cluster
        order = [np.arange(lo, min(lo + size, len(windows))) for lo in cuts]

        def chunks() -> Iterator[dict[str, np.ndarray]]:
            for idx in order:
                batch = windows.batch(idx)
                batch["series"] = to_model[batch["series"]]
                on_chunk(idx, batch)
                yield {k: v for k, v in batch.items() if k != "target"}

        archive = model_archive(model)
        done = list(run(forecast_windows, chunks(), archive, batch_size, native, bands))
    return iter(list(zip(order, done, strict=True)))
