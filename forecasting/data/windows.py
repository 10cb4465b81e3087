"""Lookback/horizon windows over strided views of the scaled series.

All series are concatenated into flat float32 arrays with per-series offsets. A window is just a
start index into those arrays; a batch is gathered by fancy-indexing a ``sliding_window_view``,
so memory stays at one copy of the data plus one batch, never N x (L + H) copies.

Plain numpy: the naive and AR families window their data without torch; the training loop turns
batches into tensors (``forecasting.training.loop.to_tensors``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from forecasting.data.calendar import calendar_features
from forecasting.data.schema import SERIES, TARGET, TIME


@dataclass(frozen=True)
class SeriesArrays:
    """Every series of a frame, concatenated. Row ``i`` of series ``k`` is ``offsets[k] + i``."""

    series_ids: np.ndarray  # (S,) str
    offsets: np.ndarray  # (S + 1,) int64
    t: np.ndarray  # (T,) datetime64
    y: np.ndarray  # (T,) float32
    x_past: np.ndarray  # (T, Cp + Cf + 2k) float32: every covariate known up to the present
    x_future: np.ndarray  # (T, Cf + 2k) float32: the future-known covariates, calendar (k features)
    # last; a view of x_past's last columns (no second copy)
    static: np.ndarray  # (S, Cs) float32

    @property
    def n_series(self) -> int:
        return len(self.series_ids)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def to_arrays(
    frame: pd.DataFrame,
    past: list[str] = (),
    future: list[str] = (),
    static: list[str] = (),
    calendar: list[str] = (),
) -> SeriesArrays:
    """Flatten a canonical (sorted, series-contiguous) frame into ``SeriesArrays``.

    ``calendar`` names calendar features (``forecasting.data.calendar``) computed once per row from
    ``t`` and appended, as future-known covariates, after the declared ones in ``x_past`` and
    ``x_future``.
    """
    past, future, static = list(past), list(future), list(static)
    codes, uniques = pd.factorize(frame[SERIES], sort=False)
    counts = np.bincount(codes, minlength=len(uniques)) if len(codes) else np.zeros(0, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    first_rows = offsets[:-1]
    values = lambda cols: frame[cols].to_numpy(dtype=np.float32).reshape(len(frame), len(cols))  # noqa: E731
    x_past = values(past + future)
    if calendar:
        x_past = np.hstack([x_past, calendar_features(frame[TIME], list(calendar))])  # (T, Cp+Cf+2k)
    x_future = x_past[:, len(past) :]  # a view: the future-known columns are x_past's last ones
    return SeriesArrays(
        series_ids=np.asarray(uniques, dtype=object),
        offsets=offsets,
        t=frame[TIME].to_numpy(),
        y=frame[TARGET].to_numpy(dtype=np.float32),
        x_past=x_past,
        x_future=x_future,
        static=values(static)[first_rows] if len(frame) else np.zeros((0, len(static)), np.float32),
    )


def index_dtype(n: int) -> type[np.integer]:
    """int32 for positions below 2**31 (half the memory of int64), int64 beyond."""
    return np.int32 if n < 2**31 else np.int64


def window_starts(arrays: SeriesArrays, lookback: int, horizon: int, stride: int = 1) -> np.ndarray:
    """Global start index of every full window (L inputs then H targets) inside each series.

    The last window of each series always ends on the series' last row, so that with
    ``stride=1`` the count per series is ``length - L - H + 1``; with a larger stride the
    windows step back from there (``(length - L - H) // stride + 1`` per series).

    Built in place in ``index_dtype`` of the row count: 33 M training windows of 100,000 series
    take 134 MB and one more array of that size while they are built, not four of int64.
    """
    span = lookback + horizon
    room = arrays.lengths() - span  # (S,) how far the last window starts from the first row
    count = np.where(room >= 0, room // stride + 1, 0)  # (S,) windows per series
    total = int(count.sum())
    dtype = index_dtype(len(arrays.y))
    if total == 0:
        return np.zeros(0, dtype=dtype)
    first = arrays.offsets[1:] - span - (count - 1) * stride  # (S,) start of each series' first window
    before = np.cumsum(count) - count  # (S,) windows of the series before each
    starts = np.arange(total, dtype=dtype)  # the window's rank in the whole
    starts -= np.repeat(before.astype(dtype), count)  # its rank within its series
    starts *= dtype(stride)
    starts += np.repeat(first.astype(dtype), count)
    return starts


def series_of(arrays: SeriesArrays, starts: np.ndarray) -> np.ndarray:
    """Series index (into ``arrays.series_ids``) of each window start."""
    at = np.searchsorted(arrays.offsets, starts, side="right")
    at -= 1
    return at


class Windows:
    """The windows of a frame, indexable like a sequence; ``batch(idx)`` gathers many at once.

    Items are dicts of arrays: ``y`` (L,), ``x_past`` (L, Cp+Cf+2k), ``x_future`` (H, Cf+2k),
    ``static`` (Cs,), ``target`` (H,), ``series`` () index into ``arrays.series_ids``.
    """

    def __init__(self, arrays: SeriesArrays, lookback: int, horizon: int, stride: int = 1):
        self.arrays = arrays
        self.lookback = lookback
        self.horizon = horizon
        self.starts = window_starts(arrays, lookback, horizon, stride)
        self._series: np.ndarray | None = None
        span = lookback + horizon
        n = len(arrays.y)
        # Views, not copies: (T - span + 1, span) and (T - span + 1, C, span).
        self._y = sliding_window_view(arrays.y, span) if n >= span else np.zeros((0, span), np.float32)
        self._xp = sliding_window_view(arrays.x_past, lookback, axis=0) if n >= lookback else None
        self._xf = sliding_window_view(arrays.x_future, horizon, axis=0) if n >= horizon else None

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def series(self) -> np.ndarray:
        """Series index of every window (N,), computed on first use: a training loop, which
        gathers batches only, never holds it (268 MB for 33 M windows)."""
        if self._series is None:
            self._series = series_of(self.arrays, self.starts)
        return self._series

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.batch(np.array([i])).items()}

    def batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        s = self.starts[idx]
        L = self.lookback
        window = self._y[s]  # (B, L + H) copy of this batch only
        series = self._series[idx] if self._series is not None else series_of(self.arrays, s)
        out = {
            "y": window[:, :L],
            "target": window[:, L:],
            "series": series,
            "static": self.arrays.static[series],
        }
        out["x_past"] = (
            np.swapaxes(self._xp[s], 1, 2) if self._xp is not None else np.zeros((len(s), L, 0), np.float32)
        )  # (B, L, Cp+Cf+2k)
        out["x_future"] = (
            np.swapaxes(self._xf[s + L], 1, 2)
            if self._xf is not None
            else np.zeros((len(s), self.horizon, 0), np.float32)
        )  # (B, H, Cf+2k)
        return out

    def target_times(self, idx: np.ndarray) -> np.ndarray:
        """Timestamps of the H targets of each window: (B, H)."""
        s = self.starts[idx] + self.lookback
        return self.arrays.t[s[:, None] + np.arange(self.horizon)[None, :]]

    def iter_batches(
        self, batch_size: int, shuffle: bool = False, rng: np.random.Generator | None = None
    ) -> Iterator[np.ndarray]:
        """Index arrays of consecutive (or shuffled) batches."""
        order = np.arange(len(self))
        if shuffle:
            (rng or np.random.default_rng()).shuffle(order)
        for i in range(0, len(order), batch_size):
            yield order[i : i + batch_size]
