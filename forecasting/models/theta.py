"""The Theta method per series (Assimakopoulos & Nikolopoulos 2000), the M4 competition's benchmark.

As Hyndman & Billah (2003) showed, with theta = 2 the forecast is simple exponential smoothing plus
a drift of half the slope of the series' linear trend:

    yhat_{n+h} = l_n + (1 - 1/theta) b0 (h - 1 + (1 - (1 - alpha)^n) / alpha),

l_n the SES level (started at the first value), b0 the OLS slope on t = 0..n-1. Seasonal series
are adjusted first by classical decomposition (centred moving average, mean detrended value per
phase) and the forecast re-seasonalised. Fitting is statsmodels' ``ThetaModel``:

- seasonality: the 90% test of statsmodels and of the M4 benchmark, on the autocorrelation at
  lag ``season_length`` (only where the series holds two full seasons);
- decomposition multiplicative when the series is strictly positive and its seasonal indices
  are, additive otherwise (``ThetaModel``'s "auto"). The pipeline z-scores each series on its
  training split, so there the adjustment is additive;
- alpha: the SES fit of ``ThetaModel`` on the (adjusted) series.

Forecasting a window: each training series keeps alpha and its seasonal decision (seasonal or
not, multiplicative or not); a window's seasonal indices, slope and level are computed from the
window itself, exactly as ``ThetaModel`` computes them from its data (vectorised over windows).
A multiplicative window that is not strictly positive falls back to the additive adjustment, as
``ThetaModel`` does. Series the model has not seen are fitted on the window's own history.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as settings_dataclass

from forecasting.models.registry import register
from forecasting.models.statistical import (
    PerSeriesForecaster,
    window_params,
)

_STATE_FILE = "theta.npz"
_CHI2_1_90 = 2.705543454095404  # 90% quantile of chi-squared(1): the seasonality test's threshold

# One parameter row per series: SES alpha, seasonal (0/1), multiplicative adjustment (0/1).
ALPHA, SEASONAL, MULTIPLICATIVE = range(3)
N_COLUMNS = 3


@settings_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ThetaSettings:
    theta: float = Field(2.0, ge=1.0)  # weight of the trend line: drift = (1 - 1/theta) * slope
    season_length: int | None = Field(None, ge=1)  # None: from the data frequency (1: no season)
    n_jobs: int | None = Field(None, ge=1)  # processes fitting series; None: every core
    parallel_above: int = Field(50, ge=0)  # series fitted serially up to this many


# --- fitting (statsmodels) ------------------------------------------------------------------------
def is_seasonal(y: np.ndarray, season_length: int) -> bool:
    """The 90% test of ``ThetaModel``: n r_m^2 / sum_{k<m} r_k^2 above the chi-squared(1) quantile."""
    from statsmodels.tsa.stattools import acf

    m = season_length
    if m <= 1 or len(y) < 2 * m:
        return False
    r = acf(y, nlags=m, fft=True)
    return bool(len(y) * r[-1] ** 2 / np.sum(r[:-1] ** 2) > _CHI2_1_90)


def fit_theta(y: np.ndarray, season_length: int) -> np.ndarray:
    """``ThetaModel`` on one series ``y`` (n,): its parameter row (N_COLUMNS,)."""
    from statsmodels.tsa.forecasting.theta import ThetaModel

    seasonal = is_seasonal(y, season_length)
    model = ThetaModel(y, period=season_length if seasonal else None, deseasonalize=seasonal, use_test=False)
    with warnings.catch_warnings():  # a flat series leaves alpha at its start: not worth a warning
        warnings.simplefilter("ignore")
        res = model.fit()
    multiplicative = seasonal and model.method.startswith("mul")  # "auto" may have fallen back to add
    return np.array([res.params["alpha"], float(seasonal), float(multiplicative)])


# --- window forecasts (numpy) ---------------------------------------------------------------------
def seasonal_indices(y: np.ndarray, season_length: int, multiplicative: np.ndarray) -> np.ndarray:
    """Classical decomposition of N windows ``y`` (N, L): seasonal index per phase (N, m).

    Phase i is the positions j = i mod m of the window; as ``statsmodels.tsa.seasonal_decompose``
    (centred 2 x m moving average for even m; detrended values averaged per phase; indices
    normalised to mean 0, or 1 for ``multiplicative`` rows).
    """
    m = season_length
    filt = np.r_[0.5, np.ones(m - 1), 0.5] / m if m % 2 == 0 else np.ones(m) / m
    half = len(filt) // 2
    trend = sliding_window_view(y, len(filt), axis=1) @ filt  # (N, L - 2 * half): positions half..
    core = y[:, half : half + trend.shape[1]]
    detrended = core - trend
    detrended[multiplicative] = core[multiplicative] / trend[multiplicative]
    phase = np.arange(half, half + trend.shape[1]) % m
    onehot = (phase[:, None] == np.arange(m)[None, :]).astype(np.float64)  # (positions, m)
    means = detrended @ (onehot / onehot.sum(axis=0))  # (N, m) mean per phase
    index = means - means.mean(axis=1, keepdims=True)
    index[multiplicative] = means[multiplicative] / means[multiplicative].mean(axis=1, keepdims=True)
    return index


def theta_forecast(
    y: np.ndarray, params: np.ndarray, season_length: int, horizon: int, theta: float
) -> np.ndarray:
    """Theta forecasts (N, H) of N windows ``y`` (N, L), window i with the row ``params[i]``."""
    n, L = y.shape
    m = max(season_length, 1)
    alpha = params[:, ALPHA]
    seasonal = params[:, SEASONAL] > 0
    mul = seasonal & (params[:, MULTIPLICATIVE] > 0) & (y.min(axis=1) > 0)
    index = np.zeros((n, m))  # seasonal index per phase; 0 (additive) adjusts nothing
    if seasonal.any():
        index[seasonal] = seasonal_indices(y[seasonal], m, mul[seasonal])
        bad = mul & (index <= 0).any(axis=1)  # as ThetaModel: non-positive factors -> additive
        if bad.any():
            mul &= ~bad
            index[bad] = seasonal_indices(y[bad], m, mul[bad])
    at_input = index[:, np.arange(L) % m]  # (N, L)
    z = np.where(mul[:, None], y / np.where(mul[:, None], at_input, 1.0), y - at_input)
    # OLS slope of z on t = 0..L-1
    t = np.arange(L) - (L - 1) / 2
    b0 = z @ t / (t @ t)
    # SES level started at the first value: weight (1 - a)^(L-1) on z_0, a (1 - a)^(L-1-j) on z_j
    decay = (1 - alpha)[:, None] ** np.arange(L - 1, -1, -1)[None, :]  # (N, L)
    weights = alpha[:, None] * decay
    weights[:, 0] = decay[:, 0]
    level = np.einsum("nl,nl->n", weights, z)
    steps = np.arange(horizon, dtype=np.float64)[None, :]  # h - 1
    safe = np.where(alpha > 0, alpha, 1.0)
    steps = steps + np.where(alpha > 0, (1 - (1 - alpha) ** L) / safe, 0.0)[:, None]
    out = level[:, None] + (1 - 1 / theta) * b0[:, None] * steps  # (N, H)
    at_output = index[:, (L + np.arange(horizon)) % m]  # (N, H)
    return np.where(mul[:, None], out * at_output, out + at_output)


# --- the model -------------------------------------------------------------------------------------
@register
class Theta(PerSeriesForecaster):
    """The Theta method per series (statsmodels ThetaModel); windows forecast vectorised.

    Series not seen in training are fitted on their window at prediction time, so
    ``handles_unseen_series`` stays True (one ThetaModel fit per such window).
    """

    name = "theta"
    Settings = ThetaSettings
    state_file = _STATE_FILE
    n_columns = N_COLUMNS

    def _predict_windows(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        y = np.asarray(batch["y"], dtype=np.float64)  # (N, L)
        params, _ = window_params(
            batch["series"], self.params_, y, lambda v: fit_theta(v, self.season_length_)
        )
        return theta_forecast(y, params, self.season_length_, self.spec.horizon, self.settings.theta)

    @property
    def n_params(self) -> int:
        """alpha per series (the slope, level and seasonal indices come from each window)."""
        return len(self.params_) if self.fitted_ else 0
