"""Split each series by time into train / validation / test.

Validation and test segments start ``lookback`` rows before their border so that their first
window has a full history and its first target falls exactly on the border (the ETT protocol of
Informer, Autoformer, DLinear, PatchTST and Time-Series-Library).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.config import SplitConfig, WindowConfig
from forecasting.data.schema import SERIES
from forecasting.errors import SeriesTooShortError, format_rows


@dataclass(frozen=True)
class Split:
    """Row segments of the canonical frame; ``val``/``test`` include ``lookback`` rows of history."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    borders: pd.DataFrame  # per series: train_end, val_end, test_end (row positions in the series)
    lookback: int


def split_borders(lengths: pd.Series, split: SplitConfig, window: WindowConfig) -> pd.DataFrame:
    """Per-series border rows; raises ``SeriesTooShortError`` naming every series that is too short.

    ``lengths``: rows per series (index: series id). Returns ``train_end``, ``val_end`` and
    ``test_end`` per series. Every series needs one full training window (lookback + horizon rows
    before ``train_end``) and at least one horizon to score in validation and in test.
    """
    n = lengths.to_numpy().astype(np.int64)
    ends = _ends(n, split, window)
    short = _too_short(ends, n, split, window)
    if short.any():
        need = _rows_needed(split, window)
        why = f"lookback {window.lookback} and horizon {window.horizon} with "
        if split.method == "borders":
            why += f"the split borders {list(split.borders)}"  # type: ignore[arg-type]
        elif split.method == "counts":
            why += f"{split.val_horizons} validation and {split.test_horizons} test horizon(s) from the end"
        else:
            val = 1 - split.train_fraction - split.test_fraction
            why += f"train/val/test fractions {split.train_fraction:g}/{val:.2g}/{split.test_fraction:g}"
        bad = [f"{sid!r} ({int(k)} rows)" for sid, k in zip(lengths.index[short], n[short], strict=True)]
        raise SeriesTooShortError(
            f"{int(short.sum())} series too short for {why}: "
            f"{format_rows(bad)}; each needs at least {need} rows (drop short series or lower "
            "window.lookback / horizon)"
        )
    return pd.DataFrame(ends, index=lengths.index, columns=["train_end", "val_end", "test_end"])


def train_rows(lengths: pd.Series, split: SplitConfig, window: WindowConfig) -> np.ndarray:
    """Training rows of each series of ``lengths`` rows (before any length check)."""
    return _ends(lengths.to_numpy().astype(np.int64), split, window)[:, 0]


def _ends(n: np.ndarray, split: SplitConfig, window: WindowConfig) -> np.ndarray:
    """(S, 3) train_end, val_end, test_end of series of ``n`` rows."""
    if split.method == "borders":
        return np.tile(np.asarray(split.borders, dtype=np.int64), (len(n), 1))
    if split.method == "counts":
        n_test, n_val = split.test_horizons * window.horizon, split.val_horizons * window.horizon
        return np.stack([n - n_test - n_val, n - n_test, n], axis=1)
    train_end = np.floor(n * split.train_fraction).astype(np.int64)
    n_test = np.floor(n * split.test_fraction).astype(np.int64)
    return np.stack([train_end, n - n_test, n], axis=1)


def _too_short(ends: np.ndarray, n: np.ndarray, split: SplitConfig, window: WindowConfig) -> np.ndarray:
    train_end, val_end, test_end = ends[:, 0], ends[:, 1], ends[:, 2]
    short = (train_end < window.lookback + window.horizon) | (val_end - train_end < window.horizon)
    short |= test_end - val_end < window.horizon
    if split.method == "borders":
        short |= n < test_end
    return short


def _rows_needed(split: SplitConfig, window: WindowConfig) -> int:
    """The fewest rows a series needs (exact, since the fractions round down)."""
    if split.method == "borders":
        return int(split.borders[2])  # type: ignore[index]
    L, H = window.lookback, window.horizon
    if split.method == "counts":
        return L + H + (split.val_horizons + split.test_horizons) * H
    tf, sf = split.train_fraction, split.test_fraction
    vf = max(1 - tf - sf, 1e-12)
    # val rows lie in [vf * n, vf * n + 2]: the answer is between these bounds.
    lo = max(int(np.ceil((L + H) / tf)), int(np.ceil(H / sf)), int((H - 2) / vf), 1) - 2
    hi = max(int(np.ceil(max((L + H) / tf, H / sf, H / vf))), lo) + 2
    n = np.arange(max(lo, 1), hi + 1, dtype=np.int64)
    ok = ~_too_short(_ends(n, split, window), n, split, window)
    return int(n[np.argmax(ok)]) if ok.any() else hi


@dataclass(frozen=True)
class SplitPlan:
    """Where every series of a frame is cut, without the segments themselves: what a pipeline
    keeps once the segments are scaled (a second, unscaled copy of every row is not needed)."""

    borders: pd.DataFrame  # per series: train_end, val_end, test_end (row positions in the series)
    lookback: int
    rows: dict[str, int]  # rows of each segment: train, val, test (val/test with their lookback)


def plan_split(
    frame: pd.DataFrame, split: SplitConfig, window: WindowConfig
) -> tuple[SplitPlan, dict[str, np.ndarray]]:
    """The borders of every series of a canonical frame and, per segment, a boolean mask of the
    frame's rows it holds (vectorised over series)."""
    lengths = frame.groupby(SERIES, sort=False).size()
    borders = split_borders(lengths, split, window)
    pos = frame.groupby(SERIES, sort=False).cumcount().to_numpy()
    per_row = borders.loc[frame[SERIES]].to_numpy()
    train_end, val_end, test_end = per_row[:, 0], per_row[:, 1], per_row[:, 2]
    del per_row
    lb = window.lookback
    masks = {
        "train": pos < train_end,
        "val": (pos >= train_end - lb) & (pos < val_end),
        "test": (pos >= val_end - lb) & (pos < test_end),
    }
    rows = {name: int(mask.sum()) for name, mask in masks.items()}
    return SplitPlan(borders=borders, lookback=lb, rows=rows), masks


def segment(frame: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    """The rows of ``frame`` a ``plan_split`` mask selects, indexed from 0."""
    return frame[mask].reset_index(drop=True)


def split_frame(frame: pd.DataFrame, split: SplitConfig, window: WindowConfig) -> Split:
    """Cut every series of a canonical frame at its borders (vectorised over series)."""
    plan, masks = plan_split(frame, split, window)
    return Split(
        train=segment(frame, masks["train"]),
        val=segment(frame, masks["val"]),
        test=segment(frame, masks["test"]),
        borders=plan.borders,
        lookback=plan.lookback,
    )
