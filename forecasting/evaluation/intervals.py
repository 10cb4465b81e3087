"""Prediction intervals and quantiles for every family: split conformal calibration, the bands it
gives, and the metrics that score them. Pure numpy: no I/O, no logging, no torch.

The recipe (split conformal, per horizon step, scaled per window):

- A fitted model forecasts the validation windows, rows it did not train on. For each quantile
  level tau (the interval bounds of every level and the asked quantiles: ``quantile_levels``) the
  *base* forecast is the point forecast, or the family's own tau-quantile where it has one
  (``Forecaster.native_quantiles``: AR's analytic bands, a deep family's quantile head).
- Each residual ``y - base`` is divided by its window's *scale*, measured on the window's own
  lookback (``window_scale``; ``intervals.scale``): by default the mean absolute first
  difference, MASE's scale (M4's for non-seasonal data) measured on the input itself. One table
  of offsets then serves a quiet series and a loud one, a calm month and a stormy one (locally
  adaptive, "normalised" conformal), and the prediction side computes the same scale from the
  same lookback: the user supplies nothing new. A model's errors drift with the volatility of its
  data more than with anything else; bands that follow the lookback's volatility follow that
  drift (ETTh1's test months are calmer than its validation months: bands with no window scale
  cover 92 % at a nominal 80 % there, bands with it 79 %; bench/BENCHMARKS.md section 10).
- The offset of step h and level tau is the finite-sample conformal quantile of those scaled
  residuals: the ceil((n + 1) tau)-th smallest of n for tau > 1/2, the floor((n + 1) tau)-th for
  tau < 1/2. A forecast's band is ``base + scale * offset``. Levels are finally sorted along the
  quantile axis, so bounds never cross and a wider level contains a narrower one.

With native quantiles this is conformalised quantile regression (Romano et al., 2019): the
family's band shape, shifted by what validation says it misses.

Column names: ``yhat_lo_<level>``, ``yhat_hi_<level>`` (levels in percent) and ``q<tau>`` for the
asked quantiles (``q0.1``, ``q0.5``, ``q0.9``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Relative floor of a window's scale: a flat lookback (a constant stretch) would otherwise give a
# zero-width band. The floor is this fraction of the median scale of the calibration windows.
SCALE_FLOOR = 0.1


def level_label(level: float) -> str:
    """80 -> "80", 97.5 -> "97.5" (a column suffix)."""
    return f"{float(level):g}"


def quantile_label(tau: float) -> str:
    """0.1 -> "q0.1"."""
    return f"q{float(tau):g}"


def bound_taus(level: float) -> tuple[float, float]:
    """The quantile levels of a central interval of ``level`` percent: 80 -> (0.1, 0.9)."""
    alpha = 1.0 - float(level) / 100.0
    return round(alpha / 2, 10), round(1 - alpha / 2, 10)


def quantile_levels(levels: Sequence[float], quantiles: Sequence[float]) -> list[float]:
    """Every quantile level the bands need: both bounds of each interval level and the asked
    quantiles, sorted and distinct."""
    taus = {t for level in levels for t in bound_taus(level)} | {round(float(q), 10) for q in quantiles}
    return sorted(taus)


def interval_columns(levels: Sequence[float], quantiles: Sequence[float]) -> list[str]:
    """The output columns after ``yhat``, in order: bounds of each level, then the quantiles."""
    cols = [f"yhat_{side}_{level_label(lv)}" for lv in levels for side in ("lo", "hi")]
    return cols + [quantile_label(q) for q in quantiles]


# How a window's scale is measured from its lookback (``window_scale``; ``intervals.scale``).
SCALE_KINDS = ("naive", "seasonal", "std", "none")


def window_scale(y: np.ndarray, season: int, kind: str = "naive") -> np.ndarray:
    """The scale of each lookback window: y (N, L) -> (N,).

    ``seasonal``: mean absolute seasonal difference (the season falls back to 1 when the lookback
    holds no seasonal pair); ``naive``: mean absolute first difference; ``std``: standard
    deviation; ``none``: 1 (every window alike). NaN inputs, and the copies of a leading run of
    the window's first value (left padding), are skipped.
    """
    y = np.asarray(y, dtype=np.float64)
    if kind == "none":
        return np.ones(len(y))
    # A window that starts with a run of its first value is (or may be) left padding of a short
    # series (``window.pad_short``): those copies are not data, so only the run's last value
    # counts. Otherwise a padded window's scale shrinks towards 0 and its residual looks huge.
    run = np.cumprod(y == y[:, :1], axis=1).sum(axis=1)  # (N,) leading copies of y[:, 0]
    fake = np.arange(y.shape[1])[None, :] < (run - 1)[:, None]  # (N, L) padded positions
    y = np.where(fake, np.nan, y)
    if kind == "std":
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN window: scale 0
            return np.nan_to_num(np.nanstd(y, axis=1), nan=0.0)
    if kind not in ("seasonal", "naive"):
        raise ValueError(f"unknown scale kind {kind!r}; use one of {SCALE_KINDS}")
    m = season if kind == "seasonal" and 1 <= season < y.shape[1] else 1
    if y.shape[1] <= m:
        return np.zeros(len(y))
    diff = np.abs(y[:, m:] - y[:, :-m])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.nanmean(diff, axis=1)
    return np.nan_to_num(out, nan=0.0)


def conformal_offsets(residuals: np.ndarray, taus: Sequence[float]) -> np.ndarray:
    """Finite-sample conformal quantiles of scaled residuals per step and level: (H, Q).

    ``residuals`` (N, H, Q), one column per level (native quantiles: each level has its own base
    forecast), or (N, H) when every level shares one base forecast (the point forecast), which
    sorts each step once for all levels. The offset of level tau is the ceil((n + 1) tau)-th
    smallest of the step's n residuals for tau >= 1/2, the floor((n + 1) tau)-th for tau < 1/2.
    NaN residuals (unobserved targets) are left out per step. A step with no residual gets NaN.
    """
    residuals = np.asarray(residuals, dtype=np.float64)
    taus = np.asarray(taus, dtype=np.float64)
    horizon = residuals.shape[1]
    shared = residuals.ndim == 2
    columns = residuals if shared else residuals.reshape(len(residuals), horizon * len(taus))  # (N, H[*Q])
    ordered = np.sort(columns, axis=0)  # NaN sort last
    n = (~np.isnan(columns)).sum(axis=0)  # (C,) residuals per column
    n = np.repeat(n[:, None], len(taus), axis=1) if shared else n.reshape(horizon, len(taus))  # (H, Q)
    rank = np.where(
        taus[None, :] >= 0.5,
        np.minimum(np.ceil((n + 1) * taus[None, :]), n),
        np.maximum(np.floor((n + 1) * taus[None, :]), 1),
    ).astype(np.int64)  # (H, Q), 1-based
    col = (
        np.repeat(np.arange(horizon)[:, None], len(taus), axis=1)
        if shared
        else np.arange(horizon * len(taus)).reshape(horizon, len(taus))
    )
    if not len(ordered):
        return np.full(n.shape, np.nan)
    return np.where(n > 0, ordered[np.clip(rank - 1, 0, len(ordered) - 1), col], np.nan)


@dataclass
class Calibration:
    """A model's conformal calibration: offsets per horizon step and quantile level.

    ``taus`` (Q,) sorted; ``offsets`` (H, Q) in units of the window scale; ``levels`` and
    ``quantiles`` as configured (the column names); ``season`` of the window scale; ``floor``: the
    smallest window scale used; ``native``: whether the base forecasts were the family's own
    quantiles; ``n_windows``: calibration windows.
    """

    levels: list[float]
    quantiles: list[float]
    taus: list[float]
    offsets: np.ndarray
    season: int
    floor: float
    native: bool = False
    n_windows: int = 0
    scale_kind: str = "naive"
    method: str = "split conformal, per step, window-scaled residuals"

    @property
    def columns(self) -> list[str]:
        return interval_columns(self.levels, self.quantiles)

    def scale(self, y_context: np.ndarray) -> np.ndarray:
        """The window scale of lookback windows (N, L), floored: (N,)."""
        return np.maximum(window_scale(y_context, self.season, self.scale_kind), self.floor)

    def bands(self, base: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Quantile forecasts (N, H, Q) from base forecasts (N, H) or (N, H, Q) and scales (N,),
        sorted along the level axis (no crossing)."""
        base = np.asarray(base, dtype=np.float64)
        if base.ndim == 2:
            base = base[:, :, None]
        out = base + np.asarray(scale, dtype=np.float64)[:, None, None] * self.offsets[None, : base.shape[1]]
        return np.sort(out, axis=-1)

    def columns_of(self, bands: np.ndarray) -> dict[str, np.ndarray]:
        """Output columns (each (N, H)) from quantile forecasts (N, H, Q)."""
        at = {t: j for j, t in enumerate(self.taus)}
        cols: dict[str, np.ndarray] = {}
        for level in self.levels:
            lo, hi = bound_taus(level)
            cols[f"yhat_lo_{level_label(level)}"] = bands[..., at[lo]]
            cols[f"yhat_hi_{level_label(level)}"] = bands[..., at[hi]]
        for q in self.quantiles:
            cols[quantile_label(q)] = bands[..., at[round(float(q), 10)]]
        return cols

    def to_dict(self) -> dict[str, Any]:
        return {
            "levels": list(self.levels),
            "quantiles": list(self.quantiles),
            "taus": list(self.taus),
            "offsets": self.offsets.tolist(),
            "season": int(self.season),
            "floor": float(self.floor),
            "native": bool(self.native),
            "n_windows": int(self.n_windows),
            "scale_kind": self.scale_kind,
            "method": self.method,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Calibration:
        return cls(
            levels=[float(v) for v in raw["levels"]],
            quantiles=[float(v) for v in raw["quantiles"]],
            taus=[float(v) for v in raw["taus"]],
            offsets=np.asarray(raw["offsets"], dtype=np.float64),
            season=int(raw["season"]),
            floor=float(raw["floor"]),
            native=bool(raw.get("native", False)),
            n_windows=int(raw.get("n_windows", 0)),
            scale_kind=str(raw.get("scale_kind", "naive")),
            method=str(raw.get("method", "")),
        )


def calibrate(
    y: np.ndarray,
    base: np.ndarray,
    scale: np.ndarray,
    *,
    levels: Sequence[float],
    quantiles: Sequence[float],
    season: int,
    native: bool = False,
    scale_kind: str = "naive",
) -> Calibration:
    """The calibration of out-of-sample forecasts: targets ``y`` (N, H), base forecasts (N, H) or
    (N, H, Q) with Q = ``len(quantile_levels(levels, quantiles))``, raw window scales (N,) of
    ``scale_kind``."""
    taus = quantile_levels(levels, quantiles)
    y = np.asarray(y, dtype=np.float64)
    base = np.asarray(base, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    positive = scale[np.isfinite(scale) & (scale > 0)]
    floor = float(SCALE_FLOOR * np.median(positive)) if positive.size else 1.0
    floored = np.maximum(scale, floor)
    if base.ndim == 2:  # one base forecast for every level: (N, H) residuals, each step sorted once
        residuals = (y - base) / floored[:, None]
    else:
        residuals = (y[:, :, None] - base) / floored[:, None, None]
    return Calibration(
        levels=[float(v) for v in levels],
        quantiles=[float(q) for q in quantiles],
        taus=taus,
        offsets=conformal_offsets(residuals, taus),
        season=int(season),
        floor=floor,
        native=native,
        n_windows=len(y),
        scale_kind=scale_kind,
    )


def cross_bands(
    y: np.ndarray,
    base: np.ndarray,
    scale: np.ndarray,
    folds: np.ndarray,
    **calibration: Any,
) -> np.ndarray:
    """Out-of-fold quantile forecasts (N, H, Q) of calibration windows: the windows of each fold
    banded by a calibration of the other folds' windows (cross-conformal), so that validation
    interval metrics are never scored on the residuals that set the bands. One fold: NaN."""
    taus = quantile_levels(calibration["levels"], calibration["quantiles"])
    out = np.full((len(y), np.asarray(y).shape[1], len(taus)), np.nan)
    for k in np.unique(folds):
        held = folds == k
        if held.all():
            break
        cal = calibrate(y[~held], base[~held], scale[~held], **calibration)
        out[held] = cal.bands(base[held], np.maximum(scale[held], cal.floor))
    return out


# --- metrics -------------------------------------------------------------------------------------
def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Share of observed targets inside [lo, hi]."""
    y, lo, hi = (np.asarray(a, dtype=np.float64) for a in (y, lo, hi))
    mask = ~np.isnan(y)
    if not mask.any():
        return float("nan")
    inside = (y >= lo) & (y <= hi)
    if np.isnan(lo[mask]).any() or np.isnan(hi[mask]).any():
        return float("nan")
    return float(inside[mask].mean())


def _per_row(scale: np.ndarray, like: np.ndarray) -> np.ndarray:
    scale = np.asarray(scale, dtype=np.float64)
    return scale.reshape((-1,) + (1,) * (like.ndim - 1))


def scaled_width(lo: np.ndarray, hi: np.ndarray, y: np.ndarray, scale: np.ndarray) -> float:
    """Mean interval width divided by each row's MASE scale (unit-free)."""
    y = np.asarray(y, dtype=np.float64)
    mask = ~np.isnan(y) & ~np.isnan(np.broadcast_to(_per_row(scale, y), y.shape))  # NaN scale: not scored
    with np.errstate(divide="ignore", invalid="ignore"):
        width = (np.asarray(hi) - np.asarray(lo)) / _per_row(scale, y)
    return float(np.broadcast_to(width, y.shape)[mask].mean()) if mask.any() else float("nan")


def msis(y: np.ndarray, lo: np.ndarray, hi: np.ndarray, scale: np.ndarray, level: float) -> float:
    """Mean scaled interval score (M4): mean of (U - L) + 2/a (L - y)[y < L] + 2/a (y - U)[y > U],
    each divided by its series' MASE scale, a = 1 - level / 100."""
    a = 1.0 - float(level) / 100.0
    y, lo, hi = (np.asarray(v, dtype=np.float64) for v in (y, lo, hi))
    mask = ~np.isnan(y) & ~np.isnan(np.broadcast_to(_per_row(scale, y), y.shape))  # NaN scale: not scored
    score = (hi - lo) + (2 / a) * np.clip(lo - y, 0, None) + (2 / a) * np.clip(y - hi, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = score / _per_row(scale, y)
    return float(np.broadcast_to(score, y.shape)[mask].mean()) if mask.any() else float("nan")


def pinball(y: np.ndarray, q: np.ndarray, tau: float) -> np.ndarray:
    """Pinball (quantile) loss of each entry."""
    diff = np.asarray(y, dtype=np.float64) - np.asarray(q, dtype=np.float64)
    return np.maximum(tau * diff, (tau - 1) * diff)


def weighted_quantile_loss(y: np.ndarray, bands: np.ndarray, taus: Sequence[float]) -> float:
    """Mean over quantile levels of 2 * sum pinball / sum |y| (GluonTS's mean weighted quantile
    loss, a discrete approximation of CRPS divided by the target's total)."""
    y = np.asarray(y, dtype=np.float64)
    mask = ~np.isnan(y)
    denom = np.abs(y[mask]).sum()
    if not mask.any() or denom == 0:
        return float("nan")
    losses = [2 * pinball(y, bands[..., j], t)[mask].sum() / denom for j, t in enumerate(taus)]
    return float(np.mean(losses))


def interval_metrics(
    y: np.ndarray, bands: np.ndarray, cal: Calibration, scale: np.ndarray | None
) -> dict[str, float]:
    """Coverage, scaled width and MSIS per level, MSIS of the widest level as ``msis``, and the
    weighted quantile loss over every quantile level: y (N, H), bands (N, H, Q), ``scale`` (N,) the
    MASE scale of each row's series (None: width and MSIS are NaN)."""
    cols = cal.columns_of(bands)
    out: dict[str, float] = {}
    for level in cal.levels:
        lab = level_label(level)
        lo, hi = cols[f"yhat_lo_{lab}"], cols[f"yhat_hi_{lab}"]
        out[f"coverage_{lab}"] = coverage(y, lo, hi)
        out[f"width_{lab}"] = scaled_width(lo, hi, y, scale) if scale is not None else float("nan")
        out[f"msis_{lab}"] = msis(y, lo, hi, scale, level) if scale is not None else float("nan")
    if cal.levels:
        out["msis"] = out[f"msis_{level_label(max(cal.levels))}"]
    out["wql"] = weighted_quantile_loss(y, bands, cal.taus)
    return out


def selection_key(metric: str, value: float) -> float:
    """What selection minimises for ``metric``: a coverage by its distance from nominal (a 95 %
    band covering 100 % is no better than one covering 90 %), anything else as it is."""
    name = metric.split("_", 1)[-1]  # drop val_
    if name.startswith("coverage_"):
        nominal = float(name.split("_", 1)[1].removesuffix("_orig")) / 100.0
        return abs(value - nominal)
    return value
