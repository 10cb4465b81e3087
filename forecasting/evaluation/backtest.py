"""Rolling-origin backtests. No I/O, no logging.

``backtest`` moves the forecast origin back from the end of every series: fold k (0 = oldest)
trains on the rows before its cutoff and forecasts the ``horizon`` rows after it, from the last
``lookback`` rows. Cutoffs are counted in rows from the end of each series, so the last fold's
horizon ends on each series' last row and folds are ``step`` rows apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from forecasting.data.scaling import fit_scaler
from forecasting.data.schema import SERIES, TARGET, TIME
from forecasting.errors import ConfigError, SeriesTooShortError, format_rows
from forecasting.evaluation.metrics import evaluate_windows
from forecasting.models.base import Forecaster


def fold_cutoffs(lengths: np.ndarray, horizon: int, n_folds: int, step: int) -> np.ndarray:
    """Row of the first forecast step of every fold and series: (n_folds, S), oldest fold first."""
    back = (n_folds - 1 - np.arange(n_folds)) * step  # rows between a fold's end and the series' end
    return np.asarray(lengths)[None, :] - horizon - back[:, None]


def backtest(
    frame: pd.DataFrame,
    make_model: Callable[[], Forecaster],
    *,
    n_folds: int = 3,
    step: int | None = None,
    refit: bool = True,
    scale: bool = True,
    season: int = 1,
    batch_size: int = 4096,
) -> pd.DataFrame:
    """Rolling-origin backtest of a model family over a canonical frame (sorted, series-contiguous).

    ``make_model()`` returns a fresh unfitted model; its spec gives lookback L and horizon H.
    Folds are ``step`` rows apart (default H). With ``refit`` every fold fits a new model on its
    training rows; without, the first fold's model (and scaler) forecast every later fold from its
    newer history. With ``scale`` a per-series scaler is fitted on each fitted fold's training
    rows (target, past and future covariates) and metrics are also reported on the original scale.

    Returns one row per fold: ``fold``, ``origin`` (latest time of a last training row over series),
    ``train_rows``, ``n_windows`` (one per series), ``fitted``, ``fit_seconds`` and the metrics of
    ``evaluate_windows``.
    """
    probe = make_model()
    lookback, horizon = probe.spec.lookback, probe.spec.horizon
    step = horizon if step is None else step
    if n_folds < 1 or step < 1:
        raise ConfigError(f"backtest needs n_folds >= 1 and step >= 1, got n_folds={n_folds}, step={step}")
    lengths = frame.groupby(SERIES, sort=False).size()
    cutoffs = fold_cutoffs(lengths.to_numpy(), horizon, n_folds, step)  # (F, S)
    need = lookback + 2 * horizon + (n_folds - 1) * step  # first fold: one training window + a horizon
    short = lengths.to_numpy() < need
    if short.any():
        raise SeriesTooShortError(
            f"backtest of {n_folds} folds {step} rows apart with lookback {lookback} and horizon {horizon} "
            f"needs {need} rows per series; too short: {format_rows(list(lengths.index[short]))}"
        )
    pos = frame.groupby(SERIES, sort=False).cumcount().to_numpy()
    row_series = pd.factorize(frame[SERIES], sort=False)[0]
    columns = [TARGET, *probe.spec.past, *probe.spec.future]
    rows, model, scaler = [], probe, None
    for k in range(n_folds):
        cut = cutoffs[k][row_series]  # (rows,) this fold's cutoff for every row's series
        train = frame[pos < cut]
        test = frame[(pos >= cut - lookback) & (pos < cut + horizon)]
        fitted, fit_seconds = refit or k == 0, 0.0
        if fitted:
            scaler = fit_scaler(train, columns, static=probe.spec.static) if scale else None
        scaled_train = scaler.transform(train) if scaler else train
        if fitted:
            model = probe if k == 0 else make_model()
            started = time.perf_counter()
            model.fit(scaled_train)
            fit_seconds = time.perf_counter() - started
        windows = model.make_windows(scaler.transform(test) if scaler else test)
        metrics, _ = evaluate_windows(
            model, windows, scaler, batch_size, train=scaled_train, season=season, predictions=False
        )
        rows.append(
            {
                "fold": k,
                "origin": train[TIME].max(),
                "train_rows": len(train),
                "n_windows": len(windows),
                "fitted": fitted,
                "fit_seconds": fit_seconds,
                **metrics,
            }
        )
    return pd.DataFrame(rows)
