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
from forecasting.errors import SeriesTooShortError, format_rows

SERIES = "series_id"


@dataclass(frozen=True)
class Split:
    """Row segments of the canonical frame; ``val``/``test`` include ``lookback`` rows of history."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    borders: pd.DataFrame  # per series: train_end, val_end, test_end (row positions in the series)
    lookback: int


def split_borders(lengths: pd.Series, split: SplitConfig, window: WindowConfig) -> pd.DataFrame:
    """Per-series border rows; raises ``SeriesTooShortError`` naming every series that is too short."""
    n = lengths.to_numpy()
    if split.method == "borders":
        a, b, c = split.borders  # type: ignore[misc]
        ends = np.tile(np.array([a, b, c]), (len(n), 1))
        short = n < c
        need = np.full(len(n), c)
        why = f"the split borders need {c} rows"
    else:
        train_end = np.floor(n * split.train_fraction).astype(np.int64)
        n_test = np.floor(n * split.test_fraction).astype(np.int64)
        val_end = n - n_test
        ends = np.stack([train_end, val_end, n], axis=1)
        # One train window, and at least one full horizon to score in validation and test.
        short = (train_end < window.lookback + window.horizon) | (val_end - train_end < window.horizon) | (
            n_test < window.horizon
        )
        need = np.ceil(
            np.maximum.reduce(
                [
                    (window.lookback + window.horizon) / split.train_fraction,
                    window.horizon / max(1e-9, 1 - split.train_fraction - split.test_fraction),
                    window.horizon / split.test_fraction,
                ]
            )
        ) * np.ones(len(n))
        why = (
            f"lookback {window.lookback} + horizon {window.horizon} with fractions "
            f"{split.train_fraction}/{1 - split.train_fraction - split.test_fraction:.2f}/{split.test_fraction}"
        )
    if split.method == "borders":
        first_train = ends[:, 0]
        short |= first_train < window.lookback + window.horizon
        short |= (ends[:, 1] - ends[:, 0] < window.horizon) | (ends[:, 2] - ends[:, 1] < window.horizon)
    if short.any():
        bad = [f"{sid!r} ({int(k)} rows)" for sid, k in zip(lengths.index[short], n[short], strict=True)]
        raise SeriesTooShortError(
            f"{int(short.sum())} series too short for {why}: {format_rows(bad)}; each needs at least "
            f"{int(need[short].max())} rows (drop short series or lower window.lookback / horizon)"
        )
    return pd.DataFrame(ends, index=lengths.index, columns=["train_end", "val_end", "test_end"])


def split_frame(frame: pd.DataFrame, split: SplitConfig, window: WindowConfig) -> Split:
    """Cut every series of a canonical frame at its borders (vectorised over series)."""
    lengths = frame.groupby(SERIES, sort=False).size()
    borders = split_borders(lengths, split, window)
    pos = frame.groupby(SERIES, sort=False).cumcount().to_numpy()
    per_row = borders.loc[frame[SERIES]].to_numpy()
    train_end, val_end, test_end = per_row[:, 0], per_row[:, 1], per_row[:, 2]
    lb = window.lookback
    train = frame[pos < train_end]
    val = frame[(pos >= train_end - lb) & (pos < val_end)]
    test = frame[(pos >= val_end - lb) & (pos < test_end)]
    return Split(
        train=train.reset_index(drop=True),
        val=val.reset_index(drop=True),
        test=test.reset_index(drop=True),
        borders=borders,
        lookback=lb,
    )
