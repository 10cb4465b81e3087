"""Figures: the right lines with the right labels and data, not just no exception."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from forecasting.plotting import comparison_plot, forecast_plot, learning_curve

H = 6


def pred_frame(series=("a", "b", "c", "d"), windows=3, offset=0.0) -> pd.DataFrame:
    """Evaluation-style predictions: window w of every series has origin 2024-01-02 + w*H hours."""
    rows = []
    for k, sid in enumerate(series):
        for w in range(windows):
            origin = pd.Timestamp("2024-01-02") + pd.Timedelta(hours=w * H)
            for step in range(1, H + 1):
                t = origin + pd.Timedelta(hours=step)
                y = float(k * 10 + w + step)
                rows.append((sid, w, origin, t, step, y, y + 0.5 + offset))
    return pd.DataFrame(rows, columns=["series_id", "window", "origin", "t", "step", "y", "yhat"])


def history_frame(series=("a", "b", "c", "d")) -> pd.DataFrame:
    t = pd.date_range("2024-01-01", "2024-01-03 12:00", freq="h")
    return pd.concat(
        [pd.DataFrame({"series_id": s, "t": t, "y": np.arange(len(t), dtype=float)}) for s in series],
        ignore_index=True,
    )


def labels(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines()]


def renders(fig: Figure) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_forecast_plot_one_panel_per_series_last_window():
    frame = pred_frame()
    fig = forecast_plot(frame, n=3)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    for ax, sid in zip(fig.axes, ["a", "b", "c"], strict=True):
        assert labels(ax) == ["actual", "forecast", "origin"]
        actual, forecast = ax.get_lines()[:2]
        want = frame[(frame.series_id == sid) & (frame.window == 2)]
        np.testing.assert_allclose(actual.get_ydata(), want.y)
        np.testing.assert_allclose(forecast.get_ydata(), want.yhat)
        assert len(actual.get_xdata()) == H
        assert f"series {sid}" in ax.get_title() and "window 2" in ax.get_title()
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["actual", "forecast", "origin"]
    renders(fig)


def test_forecast_plot_named_series_first_window_with_history():
    frame, history = pred_frame(), history_frame()
    fig = forecast_plot(frame, series=["d"], window="first", history=history, history_steps=12)
    (ax,) = fig.axes
    assert labels(ax) == ["history", "actual", "forecast", "origin"]
    hist = ax.get_lines()[0]
    assert len(hist.get_xdata()) == 12
    assert pd.Timestamp(hist.get_xdata()[-1]) == pd.Timestamp("2024-01-02")  # ends at the origin
    np.testing.assert_allclose(
        ax.get_lines()[1].get_ydata(), frame[(frame.series_id == "d") & (frame.window == 0)].y
    )


def test_forecast_plot_window_by_value_and_errors():
    frame = pred_frame()
    fig = forecast_plot(frame, series="b", window=1)
    assert "window 1" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="window 7"):
        forecast_plot(frame, series="b", window=7)
    with pytest.raises(ValueError, match="'zz'"):
        forecast_plot(frame, series=["zz"])
    with pytest.raises(ValueError, match="yhat"):
        forecast_plot(frame.drop(columns="yhat"))


def test_learning_curve_losses_and_lr():
    history = [
        {"epoch": e, "train_loss": 1.0 / (e + 1), "val_loss": 1.2 / (e + 1), "lr": 1e-3 * min(1, (e + 1) / 2)}
        for e in range(5)
    ]
    fig = learning_curve(history)
    ax_loss, ax_lr = fig.axes
    assert labels(ax_loss) == ["train_loss", "val_loss"]
    assert labels(ax_lr) == ["lr"]
    np.testing.assert_allclose(ax_loss.get_lines()[1].get_ydata(), [h["val_loss"] for h in history])
    np.testing.assert_allclose(ax_lr.get_lines()[0].get_xdata(), range(5))
    assert ax_loss.get_yscale() == "log"
    assert ax_lr.get_xlabel() == "epoch"
    renders(fig)


def test_learning_curve_without_validation():
    fig = learning_curve(
        [
            {"epoch": 0, "train_loss": 0.5, "val_loss": None, "lr": 0.01},
            {"epoch": 1, "train_loss": 0.4, "lr": 0.01},
        ]
    )
    assert labels(fig.axes[0]) == ["train_loss"]
    fig = learning_curve(
        [{"epoch": e, "train_loss": 1.0 - 0.1 * e, "val_loss": 2.0} for e in range(3)], best_epoch=1
    )
    assert labels(fig.axes[0]) == ["train_loss", "val_loss", "best epoch"]
    assert labels(fig.axes[1]) == []  # no lr recorded: an empty panel, not a made-up line
    with pytest.raises(ValueError, match="at least one epoch"):
        learning_curve([])


def test_comparison_plot_all_models_on_the_same_window():
    # "ar" lacks the last window: the last window shared by every model is window 1.
    frames = {"naive": pred_frame(), "lstm": pred_frame(offset=1.0), "ar": pred_frame(windows=2, offset=2.0)}
    fig = comparison_plot(frames, series=["a", "c"], n=2)
    assert len(fig.axes) == 2
    for ax, sid in zip(fig.axes, ["a", "c"], strict=True):
        assert labels(ax) == ["actual", "naive", "lstm", "ar", "origin"]
        lines = ax.get_lines()
        times = [tuple(pd.to_datetime(line.get_xdata())) for line in lines[:4]]
        assert len(set(times)) == 1  # every model on identical target times
        k = ["a", "b", "c"].index(sid)
        np.testing.assert_allclose(lines[0].get_ydata(), k * 10 + 1 + np.arange(1, H + 1))
        np.testing.assert_allclose(lines[3].get_ydata() - lines[1].get_ydata(), 2.0)
        assert "2024-01-02 06:00:00" in ax.get_title()
    renders(fig)


def test_comparison_plot_history_and_no_shared_window():
    frames = {"naive": pred_frame(), "tcn": pred_frame()}
    fig = comparison_plot(frames, history=history_frame(), history_steps=5)
    assert labels(fig.axes[0]) == ["history", "actual", "naive", "tcn", "origin"]
    other = pred_frame()
    other["origin"] = other["origin"] + pd.Timedelta(minutes=30)
    with pytest.raises(ValueError, match="no window origin is shared"):
        comparison_plot({"naive": pred_frame(), "odd": other})
    with pytest.raises(ValueError, match="at least one model"):
        comparison_plot({})
