"""What the per-series statistical families (``ets``, ``theta``) share: their training series,
their season length, fitting many series in parallel, and the parameters of each window.

A local family fits one small parameter vector per training series with a function
``fit_one(y, **options) -> (P,) float64``, named in ``FITTERS``. ``fit_series`` runs it over
every series, serially for a few series and in worker processes above ``parallel_above``. Nothing
crosses a process boundary as a pickle: a worker is this module run as a program
(``python -m forecasting.models.statistical``) that reads its series from an NPZ file (loaded with
``allow_pickle=False``), takes the fitter's *name* and its options as JSON on its command line, and
writes its parameter rows to another NPZ file. Inside a daemonic process (a multiprocessing
worker: the task runner is already parallel) the fit stays serial. Inside a task on a Dask worker
(the training fan-out on a cluster) the chunks are tasks of that cluster instead, spread over its
workers; the fitter travels by name there too, the series as float64 arrays. (Dask's own protocol
names the task function by a pickled reference, as for every Dask task: a Dask cluster is a
trusted one; see docs/scaling-out.md.)
"""

from __future__ import annotations

import importlib
import itertools
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from forecasting.data.schema import SERIES, TARGET, TIME
from forecasting.data.seasonality import season_length_for
from forecasting.data.windows import Windows
from forecasting.errors import (
    ConfigError,
    ForecastingError,
    MissingValueError,
    ModelLoadError,
    SeriesTooShortError,
    UnsortedTimestampsError,
    format_rows,
)
from forecasting.models.base import EpochCallback, Forecaster

FitOne = Callable[..., np.ndarray]
# The fitters a worker process may run, by family name (a name travels to it, never code).
FITTERS = {"ets": "forecasting.models.ets:select_ets", "theta": "forecasting.models.theta:fit_theta"}
MIN_ROWS = 10  # the fewest training rows a local model is fitted on
_CHUNKS_PER_WORKER = 4  # several chunks per process even out series of unequal cost


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def training_series(train: pd.DataFrame, family: str) -> list[np.ndarray]:
    """Each training series' ``y`` as float64 (in order of first appearance, as ``series_``)."""
    codes, uniques = pd.factorize(train[SERIES], sort=False)
    if np.any(np.diff(codes) < 0):
        raise UnsortedTimestampsError(f"{family}: each series' rows must be contiguous (a canonical frame)")
    y = train[TARGET].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(y)
    if bad.any():
        rows = train.loc[bad, [SERIES, TIME]].astype(str).agg(" ".join, axis=1)
        raise MissingValueError(f"{family}: missing or infinite y at {format_rows(rows)}")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(codes))])
    short = [str(uniques[s]) for s in range(len(uniques)) if offsets[s + 1] - offsets[s] < MIN_ROWS]
    if short:
        raise SeriesTooShortError(
            f"{family}: series {format_rows(short)} have fewer than {MIN_ROWS} training rows; drop them"
        )
    return [y[offsets[s] : offsets[s + 1]] for s in range(len(uniques))]


def resolve_season_length(family: str, setting: int | None, freq: str | None, lookback: int) -> int:
    """The season length in use: the setting, or the one the data's frequency implies.

    Seasonal models need two full seasons in every window they forecast from (``lookback``);
    an explicit setting that cannot have them is an error, a derived one quietly gives 1.
    """
    if setting is None:
        m = season_length_for(freq) if freq else 1
        return m if 2 * m <= lookback else 1
    if setting > 1 and 2 * setting > lookback:
        raise ConfigError(
            f"{family}: season_length {setting} needs a lookback of at least two seasons "
            f"({2 * setting}), not {lookback}; raise window.lookback or set season_length: 1"
        )
    return setting


def fit_series(
    family: str,
    ys: Sequence[np.ndarray],
    n_jobs: int | None,
    parallel_above: int,
    **options: Any,
) -> tuple[np.ndarray, int]:
    """``FITTERS[family](y, **options)`` for every series: ((S, P) float64, worker processes used).

    Serial when there are at most ``parallel_above`` series, when ``n_jobs`` is 1 or in a daemonic
    process; otherwise chunks of series go to ``n_jobs`` worker processes (None: every core),
    chunk ``k`` to worker ``k % workers``. ``options`` must be JSON. The result does not depend on
    the number of workers.
    """
    fit_one = _fitter(family)
    if len(ys) > parallel_above and n_jobs != 1:
        on_dask = _fit_on_dask_cluster(family, ys, options)
        if on_dask is not None:
            return on_dask
    workers = min(n_jobs or available_cores(), len(ys))
    if workers <= 1 or len(ys) <= parallel_above or multiprocessing.current_process().daemon:
        return fit_chunk(fit_one, list(ys), options), 1
    n_chunks = min(len(ys), workers * _CHUNKS_PER_WORKER)
    bounds = np.linspace(0, len(ys), n_chunks + 1).astype(int)
    with tempfile.TemporaryDirectory(prefix=f"{family}-fit-") as tmp:
        folder = Path(tmp)
        for k, (a, b) in enumerate(itertools.pairwise(bounds)):
            chunk = list(ys[a:b])
            offsets = np.concatenate([[0], np.cumsum([len(y) for y in chunk])]).astype(np.int64)
            np.savez(folder / f"in-{k}.npz", allow_pickle=False, y=np.concatenate(chunk), offsets=offsets)
        processes = []
        for w in range(workers):
            mine = [str(k) for k in range(w, n_chunks, workers)]
            command = [sys.executable, "-m", __name__, family, json.dumps(options), str(folder), *mine]
            processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        errors = [p.communicate()[1] for p in processes]
        failed = [err for p, err in zip(processes, errors, strict=True) if p.returncode]
        if failed:
            tail = failed[0].decode(errors="replace").strip().splitlines()[-1:] or ["(no message)"]
            raise ForecastingError(f"{family}: a worker fitting series failed: {tail[0]}")
        parts = [_load_rows(folder / f"out-{k}.npz") for k in range(n_chunks)]
    return np.concatenate(parts), workers


def _fit_on_dask_cluster(
    family: str, ys: Sequence[np.ndarray], options: dict[str, Any]
) -> tuple[np.ndarray, int] | None:
    """Inside a task on a Dask worker (the training fan-out on ``orchestration.dask_address``):
    the series' chunks fitted as tasks of the same cluster, spread over its workers; None
    elsewhere, or on a cluster of one worker (``partition.worker_cluster``). Each chunk crosses as
    a flat float64 array and its offsets; the fitter travels by name."""
    from forecasting.partition import worker_cluster

    with worker_cluster() as cluster:
        if cluster is None:
            return None
        run, workers = cluster
        n_chunks = min(len(ys), workers * _CHUNKS_PER_WORKER)
        bounds = np.linspace(0, len(ys), n_chunks + 1).astype(int)
        pieces = (_packed(ys[a:b]) for a, b in itertools.pairwise(bounds))  # packed as sent
        parts = list(run(fit_packed, pieces, family, options))
    return np.concatenate(parts), workers


def _packed(chunk: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A chunk of series as one flat float64 array and its offsets."""
    offsets = np.concatenate([[0], np.cumsum([len(y) for y in chunk])]).astype(np.int64)
    return np.concatenate(list(chunk)), offsets


def fit_packed(packed: tuple[np.ndarray, np.ndarray], family: str, options: dict[str, Any]) -> np.ndarray:
    """The parameter rows of the series packed in ``(y, offsets)`` (one chunk of a Dask fit)."""
    y, offsets = packed
    return fit_chunk(_fitter(family), [y[a:b] for a, b in itertools.pairwise(offsets)], options)


def fit_chunk(fit_one: FitOne, ys: list[np.ndarray], options: dict[str, Any]) -> np.ndarray:
    """The stacked parameter vectors of ``ys`` (what one worker computes for one chunk)."""
    return np.stack([fit_one(y, **options) for y in ys])


def _fitter(family: str) -> FitOne:
    module, _, name = FITTERS[family].partition(":")
    return getattr(importlib.import_module(module), name)


def _load_rows(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as out:
        return out["params"]


def _work(family: str, options: str, folder: str, chunks: list[str]) -> None:
    """A worker process: fit the series of each chunk file, write its rows beside it."""
    fit_one, opts = _fitter(family), json.loads(options)
    for k in chunks:
        with np.load(Path(folder) / f"in-{k}.npz", allow_pickle=False) as data:
            y, offsets = data["y"], data["offsets"]
        ys = [y[a:b] for a, b in itertools.pairwise(offsets)]
        np.savez(Path(folder) / f"out-{k}.npz", allow_pickle=False, params=fit_chunk(fit_one, ys, opts))


def window_params(
    series: np.ndarray, table: np.ndarray, y: np.ndarray, fit_window: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Parameters of each window (N, P) and a group id per distinct parameter vector (N,).

    A window of training series ``s`` (``series`` in 0..S-1) takes row ``s`` of ``table`` and
    group ``s``; a window of a series the model has not seen (-1) is fitted alone, on its own
    history ``y`` (N, L), and gets a group of its own.
    """
    idx = np.asarray(series, dtype=np.int64)
    seen = (idx >= 0) & (idx < len(table))
    params = np.empty((len(idx), table.shape[1]))
    params[seen] = table[idx[seen]]
    group = np.where(seen, idx, -1)
    for j, i in enumerate(np.flatnonzero(~seen)):
        params[i] = fit_window(y[i])
        group[i] = len(table) + j
    return params, group


def save_params(path: Path, name: str, params: np.ndarray, season_length: int) -> None:
    """A per-series family's state: its parameter rows and season, as NPZ ``name`` (no pickle)."""
    np.savez(path / name, allow_pickle=False, params=params, season_length=np.int64(season_length))


def load_params(path: Path, name: str, family: str, n_series: int, n_columns: int) -> tuple[np.ndarray, int]:
    """(parameter rows (S, P), season length) saved by ``save_params``; ``ModelLoadError`` when
    the file is unreadable or does not match the model's series."""
    try:
        with np.load(path / name, allow_pickle=False) as state:
            params, season_length = state["params"], int(state["season_length"])
    except (OSError, KeyError, ValueError) as err:
        raise ModelLoadError(f"{path}: unreadable {family} state {name} ({err})") from None
    if params.shape != (n_series, n_columns):
        raise ModelLoadError(f"{path}: {family} parameters of shape {params.shape} do not match model.json")
    return params, season_length


class PerSeriesForecaster(Forecaster):
    """A family of one parameter row per training series, fitted by ``FITTERS[name]`` (through
    ``fit_series``) and saved as NPZ. A family sets ``state_file`` and ``n_columns`` and writes
    ``_predict_windows``; ``fit_options`` adds its own fitter options to the season length.
    Its settings carry ``season_length``, ``n_jobs`` and ``parallel_above``."""

    state_file: ClassVar[str] = ""
    n_columns: ClassVar[int] = 0
    reads_calendar = False  # only y
    params_: np.ndarray | None = None  # (S, n_columns) one row per training series
    season_length_: int = 1
    n_workers_: int = 1  # worker processes the fit used

    def fit_options(self) -> dict[str, Any]:
        """The fitter's options beyond the season length (JSON: they travel to the workers)."""
        return {}

    def _fit(
        self,
        train: pd.DataFrame,
        train_windows: Windows,
        val_windows: Windows | None,
        callbacks: list[EpochCallback],
    ) -> None:
        s = self.settings
        self.season_length_ = resolve_season_length(
            self.name, s.season_length, self.freq_, self.spec.lookback
        )
        ys = training_series(train, self.name)
        self.params_, self.n_workers_ = fit_series(
            self.name, ys, s.n_jobs, s.parallel_above, season_length=self.season_length_, **self.fit_options()
        )

    def _save_state(self, path: Path) -> None:
        save_params(path, self.state_file, self.params_, self.season_length_)

    def _load_state(self, path: Path) -> None:
        self.params_, self.season_length_ = load_params(
            path, self.state_file, type(self).__name__, len(self.series_), self.n_columns
        )
        self.n_workers_ = 1


if __name__ == "__main__":  # a worker of ``fit_series``
    _work(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
