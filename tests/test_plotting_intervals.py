"""Prediction-interval figures: a shaded band per level around the forecast, in the data's units,
and the calibration plot of nominal against empirical coverage. Values are read back from the
Figure's artists."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from forecasting.data.scaling import fit_scaler
from forecasting.plotting import (
    calibration_plot,
    comparison_plot,
    forecast_plot,
    interval_levels,
    original_units,
)

H = 4
START = pd.Timestamp("2024-01-01")
# Half-widths in the data's units of each level's band around yhat_orig.
HALF = {50: 1.0, 80: 2.0, 95: 4.0}


def history_frame(series=("a", "b"), periods=72) -> pd.DataFrame:
    """Hourly history in the data's units: series k is 100 * (k + 1) + t (hours since START)."""
    t = pd.date_range(START, periods=periods, freq="h")
    return pd.concat(
        [
            pd.DataFrame({"series_id": s, "t": t, "y": 100.0 * (k + 1) + np.arange(periods)})
            for k, s in enumerate(series)
        ],
        ignore_index=True,
    )


def pred_frame(series=("a",), windows=2, levels=(80, 95), orig=True) -> pd.DataFrame:
    """Evaluation-style predictions of ``history_frame``'s series with interval bounds of
    ``levels``: window w of series k has its origin at hour 48 + w * H; ``yhat_orig`` = ``y_orig``
    + 1 and each level's bounds ``yhat_orig`` -/+ ``HALF[level]``; the model's scale is the
    data's / 10 - 5 (bounds included)."""
    rows = []
    for k, sid in enumerate(series):
        for w in range(windows):
            origin = START + pd.Timedelta(hours=48 + w * H)
            for step in range(1, H + 1):
                y = 100.0 * (k + 1) + 48 + w * H + step
                rows.append((sid, k * windows + w, origin, origin + pd.Timedelta(hours=step), step, y, y + 1))
    frame = pd.DataFrame(rows, columns=["series_id", "window", "origin", "t", "step", "y_orig", "yhat_orig"])
    for level in levels:
        frame[f"yhat_lo_{level:g}_orig"] = frame.yhat_orig - HALF[level]
        frame[f"yhat_hi_{level:g}_orig"] = frame.yhat_orig + HALF[level]
    for col in [c for c in frame.columns if c.endswith("_orig")]:
        frame[col.removesuffix("_orig")] = frame[col] / 10 - 5
    return frame if orig else frame.drop(columns=[c for c in frame.columns if c.endswith("_orig")])


def bands(ax) -> list[PolyCollection]:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def legend_texts(fig: Figure) -> list[str]:
    (legend,) = fig.legends
    return [t.get_text() for t in legend.get_texts()]


def assert_band_between(band: PolyCollection, lo: np.ndarray, hi: np.ndarray) -> None:
    """The band's outline runs along ``lo`` and ``hi``: every vertex inside, both reached."""
    ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
    assert ys.min() == pytest.approx(lo.min()) and ys.max() == pytest.approx(hi.max())
    assert ((ys >= lo.min() - 1e-9) & (ys <= hi.max() + 1e-9)).all()
    np.testing.assert_allclose(np.sort(np.unique(ys)), np.sort(np.unique(np.r_[lo, hi])))


# --- interval_levels ----------------------------------------------------------------------------
def test_interval_levels_reads_both_bounds_on_either_scale_sorted():
    assert interval_levels(pred_frame(levels=(95, 50, 80))) == [50.0, 80.0, 95.0]
    assert interval_levels(pred_frame(levels=(80,), orig=False)) == [80.0]
    frame = pd.DataFrame(
        columns=["yhat", "yhat_lo_97.5", "yhat_hi_97.5_orig", "yhat_lo_80", "q0.1", "yhat_lo", "yhat_hi"]
    )
    assert interval_levels(frame) == [97.5]  # 80 has no upper bound; the bare pair has no level
    assert interval_levels(pred_frame(levels=())) == []


# --- original_units -------------------------------------------------------------------------------
def test_original_units_takes_the_orig_bounds_of_every_level():
    frame = pred_frame(levels=(50, 80, 95))
    out = original_units(frame)
    assert not [c for c in out.columns if c.endswith("_orig")]
    for level, half in HALF.items():
        np.testing.assert_allclose(out[f"yhat_lo_{level}"], frame.yhat_orig - half)
        np.testing.assert_allclose(out[f"yhat_hi_{level}"], frame.yhat_orig + half)


def test_original_units_unscales_the_bounds_with_the_scaler_like_yhat():
    history = history_frame()
    scaler = fit_scaler(history, ["y"])
    frame = pred_frame(series=("a", "b"), levels=(80,), orig=False)
    out = original_units(frame, scaler)
    ids = frame.series_id.to_numpy()
    for col in ("yhat", "yhat_lo_80", "yhat_hi_80"):
        np.testing.assert_allclose(out[col], scaler.inverse_y(frame[col].to_numpy(), ids))
    assert not np.allclose(out.yhat_hi_80, frame.yhat_hi_80)  # it did change units
    no_orig_bounds = pred_frame(levels=(80,)).drop(columns=["yhat_lo_80_orig", "yhat_hi_80_orig"])
    with pytest.raises(ValueError, match="yhat_lo_80"):
        original_units(no_orig_bounds)  # y and yhat in the data's units, the bounds not: no scaler


# --- forecast_plot --------------------------------------------------------------------------------
def test_forecast_plot_shades_one_band_per_level_between_its_bounds():
    frame = pred_frame(levels=(50, 95, 80))
    fig = forecast_plot(frame, history_frame(), windows=["first", "last"])
    assert len(fig.axes) == 2
    for ax, w in zip(fig.axes, [0, 1], strict=True):
        drawn = bands(ax)
        assert [b.get_label() for b in drawn] == ["95 % interval", "80 % interval", "50 % interval"]
        want = frame[frame.window == w].sort_values("t")
        for band, level in zip(drawn, (95, 80, 50), strict=True):
            lo, hi = want[f"yhat_lo_{level}_orig"].to_numpy(), want[f"yhat_hi_{level}_orig"].to_numpy()
            assert_band_between(band, lo, hi)
        # one colour family, the widest lightest: tints of the forecast line's colour, darker inwards
        forecast = next(ln for ln in ax.get_lines() if ln.get_label() == "forecast")
        blue = np.array(to_rgb(forecast.get_color()))
        tints = [np.array(b.get_facecolor()[0][:3]) for b in drawn]
        shares = [float(np.mean((1 - t) / (1 - blue))) for t in tints]
        for t, s in zip(tints, shares, strict=True):
            np.testing.assert_allclose(t, 1 + s * (blue - 1), atol=1e-6)
        assert shares == sorted(shares) and shares[0] < shares[-1] < 1
        # beneath the forecast and actual lines, the widest first
        assert all(b.get_zorder() < forecast.get_zorder() for b in drawn)
        order = [ax.get_children().index(b) for b in drawn]
        assert order == sorted(order)
    assert legend_texts(fig) == [
        "history",
        "actual",
        "95 % interval",
        "80 % interval",
        "50 % interval",
        "forecast",
        "origin",
    ]
    fig.savefig(io.BytesIO(), format="png")


def test_forecast_plot_draws_scaled_bounds_in_the_data_units_with_the_scaler():
    history = history_frame()
    scaler = fit_scaler(history, ["y"])
    frame = pred_frame(series=("a", "b"), levels=(80,), orig=False)
    fig = forecast_plot(frame, history, scaler=scaler, series="b", windows=["last"])
    (ax,) = fig.axes
    (band,) = bands(ax)
    want = frame[frame.window == frame.window.max()]
    ids = want.series_id.to_numpy()
    lo = scaler.inverse_y(want.yhat_lo_80.to_numpy(), ids)
    hi = scaler.inverse_y(want.yhat_hi_80.to_numpy(), ids)
    assert_band_between(band, lo, hi)
    assert band.get_label() == "80 % interval"


def test_forecast_plot_without_interval_columns_draws_no_band():
    fig = forecast_plot(pred_frame(levels=()), history_frame(), windows=["last"])
    (ax,) = fig.axes
    assert bands(ax) == []
    assert not ax.collections
    assert legend_texts(fig) == ["history", "actual", "forecast", "origin"]


def test_comparison_plot_shades_each_model_bands():
    frames = {"naive": pred_frame(levels=()), "ar": pred_frame(levels=(80,))}
    fig = comparison_plot(frames, history_frame(), series="a")
    naive, ar = fig.axes
    assert [b.get_label() for b in bands(ar)] == ["80 % interval"]
    assert bands(naive) == []
    assert "80 % interval" in legend_texts(fig)  # though the first panel has no band


# --- calibration_plot -----------------------------------------------------------------------------
COVERAGE = {
    "ar": {50: 0.46, 80: 0.78, 95: 0.97},
    "lstm": {95: 0.88, 50: 0.41, 80: 0.70},
}


def test_calibration_plot_draws_each_model_coverage_against_the_diagonal():
    fig = calibration_plot(COVERAGE, title="test intervals")
    (ax,) = fig.axes
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines) == ["perfect calibration", "ar", "lstm"]
    diagonal = lines["perfect calibration"]
    np.testing.assert_allclose(diagonal.get_xdata(), diagonal.get_ydata())
    assert diagonal.get_linestyle() == "--"
    for model, by_level in COVERAGE.items():
        levels = sorted(by_level)
        np.testing.assert_allclose(lines[model].get_xdata(), np.array(levels) / 100)  # fractions
        np.testing.assert_allclose(lines[model].get_ydata(), [by_level[lv] for lv in levels])
        assert lines[model].get_marker() not in (None, "None", "")
    assert lines["ar"].get_marker() != lines["lstm"].get_marker()
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
    assert "nominal" in ax.get_xlabel() and "empirical" in ax.get_ylabel()
    assert ax.get_title() == "test intervals"
    fig.canvas.draw()
    assert "80%" in [t.get_text() for t in ax.get_xticklabels()]
    assert legend_texts(fig) == ["perfect calibration", "ar", "lstm"]
    legend_box = fig.legends[0].get_window_extent()
    assert legend_box.y1 < ax.get_tightbbox().y0  # below the panel and its tick labels
    assert legend_box.x0 >= 0 and legend_box.x1 <= fig.bbox.x1  # fits the figure's width


def test_calibration_plot_skips_missing_coverages_and_wraps_a_long_legend():
    many = {f"model_number_{i}": {80: 0.8 - i / 100, 95: float("nan")} for i in range(8)}
    fig = calibration_plot(many)
    (ax,) = fig.axes
    first = next(ln for ln in ax.get_lines() if ln.get_label() == "model_number_0")
    np.testing.assert_allclose(first.get_xdata(), [0.8])
    fig.canvas.draw()
    legend_box = fig.legends[0].get_window_extent()
    assert legend_box.x0 >= 0 and legend_box.x1 <= fig.bbox.x1
    assert legend_box.y1 < ax.get_tightbbox().y0


@pytest.mark.parametrize(
    ("coverage", "match"),
    [
        ({}, "at least one model"),
        ({"ar": {80: 0.78, 120: 1.0}}, r"levels \[120\]"),
        ({"ar": {80: 78.0}}, "not shares"),
    ],
)
def test_calibration_plot_names_what_is_wrong(coverage, match):
    with pytest.raises(ValueError, match=match):
        calibration_plot(coverage)
