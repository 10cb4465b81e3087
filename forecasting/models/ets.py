"""ETS per series: exponential smoothing whose error, trend and season are chosen by AICc.

Selection (Hyndman et al. 2002, the ``ets()`` of R's forecast package) with statsmodels'
``ETSModel``: every admissible candidate is fitted by maximum likelihood (smoothing parameters and
initial states together) and the lowest AICc wins. The candidates:

- error: additive; multiplicative too when the training series is strictly positive;
- trend: none or additive damped by default (``trends``; additive undamped on request);
- season: none, additive (when ``season_length`` > 1 and the series holds two full seasons);
- a candidate with ``n <= k + 4`` parameters is skipped (as ``ets()`` does).

``season_length`` defaults to the one the data frequency implies (``season_length_for``: 24 for
hourly data); seasonal models also need two seasons in the lookback, where they are estimated.

Multiplicative seasonality (and trend) is left out. The pipeline z-scores each series on its
training split, so no training series is strictly positive and a multiplicative season could
never be chosen; ``ets()`` also excludes additive error with multiplicative season (infinite
variance). Leaving it out keeps every model linear in its states, which is what makes the window
forecasts below exact and vectorised. The error type changes the likelihood (so the selection
and the fitted parameters) but not the point forecast: both share the smoothing equations.

Forecasting a window. Each training series keeps its chosen form and smoothing parameters
(alpha, beta, gamma, phi); a window carries only its last ``lookback`` values, no position in the
series. With the parameters fixed the model is linear (innovations form, state x):

    e_t = y_t - w' x_{t-1},   x_t = D x_{t-1} + g y_t,   D = F - g w',

so the one-step errors are ``e = E_y y + E_0 x_0`` with E_y lower-triangular Toeplitz and E_0
built from powers of D. The window's initial state is chosen as least squares does (the
additive-error maximum likelihood of the states given the parameters, which statsmodels finds by
optimisation: here in closed form), then the states run to the window's end and the forecast
follows. The whole map is one matrix K (H, L) per series, ``yhat = K y``: scoring thousands of
windows is one matrix product per series. Initial seasonal states are constrained to sum to zero
(a level shift would otherwise be unidentified). Every state is re-estimated from the window, the
trend too: with an undamped trend and a short lookback the forecast extrapolates the window's
own slope over the whole horizon, which a damped trend tempers.

Series the model has not seen are fitted (selection included) on the window's own history.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as settings_dataclass

from forecasting.models.registry import register
from forecasting.models.statistical import (
    PerSeriesForecaster,
    window_params,
)

_STATE_FILE = "ets.npz"
_CHUNK = 64  # series whose window operators are built at once (bounds memory: ~0.5 MB per series)

# One parameter row per series. Codes: error 0 additive, 1 multiplicative; trend 0 none,
# 1 additive, 2 damped; season 0 none, 1 additive. beta is 0 without trend, gamma 0 without
# season, phi 1 unless damped.
ALPHA, BETA, GAMMA, PHI, ERROR, TREND, SEASON, AICC = range(8)
N_COLUMNS = 8
ERRORS = ("add", "mul")
TRENDS = (None, "add", "damped")
_TREND_NAMES = {None: "none", "add": "additive", "damped": "damped"}


@settings_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ETSSettings:
    season_length: int | None = Field(None, ge=1)  # None: from the data frequency (1: no season)
    # Trend forms tried. Damped only by default, as the M3/M4 evidence recommends: every state is
    # re-estimated from each window, and an undamped trend extrapolates a short window's slope
    # over the whole horizon (ETTh1: 0.120 test MSE against 0.064 damped, naive 0.069).
    trends: tuple[Literal["none", "additive", "damped"], ...] = Field(("none", "damped"), min_length=1)
    n_jobs: int | None = Field(None, ge=1)  # processes fitting series; None: every core
    parallel_above: int = Field(50, ge=0)  # series fitted serially up to this many


# --- fitting (statsmodels) ------------------------------------------------------------------------
def select_ets(
    y: np.ndarray, season_length: int, trends: tuple[str, ...] = ("none", "additive", "damped")
) -> np.ndarray:
    """The lowest-AICc ETS model of one series: its parameter row (N_COLUMNS,).

    ``y`` (n,) float64; seasonal candidates need ``season_length`` > 1 and n >= 2 seasons.
    """
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    m = season_length
    seasons = (None, "add") if m > 1 and len(y) >= 2 * m else (None,)
    errors = ERRORS if y.min() > 0 else ERRORS[:1]
    best = np.full(N_COLUMNS, np.nan)
    best[AICC] = np.inf
    for error in errors:
        for trend in (t for t in TRENDS if _TREND_NAMES[t] in trends):
            for season in seasons:
                model = ETSModel(
                    y,
                    error=error,
                    trend=None if trend is None else "add",
                    damped_trend=trend == "damped",
                    seasonal=season,
                    seasonal_periods=m if season else None,
                )
                if len(y) <= model.k_params + 4:  # too few observations for its parameters
                    continue
                with warnings.catch_warnings():  # non-convergence shows in the AICc, not as noise
                    warnings.simplefilter("ignore")
                    res = model.fit(disp=False)
                if not np.isfinite(res.aicc) or res.aicc >= best[AICC]:
                    continue
                best[:] = [
                    res.smoothing_level,
                    res.smoothing_trend if trend else 0.0,
                    res.smoothing_seasonal if season else 0.0,
                    res.damping_trend if trend == "damped" else 1.0,
                    ERRORS.index(error),
                    TRENDS.index(trend),
                    int(season is not None),
                    res.aicc,
                ]
    if not np.isfinite(best[AICC]):  # only for a pathological series: the simplest model stands in
        best[:] = [1.0, 0.0, 0.0, 1.0, 0, 0, 0, np.inf]  # ETS(A,N,N) with alpha 1: the naive forecast
    return best


# --- window forecasts (numpy) ---------------------------------------------------------------------
def state_space(params: np.ndarray, season_length: int) -> tuple[np.ndarray, ...]:
    """Matrices of G models of one form (same trend and season codes): (F, g, w, T).

    State x = [level, trend (if any), s_t, s_{t-1}, .., s_{t-m+1} (if seasonal)], k entries;
    ``F`` (G, k, k) transition, ``g`` (G, k) smoothing gains, ``w`` (G, k) one-step forecast
    ``yhat_{t+1} = w' x_t``, ``T`` (k, p) free initial parameters -> initial state (the last
    seasonal state is minus the sum of the others).
    """
    n = len(params)
    has_trend, has_season = params[0, TREND] > 0, params[0, SEASON] > 0
    m = season_length if has_season else 0
    k = 1 + int(has_trend) + m
    phi = params[:, PHI]
    F = np.zeros((n, k, k))
    g = np.zeros((n, k))
    w = np.zeros((n, k))
    F[:, 0, 0], g[:, 0], w[:, 0] = 1.0, params[:, ALPHA], 1.0
    if has_trend:
        F[:, 0, 1] = F[:, 1, 1] = w[:, 1] = phi
        g[:, 1] = params[:, BETA]
    if has_season:
        s = k - m  # first seasonal entry
        F[:, s, k - 1] = 1.0  # the season just used comes back as the newest
        F[:, np.arange(s + 1, k), np.arange(s, k - 1)] = 1.0  # the others age by one step
        g[:, s], w[:, k - 1] = params[:, GAMMA], 1.0
    T = np.eye(k)[:, : k - 1] if has_season else np.eye(k)
    if has_season:
        T[k - 1, k - m :] = -1.0
    return F, g, w, T


def error_maps(params: np.ndarray, season_length: int, length: int) -> tuple[np.ndarray, ...]:
    """The one-step errors of G models of one form over ``length`` values, as linear maps.

    ``e = E_y y + E_0 theta`` for values y (L,) and free initial parameters theta (p,): E_y (G, L, L)
    is lower-triangular Toeplitz (1 on the diagonal, -w' D^(t-j-1) g below it) and E_0 (G, L, p)
    holds -w' D^t T. Also returns ``powers`` (G, L + 1, k, 1 + p) = D^d [g | T] for d = 0..L.
    """
    F, g, w, T = state_space(params, season_length)
    n, k, _ = F.shape
    L = length
    D = F - g[:, :, None] * w[:, None, :]  # (G, k, k)
    powers = np.empty((n, L + 1, k, 1 + T.shape[1]))
    powers[:, 0, :, 0], powers[:, 0, :, 1:] = g, T
    for d in range(L):
        powers[:, d + 1] = D @ powers[:, d]
    wp = np.einsum("gk,gdkc->gdc", w, powers)  # (G, L + 1, 1 + p): w' D^d [g | T]
    h = np.concatenate([np.ones((n, 1)), -wp[:, : L - 1, 0]], axis=1)  # (G, L) impulse response
    lag = np.arange(L)[:, None] - np.arange(L)[None, :]  # (L, L) t - j
    E_y = np.where(lag >= 0, h[:, np.clip(lag, 0, None)], 0.0)  # (G, L, L)
    return E_y, -wp[:, :L, 1:], powers


def window_operator(params: np.ndarray, season_length: int, lookback: int, horizon: int) -> np.ndarray:
    """The matrices K (G, H, L) with ``forecast = K @ window`` for G models of one form.

    The window's initial parameters are the least-squares ``theta = -pinv(E_0) E_y y`` (see
    ``error_maps``), its final state ``x_L = D^L T theta + sum_j D^(L-1-j) g y_j`` and the
    forecasts ``w' F^(h-1) x_L``: every step is linear in the window.
    """
    F, _, w, _ = state_space(params, season_length)
    n, k, _ = F.shape
    L, H = lookback, horizon
    E_y, E_0, powers = error_maps(params, season_length, L)
    theta = -np.linalg.pinv(E_0) @ E_y  # (G, p, L): least-squares initial parameters per window
    X_y = np.swapaxes(powers[:, L - 1 :: -1, :, 0], 1, 2)  # (G, k, L): D^(L-1-j) g
    x_L = powers[:, L, :, 1:] @ theta + X_y  # (G, k, L): the final state as a map of the window
    W = np.empty((n, H, k))  # rows w' F^(h-1)
    row = w
    for step in range(H):
        W[:, step] = row
        row = np.einsum("gk,gkj->gj", row, F)
    return W @ x_L


def ets_forecast(
    y: np.ndarray, params: np.ndarray, group: np.ndarray, season_length: int, horizon: int
) -> np.ndarray:
    """Forecasts (N, H) of N windows ``y`` (N, L), window i with model ``params[i]``.

    ``group`` (N,) numbers the distinct models (windows of one series share one): one window
    operator is built per group, then applied to all its windows at once.
    """
    n, L = y.shape
    out = np.empty((n, horizon))
    groups, first, inverse = np.unique(group, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(groups) + 1))
    forms = params[first][:, [TREND, SEASON]]
    for form in np.unique(forms, axis=0):
        members = np.flatnonzero((forms == form).all(axis=1))
        for lo in range(0, len(members), _CHUNK):
            chunk = members[lo : lo + _CHUNK]
            K = window_operator(params[first[chunk]], season_length, L, horizon)  # (G, H, L)
            for op, gi in zip(K, chunk, strict=True):
                rows = order[bounds[gi] : bounds[gi + 1]]
                out[rows] = y[rows] @ op.T
    return out


# --- the model -------------------------------------------------------------------------------------
@register
class ETS(PerSeriesForecaster):
    """Auto ETS per series (statsmodels ETSModel, AICc); windows forecast in closed form.

    Series not seen in training are fitted (selection included) on their window at prediction
    time, so ``handles_unseen_series`` stays True; that costs a selection per such window
    (about a second), fine for ``predict``, slow for scoring thousands of windows of new series.
    """

    name = "ets"
    Settings = ETSSettings
    state_file = _STATE_FILE
    n_columns = N_COLUMNS

    def fit_options(self) -> dict[str, Any]:
        return {"trends": list(self.settings.trends)}

    def _predict_windows(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        y = np.asarray(batch["y"], dtype=np.float64)  # (N, L)
        params, group = window_params(
            batch["series"],
            self.params_,
            y,
            lambda v: select_ets(v, self.season_length_, self.settings.trends),
        )
        return ets_forecast(y, params, group, self.season_length_, self.spec.horizon)

    @property
    def n_params(self) -> int:
        """Smoothing parameters in use per series (alpha, beta, gamma, phi where the form has them)."""
        if not self.fitted_:
            return 0
        p = self.params_
        return int((1 + (p[:, TREND] > 0) + (p[:, TREND] == 2) + (p[:, SEASON] > 0)).sum())
