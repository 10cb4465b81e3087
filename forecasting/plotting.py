"""Figures for the run artifacts: forecasts against history and actuals, the learning curve, and
the families side by side (forecasts and the leaderboard's bars).

Pure functions: frames in, a ``matplotlib.figure.Figure`` out. Figures are built without
``pyplot`` (no global figure registry, nothing to close, no GUI backend); ``fig.savefig`` renders
them with Agg and ``mlflow.log_figure`` accepts them as they are. They are laid out on fixed
margins in inches (``_grid``), with room kept below the panels for one legend for the figure, so
that no legend covers data: constrained layout measures every tick label in a dry draw before
the real one, and cost 2 to 2.5 times the time of a whole figure (10 panels on 2 busy cores:
0.9 s instead of 0.35 s); these figures are drawn for every model of every pipeline run.

Prediction frames are long, as evaluation writes them: ``series_id, window, origin, t, step, y,
yhat`` (one row per series, window and forecast step; ``origin`` is the last observed time), in
the model's scaled units, with ``y_orig, yhat_orig`` in the data's own units. Figures are drawn in
the data's units: the ``_orig`` columns, or, without them, ``y``/``yhat`` un-scaled with the
``scaler`` given. Prediction intervals ride along as ``yhat_lo_<L>``/``yhat_hi_<L>`` for central
levels ``L`` in percent (``f"{level:g}"``: ``yhat_lo_80``, ``yhat_hi_97.5``), with ``_orig`` twins,
exactly like ``yhat`` (``interval_levels``); each level is shaded around the forecast, the widest
lightest and beneath. A level-less ``yhat_lo``/``yhat_hi`` pair is drawn as one band "interval".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from forecasting.data.schema import SERIES, TARGET, TIME
from forecasting.data.seasonality import season_length_for
from forecasting.evaluation.intervals import level_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from forecasting.data.scaling import Scaler

PRED_COLUMNS = (SERIES, "window", "origin", TIME, "step", TARGET, "yhat")
BAND = ("yhat_lo", "yhat_hi")  # a level-less interval's bounds, drawn as a band when a frame has both
# The bounds of a central interval of level L percent: yhat_lo_80, yhat_hi_97.5, yhat_lo_80_orig.
LEVEL_BOUND = re.compile(r"yhat_(lo|hi)_(\d+(?:\.\d+)?)(?:_orig)?")
WindowChoice = Literal["first", "middle", "last"] | int

DPI = 100
HISTORY = {"color": "0.45", "linewidth": 1.0, "label": "history"}
ACTUAL = {"color": "black", "linewidth": 1.2, "label": "actual"}
ORIGIN = {"color": "0.35", "linestyle": "--", "linewidth": 0.9, "label": "origin"}
FORECAST_COLOR = "tab:blue"


# --- frames -----------------------------------------------------------------------------------
def _check_pred_frame(frame: pd.DataFrame, what: str = "prediction frame") -> None:
    missing = [c for c in PRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; expected {list(PRED_COLUMNS)}")
    if frame.empty:
        raise ValueError(f"{what} is empty")


def history_length(lookback: int, freq: str) -> int:
    """Rows of history drawn before a forecast origin: the model's lookback, and at least two
    seasons of the data's frequency (``season_length_for``: 48 hours of hourly data)."""
    return max(int(lookback), 2 * season_length_for(freq))


def target_label(target: str | Sequence[str]) -> str | None:
    """The y-axis label for a config's ``data.target``: the column's name; None for wide data (a
    list of columns, each one a series), where each panel is labelled with its series id."""
    return target if isinstance(target, str) else None


def _bounds(level: float) -> tuple[str, str]:
    """The model-scale columns of a level's bounds: 80 -> ("yhat_lo_80", "yhat_hi_80")."""
    return f"yhat_lo_{level_label(level)}", f"yhat_hi_{level_label(level)}"


def interval_levels(pred: pd.DataFrame) -> list[float]:
    """The interval levels (percent, ascending) whose two bounds ``pred`` has, each bound on the
    model's scale or as its ``_orig`` twin: ``yhat_lo_80, yhat_hi_80_orig`` -> [80.0]. A bound
    without its partner is not a level (a figure draws no half band)."""
    sides: dict[str, set[str]] = {}
    for col in pred.columns:
        hit = LEVEL_BOUND.fullmatch(str(col))
        if hit:
            sides.setdefault(level_label(float(hit[2])), set()).add(hit[1])
    return sorted(float(lab) for lab, got in sides.items() if got == {"lo", "hi"})


def original_units(pred: pd.DataFrame, scaler: Scaler | None = None) -> pd.DataFrame:
    """``pred`` with ``y``, ``yhat`` and the interval bounds (``yhat_lo_<L>``/``yhat_hi_<L>`` of
    every level, a level-less ``yhat_lo``/``yhat_hi``) in the data's units, each under its
    model-scale name: its ``_orig`` column where the frame has one, else un-scaled with
    ``scaler``. Other ``_orig`` columns are dropped."""
    out = pred.drop(columns=[c for c in pred.columns if c.endswith("_orig")])
    bounds = [c for level in interval_levels(pred) for c in _bounds(level)]
    for col in (TARGET, "yhat", *bounds, *BAND):
        if f"{col}_orig" in pred.columns:
            out[col] = pred[f"{col}_orig"].to_numpy()
        elif col not in pred.columns:
            continue
        elif scaler is not None:
            values = pred[col].to_numpy(dtype=np.float64)
            out[col] = scaler.inverse_y(values, pred[SERIES].to_numpy())
        else:
            raise ValueError(
                f"prediction frame has {col!r} on the model's scale but no {col + '_orig'!r}; "
                "pass the scaler it was scaled with so the figure is in the data's units"
            )
    return out


def _wall_time(values: Any) -> np.ndarray:
    """Times as naive datetime64 (a zone-aware column in its own wall-clock time): fast to draw."""
    s = pd.Series(values) if not isinstance(values, pd.Series) else values
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_localize(None)
    return s.to_numpy()


def _stamp(t: Any) -> str:
    return pd.Timestamp(t).strftime("%Y-%m-%d %H:%M")


def _window_table(pred: pd.DataFrame, errors: bool = True) -> pd.DataFrame:
    """One row per window, in the frame's order: ``series_id`` (str), ``window``, ``origin``, and
    with ``errors`` ``sse``/``n`` (squared error and scored steps on the frame's ``y``/``yhat``:
    the model's scale, as the metrics, so that series of any size compare).

    One vectorised pass over every row (a bincount by window); what is left is small: a test
    frame of millions of rows has only its windows here.
    """
    heads = pred.loc[pred["step"].to_numpy() == pred["step"].min(), [SERIES, "window", "origin"]]
    table = heads.drop_duplicates("window").reset_index(drop=True)
    table[SERIES] = table[SERIES].astype(str)
    if errors:
        w = pred["window"].to_numpy(dtype=np.int64)
        err = (pred["yhat"].to_numpy(dtype=np.float64) - pred[TARGET].to_numpy(dtype=np.float64)) ** 2
        ok = ~np.isnan(err)
        size = int(w.max()) + 1
        idx = table["window"].to_numpy(dtype=np.int64)
        table["sse"] = np.bincount(w[ok], weights=err[ok], minlength=size)[idx]
        table["n"] = np.bincount(w[ok], minlength=size)[idx]
    return table


def representative_series(table: pd.DataFrame, n: int = 3) -> list[tuple[str, str]]:
    """Up to ``n`` series spanning the errors, each with a note: the lowest, median and highest
    error (MSE over a series' windows) for ``n=3``; every series, in order, when there are no more
    than ``n``."""
    order = list(pd.unique(table[SERIES]))
    if len(order) <= n:
        return [(s, "") for s in order]
    sums = table.groupby(SERIES, sort=False)[["sse", "n"]].sum()
    mse = (sums["sse"] / sums["n"].where(sums["n"] > 0)).dropna().sort_values(kind="stable")
    if mse.empty:
        return [(s, "") for s in order[:n]]
    picks = np.unique(np.linspace(0, len(mse) - 1, n).round().astype(int))
    notes = {0: "lowest error", len(mse) - 1: "highest error"}
    if len(picks) == 3:
        notes[int(picks[1])] = "median error"
    return [(str(mse.index[i]), notes.get(int(i), f"error rank {i + 1} of {len(mse)}")) for i in picks]


def _pick_window(windows: pd.DataFrame, choice: WindowChoice) -> pd.Series:
    """The row of ``windows`` (one series' windows by origin) that ``choice`` names."""
    if choice == "last":
        return windows.iloc[-1]
    if choice == "first":
        return windows.iloc[0]
    if choice == "middle":
        return windows.iloc[len(windows) // 2]
    hit = windows[windows["window"] == choice]
    if hit.empty:
        raise ValueError(f"window {choice!r} not found; windows present: {list(windows['window'])[:10]}")
    return hit.iloc[0]


def _pick_series(table: pd.DataFrame, series: Sequence[str] | str | None, n: int) -> list[tuple[str, str]]:
    if series is None:
        return representative_series(table, n)
    present = list(pd.unique(table[SERIES]))
    wanted = [series] if isinstance(series, str) else [str(s) for s in series]
    unknown = [s for s in wanted if s not in present]
    if unknown:
        raise ValueError(f"series {unknown} not in the prediction frame; it has {present[:10]}")
    return [(s, "") for s in wanted]


def _series_history(history: pd.DataFrame | None, sid: str) -> pd.DataFrame:
    """One series' rows of a canonical frame (``series_id`` is str there), in time order."""
    if history is None:
        return pd.DataFrame({TIME: pd.Series(dtype="datetime64[ns]"), TARGET: pd.Series(dtype=float)})
    return history.loc[history[SERIES] == sid, [TIME, TARGET]]


def _before(part: pd.DataFrame, origin: Any, steps: int) -> pd.DataFrame:
    """The last ``steps`` rows of one series' history up to and including ``origin``."""
    return part[part[TIME] <= origin].tail(steps)


# --- drawing ----------------------------------------------------------------------------------
def _grid(
    nrows: int,
    ncols: int,
    panel: tuple[float, float],
    *,
    panels: int | None = None,
    sharex: bool = False,
    sharey: bool | Literal["row"] = False,
    left: float = 0.8,
    right: float = 0.2,
    top: float = 0.6,
    bottom: float = 0.85,
    wspace: float = 0.3,
    hspace: float = 0.55,
    height_ratios: Sequence[float] | None = None,
) -> tuple[Figure, list[Axes]]:
    """A figure of ``nrows`` x ``ncols`` cells of ``panel`` (width, height) inches each, with
    fixed margins and gaps in inches: ``left`` for the y tick labels and label, ``top`` for the
    figure's and the panels' titles, ``bottom`` for the x tick labels and a legend below.

    Only the first ``panels`` cells (row by row; default all) get axes: an axes costs its ticks
    even when hidden. Shared axes show their tick labels only at the bottom of each column
    (``sharex``) and in the first column (``sharey``).
    """
    width = left + right + ncols * panel[0] + (ncols - 1) * wspace
    height = top + bottom + nrows * panel[1] + (nrows - 1) * hspace
    fig = Figure(figsize=(width, height), dpi=DPI)
    grid = fig.add_gridspec(
        nrows,
        ncols,
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        wspace=wspace / panel[0],
        hspace=hspace / panel[1],
        height_ratios=height_ratios,
    )
    n = nrows * ncols if panels is None else panels
    axes: list[Axes] = []
    for i in range(n):
        row, col = divmod(i, ncols)
        if sharey == "row":
            share_y = axes[row * ncols] if col else None
        else:
            share_y = axes[0] if sharey and i else None
        ax = fig.add_subplot(grid[row, col], sharex=axes[0] if sharex and i else None, sharey=share_y)
        ax.tick_params(labelsize=8)
        ax.tick_params(labelbottom=not sharex or i + ncols >= n, labelleft=not (sharey and col))
        ax.grid(True, color="0.92", linewidth=0.6)
        ax.set_axisbelow(True)
        axes.append(ax)
    return fig, axes


def _time_axis(ax: Axes) -> None:
    locator = AutoDateLocator(minticks=3, maxticks=7)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def _band_colors(n: int) -> list[tuple[float, float, float]]:
    """``n`` opaque tints of the forecast's colour, widest level's first: lightest to darkest.
    Opaque, not alpha: where bands overlap each shows its own legend colour."""
    base, white = np.array(to_rgb(FORECAST_COLOR)), np.ones(3)
    shares = [0.3] if n == 1 else np.linspace(0.18, 0.45, n)  # share of the forecast's colour
    return [tuple(float(v) for v in white + s * (base - white)) for s in shares]


def _draw_window(
    ax: Axes, past: pd.DataFrame, win: pd.DataFrame, origin: Any, label: str = "forecast"
) -> None:
    """History up to the origin, the actuals and the forecast over the horizon, an interval band
    when ``win`` has one, and the origin as a dashed vertical line."""
    if len(past):
        ax.plot(_wall_time(past[TIME]), past[TARGET].to_numpy(), **HISTORY)
    t = _wall_time(win[TIME])
    ax.plot(t, win[TARGET].to_numpy(), **ACTUAL)
    levels = interval_levels(win)[::-1]  # widest first: the narrower bands are drawn over it
    for level, color in zip(levels, _band_colors(len(levels)), strict=True):
        lo, hi = (win[c].to_numpy(dtype=float) for c in _bounds(level))
        ax.fill_between(t, lo, hi, color=color, linewidth=0, label=f"{level_label(level)} % interval")
    if all(c in win.columns for c in BAND):
        lo, hi = win[BAND[0]].to_numpy(dtype=float), win[BAND[1]].to_numpy(dtype=float)
        ax.fill_between(t, lo, hi, color=FORECAST_COLOR, alpha=0.2, linewidth=0, label="interval")
    ax.plot(t, win["yhat"].to_numpy(), color=FORECAST_COLOR, linewidth=1.4, label=label)
    at = _wall_time([origin])[0]
    # axvline would ask for the x limits, autoscaling every shared panel once per line
    ax.plot([at, at], [0, 1], transform=ax.get_xaxis_transform(), scalex=False, scaley=False, **ORIGIN)
    _time_axis(ax)


def _legend_below(fig: Figure, ax: Axes, ncol: int | None = None) -> None:
    """One legend for the figure, in the strip ``_grid`` keeps below the panels' tick labels: one
    row, or rows of ``ncol`` entries."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=ncol or len(labels),
        fontsize=8,
        frameon=False,
    )


def forecast_plot(
    pred: pd.DataFrame,
    history: pd.DataFrame | None = None,
    *,
    scaler: Scaler | None = None,
    series: Sequence[str] | str | None = None,
    n: int = 3,
    windows: Sequence[WindowChoice] = ("middle", "last"),
    history_steps: int | None = None,
    y_label: str | None = None,
    model: str | None = None,
) -> Figure:
    """Small multiples of test forecasts in the data's units: one row per series, one column per
    forecast origin.

    ``pred``: evaluation's prediction frame, with or without interval bounds (each level present
    is shaded, see ``interval_levels``). ``history``: the canonical frame in the data's units
    (``series_id, t, y``); each panel draws its last ``history_steps`` rows up to the origin
    (default: two horizons), the actuals and the forecast over the horizon, and the origin.
    ``series`` (default: the representative ``n``, see ``representative_series``); ``windows``:
    per series, which of its windows (``"first"``, ``"middle"``, ``"last"`` or a ``window``
    value). ``y_label``: the target's name in the data (default: each row's series id, as in
    wide data where a series is a column). ``model`` names the model in the title.
    """
    _check_pred_frame(pred)
    table = _window_table(pred)
    chosen = _pick_series(table, series, n)
    steps = history_steps if history_steps is not None else 2 * int(pred["step"].max())
    picks = []  # (sid, note, [window rows])
    for sid, note in chosen:
        own = table[table[SERIES] == sid].sort_values("origin", kind="stable")
        rows = [_pick_window(own, c) for c in windows]
        rows = list({int(r["window"]): r for r in rows}.values())  # one window chosen twice: once
        picks.append((sid, note, sorted(rows, key=lambda r: r["origin"])))
    wanted = [int(r["window"]) for _, _, rows in picks for r in rows]
    part = original_units(pred[pred["window"].isin(wanted)], scaler)

    ncols = max(len(rows) for _, _, rows in picks)
    fig, flat = _grid(len(picks), ncols, (5.0, 2.0), sharey="row", hspace=0.8)  # room: the date offset
    axes = [flat[i : i + ncols] for i in range(0, len(flat), ncols)]
    for (sid, note, rows), row_axes in zip(picks, axes, strict=True):
        own_history = _series_history(history, sid)
        for ax, w in zip(row_axes, rows, strict=False):
            win = part[part["window"] == w["window"]].sort_values(TIME)
            _draw_window(ax, _before(own_history, w["origin"], steps), win, w["origin"])
            what = f"series {sid}" + (f" ({note})" if note else "")
            ax.set_title(f"{what}, origin {_stamp(w['origin'])}", fontsize=9)
        for ax in row_axes[len(rows) :]:
            ax.set_visible(False)
        row_axes[0].set_ylabel(y_label or sid)
    fig.suptitle(f"{model or 'model'}: test forecasts", fontsize=10)
    _legend_below(fig, axes[0][0])
    return fig


def learning_curve(
    history: Sequence[Mapping[str, Any]], best_epoch: int | None = None, *, model: str | None = None
) -> Figure:
    """Training and validation loss (top, log scale when positive) and learning rate (bottom) per
    epoch, on integer epoch ticks.

    ``history``: one mapping per epoch with ``epoch`` (1-based), ``train_loss``, ``val_loss`` (may
    be missing or None when there was no validation) and ``lr``, as the training loop records it.
    ``best_epoch``, when given, is marked on both panels: the epoch whose weights were kept.
    """
    if not history:
        raise ValueError("learning_curve needs at least one epoch of history")
    frame = pd.DataFrame([dict(h) for h in history])
    if "epoch" not in frame.columns:
        raise ValueError(f"learning-curve history lacks 'epoch'; it has {sorted(frame.columns)}")
    frame = frame.sort_values("epoch")
    epochs = frame["epoch"].to_numpy()
    fig, axes = _grid(2, 1, (5.5, 1.6), top=0.4, bottom=0.8, hspace=0.35, height_ratios=(2, 1), sharex=True)
    ax_loss, ax_lr = axes
    for key, style, color in (("train_loss", "-", "tab:blue"), ("val_loss", "--", "tab:orange")):
        values = pd.to_numeric(frame[key], errors="coerce") if key in frame else pd.Series(dtype=float)
        if values.notna().any():
            ax_loss.plot(epochs, values.to_numpy(), style, color=color, marker="o", markersize=3, label=key)
    finite = [v for line in ax_loss.get_lines() for v in line.get_ydata() if np.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) > 10 * min(finite):  # decades: a log axis
        ax_loss.set_yscale("log")
    lr = pd.to_numeric(frame["lr"], errors="coerce") if "lr" in frame else pd.Series(dtype=float)
    if lr.notna().any():
        ax_lr.plot(epochs, lr.to_numpy(), color="tab:green", marker="o", markersize=2, label="lr")
    if best_epoch is not None:
        for ax in (ax_loss, ax_lr):
            kept = f"kept: epoch {best_epoch}"
            ax.axvline(best_epoch, color="tab:red", linestyle="--", linewidth=1.0, label=kept)
    ax_loss.set_ylabel("loss")
    ax_loss.set_title(f"{model + ': ' if model else ''}learning curve", fontsize=10)
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0), useOffset=False)  # short labels
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    ax_lr.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs 1, 2, 3: not 1.25, 1.5
    if ax_loss.get_lines():
        _legend_below(fig, ax_loss)
    return fig


def comparison_plot(
    frames_by_model: Mapping[str, pd.DataFrame],
    history: pd.DataFrame | None = None,
    *,
    scaler: Scaler | None = None,
    series: str | None = None,
    window: WindowChoice = "last",
    history_steps: int | None = None,
    y_label: str | None = None,
    scores: Mapping[str, float] | None = None,
    metric: str = "val_mse",
) -> Figure:
    """Every model's forecast of one series from one origin, one panel per model (in the order
    given: best first, say), on shared axes.

    The series is ``series`` or the median-error one of the first model (``representative_series``);
    the window is chosen among the origins every model has for it (``"last"``, ``"first"``,
    ``"middle"`` or a ``window`` value of the first model), so every panel has the same history and
    actuals. ``scores`` (model -> ``metric``) are printed in the panel titles.
    """
    if not frames_by_model:
        raise ValueError("comparison_plot needs at least one model's predictions")
    for label, frame in frames_by_model.items():
        _check_pred_frame(frame, f"predictions of {label!r}")
    tables = {m: _window_table(f, errors=i == 0) for i, (m, f) in enumerate(frames_by_model.items())}
    first = next(iter(tables.values()))
    if series is None:
        picks = representative_series(first, 3)
        sid = picks[len(picks) // 2][0]
    else:
        sid = _pick_series(first, series, 1)[0][0]
    own = {m: t[t[SERIES] == sid].sort_values("origin", kind="stable") for m, t in tables.items()}
    common = pd.Index(next(iter(own.values()))["origin"])
    for t in own.values():
        common = common.intersection(pd.Index(t["origin"]))
    if common.empty:
        raise ValueError(f"series {sid!r}: no window origin is shared by all models {list(own)}")
    shared = next(iter(own.values()))
    origin = _pick_window(shared[shared["origin"].isin(common)], window)["origin"]
    steps = (
        history_steps
        if history_steps is not None
        else 2 * int(next(iter(frames_by_model.values()))["step"].max())
    )
    past = _before(_series_history(history, sid), origin, steps)

    n = len(frames_by_model)
    ncols = 1 if n == 1 else 2 if n <= 4 else 3
    nrows = -(-n // ncols)
    fig, axes = _grid(nrows, ncols, (3.8, 1.7), panels=n, wspace=0.15, hspace=0.35, sharex=True, sharey=True)
    for ax, (m, frame) in zip(axes, frames_by_model.items(), strict=False):
        w = own[m].loc[own[m]["origin"] == origin, "window"].iloc[0]
        win = original_units(frame[frame["window"] == w], scaler).sort_values(TIME)
        _draw_window(ax, past, win, origin)
        score = (scores or {}).get(m)
        ax.set_title(
            m + (f"  ({metric} {score:.3g})" if score is not None and np.isfinite(score) else ""), fontsize=9
        )
    for ax in axes[::ncols]:
        ax.set_ylabel(y_label or sid)
    fig.suptitle(f"test forecasts of series {sid}, origin {_stamp(origin)}", fontsize=10)
    # the legend of the panel with the most entries: the first model may have no interval bands
    _legend_below(fig, max(axes, key=lambda ax: len(ax.get_legend_handles_labels()[1])))
    return fig


def leaderboard_plot(
    values: Mapping[str, float], metric: str = "val_mse", *, reference: str | None = None
) -> Figure:
    """The selection metric per model as horizontal bars, best (lowest) at the top, each value
    printed; models without a value (failed) listed at the bottom. ``reference`` (a model's name,
    e.g. the naive forecast) is also drawn as a dotted line across the bars: the score to beat."""
    if not values:
        raise ValueError("leaderboard_plot needs at least one model")
    scores = pd.Series(
        {str(k): float(v) if v is not None else np.nan for k, v in values.items()}, dtype=float
    )
    scored = scores[np.isfinite(scores)].sort_values(kind="stable")
    failed = [m for m in scores.index if m not in scored.index]
    names = list(scored.index) + failed
    longest = max(len(m) for m in names)
    fig, axes = _grid(
        1, 1, (5.0, 0.28 * len(names)), left=0.2 + 0.065 * longest, right=0.3, top=0.35, bottom=0.5
    )
    (ax,) = axes
    pos = np.arange(len(names))
    colors = ["tab:green" if i == 0 else "tab:blue" for i in range(len(scored))]
    ax.barh(pos[: len(scored)], scored.to_numpy(), color=colors, height=0.7)
    top = float(scored.max()) if len(scored) else 1.0
    for i, v in enumerate(scored.to_numpy()):
        ax.text(v + 0.01 * top, i, f"{v:.4g}", va="center", fontsize=8)
    for i in range(len(scored), len(names)):
        ax.text(0.01 * top, i, "no score", va="center", fontsize=8, color="tab:red")
    note = ""
    if reference is not None and reference in scored.index:
        ax.axvline(scored[reference], color="0.3", linestyle=":", linewidth=1.0)
        note = f"; dotted: {reference}"
    ax.set_yticks(pos, names, fontsize=8)
    ax.set_ylim(len(names) - 0.5, -0.5)  # best at the top
    ax.set_xlim(0, top * 1.15)
    ax.set_xlabel(f"{metric} (lower is better{note})")
    ax.set_title(f"models by {metric}", fontsize=10)
    ax.grid(False, axis="y")
    return fig


def calibration_plot(coverage: Mapping[str, Mapping[float, float]], title: str | None = None) -> Figure:
    """Empirical against nominal coverage of the prediction intervals, one marker line per model
    (in the order given), over the diagonal of perfect calibration; both axes 0 to 100 %.

    ``coverage``: model -> {level: coverage}, the level in percent as in the column and metric
    names (80 for ``yhat_lo_80``/``coverage_80``), the coverage the share of actuals inside the
    band as ``intervals.coverage`` returns it (0.78). Both are drawn as fractions (x = level /
    100, y = the coverage as given) with percent tick labels. A point above the diagonal is a band
    wider than it needs to be, below one that is too narrow. NaN coverages (no score) are left
    out. The pipeline logs this figure on its parent run as ``plots/calibration.png``.
    """
    if not coverage or not any(coverage.values()):
        raise ValueError("calibration_plot needs at least one model with a coverage per level")
    for model, by_level in coverage.items():
        bad_levels = [lv for lv in by_level if not 0 < float(lv) < 100]
        if bad_levels:
            raise ValueError(
                f"model {model!r}: interval levels {bad_levels} are not percentages in (0, 100); "
                "pass 80 for an 80 % interval"
            )
        bad = {lv: c for lv, c in by_level.items() if c is not None and abs(float(c) - 0.5) > 0.5}
        if bad:
            raise ValueError(f"model {model!r}: coverages {bad} are not shares in [0, 1]; pass 0.78, not 78")
    names = [str(m) for m in coverage]
    entry = 0.6 + 0.065 * max(len(m) for m in [*names, "perfect calibration"])  # inches: handle, label
    panel = 4.0
    ncol = max(1, min(len(names) + 1, int((panel + 1.0) // entry)))  # the figure is panel + 1 in wide
    rows = -(-(len(names) + 1) // ncol)
    fig, (ax,) = _grid(1, 1, (panel, panel), top=0.4, bottom=0.55 + 0.2 * rows)
    ax.plot([0, 1], [0, 1], color="0.35", linestyle="--", linewidth=1.0, label="perfect calibration")
    markers = "osD^v<>ph*"
    for i, (model, by_level) in enumerate(coverage.items()):
        points = sorted(
            (float(lv) / 100, float(c)) for lv, c in by_level.items() if c is not None and np.isfinite(c)
        )
        if not points:
            continue
        x, y = np.array(points).T
        ax.plot(x, y, marker=markers[i % len(markers)], markersize=5, linewidth=1.2, label=str(model))
    for text, xy, align in (("too wide", (0.04, 0.95), "left"), ("too narrow", (0.96, 0.04), "right")):
        ax.text(*xy, text, ha=align, va="center", fontsize=8, color="0.45", transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("nominal coverage (interval level)")
    ax.set_ylabel("empirical coverage")
    ax.set_title(title or "prediction intervals: calibration", fontsize=10)
    _legend_below(fig, ax, ncol=ncol)
    return fig


def monitoring_plot(
    origins: pd.DataFrame, expected: Mapping[str, float], levels: Sequence[str], *, title: str | None = None
) -> Figure:
    """Accuracy of one model version against arriving actuals, per forecast origin.

    ``origins``: ``forecasting.monitoring.monitor.per_origin``'s frame (index: origin; ``mae``,
    ``rolling_mae`` and, per interval level, ``rolling_coverage_<L>``). Top: the MAE of each
    origin's forecasts and its rolling mean, against the MAE the selection backtest expected
    (``expected["mae"]``). Bottom, when the forecasts had intervals: the rolling coverage of each
    level against its nominal value.
    """
    if origins.empty:
        raise ValueError("monitoring_plot needs at least one scored origin")
    x = pd.DatetimeIndex(pd.to_datetime(origins.index))
    panels = 2 if levels else 1
    fig, axes = _grid(panels, 1, (6.0, 1.8), top=0.4, bottom=0.85, hspace=0.35, sharex=True)
    ax = axes[0]
    ax.plot(x, origins["mae"].to_numpy(float), "o", color="tab:gray", markersize=3, label="MAE per origin")
    ax.plot(x, origins["rolling_mae"].to_numpy(float), "-", color="tab:blue", label="rolling MAE")
    mae = expected.get("mae")
    if mae is not None and np.isfinite(mae):
        ax.axhline(mae, color="tab:green", linestyle="--", linewidth=1.0, label="expected (validation)")
    ax.set_ylabel("MAE")
    ax.set_title(f"{title + ': ' if title else ''}accuracy against actuals", fontsize=10)
    if levels:
        cov = axes[1]
        colors = ["tab:orange", "tab:purple", "tab:brown", "tab:pink"]
        for lv, color in zip(levels, colors * 4, strict=False):
            values = origins[f"rolling_coverage_{lv}"].to_numpy(float)
            cov.plot(x, values, "-", color=color, label=f"rolling {lv} % coverage")
            cov.axhline(float(lv) / 100, color=color, linestyle=":", linewidth=1.0)
        cov.set_ylim(0, 1.02)
        cov.yaxis.set_major_formatter(PercentFormatter(1.0))
        cov.set_ylabel("coverage")
    for a in axes:
        _time_axis(a)
    for a in axes[1:]:  # one legend for the figure: the coverage lines join the top panel's
        for handle, label in zip(*a.get_legend_handles_labels(), strict=True):
            axes[0].plot([], [], color=handle.get_color(), linestyle=handle.get_linestyle(), label=label)
    _legend_below(fig, axes[0], ncol=3)
    return fig
