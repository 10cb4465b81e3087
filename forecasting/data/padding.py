"""Left padding of short series, so that a series shorter than a model's window still gets a
forecast instead of being dropped.

A series of ``n`` rows that needs ``min_rows`` gets ``min_rows - n`` rows in front of its first
one: timestamps stepping back by the frequency, and its first row's values (edge padding: the
oldest level it shows, the same thing a shorter history would suggest). Padded rows only ever
serve as history: a caller pads by at most a lookback, so every target a model trains or is
scored on is a real row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from forecasting.data.schema import SERIES, TIME


def left_pad(
    frame: pd.DataFrame, min_rows: int, freq: str, max_pad: int | None = None
) -> tuple[pd.DataFrame, pd.Series]:
    """``frame`` (canonical, series contiguous and in time order) with every series shorter
    than ``min_rows`` padded at its start to ``min_rows``; and the rows added per padded series.

    A series that would need more than ``max_pad`` rows is left as it is (and so is its count:
    not in the returned series), for the caller's own length check to name it.
    """
    lengths = frame.groupby(SERIES, sort=False).size()
    need = min_rows - lengths
    pad = need[(need > 0) & ((need <= max_pad) if max_pad is not None else True)]
    if pad.empty:
        return frame, pad.astype(np.int64)
    offset = to_offset(freq)
    firsts = frame.groupby(SERIES, sort=False).head(1).set_index(SERIES).loc[pad.index]
    counts = pad.to_numpy(np.int64)
    block = firsts.loc[firsts.index.repeat(counts)].reset_index()
    # Row j (0-based) of a block of k rows lies k - j steps before its series' first row.
    ends = np.cumsum(counts)
    depth = np.repeat(ends, counts) - np.arange(ends[-1])  # k, k-1, ..., 1 per block
    block[TIME] = shift_back(pd.DatetimeIndex(block[TIME]), depth, offset)
    codes, uniques = pd.factorize(frame[SERIES], sort=False)  # series in order of appearance
    rank = np.concatenate([np.repeat(pd.Index(uniques).get_indexer(pad.index), counts), codes])
    padded = pd.concat([block, frame], ignore_index=True)
    padded = padded.astype(frame.dtypes.to_dict())
    # A stable sort by series keeps each block (already in time order, and earlier than its
    # series' first row) in front of its series' own rows.
    padded = padded.iloc[np.argsort(rank, kind="stable")].reset_index(drop=True)
    return padded[frame.columns], pad.astype(np.int64)


def shift_back(times: pd.DatetimeIndex, steps: np.ndarray, offset: pd.DateOffset) -> pd.DatetimeIndex:
    """``times[i]`` moved back by ``steps[i]`` steps of ``offset``: one vectorised shift per
    distinct step count (at most a lookback of them), never a loop over series. Calendar offsets
    (months, anchored weeks) step as ``pd.date_range`` does."""
    out = pd.Series(times)
    for k in np.unique(steps):
        at = steps == k
        out[at] = times[at] - int(k) * offset
    return pd.DatetimeIndex(out)
