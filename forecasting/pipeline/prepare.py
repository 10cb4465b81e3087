"""Preparation: ingest, split by time per series, fit the scaler on train only, scale.

Every model of a pipeline run is trained and scored on the windows of one ``Prepared``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecasting import stages
from forecasting.config import Config, TrainingConfig
from forecasting.data.calendar import resolve_calendar
from forecasting.data.ingest import IngestResult, ingest
from forecasting.data.padding import left_pad
from forecasting.data.scaling import Scaler, fit_scaler, flat_target_series
from forecasting.data.schema import SERIES, TARGET, categorical_ids, string_ids
from forecasting.data.seasonality import mase_season
from forecasting.data.splits import SplitPlan, plan_split, segment
from forecasting.data.windows import Windows, to_arrays
from forecasting.errors import ConstantSeriesError, format_rows
from forecasting.faults import failpoint
from forecasting.models.base import DataSpec
from forecasting.pipeline.defaults import resolve_defaults


@dataclass(frozen=True)
class Prepared:
    """Validated, split and scaled data: every model is trained and scored on these windows.

    ``cfg`` is concrete: every default that reads the data is resolved (``choices`` says which
    and to what; ``pipeline.defaults``). ``padded``: rows added at the start of each series too
    short for a window (``window.pad_short``); ``data.frame`` holds them. ``data.frame`` and the
    scaled segments hold the series ids as a categorical (``schema.categorical_ids``): hand a
    served model ``schema.string_ids(frame)``, text ids as in the user's data.
    """

    cfg: Config
    data: IngestResult
    split: SplitPlan  # the borders of every series (the unscaled segments are not kept)
    scaler: Scaler
    train: pd.DataFrame  # scaled
    val: pd.DataFrame  # scaled, starts lookback rows before the validation border
    test: pd.DataFrame  # scaled, starts lookback rows before the test border
    spec: DataSpec
    choices: dict[str, Any] = field(default_factory=dict)
    padded: pd.Series = field(default_factory=lambda: pd.Series(dtype=np.int64))
    # The pipeline run's checkpoint folder (one subfolder per model) and whether its networks
    # resume from what they find there (an adopted run; ``pipeline.run``). None: none.
    checkpoints: Path | None = None
    resume: bool = False

    def training_for(self, run_name: str) -> TrainingConfig:
        """The training settings of the model called ``run_name`` in this pipeline run: the
        config's, checkpointing into the run's folder when it has one."""
        training = self.cfg.training
        if self.checkpoints is None:
            return training
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_name)[:40]
        folder = self.checkpoints / f"{safe}-{hashlib.sha256(run_name.encode()).hexdigest()[:8]}"
        return training.model_copy(update={"checkpoint_dir": folder, "resume": self.resume})

    def windows(self, frame: pd.DataFrame) -> Windows:
        arrays = to_arrays(frame, self.spec.past, self.spec.future, self.spec.static, self.spec.calendar)
        return Windows(arrays, self.spec.lookback, self.spec.horizon, stride=self.spec.eval_stride)

    def validation_folds(self, windows: Windows) -> np.ndarray:
        """The fold (0..K-1, K = ``split.val_horizons``) of each validation window: the
        validation period of each series cut into K consecutive blocks of forecast origins, the
        most recent last. With a ``counts`` split each block is one horizon of origins."""
        K = self.cfg.split.val_horizons
        first = windows.arrays.offsets[windows.series]  # (N,) each window's series' first row
        rel = windows.starts - first  # (N,) origin's distance from the validation border
        if self.cfg.split.method == "counts":
            return np.minimum(rel // self.spec.horizon, K - 1)
        per_series = np.bincount(windows.series, minlength=windows.arrays.n_series)[windows.series]
        rank = np.arange(len(windows)) - np.searchsorted(windows.series, windows.series)  # within its series
        return np.minimum(rank * K // np.maximum(per_series, 1), K - 1)

    def with_config(self, cfg: Config) -> Prepared:
        """This preparation (same data, split and window) for another run's ``cfg``: its models,
        training and tracking settings, with the same data-read defaults resolved."""
        resolved, choices = resolve_defaults(cfg, self.data)
        return dataclasses.replace(self, cfg=resolved, choices=choices)


def run_key(prepared: Prepared) -> str:
    """What makes two pipeline runs the same work: the resolved config (without the settings that
    change how fast or how loudly, not what) and the data's hash."""
    cfg = prepared.cfg.model_dump(
        mode="json",
        exclude={"training": {"progress", "num_threads"}, "orchestration": True},
    )
    text = json.dumps(cfg, sort_keys=True, default=str) + prepared.data.dataset_hash
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fit_data_scaler(rows: pd.DataFrame, data: IngestResult, flat: list[str] | None = None) -> Scaler:
    """The scaler of ``data``'s columns fit on ``rows``: the target and past/future covariates per
    series; statics across series (scaled per series, a store's constant size would become 0).
    A split on which every series' target is constant leaves nothing to learn from:
    ``ConstantSeriesError``. ``flat``: ``flat_target_series(rows)``, when the caller has it."""
    flat = flat_target_series(rows) if flat is None else flat
    if flat and len(flat) == rows[SERIES].nunique():
        raise ConstantSeriesError(
            f"series {format_rows(flat)}: the target is constant on the training split of every "
            "series, so there is nothing to learn; move the split or check the data"
        )
    return fit_scaler(rows, [TARGET, *data.past, *data.future], static=data.static)


def pad_short_series(cfg: Config, data: IngestResult) -> tuple[IngestResult, pd.Series]:
    """``data`` with every series too short for the ``counts`` split padded at its start (by at
    most a lookback; see ``forecasting.data.padding``), and the rows added per padded series."""
    window, split = cfg.window, cfg.split
    if not window.pad_short or split.method != "counts":
        return data, pd.Series(dtype=np.int64)
    L, H = int(window.lookback), window.horizon
    need = L + H + (split.val_horizons + split.test_horizons) * H
    frame, padded = left_pad(data.frame, need, data.freq, max_pad=L)
    return (dataclasses.replace(data, frame=frame) if len(padded) else data), padded


def ingest_data(cfg: Config) -> IngestResult:
    """The configured data, read and validated: with ``orchestration.dask_address`` or
    ``dask_local_workers``, in chunks of ``orchestration.validate_chunk_series`` series on the
    Dask workers (``ingest.ingest_in_chunks``: the same result as here)."""
    orch = cfg.orchestration
    if not (orch.dask_address or orch.dask_local_workers):
        return ingest(cfg.data)
    from forecasting.partition import chunk_map

    return ingest(
        cfg.data,
        cluster=functools.partial(chunk_map, orch.dask_address, orch.dask_local_workers),
        chunk_series=orch.validate_chunk_series,
    )


def prepare(cfg: Config, data: IngestResult | None = None) -> Prepared:
    """Ingest (unless given), resolve the defaults that read the data, pad short series, split by
    time per series, fit the scaler on train only, scale."""
    data = data if data is not None else ingest_data(cfg)
    data = dataclasses.replace(data, frame=categorical_ids(data.frame))
    failpoint("ingest")
    stages.ingested(len(data.frame), data.frame[SERIES].nunique())
    cfg, choices = resolve_defaults(cfg, data)
    data, padded = pad_short_series(cfg, data)
    split, masks = plan_split(data.frame, cfg.split, cfg.window)
    # One unscaled segment at a time: the frame plus the scaled segments is the peak, not a
    # second unscaled copy of every row besides them.
    train_rows = segment(data.frame, masks.pop("train"))
    flat = flat_target_series(train_rows)
    scaler = fit_data_scaler(train_rows, data, flat)
    scaled = {"train": scaler.transform(train_rows)}
    del train_rows
    for name in ("val", "test"):
        scaled[name] = scaler.transform(segment(data.frame, masks.pop(name)))
    spec = DataSpec(
        lookback=int(cfg.window.lookback),
        horizon=cfg.window.horizon,
        past=list(data.past),
        future=list(data.future),
        static=list(data.static),
        calendar=resolve_calendar(cfg.features.calendar, data.freq),
        stride=cfg.window.stride,
        eval_stride=cfg.window.eval_stride,
        pad_short=cfg.window.pad_short,
        levels=list(cfg.intervals.levels),
        quantiles=list(cfg.intervals.quantiles),
    )
    if len(padded):
        choices["padded_series"] = len(padded)
    if flat:
        choices["flat_train_series"] = len(flat)
    return Prepared(
        cfg=cfg,
        data=data,
        split=split,
        scaler=scaler,
        train=scaled["train"],
        val=scaled["val"],
        test=scaled["test"],
        spec=spec,
        choices=choices,
        padded=padded,
    )


def season_length(freq: str) -> int:
    """The seasonal period MASE is scaled by (``seasonality.mase_season``)."""
    return mase_season(freq)


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
    return string_ids(history.reset_index(drop=True))
