"""Forecast accuracy metrics (pure functions of arrays) and the scoring of a model on windows.

No I/O, no logging. Every metric takes ``y_true`` and ``y_pred`` of the same shape, usually (N, H)
(N windows, H steps), and returns one float averaged over every scored entry.

Missing values: an entry whose ``y_true`` is NaN is not scored (an unobserved target); a NaN in
``y_pred`` is a model failure and makes the metric NaN, so it can never look good. With no scored
entry at all the metric is NaN. Ratios follow IEEE division when their denominator is 0 (x/0 = inf,
0/0 = NaN), except sMAPE, whose term is 0 where both the truth and the forecast are 0.

Units: MSE in squared units of y, MAE/RMSE in units of y, MASE unit-free, sMAPE and WAPE in percent.

``evaluate_windows`` scores one fitted model on every window of a ``Windows``, so that every model
is scored on identical windows, and returns the metrics and a long frame of predictions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecasting.data.schema import SERIES, TARGET, TIME
from forecasting.errors import ConfigError

if TYPE_CHECKING:  # the data layer imports torch; metrics stay light
    from forecasting.data.scaling import Scaler
    from forecasting.data.windows import Windows
    from forecasting.models.base import Forecaster


METRIC_KEYS = ("mse", "mae", "rmse", "mase", "smape", "wape")


def _scored(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float arrays and the mask of scored entries (y_true observed)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}")
    return y_true, y_pred, ~np.isnan(y_true)


def _mean(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else float("nan")


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean squared error."""
    y_true, y_pred, mask = _scored(y_true, y_pred)
    return _mean((y_true - y_pred) ** 2, mask)


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error."""
    y_true, y_pred, mask = _scored(y_true, y_pred)
    return _mean(np.abs(y_true - y_pred), mask)


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error (the root of the pooled MSE, not a mean of per-window roots)."""
    return float(np.sqrt(mse(y_true, y_pred)))


def mase_scale(y_train: np.ndarray, season: int = 1) -> float:
    """In-sample MAE of the seasonal-naive forecast y_t = y_{t-m} on one training series (T,).

    NaN pairs are skipped; a series no longer than ``season`` has no such pair and gives NaN.
    A constant series gives 0 (its MASE is then inf, or NaN for an exact forecast).
    """
    if season < 1:
        raise ValueError(f"season must be >= 1, got {season}")
    y = np.asarray(y_train, dtype=np.float64).reshape(-1)
    diff = np.abs(y[season:] - y[:-season])
    diff = diff[~np.isnan(diff)]
    return float(diff.mean()) if diff.size else float("nan")


def mase_scales(frame: pd.DataFrame, season: int = 1) -> pd.Series:
    """``mase_scale`` of every series of a canonical frame (series contiguous, in time order) in
    one pass: index the series ids (as str), values as ``mase_scale`` gives them. No loop over
    series: a pair counts when both rows belong to the same series."""
    if season < 1:
        raise ValueError(f"season must be >= 1, got {season}")
    codes, ids = pd.factorize(frame[SERIES], sort=False)
    y = frame[TARGET].to_numpy(dtype=np.float64)
    diff = np.abs(y[season:] - y[:-season])
    ok = (codes[season:] == codes[:-season]) & ~np.isnan(diff)
    owner = codes[season:][ok]
    total = np.bincount(owner, weights=diff[ok], minlength=len(ids))
    count = np.bincount(owner, minlength=len(ids))
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return pd.Series(scale, index=pd.Index(ids).astype(str), name="mase_scale")


def window_mase_scales(windows: Windows, train: pd.DataFrame, season: int) -> np.ndarray:
    """Each window's MASE scale (N,): its series' ``mase_scales`` on the training rows. A series
    flat on its training rows has no naive error to scale by: NaN, so its windows are left out of
    the scaled metrics (MASE, MSIS, width, the ensemble's ``mase`` objective) rather than making
    them infinite."""
    ids = windows.arrays.series_ids[windows.series].astype(str)
    scale = mase_scales(train, season).reindex(ids).to_numpy(dtype=np.float64)
    return np.where(scale == 0, np.nan, scale)


def mase(y_true: np.ndarray, y_pred: np.ndarray, scale: float | np.ndarray) -> float:
    """Mean absolute scaled error: mean over scored entries of |y - yhat| / scale of their series.

    ``scale`` is a float or one value per row (N,) from ``mase_scale`` on each window's series, so
    series of different sizes weigh alike (as in M4). Seasonality enters through the scale. A row
    whose scale is NaN (a series with no scale) is not scored; a scale of 0 divides as IEEE does.
    """
    y_true, y_pred, mask = _scored(y_true, y_pred)
    scale = np.asarray(scale, dtype=np.float64)
    if scale.ndim == 1:
        if y_true.ndim < 1 or len(scale) != len(y_true):
            raise ValueError(f"scale has {len(scale)} values but y_true has {len(y_true)} rows")
        scale = scale.reshape((-1,) + (1,) * (y_true.ndim - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.abs(y_true - y_pred) / scale
    mask = mask & ~np.isnan(np.broadcast_to(scale, y_true.shape))
    return _mean(np.broadcast_to(scaled, y_true.shape), mask)


def smape(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Symmetric MAPE in percent (0..200): mean of 200 |y - yhat| / (|y| + |yhat|).

    A term with y = yhat = 0 is 0 (an exact forecast), not 0/0.
    """
    y_true, y_pred, mask = _scored(y_true, y_pred)
    num = 2.0 * np.abs(y_true - y_pred)
    den = np.abs(y_true) + np.abs(y_pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where((num == 0) & (den == 0), 0.0, num / den)
    return 100.0 * _mean(term, mask)


def wape(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Weighted absolute percentage error in percent: 100 * sum |y - yhat| / sum |y|."""
    y_true, y_pred, mask = _scored(y_true, y_pred)
    if not mask.any():
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(100.0 * np.abs(y_true - y_pred)[mask].sum() / np.abs(y_true[mask]).sum())


def score(
    y_true: np.ndarray, y_pred: np.ndarray, scale: float | np.ndarray | None = None
) -> dict[str, float]:
    """Every metric under the keys of ``METRIC_KEYS``; ``mase`` is NaN when no ``scale`` is given."""
    return {
        "mse": mse(y_true, y_pred),
        "mae": mae(y_true, y_pred),
        "rmse": rmse(y_true, y_pred),
        "mase": mase(y_true, y_pred, scale) if scale is not None else float("nan"),
        "smape": smape(y_true, y_pred),
        "wape": wape(y_true, y_pred),
    }


def iter_window_forecasts(
    models: Sequence[Forecaster], windows: Windows, batch_size: int = 4096
) -> Iterator[tuple[np.ndarray, np.ndarray, list[np.ndarray]]]:
    """``(idx, targets (B, H), [forecasts (B, H) of each model])`` for consecutive batches.

    Windows number their series in their own frame; each model is given its own training index
    of each series (-1 for a series it has not seen).
    """
    from forecasting.models.base import series_positions

    maps = []
    for model in models:
        maps.append(series_positions(model.series_, windows.arrays.series_ids))
    for idx in windows.iter_batches(batch_size):
        batch = windows.batch(idx)
        own = batch["series"]
        forecasts = []
        for model, to_model in zip(models, maps, strict=True):
            batch["series"] = to_model[own]
            forecasts.append(model.predict_windows(batch))
        yield idx, batch["target"], forecasts


@dataclass
class WindowForecasts:
    """What a model forecast for every window of a ``Windows``: targets and point forecasts (N, H);
    the family's native quantiles (N, H, Q) when asked and it has them; each window's raw scale
    (``intervals.window_scale``, N) when a scale was asked; calibrated bands (N, H, Q) when asked
    and the model has a calibration (or set by the caller: out-of-fold bands)."""

    y: np.ndarray
    yhat: np.ndarray
    native: np.ndarray | None = None
    scale: np.ndarray | None = None
    bands: np.ndarray | None = None


def collect_forecasts(
    model: Forecaster,
    windows: Windows,
    batch_size: int = 4096,
    *,
    native: bool = False,
    scale: tuple[str, int] | None = None,
    bands: bool = False,
    chunk_windows: int | None = None,
) -> WindowForecasts:
    """Forecast every window once, keeping what calibration and scoring need (see
    ``WindowForecasts``). ``scale``: (kind, season) of the window scale to measure.
    ``chunk_windows``: in a task on a Dask worker with others beside it, more windows than this
    are forecast on the workers in chunks of about this many (``evaluation.spread``)."""
    from forecasting.evaluation.intervals import window_scale
    from forecasting.models.base import series_positions

    n, h = len(windows), windows.horizon
    out = WindowForecasts(np.empty((n, h)), np.empty((n, h)), scale=np.empty(n) if scale else None)
    natives: dict[int, np.ndarray] = {}
    banded: dict[int, np.ndarray] = {}
    want_bands = bands and model.calibration_ is not None
    to_model = series_positions(model.series_, windows.arrays.series_ids)
    if chunk_windows is not None and n > chunk_windows:
        from forecasting.evaluation.spread import spread_forecasts

        def keep(idx: np.ndarray, batch: dict[str, np.ndarray]) -> None:
            out.y[idx] = batch["target"]
            if scale is not None:
                out.scale[idx] = window_scale(batch["y"], scale[1], scale[0])

        def put(idx: np.ndarray, forecasts: tuple[np.ndarray, np.ndarray | None, np.ndarray | None]) -> None:
            yhat, q, b = forecasts
            out.yhat[idx] = yhat
            if q is not None:
                natives[int(idx[0])] = q
            if b is not None:
                banded[int(idx[0])] = b

        spread = spread_forecasts(
            model,
            windows,
            to_model,
            batch_size,
            chunk_windows,
            native=native,
            bands=want_bands,
            on_chunk=keep,
            on_result=put,
        )
        if spread:
            return _gathered(out, natives, banded)
    for idx in windows.iter_batches(batch_size):
        batch = windows.batch(idx)
        batch["series"] = to_model[batch["series"]]
        yhat = model.predict_windows(batch)
        out.y[idx], out.yhat[idx] = batch["target"], yhat
        if scale is not None:
            out.scale[idx] = window_scale(batch["y"], scale[1], scale[0])
        if native:
            q = model.native_quantiles(batch)
            if q is not None:
                natives[int(idx[0])] = q
        if want_bands:
            banded[int(idx[0])] = model.predict_bands(batch, yhat)
    return _gathered(out, natives, banded)


def _gathered(
    out: WindowForecasts, natives: dict[int, np.ndarray], banded: dict[int, np.ndarray]
) -> WindowForecasts:
    """``out`` with the native quantiles and bands of its batches, in window order."""
    if natives:
        out.native = np.concatenate([natives[k] for k in sorted(natives)])
    if banded:
        out.bands = np.concatenate([banded[k] for k in sorted(banded)])
    return out


def predict_all_windows(
    model: Forecaster, windows: Windows, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Targets and ``model``'s forecasts of every window: two (N, H) float64 arrays."""
    fc = collect_forecasts(model, windows, batch_size)
    return fc.y, fc.yhat


def evaluate_windows(
    model: Forecaster,
    windows: Windows,
    scaler: Scaler | None = None,
    batch_size: int = 4096,
    *,
    train: pd.DataFrame | None = None,
    season: int = 1,
    predictions: bool = True,
    folds: np.ndarray | None = None,
    forecasts: WindowForecasts | None = None,
    chunk_windows: int | None = None,
) -> tuple[dict[str, float], pd.DataFrame | None]:
    """Forecast every window of ``windows`` with a fitted ``model`` and score the forecasts.

    ``windows`` hold the scaled series (as the model saw them); metrics on that scale are keyed
    ``mse``, ``mae``, ``rmse``, ``mase``, ``smape``, ``wape``; with ``scaler`` the same metrics on
    the original scale follow with the suffix ``_orig``. MASE needs the training series: pass the
    (scaled) ``train`` frame and the season ``season`` (1: naive scale); without it MASE is NaN.
    ``predict_windows`` is called ``batch_size`` windows at a time. ``folds`` (N,): a fold number
    per window; the MSE of each fold's windows follows as ``fold<k>_mse``.

    Intervals: a model with a calibration (``Forecaster.calibration_``) is also scored on its
    bands (``intervals.interval_metrics``: ``coverage_<level>``, ``width_<level>``,
    ``msis_<level>``, ``msis``, ``wql``, on the original scale when a scaler is given), and the
    frame carries them as columns (``yhat_lo_80`` ... and ``*_orig``). ``forecasts``: what
    ``collect_forecasts`` returned for these windows, when the caller has it (its ``bands``, if
    set, are scored instead of the model's own: out-of-fold validation bands).

    Returns (metrics, predictions): one row per window and step with ``series_id``, ``window``
    (index in ``windows``), ``origin`` (time of the last input), ``t``, ``step`` (1..H), ``y``,
    ``yhat`` on the model's scale, and ``y_orig``, ``yhat_orig`` with ``scaler``. With
    ``predictions=False`` only the metrics are computed and the frame (N x H rows, the largest
    object of a scoring pass) is not built: None is returned in its place. ``chunk_windows``:
    see ``collect_forecasts``.
    """
    if (windows.lookback, windows.horizon) != (model.spec.lookback, model.spec.horizon):
        raise ConfigError(
            f"windows of lookback {windows.lookback} / horizon {windows.horizon} do not fit model "
            f"{model.name!r} (lookback {model.spec.lookback} / horizon {model.spec.horizon})"
        )
    n, horizon = len(windows), windows.horizon
    if forecasts is None:
        forecasts = collect_forecasts(model, windows, batch_size, bands=True, chunk_windows=chunk_windows)
    y, yhat, bands = forecasts.y, forecasts.yhat, forecasts.bands
    cal = model.calibration_ if bands is not None else None

    ids = windows.arrays.series_ids[windows.series]  # (N,)
    scale = window_mase_scales(windows, train, season) if train is not None else None
    metrics = score(y, yhat, scale)
    if folds is not None:
        metrics |= {f"fold{int(k)}_mse": mse(y[folds == k], yhat[folds == k]) for k in np.unique(folds)}

    if scaler is not None:
        y_orig, yhat_orig = scaler.inverse_y(y, ids), scaler.inverse_y(yhat, ids)
        # |e| and the seasonal differences both scale by the series' std: MASE is scale-free.
        scale_orig = None if scale is None else scale * scaler.std.loc[ids, TARGET].to_numpy()
        metrics |= {f"{k}_orig": v for k, v in score(y_orig, yhat_orig, scale_orig).items()}
    bands_orig = None
    if cal is not None:
        from forecasting.evaluation.intervals import interval_metrics

        # Coverage, scaled width and MSIS do not change with the scale; the quantile loss is
        # weighted by the target's total, so it is computed on the original scale when there is one.
        if scaler is not None:
            bands_orig = scaler.inverse_y(bands, ids)
            metrics |= interval_metrics(y_orig, bands_orig, cal, scale_orig)
        else:
            metrics |= interval_metrics(y, bands, cal, scale)
    if not predictions:
        return metrics, None

    starts = windows.starts
    # N x H rows (7.7 million for ETTm1 M): small integer types for window and step.
    frame = pd.DataFrame(
        {
            SERIES: np.repeat(ids, horizon),
            "window": np.repeat(np.arange(n, dtype=np.int32), horizon),
            "origin": np.repeat(windows.arrays.t[starts + windows.lookback - 1], horizon),
            TIME: windows.target_times(np.arange(n)).reshape(-1),
            "step": np.tile(np.arange(1, horizon + 1, dtype=np.int16), n),
            "y": y.reshape(-1),
            "yhat": yhat.reshape(-1),
        },
        copy=False,
    )
    if scaler is not None:
        frame["y_orig"] = y_orig.reshape(-1)
        frame["yhat_orig"] = yhat_orig.reshape(-1)
    if cal is not None:
        frame = frame.assign(**{k: v.reshape(-1) for k, v in cal.columns_of(bands).items()})
        if bands_orig is not None:
            orig = cal.columns_of(bands_orig)
            frame = frame.assign(**{f"{k}_orig": v.reshape(-1) for k, v in orig.items()})
    return metrics, frame
