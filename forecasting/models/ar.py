"""AR(p) per series, with future-known covariates as contemporaneous exogenous regressors (ARX).

    y_t = b0 + sum_{k=1..p} b_k y_{t-k} + sum_c g_c x_{t,c} + e_t

Each training series gets its own coefficients; the order p is chosen per series by AIC or BIC up to
``max_lag`` (statsmodels' ``ar_select_order``: every order is fitted on the common sample that holds
back ``max_lag`` rows, the chosen order is then refitted holding back only ``p`` rows), or fixed.
A pooled fit on all series together (one intercept, one set of lags, no lag crossing a series
boundary) forecasts series the model has not seen, and (``stable``) series whose own fit is
explosive: AIC on a short noisy series can pick a high order whose recursion grows geometrically
over the horizon (``explosive``).

Two solvers give the same coefficients (to ~1e-10 on well-conditioned data):

- ``statsmodels``: ``AutoReg`` / ``ar_select_order`` per series, the reference.
- ``batched``: per-series least squares for thousands of series at once. The cross-products of the
  regressors ``[1, x, y_{t-1..t-P}, y_t]`` of every series are window sums of lagged products over
  the flat concatenated series (O(T * P) in all, ragged lengths for free). A Cholesky
  factor of each Gram matrix gives the residual sum of squares of every nested order at once, so
  AIC/BIC are computed exactly as statsmodels does (common sample, ``-2 llf + penalty * k``);
  the chosen order is then solved on its own sample in one batched ``solve``. Series are centred
  first (an exact reparametrisation of the intercept) so the normal equations stay well conditioned.
  A chunk whose Gram matrices are singular falls back to statsmodels.

Covariates: only ``future`` covariates are used, as x_t at the target time; ``batch["x_future"]``
carries them over the horizon, so the recursion has every regressor it needs. ``past`` covariates
are not used: a recursive multi-step forecast needs x_{t+h} for every step, and a past-only
covariate is unknown beyond the forecast origin (lagging it would need a model of its own, a VAR).
``static`` covariates are absorbed by each series' intercept.

Coefficient layout (the order of statsmodels' ``AutoReg`` params): ``[const, y.L1 .. y.LP, x_1 ..
x_Cf]``; lags beyond a series' order are 0.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass as settings_dataclass

from forecasting.data.schema import SERIES, TARGET, TIME
from forecasting.data.windows import Windows
from forecasting.errors import (
    ConfigError,
    MissingValueError,
    ModelLoadError,
    SeriesTooShortError,
    UnsortedTimestampsError,
    format_rows,
)
from forecasting.models.base import EpochCallback, Forecaster
from forecasting.models.registry import register
from forecasting.partition import worker_cluster

Criterion = Literal["aic", "bic", "fixed"]
_CHUNK_ROWS = 1 << 20  # rows per batched chunk: bounds memory and the prefix sums' rounding
_CHUNKS_PER_WORKER = 4  # on a Dask cluster: several chunks per worker even out their cost
_STATE_FILE = "ar.npz"


@settings_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ARSettings:
    ic: Criterion = "aic"  # order selection; "fixed" uses `lags`
    max_lag: int | None = Field(None, ge=1)  # highest order tried; None: min(lookback, 48)
    lags: int | None = Field(None, ge=0)  # the order when ic is "fixed" (None: max_lag)
    solver: Literal["auto", "statsmodels", "batched"] = "auto"
    batched_above: int = Field(32, ge=0)  # solver "auto": batched when more series than this
    # In a training task on a Dask worker, a batched fit of more series than this runs its chunks
    # as tasks of the worker's cluster (``fit_batched``); elsewhere the setting does nothing.
    parallel_above: int = Field(1000, ge=0)
    # A series whose own fit is explosive (``explosive``) forecasts with the pooled coefficients.
    stable: bool = True

    @model_validator(mode="after")
    def _lags_need_fixed(self) -> ARSettings:
        if self.lags is not None and self.ic != "fixed":
            raise ValueError(
                f"lags={self.lags} is a fixed order: set ic: fixed, or drop lags to select by {self.ic}"
            )
        return self


@dataclass(frozen=True)
class ARFit:
    """Fitted coefficients of S series: ``coef`` (S, 1 + P + Cf) in the layout above, ``order`` (S,),
    and the residual variance ``sigma2`` (S,): statsmodels' ``AutoRegResults.sigma2``, ssr / nobs
    with nobs = n_s - order_s (no degrees-of-freedom correction)."""

    coef: np.ndarray
    order: np.ndarray
    sigma2: np.ndarray


# --- statsmodels, one series at a time --------------------------------------------------------------
def fit_statsmodels(
    y: np.ndarray, x: np.ndarray, offsets: np.ndarray, max_lag: int, ic: Criterion, lags: int | None = None
) -> ARFit:
    """AutoReg (trend "c") per series; ``y`` (T,), ``x`` (T, Cf), ``offsets`` (S + 1,) into both."""
    from statsmodels.tsa.ar_model import AutoReg, ar_select_order

    n_series, n_exog = len(offsets) - 1, x.shape[1]
    coef = np.zeros((n_series, 1 + max_lag + n_exog))
    order = np.zeros(n_series, dtype=np.int64)
    sigma2 = np.zeros(n_series)
    for s in range(n_series):
        ys = y[offsets[s] : offsets[s + 1]]
        xs = x[offsets[s] : offsets[s + 1]] if n_exog else None
        if ic == "fixed":
            p = max_lag if lags is None else lags
            res = AutoReg(ys, p, trend="c", exog=xs).fit()
        else:
            sel = ar_select_order(ys, max_lag, ic=ic, trend="c", exog=xs)
            p = len(sel.ar_lags or [])
            res = sel.model.fit()
        params = np.asarray(res.params)  # [const, L1..Lp, exog]
        coef[s, 0] = params[0]
        coef[s, 1 : 1 + p] = params[1 : 1 + p]
        coef[s, 1 + max_lag :] = params[1 + p :]
        order[s] = p
        sigma2[s] = res.sigma2
    return ARFit(coef, order, sigma2)


# --- batched least squares ------------------------------------------------------------------------
def _columns(n_exog: int, max_lag: int) -> list[tuple[int, int]]:
    """(signal, lag) of the moment columns ``[1, x_1..x_Cf, y_{t-1}..y_{t-P}, y_t]``.

    Signal 0 is the constant, 1..Cf the covariates, Cf + 1 the target.
    """
    cols = [(0, 0)] + [(1 + c, 0) for c in range(n_exog)]
    return cols + [(1 + n_exog, k) for k in range(1, max_lag + 1)] + [(1 + n_exog, 0)]


def lagged_moments(y: np.ndarray, x: np.ndarray, offsets: np.ndarray, max_lag: int) -> np.ndarray:
    """Cross-products of ``[1, x_t, y_{t-1}, .., y_{t-P}, y_t]`` over the common sample P <= t < n_s.

    ``y`` (T,) and ``x`` (T, Cf) are the concatenated series, ``offsets`` (S + 1,) their bounds
    (each series longer than P).
    Returns (S, K, K), K = 2 + Cf + P. Every entry is ``sum_t a[t - i] * b[t - j]``, a window sum
    of one lagged product ``a[u + d] * b[u]`` (d = j - i, u = t - j): one product and one segmented
    sum per distinct product, then each further lag moves the window by a row: O(T) per product.
    """
    T, n_exog = len(y), x.shape[1]
    signals = np.vstack([np.ones(T), x.T, y])  # (2 + Cf, T)
    cols = _columns(n_exog, max_lag)
    K = len(cols)
    groups: dict[tuple[int, int, int], list[tuple[int, int, int]]] = defaultdict(list)
    for a in range(K):
        for b in range(a, K):
            (sa, la), (sb, lb) = sorted([cols[a], cols[b]], key=lambda c: c[1])
            groups[(sa, sb, 0 if sa == 0 else lb - la)].append((a, b, lb))
    lo0, hi0 = offsets[:-1] + max_lag, offsets[1:]  # the window of lag 0: rows P <= t < n
    out = np.empty((len(lo0), K, K))
    for (sa, sb, d), pairs in groups.items():
        prod = np.append(signals[sa, d:] * signals[sb, : T - d], 0.0)  # (T - d + 1,) padded for reduceat
        lags = [lag for _, _, lag in pairs]
        j0, j1 = min(lags), max(lags)
        lo, hi = lo0 - j0, hi0 - j0  # u = t - lag runs over [lo0 - lag, hi0 - lag)
        base = np.add.reduceat(prod, np.column_stack([lo, hi]).reshape(-1))[::2]  # (S,) lag j0
        # One lag more moves the window a row back: it gains the row before it, loses its last row.
        back = np.arange(1, j1 - j0 + 1)
        gained = np.cumsum(prod[lo[:, None] - back], axis=1)  # (S, j1 - j0)
        lost = np.cumsum(prod[hi[:, None] - back], axis=1)
        for a, b, lag in pairs:
            k = lag - j0 - 1
            out[:, a, b] = out[:, b, a] = base if k < 0 else base + gained[:, k] - lost[:, k]
    return out


def held_back_moments(
    y: np.ndarray, x: np.ndarray, offsets: np.ndarray, start: np.ndarray, max_lag: int
) -> np.ndarray:
    """The cross-products of ``lagged_moments`` over the held-back rows start_s <= t < P: (S, K, K).

    Added to the common sample's, they give the sample of an order p fitted alone (AutoReg holds
    back p rows). Entries for lags beyond ``start_s`` reach before the series and are meaningless.
    """
    T = len(y)
    signals = np.vstack([np.ones(T), x.T, y])
    rows = offsets[:-1, None] + np.arange(max_lag)[None, :]  # (S, P) row t of each series
    cols = _columns(x.shape[1], max_lag)
    z = np.empty((*rows.shape, len(cols)))
    for c, (sig, lag) in enumerate(cols):
        z[:, :, c] = signals[sig, np.clip(rows - lag, 0, T - 1)]
    keep = np.arange(max_lag)[None, :, None] >= start[:, None, None]
    return np.matmul(np.swapaxes(z * keep, 1, 2), z)  # (S, K, K)


def information_criteria(moments: np.ndarray, nobs: np.ndarray, n_exog: int, ic: str) -> np.ndarray:
    """AIC or BIC of every order 0..P on the moments' sample, as ``ar_select_order`` computes them.

    ``moments`` (S, K, K) from ``lagged_moments``; ``nobs`` (S,). Returns (S, P + 1). With the
    Cholesky factor L of the Gram matrix and c = L^-1 X'y, the residual sum of squares of the
    first k regressors is y'y - sum_{j<k} c_j^2, so one factorisation scores every nested order.
    """
    gram, xty, yty = moments[:, :-1, :-1], moments[:, :-1, -1], moments[:, -1, -1]
    chol = np.linalg.cholesky(gram)
    c = np.linalg.solve(chol, xty[..., None])[..., 0]  # (S, k)
    k0 = 1 + n_exog
    ssr = yty[:, None] - np.cumsum(c**2, axis=1)[:, k0 - 1 :]  # (S, P + 1)
    nobs = nobs.astype(np.float64)[:, None]
    llf = -nobs / 2 * (np.log(2 * np.pi * ssr / nobs) + 1)
    n_regressors = k0 + np.arange(ssr.shape[1])
    penalty = 2.0 if ic == "aic" else np.log(nobs)
    return -2 * llf + penalty * n_regressors


def solve_orders(moments: np.ndarray, order: np.ndarray, n_exog: int) -> np.ndarray:
    """OLS of each series on its first ``order_s`` lags: (S, k) in moment order [1, x, lags].

    Unused lags get an identity block, so one batched solve serves every order and yields 0 there.
    """
    gram, xty = moments[:, :-1, :-1].copy(), moments[:, :-1, -1].copy()
    k0, k = 1 + n_exog, gram.shape[1]
    unused = np.arange(k)[None, :] >= (k0 + order)[:, None]  # (S, k)
    gram[unused[:, :, None] | unused[:, None, :]] = 0.0
    diag = np.arange(k)
    gram[:, diag, diag] = np.where(unused, 1.0, gram[:, diag, diag])
    xty[unused] = 0.0
    return np.linalg.solve(gram, xty[..., None])[..., 0]


def residual_ssr(
    y: np.ndarray, x: np.ndarray, offsets: np.ndarray, beta: np.ndarray, order: np.ndarray
) -> np.ndarray:
    """Residual sum of squares of each series' fit over its own sample order_s <= t < n_s: (S,).

    ``beta`` (S, 1 + Cf + P) in moment order ``[1, x, lags]`` (lags beyond ``order_s`` are 0),
    solved on these ``y`` (T,) and ``x`` (T, Cf). The residuals are formed row by row, as
    statsmodels forms them: ``y'y - b'X'y`` from the moments would lose digits to cancellation
    on a persistent series. O(T * max order).
    """
    lengths = np.diff(offsets)
    row_series = np.repeat(np.arange(len(lengths)), lengths)  # (T,)
    k0 = 1 + x.shape[1]
    resid = y - beta[row_series, 0] - np.einsum("tc,tc->t", x, beta[row_series, 1:k0])
    for k in range(1, int(order.max(initial=0)) + 1):
        # A row whose lag k crosses into the previous series is one of the held-back rows below.
        resid[k:] -= beta[row_series[k:], k0 + k - 1] * y[:-k]
    held_back = np.arange(len(y)) - offsets[row_series] < order[row_series]
    return np.add.reduceat(np.where(held_back, 0.0, resid**2), offsets[:-1])


def fit_batched(
    y: np.ndarray,
    x: np.ndarray,
    offsets: np.ndarray,
    max_lag: int,
    ic: Criterion,
    lags: int | None = None,
    pooled: bool = False,
    parallel_above: int | None = None,
) -> ARFit:
    """The fit of ``fit_statsmodels`` for many series at once (same arguments and result).

    ``pooled=True`` fits one model on all series together (a result of one row). The series are
    fitted in chunks of consecutive series (each series' fit uses its own rows only, so the
    chunks do not change it, unless a chunk's least squares is singular: that chunk's series are
    then fitted by statsmodels). Inside a task on a Dask worker, with more than
    ``parallel_above`` series (None: never), the chunks are tasks of that worker's cluster, at
    least ``_CHUNKS_PER_WORKER`` per worker; each goes out and comes back as numpy arrays.
    """
    if pooled:
        return _fit_group(y, x, offsets, max_lag, ic, lags, pooled=True)
    fits = None
    spread = parallel_above is not None and len(offsets) - 1 > parallel_above
    with worker_cluster() if spread else contextlib.nullcontext() as cluster:
        if cluster is not None:  # only dispatch and gather here: the task's thread is given back
            run, workers = cluster
            rows = min(_CHUNK_ROWS, max(int(offsets[-1]) // (workers * _CHUNKS_PER_WORKER), 1))
            fits = list(run(fit_chunk, _pieces(y, x, offsets, rows), max_lag, ic, lags))
    if fits is None:
        fits = [fit_chunk(piece, max_lag, ic, lags) for piece in _pieces(y, x, offsets, _CHUNK_ROWS)]
    return ARFit(*(np.concatenate([f[k] for f in fits]) for k in range(3)))


def fit_chunk(
    piece: tuple[np.ndarray, np.ndarray, np.ndarray], max_lag: int, ic: Criterion, lags: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coef, order, sigma2) of the series of one chunk ``(y, x, offsets)`` of ``fit_batched``."""
    y, x, offsets = piece
    try:
        fit = _fit_group(y, x, offsets, max_lag, ic, lags, pooled=False)
    except np.linalg.LinAlgError:  # a singular Gram matrix: let statsmodels' pinv decide
        fit = fit_statsmodels(y, x, offsets, max_lag, ic, lags)
    return fit.coef, fit.order, fit.sigma2


def _pieces(
    y: np.ndarray, x: np.ndarray, offsets: np.ndarray, rows: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(y, x, offsets)`` of each chunk of consecutive series of about ``rows`` rows."""
    out = []
    for lo, hi in _chunks(offsets, rows):
        o = offsets[lo : hi + 1]
        out.append((y[o[0] : o[-1]], x[o[0] : o[-1]], o - o[0]))
    return out


def _chunks(offsets: np.ndarray, rows: int = _CHUNK_ROWS) -> list[tuple[int, int]]:
    """Consecutive series ranges [lo, hi) of about ``rows`` rows (at least one series each)."""
    out, lo, n_series = [], 0, len(offsets) - 1
    while lo < n_series:
        hi = int(np.searchsorted(offsets, offsets[lo] + rows, side="right")) - 1
        hi = min(max(hi, lo + 1), n_series)
        out.append((lo, hi))
        lo = hi
    return out


def _fit_group(
    y: np.ndarray,
    x: np.ndarray,
    offsets: np.ndarray,
    max_lag: int,
    ic: Criterion,
    lags: int | None,
    pooled: bool,
) -> ARFit:
    n_series, n_exog = len(offsets) - 1, x.shape[1]
    lengths = np.diff(offsets)
    # Centring is an exact reparametrisation of the intercept that keeps X'X well conditioned;
    # a pooled model has one intercept, so it is centred once for all series.
    if pooled:  # every row of every series at once: no per-row index (8 bytes a row) to centre them
        mean_y, mean_x = np.full(n_series, y.mean()), np.tile(x.mean(axis=0), (n_series, 1))
        yc, xc = y - mean_y[0], x - mean_x[0]
    else:
        mean_y = np.add.reduceat(y, offsets[:-1]) / lengths
        mean_x = (
            np.add.reduceat(x, offsets[:-1], axis=0) / lengths[:, None] if n_exog else np.zeros((n_series, 0))
        )
        yc, xc = y - np.repeat(mean_y, lengths), x - np.repeat(mean_x, lengths, axis=0)
    k0 = 1 + n_exog

    def pooled_sum(moments: Callable[..., np.ndarray], *args: np.ndarray) -> np.ndarray:
        # One pooled model: every series' cross-products summed (chunked to bound memory).
        if not pooled:
            return moments(yc, xc, offsets, *args, max_lag)
        total = np.zeros((1, k0 + 1 + max_lag, k0 + 1 + max_lag))
        for lo, hi in _chunks(offsets):
            o = offsets[lo : hi + 1]
            rows = slice(o[0], o[-1])
            chunk_args = [arg[lo:hi] for arg in args]
            total += moments(yc[rows], xc[rows], o - o[0], *chunk_args, max_lag).sum(axis=0, keepdims=True)
        return total

    common = pooled_sum(lagged_moments)  # the sample that holds back max_lag rows
    if ic == "fixed":
        order = np.full(1 if pooled else n_series, max_lag if lags is None else lags, dtype=np.int64)
    else:  # every order on the common sample, as ar_select_order
        nobs = lengths - max_lag
        nobs = nobs.sum(keepdims=True) if pooled else nobs
        crit = information_criteria(common, nobs, n_exog, ic)
        order = np.argmin(crit, axis=1)  # the first minimum, as statsmodels' stable sort
    # The chosen order is refitted holding back only its own lags (AutoReg's default hold_back).
    start = np.full(n_series, order[0]) if pooled else order
    moments = common + pooled_sum(held_back_moments, start) if order.min() < max_lag else common
    beta = solve_orders(moments, order, n_exog)  # (S, k): [1, x, lags], centred
    # sigma2 as AutoRegResults: ssr / nobs on the chosen order's own sample (chunked for the pooled fit)
    beta_rows = np.broadcast_to(beta, (n_series, beta.shape[1])) if pooled else beta
    ssr = np.zeros(n_series)
    for lo, hi in _chunks(offsets):
        o = offsets[lo : hi + 1]
        rows = slice(o[0], o[-1])
        ssr[lo:hi] = residual_ssr(yc[rows], xc[rows], o - o[0], beta_rows[lo:hi], start[lo:hi])
    nobs = (lengths - start).astype(np.float64)
    sigma2 = ssr.sum(keepdims=True) / nobs.sum(keepdims=True) if pooled else ssr / nobs
    lag_coef, exog_coef = beta[:, k0:], beta[:, 1:k0]
    my, mx = (mean_y[:1], mean_x[:1]) if pooled else (mean_y, mean_x)
    const = beta[:, 0] + my * (1 - lag_coef.sum(axis=1)) - (exog_coef * mx).sum(axis=1)
    return ARFit(np.column_stack([const, lag_coef, exog_coef]), order.astype(np.int64), sigma2)


# --- forecasting ---------------------------------------------------------------------------------
def forecast_recursive(y: np.ndarray, coef: np.ndarray, x_future: np.ndarray) -> np.ndarray:
    """Recursive multi-step forecasts of N windows at once.

    ``y`` (N, L) inputs, ``coef`` (N, 1 + P + Cf) one row per window (P <= L), ``x_future``
    (N, H, Cf) covariates at the target times. Returns (N, H) float64.
    """
    n, horizon, n_exog = x_future.shape
    p = coef.shape[1] - 1 - n_exog
    lag_coef = coef[:, p:0:-1]  # (N, P): oldest lag first, to line up with the buffer
    base = coef[:, :1] + np.einsum("nhc,nc->nh", x_future, coef[:, 1 + p :])  # (N, H)
    buf = np.empty((n, p + horizon))
    buf[:, :p] = y[:, y.shape[1] - p :]
    for h in range(horizon):
        buf[:, p + h] = base[:, h] + np.einsum("np,np->n", buf[:, h : h + p], lag_coef)
    return buf[:, p:]


def forecast_variance(lag_coef: np.ndarray, sigma2: np.ndarray, horizon: int) -> np.ndarray:
    """Variance of the h-step recursive forecast error, h = 1..H, of R AR polynomials: (R, H).

    ``lag_coef`` (R, P) is phi_1..phi_P, ``sigma2`` (R,) the innovation variance. The MA(inf)
    weights psi_0 = 1, psi_j = sum_k phi_k psi_{j-k} give var_h = sigma2 * sum_{j<h} psi_j^2, as
    statsmodels' ``AutoRegResults.get_prediction``: the coefficients are taken as known, and so
    are future covariates.
    """
    n, p = lag_coef.shape
    psi = np.zeros((n, horizon))  # (R, H)
    psi[:, 0] = 1.0
    for j in range(1, horizon):
        k = min(j, p)
        psi[:, j] = np.einsum("rk,rk->r", lag_coef[:, :k], psi[:, j - 1 :: -1][:, :k])  # psi_{j-1..j-k}
    return sigma2[:, None] * np.cumsum(psi**2, axis=1)


# --- the model -------------------------------------------------------------------------------------
def spectral_radius(lags: np.ndarray) -> np.ndarray:
    """The largest root modulus of each AR lag polynomial (S, P) -> (S,): the spectral radius of
    its companion matrix (0 for an order-0 fit). Above 1 the recursive forecast grows
    geometrically, by a factor of the radius per step."""
    used = int(np.flatnonzero(np.any(lags != 0, axis=0)).max(initial=-1)) + 1  # the highest lag in use
    if used == 0:
        return np.zeros(len(lags))
    companion = np.zeros((len(lags), used, used))
    companion[:, 0, :] = lags[:, :used]
    companion[:, 1:, :-1] = np.eye(used - 1)
    return np.abs(np.linalg.eigvals(companion)).max(axis=1)


EXPLOSIVE_GROWTH = 2.0  # the most a fit's recursion may multiply a deviation over the horizon


def explosive(lags: np.ndarray, rows: np.ndarray, horizon: int) -> np.ndarray:
    """Fits (S, P) whose recursion is explosive (S,) bool: both statistically and over the
    horizon. Statistically: a spectral radius above 1 by more than a unit root's estimate strays
    on ``rows`` observations (a unit root is estimated at rate 1/n; Dickey-Fuller: n (rho - 1)
    stays within about 2 for a true random walk, so a radius over 1 + 2/n is not a random walk
    estimated with noise). Over the horizon: the radius multiplies a deviation by more than
    ``EXPLOSIVE_GROWTH`` in ``horizon`` steps. The second spares a long series that really grows
    by a fraction of a percent a step (its radius is slightly, and significantly, above 1, and its
    forecast should grow with it); the first spares a short noisy series' random walk (it decides
    only on series shorter than about 3 horizons: beyond, 1 + 2/n is below 2 ** (1/H))."""
    radius = spectral_radius(lags)
    rows = np.maximum(np.asarray(rows, dtype=np.float64), 1)
    with np.errstate(divide="ignore"):  # log(0) of an order-0 fit: -inf, not explosive
        runaway = max(int(horizon), 1) * np.log(radius) > np.log(EXPLOSIVE_GROWTH)
    return (radius > 1 + 2 / rows) & runaway


def leading_runs(y: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Rows at the start of each series equal to its first value (S,): 1 for most series, more
    after left padding (``forecasting.data.padding``) or before a series took off."""
    starts, lengths = offsets[:-1], np.diff(offsets)
    runs = lengths.copy()
    full = lengths > 0
    if not full.any():
        return runs
    first = np.repeat(y[starts[full]], lengths[full])  # each row's series' first value
    rows = np.arange(len(y))
    where = np.where(y != first, rows, len(y))  # rows that differ from it, else past the end
    differ = np.minimum.reduceat(where, starts[full])  # (S,) the first such row of each series
    runs[full] = np.where(differ < offsets[1:][full], differ - starts[full], lengths[full])
    return runs


def _select_series(
    y: np.ndarray, x: np.ndarray, offsets: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of the series ``keep`` (S,) bool, and their offsets."""
    if keep.all():
        return y, x, offsets
    lengths = np.diff(offsets)
    rows = np.repeat(keep, lengths)
    return y[rows], x[rows], np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int64)


@register
class AR(Forecaster):
    """AR(p) / ARX(p) per series (statsmodels AutoReg), pooled coefficients for unseen series."""

    name = "ar"
    Settings = ARSettings
    reads_calendar = False  # only y (and, for AR, the declared future covariates)
    pooled_series_: int = 0  # series too short for their own fit, forecast with the pooled model
    explosive_series_: int = 0  # series whose own fit was explosive, forecast with the pooled model
    # Residual variance per series (S,) and of the pooled fit; None for a model saved without them.
    sigma2_: np.ndarray | None = None
    pooled_sigma2_: float | None = None

    def _fit(
        self,
        train: pd.DataFrame,
        train_windows: Windows,
        val_windows: Windows | None,
        callbacks: list[EpochCallback],
    ) -> None:
        max_lag, fixed = self._orders()
        y, x, offsets = self._training_arrays(train)
        own = self._check_lengths(offsets, max_lag, x.shape[1], leading_runs(y, offsets))
        # Series too short for their own fit (counting a constant start once: left padding, or a
        # series that had not started) take the pooled coefficients, fitted on the others.
        y, x, sub = _select_series(y, x, offsets, own)
        s = self.settings
        batched = s.solver == "batched" or (s.solver == "auto" and len(sub) - 1 > s.batched_above)
        if batched:
            fit = fit_batched(y, x, sub, max_lag, s.ic, fixed, parallel_above=s.parallel_above)
        else:
            fit = fit_statsmodels(y, x, sub, max_lag, s.ic, fixed)
        pooled = fit_batched(y, x, sub, max_lag, s.ic, fixed, pooled=True)
        self.pooled_coef_, self.pooled_order_ = pooled.coef[0], int(pooled.order[0])
        self.coef_ = np.tile(self.pooled_coef_, (len(own), 1))
        self.coef_[own] = fit.coef
        self.order_ = np.full(len(own), self.pooled_order_, dtype=fit.order.dtype)
        self.order_[own] = fit.order
        self.pooled_sigma2_ = float(pooled.sigma2[0])
        self.sigma2_ = np.full(len(own), self.pooled_sigma2_)
        self.sigma2_[own] = fit.sigma2
        self.pooled_series_ = int((~own).sum())
        self.solver_ = "batched" if batched else "statsmodels"
        if s.stable:
            self._replace_explosive(own, np.diff(offsets), max_lag)

    def _replace_explosive(self, own: np.ndarray, rows: np.ndarray, max_lag: int) -> None:
        """Series whose own fit is explosive take the pooled coefficients (when those are not)."""
        lags = self.coef_[:, 1 : 1 + max_lag]
        pooled_lags = self.pooled_coef_[None, 1 : 1 + max_lag]
        H = self.spec.horizon
        if explosive(pooled_lags, rows.sum(keepdims=True), H)[0]:
            return
        bad = own & explosive(lags, rows, H)
        self.coef_[bad] = self.pooled_coef_
        self.order_[bad] = self.pooled_order_
        self.sigma2_[bad] = self.pooled_sigma2_
        self.explosive_series_ = int(bad.sum())

    def _predict_windows(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        table = np.vstack([self.coef_, self.pooled_coef_[None, :]])
        coef = table[self._table_rows(batch)]
        # Only the lags some series uses: the recursion costs O(N * H * P).
        n_exog = len(self.spec.future)
        p_max = self.coef_.shape[1] - 1 - n_exog
        p_used = int(max(self.order_.max(initial=0), self.pooled_order_))
        coef = np.concatenate([coef[:, : 1 + p_used], coef[:, 1 + p_max :]], axis=1)
        x_future = np.asarray(batch["x_future"], dtype=np.float64)[:, :, :n_exog]
        return forecast_recursive(np.asarray(batch["y"], dtype=np.float64), coef, x_future)

    def _predict_quantiles(self, batch: dict[str, np.ndarray], taus: list[float]) -> np.ndarray | None:
        """Gaussian bands of the recursive forecast: yhat + z_tau * sqrt(var_h), (N, H, Q)."""
        if self.sigma2_ is None or self.pooled_sigma2_ is None:  # saved before sigma2 was kept
            return None
        yhat = self._predict_windows(batch)  # (N, H)
        # One variance path per series in the batch (the pooled fit for unseen ones), gathered per window.
        rows, per_window = np.unique(self._table_rows(batch), return_inverse=True)
        p_used = int(max(self.order_.max(initial=0), self.pooled_order_))
        lag_coef = np.vstack([self.coef_, self.pooled_coef_[None, :]])[rows, 1 : 1 + p_used]  # (R, p)
        sigma2 = np.append(self.sigma2_, self.pooled_sigma2_)[rows]  # (R,)
        sd = np.sqrt(forecast_variance(lag_coef, sigma2, yhat.shape[1]))[per_window.reshape(-1)]  # (N, H)
        z = np.array([NormalDist().inv_cdf(tau) for tau in taus])  # (Q,)
        return yhat[:, :, None] + sd[:, :, None] * z  # (N, H, Q)

    @property
    def n_params(self) -> int:
        """Coefficients in use: intercept, p_s lags and the covariates' per series, plus the pooled fit."""
        if not self.fitted_:
            return 0
        n_exog = len(self.spec.future)
        per_series = int((1 + self.order_ + n_exog).sum())
        return per_series + 1 + self.pooled_order_ + n_exog

    def _save_state(self, path: Path) -> None:
        arrays = {
            "coef": self.coef_,
            "order": self.order_,
            "pooled_coef": self.pooled_coef_,
            "pooled_order": np.int64(self.pooled_order_),
            "solver": np.str_(self.solver_),
        }
        if self.sigma2_ is not None and self.pooled_sigma2_ is not None:
            # A model loaded from a state without them has none: nothing is written then (None
            # would be saved as an object array, that is a pickle, which loading refuses).
            arrays |= {"sigma2": self.sigma2_, "pooled_sigma2": np.float64(self.pooled_sigma2_)}
        np.savez(path / _STATE_FILE, allow_pickle=False, **arrays)

    def _load_state(self, path: Path) -> None:
        try:
            with np.load(path / _STATE_FILE, allow_pickle=False) as state:
                self.coef_ = state["coef"]
                self.order_ = state["order"]
                self.pooled_coef_ = state["pooled_coef"]
                self.pooled_order_ = int(state["pooled_order"])
                self.solver_ = str(state["solver"])
                if "sigma2" in state.files:  # absent from a model saved before the analytic bands
                    self.sigma2_ = state["sigma2"]
                    self.pooled_sigma2_ = float(state["pooled_sigma2"])
        except (OSError, KeyError, ValueError) as err:
            raise ModelLoadError(f"{path}: unreadable AR state {_STATE_FILE} ({err})") from None
        if self.coef_.shape != (len(self.series_), self._orders()[0] + 1 + len(self.spec.future)):
            raise ModelLoadError(
                f"{path}: AR coefficients of shape {self.coef_.shape} do not match model.json"
            )
        if self.sigma2_ is not None and self.sigma2_.shape != (len(self.series_),):
            raise ModelLoadError(f"{path}: AR sigma2 of shape {self.sigma2_.shape} does not match model.json")

    # --- helpers ------------------------------------------------------------------------------------
    def _table_rows(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Each window's row in the per-series tables with the pooled fit appended (N,): a series
        unseen in training (index -1) takes the pooled row."""
        idx = np.asarray(batch["series"], dtype=np.int64)
        n_series = len(self.coef_)
        return np.where((idx >= 0) & (idx < n_series), idx, n_series)

    def _orders(self) -> tuple[int, int | None]:
        """(P, fixed order or None): P is the highest lag tried, the width of the coefficient layout."""
        s, lookback = self.settings, self.spec.lookback
        max_lag = min(lookback, 48) if s.max_lag is None else s.max_lag
        if s.ic == "fixed" and s.lags is not None:
            max_lag = s.lags
        if max_lag > lookback:
            raise ConfigError(
                f"ar: order {max_lag} exceeds lookback {lookback}: the forecast reads its lags from the "
                "lookback window; lower max_lag / lags or raise window.lookback"
            )
        return max_lag, (max_lag if s.ic == "fixed" else None)

    def _training_arrays(self, train: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Float64 ``y`` (T,), future covariates ``x`` (T, Cf) and offsets (S + 1,) in ``series_`` order."""
        codes, _ = pd.factorize(train[SERIES], sort=False)
        if np.any(np.diff(codes) < 0):
            raise UnsortedTimestampsError("ar: each series' rows must be contiguous (a canonical frame)")
        offsets = np.concatenate([[0], np.cumsum(np.bincount(codes))]).astype(np.int64)
        columns = [TARGET, *self.spec.future]
        values = train[columns].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            rows = train.loc[bad, [SERIES, TIME]].astype(str).agg(" ".join, axis=1)
            raise MissingValueError(f"ar: missing or infinite values in {columns} at {format_rows(rows)}")
        return values[:, 0], values[:, 1:], offsets

    def _check_lengths(
        self, offsets: np.ndarray, held_back: int, n_exog: int, leading: np.ndarray | None = None
    ) -> np.ndarray:
        """Which series can have their own fit (S,) bool; raises when none can.

        More observations than regressors after holding back the lags, or the fit is
        undetermined; a constant start (``leading`` rows equal to the first) counts once.
        """
        need = 2 * held_back + n_exog + 2
        n = np.diff(offsets)
        if leading is not None:
            n = n - np.maximum(leading - 1, 0)
        short = n < need
        if short.all():
            ids = [self.series_[i] for i in np.flatnonzero(short)]
            raise SeriesTooShortError(
                f"ar: series {format_rows(ids)} have fewer than {need} training rows for order {held_back}; "
                "lower max_lag / lags or drop short series"
            )
        return ~short
