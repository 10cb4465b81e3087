"""Figures for the run artifacts: forecast vs actual, learning curve, families side by side.

Pure functions: frames in, a ``matplotlib.figure.Figure`` out. Figures are built without
``pyplot`` (no global figure registry, nothing to close, no GUI backend); ``fig.savefig`` renders
them with Agg and ``mlflow.log_figure`` accepts them as they are.

Prediction frames are long, as evaluation writes them: ``series_id, window, origin, t, step, y,
yhat`` (one row per series, window and forecast step; ``origin`` is the last observed time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from forecasting.data.schema import SERIES, TARGET, TIME

PRED_COLUMNS = (SERIES, "window", "origin", TIME, "step", TARGET, "yhat")
WindowChoice = Literal["first", "last"] | int


def _check_pred_frame(frame: pd.DataFrame, what: str = "prediction frame") -> None:
    missing = [c for c in PRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; expected {list(PRED_COLUMNS)}")
    if frame.empty:
        raise ValueError(f"{what} is empty")


def _pick_series(frame: pd.DataFrame, series: Sequence[str] | str | None, n: int) -> list[str]:
    present = [str(s) for s in pd.unique(frame[SERIES])]
    if series is None:
        return present[:n]
    wanted = [series] if isinstance(series, str) else [str(s) for s in series]
    unknown = [s for s in wanted if s not in present]
    if unknown:
        raise ValueError(f"series {unknown} not in the prediction frame; it has {present[:10]}")
    return wanted


def _pick_origin(origins: Sequence[Any], window: WindowChoice, windows: Sequence[Any]) -> Any:
    """The origin of the chosen window among a series' windows (sorted by origin)."""
    if window == "last":
        return origins[-1]
    if window == "first":
        return origins[0]
    if window not in windows:
        raise ValueError(f"window {window!r} not found; windows present: {list(windows)[:10]}")
    return origins[list(windows).index(window)]


def _history_before(history: pd.DataFrame | None, sid: str, origin: Any, steps: int | None) -> pd.DataFrame:
    if history is None:
        return pd.DataFrame(columns=[TIME, TARGET])
    part = history[(history[SERIES].astype(str) == sid) & (history[TIME] <= origin)]
    return part.tail(steps) if steps else part


# Fixed margins in inches instead of constrained layout: the layout engine measured every tick
# label on each save and cost more than the drawing itself (~60 % of a learning curve's save).
_MARGIN_IN = {"left": 0.85, "right": 0.15, "top": 0.35, "bottom": 0.5, "gap": 0.65}


def _grid(n_panels: int, width: float = 10.0, height: float = 2.8) -> tuple[Figure, list[Any]]:
    total = height * n_panels
    m = _MARGIN_IN
    fig = Figure(figsize=(width, total))
    axes = fig.subplots(
        n_panels,
        1,
        squeeze=False,
        gridspec_kw={
            "left": m["left"] / width,
            "right": 1 - m["right"] / width,
            "top": 1 - m["top"] / total,
            "bottom": m["bottom"] / total,
            "hspace": m["gap"] * n_panels / (total - m["top"] - m["bottom"] - m["gap"] * (n_panels - 1)),
        },
    )[:, 0]
    return fig, list(axes)


def forecast_plot(
    pred_frame: pd.DataFrame,
    series: Sequence[str] | str | None = None,
    n: int = 3,
    *,
    window: WindowChoice = "last",
    history: pd.DataFrame | None = None,
    history_steps: int | None = None,
) -> Figure:
    """Actual vs forecast for one window of each of ``series`` (default: the first ``n``).

    One panel per series with the lines ``history`` (when a canonical ``history`` frame is
    given: its rows up to the window's origin, the last ``history_steps`` of them), ``actual`` and
    ``forecast``, and a dotted vertical line at the origin. ``window`` is ``"last"``,
    ``"first"`` or a value of the ``window`` column.
    """
    _check_pred_frame(pred_frame)
    chosen = _pick_series(pred_frame, series, n)
    fig, axes = _grid(len(chosen))
    for ax, sid in zip(axes, chosen, strict=True):
        part = pred_frame[pred_frame[SERIES].astype(str) == sid]
        per_window = part.groupby("window", sort=False)["origin"].first().sort_values()
        origin = _pick_origin(list(per_window), window, list(per_window.index))
        win = part[part["origin"] == origin].sort_values(TIME)
        past = _history_before(history, sid, origin, history_steps)
        if len(past):
            ax.plot(past[TIME], past[TARGET], color="0.45", linewidth=1.0, label="history")
        ax.plot(win[TIME], win[TARGET], color="black", linewidth=1.2, label="actual")
        ax.plot(win[TIME], win["yhat"], color="tab:blue", linewidth=1.4, label="forecast")
        ax.axvline(origin, color="0.6", linestyle=":", linewidth=1.0, label="origin")
        ax.set_title(f"series {sid} - window {win['window'].iloc[0]} (origin {origin})", fontsize=9)
        ax.set_ylabel(TARGET)
        ax.legend(loc="upper left", fontsize=8)
    axes[-1].set_xlabel(TIME)
    return fig


def learning_curve(history: Sequence[Mapping[str, Any]], best_epoch: int | None = None) -> Figure:
    """Training and validation loss (top, log scale) and learning rate (bottom) per epoch.

    ``history``: one mapping per epoch with ``epoch``, ``train_loss``, ``val_loss`` (may be
    missing or None when there was no validation) and ``lr``, as the training loop records it.
    ``best_epoch``, when given, is marked on the loss panel (the weights that were kept).
    """
    if not history:
        raise ValueError("learning_curve needs at least one epoch of history")
    frame = pd.DataFrame([dict(h) for h in history])
    if "epoch" not in frame.columns:
        raise ValueError(f"learning-curve history lacks 'epoch'; it has {sorted(frame.columns)}")
    frame = frame.sort_values("epoch")
    fig, (ax_loss, ax_lr) = _grid(2, height=2.6)
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        values = pd.to_numeric(frame[key], errors="coerce") if key in frame else pd.Series(dtype=float)
        if values.notna().any():
            ax_loss.plot(frame["epoch"], values, style, marker="o", markersize=3, label=key)
    finite = [v for line in ax_loss.get_lines() for v in line.get_ydata() if np.isfinite(v)]
    if finite and min(finite) > 0:  # losses spanning decades read best on a log axis
        ax_loss.set_yscale("log")
    if best_epoch is not None:
        ax_loss.axvline(best_epoch, color="0.6", linestyle=":", linewidth=1.0, label="best epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("learning curve", fontsize=9)
    if ax_loss.get_lines():
        ax_loss.legend(fontsize=8)
    if "lr" in frame and pd.to_numeric(frame["lr"], errors="coerce").notna().any():
        ax_lr.plot(frame["epoch"], pd.to_numeric(frame["lr"], errors="coerce"), color="tab:green", label="lr")
        ax_lr.legend(fontsize=8)
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0), useOffset=False)  # short labels
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    return fig


def comparison_plot(
    frames_by_model: Mapping[str, pd.DataFrame],
    series: Sequence[str] | str | None = None,
    n: int = 1,
    *,
    window: WindowChoice = "last",
    history: pd.DataFrame | None = None,
    history_steps: int | None = None,
) -> Figure:
    """Every model's forecast on the same test window, one panel per series.

    The window is chosen among the origins that every model has for that series (``"last"``,
    ``"first"`` or a ``window`` value), so all families are drawn on identical targets. Each
    panel has ``history`` (optional), ``actual`` (from the first model's frame), one line per
    model labelled with its key, and the origin line.
    """
    if not frames_by_model:
        raise ValueError("comparison_plot needs at least one model's predictions")
    for label, frame in frames_by_model.items():
        _check_pred_frame(frame, f"predictions of {label!r}")
    first_label, first = next(iter(frames_by_model.items()))
    chosen = _pick_series(first, series, n)
    fig, axes = _grid(len(chosen))
    colors = [f"C{i}" for i in range(10)]
    for ax, sid in zip(axes, chosen, strict=True):
        parts = {m: f[f[SERIES].astype(str) == sid] for m, f in frames_by_model.items()}
        common = pd.Index(parts[first_label]["origin"].unique())
        for part in parts.values():  # unique origins first: a set of every row's Timestamp is slow
            common = common.intersection(pd.Index(part["origin"].unique()))
        if common.empty:
            raise ValueError(f"series {sid!r}: no window origin is shared by all models {list(parts)}")
        per_window = parts[first_label].groupby("window", sort=False)["origin"].first().sort_values()
        per_window = per_window[per_window.isin(common)]
        origin = _pick_origin(list(per_window), window, list(per_window.index))
        actual = parts[first_label][parts[first_label]["origin"] == origin].sort_values(TIME)
        past = _history_before(history, sid, origin, history_steps)
        if len(past):
            ax.plot(past[TIME], past[TARGET], color="0.45", linewidth=1.0, label="history")
        ax.plot(actual[TIME], actual[TARGET], color="black", linewidth=1.4, label="actual")
        for i, (m, part) in enumerate(parts.items()):
            win = part[part["origin"] == origin].sort_values(TIME)
            ax.plot(win[TIME], win["yhat"], color=colors[i % len(colors)], linewidth=1.1, label=m)
        ax.axvline(origin, color="0.6", linestyle=":", linewidth=1.0, label="origin")
        ax.set_title(f"series {sid} - origin {origin}", fontsize=9)
        ax.set_ylabel(TARGET)
        ax.legend(loc="upper left", fontsize=8, ncol=min(4, len(parts) + 1))
    axes[-1].set_xlabel(TIME)
    return fig
