"""Preparation: ingest, split by time per series, fit the scaler on train only, scale.

Every model of a pipeline run is trained and scored on the windows of one ``Prepared``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.config import Config
from forecasting.data.calendar import resolve_calendar
from forecasting.data.ingest import IngestResult, ingest
from forecasting.data.scaling import Scaler, fit_scaler
from forecasting.data.schema import SERIES, TARGET
from forecasting.data.splits import Split, split_frame
from forecasting.data.windows import Windows, to_arrays
from forecasting.models.base import DataSpec


@dataclass(frozen=True)
class Prepared:
    """Validated, split and scaled data: every model is trained and scored on these windows."""

    cfg: Config
    data: IngestResult
    split: Split
    scaler: Scaler
    train: pd.DataFrame  # scaled
    val: pd.DataFrame  # scaled, starts lookback rows before the validation border
    test: pd.DataFrame  # scaled, starts lookback rows before the test border
    spec: DataSpec

    def windows(self, frame: pd.DataFrame) -> Windows:
        arrays = to_arrays(frame, self.spec.past, self.spec.future, self.spec.static, self.spec.calendar)
        return Windows(arrays, self.spec.lookback, self.spec.horizon, stride=1)


def fit_data_scaler(rows: pd.DataFrame, data: IngestResult) -> Scaler:
    """The scaler of ``data``'s columns fit on ``rows``: the target and past/future covariates per
    series; statics across series (scaled per series, a store's constant size would become 0)."""
    return fit_scaler(rows, [TARGET, *data.past, *data.future], static=data.static)


def prepare(cfg: Config, data: IngestResult | None = None) -> Prepared:
    """Ingest (unless given), split by time per series, fit the scaler on train only, scale."""
    data = data if data is not None else ingest(cfg.data)
    split = split_frame(data.frame, cfg.split, cfg.window)
    scaler = fit_data_scaler(split.train, data)
    spec = DataSpec(
        lookback=cfg.window.lookback,
        horizon=cfg.window.horizon,
        past=list(data.past),
        future=list(data.future),
        static=list(data.static),
        calendar=resolve_calendar(cfg.features.calendar, data.freq),
    )
    return Prepared(
        cfg=cfg,
        data=data,
        split=split,
        scaler=scaler,
        train=scaler.transform(split.train),
        val=scaler.transform(split.val),
        test=scaler.transform(split.test),
        spec=spec,
    )


def season_length(freq: str) -> int:
    """The seasonal period MASE is scaled by: a day for sub-daily data, a week for daily data."""
    from pandas.tseries.frequencies import to_offset
    from pandas.tseries.offsets import Tick

    offset = to_offset(freq)
    if isinstance(offset, Tick):
        step = pd.Timedelta(offset)
        if step < pd.Timedelta(days=1) and pd.Timedelta(days=1) % step == pd.Timedelta(0):
            return int(pd.Timedelta(days=1) / step)
    if offset.name == "D" and offset.n == 1:  # Day is calendar-aware (not a Tick) in pandas 3
        return 7
    return 1


def input_example(prepared: Prepared) -> pd.DataFrame:
    """The last lookback rows of the first series in original units (+ future-covariate rows)."""
    frame = prepared.data.frame
    first = frame[SERIES].iloc[0]
    part = frame[frame[SERIES] == first]
    end = prepared.split.borders.loc[first, "test_end"]
    L, H = prepared.spec.lookback, prepared.spec.horizon
    history = part.iloc[end - L - H : end - H].copy()
    if prepared.spec.future:
        future = part.iloc[end - H : end].copy()
        future[TARGET] = np.nan
        history = pd.concat([history, future], ignore_index=True)
    return history.reset_index(drop=True)
