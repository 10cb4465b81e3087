"""Defaults that read the data: every setting a config leaves open is chosen here, from the
data's frequency, the horizon and the series' lengths, before anything trains.

- The season ``m`` comes from the frequency (``forecasting.data.seasonality``: 24 for hourly,
  7 for daily, 52 for weekly, 12 for monthly data, 1 when there is none).
- ``window.lookback: auto``: two seasons or two horizons, whichever is longer (the common rule of
  NeuralForecast's and AutoGluon's examples: a network needs at least a season to see the phase
  and more history than it forecasts), but no more than half the median series' training rows.
- Model settings left unset: ``seasonal_naive`` repeats one season; the recurrent families read
  the lookback in segments of one season (SegRNN's 24 steps of hourly data); ``linear``'s trend
  is a moving average over one season (DLinear's 25 for hourly data); a ``tcn`` segment or a
  ``transformer`` patch longer than the lookback allows shrinks to fit it.
- ``window.eval_stride: auto``: every origin (stride 1, the published protocols), except a
  ``counts`` split over so many series that scoring every origin of the validation period would
  exceed ``EVAL_WINDOWS`` windows: there the horizon, the competitions' one origin per fold, so
  that each series is scored at its last few origins (``val_horizons`` + ``test_horizons``).
- An ``ensemble`` weighs its members on the point metric selection ranks by
  (``ensemble_objective``: ``mase`` for ``val_mase``, its scale at MASE's lag (``mase_season``:
  1 for weekly data, where the model season is 52); ``mae``
  for ``val_mae`` and ``val_wape``; ``mse`` otherwise), so that it is built for the race it runs.
- ``training.max_train_windows``: an epoch draws at most ``EPOCH_WINDOWS`` windows (a fresh random
  sample each epoch), so 400 series do not cost 400 times one series; ``max_val_windows``: early
  stopping scores at most as many validation windows (one fixed sample), for the same reason.

``resolve_defaults`` returns the concrete config and the choices it made; the pipeline logs the
choices as ``defaults.*`` params and ``forecast validate`` prints them. A setting the config
gives is never changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from forecasting.config import Config, ModelSpec
from forecasting.data.ingest import IngestResult
from forecasting.data.schema import SERIES
from forecasting.data.seasonality import mase_season, season_length_for
from forecasting.data.splits import train_rows

EPOCH_WINDOWS = 65_536  # windows per epoch at most (2**16): ETTh1 with its 7 columns stays whole
# Validation windows scored at every origin at most before a counts split steps by the horizon
# (2**16 too: M4 Weekly's 359 series x 27 origins stay whole, 10,000 series x 49 do not).
EVAL_WINDOWS = 65_536
_RECURRENT = ("rnn", "lstm", "gru")


def season_of(freq: str) -> int:
    """The season of data sampled every ``freq`` (1 when pandas cannot read it as a frequency)."""
    try:
        return season_length_for(freq)
    except ValueError:
        return 1


def auto_lookback(season: int, horizon: int, train_lengths: np.ndarray) -> int:
    """Two seasons or two horizons, whichever is longer, capped at half the median series'
    training rows (at least 1)."""
    base = max(2 * season, 2 * horizon) if season > 1 else 2 * horizon
    cap = int(np.median(train_lengths)) // 2 if len(train_lengths) else base
    return max(1, min(base, cap))


def auto_eval_stride(split: Any, horizon: int, n_series: int) -> int:
    """``window.eval_stride: auto``: 1, or the horizon for a ``counts`` split whose validation
    period, scored at every origin, would hold more than ``EVAL_WINDOWS`` windows (each series has
    ``(val_horizons - 1) * horizon + 1`` origins there)."""
    if split.method != "counts":
        return 1
    every = n_series * ((split.val_horizons - 1) * horizon + 1)
    return horizon if every > EVAL_WINDOWS else 1


def _largest_odd_at_most(n: int, limit: int) -> int:
    n = min(n, limit)
    return max(1, n if n % 2 else n - 1)


def ensemble_objective(selection_metric: str) -> str:
    """The error an ensemble's greedy weights lower for a pipeline that selects on
    ``selection_metric``: its point metric on the model's scale where the ensemble can weigh on it
    (``val_mase`` -> ``mase``; ``val_mae``, ``val_wape`` -> ``mae``: WAPE's denominator does not
    depend on the forecast), ``mse`` for the rest (MSE, RMSE, sMAPE, the interval metrics)."""
    metric = selection_metric.removeprefix("val_")
    if metric in ("mase", "mase_orig"):  # MASE is scale-free: the same figure on either scale
        return "mase"
    if metric in ("mae", "wape"):
        return "mae"
    return "mse"


def model_defaults(
    spec: ModelSpec,
    season: int,
    lookback: int,
    selection_metric: str = "val_mse",
    mase_lag: int | None = None,
) -> dict[str, Any]:
    """The settings of ``spec`` that the data (and the selection metric) decide, for the keys its
    params leave unset. ``mase_lag``: the lag MASE is scaled at (``seasonality.mase_season``;
    default ``season``), which an ensemble weighed on MASE uses, so that it lowers ``val_mase``
    itself."""
    m, L, given = season, lookback, spec.params
    chosen: dict[str, Any] = {}
    if spec.name == "ensemble":
        objective = given.get("objective", ensemble_objective(selection_metric))
        chosen["objective"] = objective
        if objective == "mase":
            chosen["season_length"] = m if mase_lag is None else mase_lag
    elif spec.name == "seasonal_naive":
        chosen["season_length"] = m if 1 < m <= L else 1
    elif spec.name in _RECURRENT:
        chosen["segment_len"] = m if 2 <= m <= L // 2 else max(1, L // 8)
    elif spec.name == "linear" and given.get("kind", "dlinear") == "dlinear":
        chosen["moving_avg"] = _largest_odd_at_most(m + 1 - m % 2 if m > 1 else 25, L)
    elif spec.name == "tcn":
        chosen["segment_len"] = min(8, max(1, L // 4))
    elif spec.name == "transformer" and L < 16:
        patch = max(1, L // 2)
        chosen.update(patch_len=patch, stride=max(1, patch // 2))
    return {k: v for k, v in chosen.items() if k not in given}


def resolve_defaults(cfg: Config, data: IngestResult) -> tuple[Config, dict[str, Any]]:
    """``cfg`` with every data-dependent setting it leaves open chosen, and those choices."""
    season = season_of(data.freq)
    choices: dict[str, Any] = {"season_length": season}
    window = cfg.window
    if window.lookback == "auto":
        lengths = data.frame.groupby(SERIES, sort=False).size()
        rows = train_rows(pd.Series(lengths.to_numpy(), index=lengths.index), cfg.split, window)
        lookback = auto_lookback(season, window.horizon, rows)
        window = window.model_copy(update={"lookback": lookback})
        choices["window.lookback"] = lookback
    if window.eval_stride == "auto":
        n_series = int(data.frame[SERIES].nunique())
        eval_stride = auto_eval_stride(cfg.split, window.horizon, n_series)
        window = window.model_copy(update={"eval_stride": eval_stride})
        choices["window.eval_stride"] = eval_stride
    models = []
    for spec in cfg.models:
        extra = model_defaults(
            spec, season, int(window.lookback), cfg.tracking.selection_metric, mase_season(data.freq)
        )
        choices.update({f"models.{spec.run_name}.{k}": v for k, v in extra.items()})
        models.append(spec.model_copy(update={"params": {**spec.params, **extra}}) if extra else spec)
    training = cfg.training
    for key in ("max_train_windows", "max_val_windows"):
        if key not in training.model_fields_set:
            training = training.model_copy(update={key: EPOCH_WINDOWS})
            choices[f"training.{key}"] = EPOCH_WINDOWS
    resolved = cfg.model_copy(update={"window": window, "models": models, "training": training})
    return resolved, choices
