"""Figures: the right lines with the right data, in the data's units, with the right labels; not
just no exception. Values are read back from the Figure's artists."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from forecasting.data.scaling import fit_scaler
from forecasting.plotting import (
    comparison_plot,
    forecast_plot,
    history_length,
    leaderboard_plot,
    learning_curve,
    original_units,
    target_label,
)

H = 6
START = pd.Timestamp("2024-01-01")


def history_frame(series=("a", "b", "c", "d"), periods=120) -> pd.DataFrame:
    """Hourly history in the data's units: series k is 100 * (k + 1) + t (hours since START)."""
    t = pd.date_range(START, periods=periods, freq="h")
    return pd.concat(
        [
            pd.DataFrame({"series_id": s, "t": t, "y": 100.0 * (k + 1) + np.arange(periods)})
            for k, s in enumerate(series)
        ],
        ignore_index=True,
    )


def pred_frame(series=("a", "b", "c", "d"), windows=3, error=None, offset=0.0, orig=True) -> pd.DataFrame:
    """Evaluation-style predictions of ``history_frame``'s series: window w of series k has its
    origin at hour 48 + w * H; ``y``/``yhat`` on a scale of their own (the data's / 10 - 5), with
    ``y_orig``/``yhat_orig`` in the data's units. ``yhat_orig`` = ``y_orig`` + the series' error
    (``error[k]``, default 1) + ``offset``."""
    rows = []
    for k, sid in enumerate(series):
        miss = (error[k] if error is not None else 1.0) + offset
        for w in range(windows):
            origin = START + pd.Timedelta(hours=48 + w * H)
            for step in range(1, H + 1):
                y = 100.0 * (k + 1) + 48 + w * H + step
                rows.append(
                    (sid, k * windows + w, origin, origin + pd.Timedelta(hours=step), step, y, y + miss)
                )
    frame = pd.DataFrame(rows, columns=["series_id", "window", "origin", "t", "step", "y_orig", "yhat_orig"])
    frame["window"] = frame["window"].astype(np.int32)
    frame["y"], frame["yhat"] = frame["y_orig"] / 10 - 5, frame["yhat_orig"] / 10 - 5
    return frame if orig else frame.drop(columns=["y_orig", "yhat_orig"])


def line(ax, label: str):
    (found,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return found


def labels(ax) -> list[str]:
    return [ln.get_label() for ln in ax.get_lines()]


def legend_texts(fig: Figure) -> list[str]:
    (legend,) = fig.legends
    return [t.get_text() for t in legend.get_texts()]


def renders(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    return buf.getvalue()


def test_history_length_is_the_lookback_and_at_least_two_seasons():
    assert history_length(96, "h") == 96
    assert history_length(12, "h") == 48  # two days of hourly data
    assert history_length(12, "30min") == 96
    assert history_length(7, "D") == 14  # two weeks of daily data
    assert history_length(4, "MS") == 24
    assert history_length(5, "YS") == 5  # no season: the lookback


def test_target_label():
    assert target_label("OT") == "OT"
    assert target_label(["HUFL", "OT"]) is None  # wide data: each panel says its series


def test_forecast_plot_in_the_datas_units_with_history_origin_and_labels():
    frame, history = pred_frame(series=("a",)), history_frame()
    fig = forecast_plot(frame, history, series="a", history_steps=48, y_label="OT", model="lstm")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # one series, origins: the middle and the last window
    assert "lstm" in fig.get_suptitle()
    for ax, w in zip(fig.axes, [1, 2], strict=True):
        origin = START + pd.Timedelta(hours=48 + w * H)
        assert labels(ax) == ["history", "actual", "forecast", "origin"]
        want = frame[frame.window == w]
        np.testing.assert_allclose(line(ax, "forecast").get_ydata(), want.yhat_orig)  # not yhat
        np.testing.assert_allclose(line(ax, "actual").get_ydata(), want.y_orig)
        assert list(pd.to_datetime(line(ax, "forecast").get_xdata())) == list(want.t)
        past = line(ax, "history")
        hist_t = pd.to_datetime(past.get_xdata())
        assert len(hist_t) == 48 >= 2 * 24  # two days of hourly history
        assert hist_t[-1] == origin  # history ends at the origin
        np.testing.assert_allclose(past.get_ydata(), 100.0 + np.arange(48 + w * H - 47, 48 + w * H + 1))
        assert pd.Timestamp(pd.to_datetime(line(ax, "origin").get_xdata())[0]) == origin
        assert line(ax, "origin").get_linestyle() == "--"
        assert "series a" in ax.get_title() and str(origin)[:16] in ax.get_title()
        assert ax.get_legend() is None  # the legend is the figure's, below the panels
    assert fig.axes[0].get_ylabel() == "OT"
    assert legend_texts(fig) == ["history", "actual", "forecast", "origin"]
    renders(fig)
    legend_box = fig.legends[0].get_window_extent()
    for ax in fig.axes:  # below every panel and its tick labels: it hides no data
        assert legend_box.y1 < ax.get_tightbbox().y0


def test_forecast_plot_unscales_with_the_scaler_when_the_frame_has_no_orig_columns():
    history = history_frame(series=("a", "b"))
    scaler = fit_scaler(history, ["y"])
    frame = pred_frame(series=("a", "b"), orig=False)
    fig = forecast_plot(frame, history, scaler=scaler, windows=["last"], y_label="sales")
    for ax, sid in zip(fig.axes, ["a", "b"], strict=True):
        want = frame[(frame.series_id == sid) & (frame.window == frame.window[frame.series_id == sid].max())]
        expected = scaler.inverse_y(want.yhat.to_numpy(), want.series_id.to_numpy())
        np.testing.assert_allclose(line(ax, "forecast").get_ydata(), expected)
        assert not np.allclose(expected, want.yhat)  # it did change units
    with pytest.raises(ValueError, match="scaler"):
        forecast_plot(frame, history)  # scaled only: never drawn in the model's units


def test_original_units_prefers_the_orig_columns_and_carries_an_interval():
    frame = pred_frame(series=("a",))
    frame["yhat_lo"], frame["yhat_hi"] = frame.yhat - 0.1, frame.yhat + 0.1
    frame["yhat_lo_orig"], frame["yhat_hi_orig"] = frame.yhat_orig - 1, frame.yhat_orig + 1
    out = original_units(frame)
    np.testing.assert_allclose(out.yhat, frame.yhat_orig)
    np.testing.assert_allclose(out.yhat_hi - out.yhat_lo, 2.0)
    assert not [c for c in out.columns if c.endswith("_orig")]


def test_forecast_plot_draws_an_interval_band_when_the_frame_has_one():
    frame = pred_frame(series=("a",))
    frame["yhat_lo_orig"], frame["yhat_hi_orig"] = frame.yhat_orig - 2, frame.yhat_orig + 3
    fig = forecast_plot(frame, history_frame(), windows=["last"])
    (ax,) = fig.axes
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert band.get_label() == "interval"
    ys = band.get_paths()[0].vertices[:, 1]
    want = frame[frame.window == 2]
    assert ys.min() == pytest.approx(want.yhat_orig.min() - 2) and ys.max() == pytest.approx(
        want.yhat_orig.max() + 3
    )
    assert "interval" in legend_texts(fig)
    assert not [
        c
        for c in forecast_plot(pred_frame(series=("a",))).axes[0].collections
        if isinstance(c, PolyCollection)
    ]


def test_forecast_plot_shows_the_lowest_median_and_highest_error_series():
    series = ("a", "b", "c", "d", "e")
    frame = pred_frame(series=series, error=[3.0, 0.5, 9.0, 1.0, 2.0])
    fig = forecast_plot(frame, history_frame(series=series), windows=["last"], y_label="OT")
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 3
    assert "series b (lowest error)" in titles[0]
    assert "series e (median error)" in titles[1]
    assert "series c (highest error)" in titles[2]
    assert [ax.get_ylabel() for ax in fig.axes] == ["OT"] * 3
    # fewer series than panels: each one, in the data's order; wide data labels by series
    fig = forecast_plot(pred_frame(series=("x", "y")), windows=["last"])
    assert ["series x," in fig.axes[0].get_title(), "series y," in fig.axes[1].get_title()] == [True, True]
    assert [ax.get_ylabel() for ax in fig.axes] == ["x", "y"]


def test_forecast_plot_window_choices_and_errors():
    frame = pred_frame()
    fig = forecast_plot(frame, series="b", windows=["first", 4])
    assert [pd.Timestamp(pd.to_datetime(line(ax, "origin").get_xdata())[0]).hour for ax in fig.axes] == [0, 6]
    fig = forecast_plot(frame, series="b", windows=["last", "last"])  # one window chosen twice: once
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="window 99"):
        forecast_plot(frame, series="b", windows=[99])
    with pytest.raises(ValueError, match="'zz'"):
        forecast_plot(frame, series=["zz"])
    with pytest.raises(ValueError, match="yhat"):
        forecast_plot(frame.drop(columns="yhat"))


def test_learning_curve_integer_epochs_and_the_kept_epoch():
    history = [
        {"epoch": e, "train_loss": 1.0 / e, "val_loss": 0.8 + 0.02 * (e - 3) ** 2, "lr": 1e-3 * min(1, e / 2)}
        for e in range(1, 6)
    ]
    fig = learning_curve(history, best_epoch=3, model="gru")
    ax_loss, ax_lr = fig.axes
    assert labels(ax_loss) == ["train_loss", "val_loss", "kept: epoch 3"]
    np.testing.assert_allclose(line(ax_loss, "val_loss").get_ydata(), [h["val_loss"] for h in history])
    np.testing.assert_allclose(line(ax_loss, "train_loss").get_xdata(), range(1, 6))
    for ax in (ax_loss, ax_lr):
        assert list(line(ax, "kept: epoch 3").get_xdata()) == [3, 3]
        assert line(ax, "kept: epoch 3").get_linestyle() == "--"
    renders(fig)
    ticks = [t for t in ax_lr.get_xticks() if ax_lr.get_xlim()[0] <= t <= ax_lr.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)  # 1, 2, 3: not 1.25, 1.5
    lo, hi = ax_lr.get_xlim()
    shown = [t.get_text() for t in ax_lr.get_xticklabels() if lo <= t.get_position()[0] <= hi]
    assert shown == [str(int(t)) for t in ticks]
    assert ax_loss.get_yscale() == "linear"  # within a decade: linear reads better
    assert ax_lr.get_xlabel() == "epoch" and labels(ax_lr) == ["lr", "kept: epoch 3"]
    assert "gru" in ax_loss.get_title()
    assert legend_texts(fig) == ["train_loss", "val_loss", "kept: epoch 3"]  # below: hides no point


def test_learning_curve_log_scale_without_validation_or_lr():
    fig = learning_curve([{"epoch": e, "train_loss": 10.0**-e, "val_loss": None} for e in range(1, 4)])
    assert labels(fig.axes[0]) == ["train_loss"]  # no validation, no kept epoch given
    assert fig.axes[0].get_yscale() == "log"  # three decades
    assert labels(fig.axes[1]) == []  # no lr recorded: an empty panel, not a made-up line
    with pytest.raises(ValueError, match="at least one epoch"):
        learning_curve([])


def test_comparison_plot_one_panel_per_model_same_series_and_window():
    # "ar" lacks the last window of every series: the last window all share is window 1.
    frames = {
        "lstm": pred_frame(error=[3.0, 0.5, 9.0, 1.0]),
        "naive": pred_frame(offset=1.0),
        "ar": pred_frame(windows=2, offset=2.0),
    }
    fig = comparison_plot(
        frames,
        history_frame(),
        history_steps=24,
        y_label="OT",
        scores={"lstm": 0.12, "naive": 0.5, "ar": 0.9},
    )
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3  # one per model, in the order given
    origin = START + pd.Timedelta(hours=48 + H)
    sid = "a"  # lstm's median-error series among a (3), b (0.5), c (9), d (1)
    for ax, (m, frame) in zip(visible, frames.items(), strict=False):
        assert ax.get_title().startswith(m) and "val_mse" in ax.get_title()
        assert labels(ax) == ["history", "actual", "forecast", "origin"]
        want = frame[(frame.series_id == sid) & (frame.origin == origin)]
        np.testing.assert_allclose(line(ax, "forecast").get_ydata(), want.yhat_orig)
        np.testing.assert_allclose(line(ax, "actual").get_ydata(), want.y_orig)
        assert len(line(ax, "history").get_xdata()) == 24
    assert "0.12" in visible[0].get_title()
    assert f"series {sid}" in fig.get_suptitle() and str(origin)[:16] in fig.get_suptitle()
    assert all(visible[0].get_shared_y_axes().joined(visible[0], ax) for ax in visible)
    assert visible[0].get_ylabel() == "OT"
    assert legend_texts(fig) == ["history", "actual", "forecast", "origin"]
    renders(fig)


def test_comparison_plot_named_series_and_no_shared_window():
    frames = {"naive": pred_frame(), "tcn": pred_frame()}
    fig = comparison_plot(frames, series="c", window="first")
    assert "series c" in fig.get_suptitle() and "2024-01-03 00:00" in fig.get_suptitle()
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2
    other = pred_frame()
    other["origin"] = other["origin"] + pd.Timedelta(minutes=30)
    with pytest.raises(ValueError, match="no window origin is shared"):
        comparison_plot({"naive": pred_frame(), "odd": other})
    with pytest.raises(ValueError, match="at least one model"):
        comparison_plot({})


def test_leaderboard_plot_best_first_values_printed_failed_last():
    fig = leaderboard_plot(
        {"naive": 0.5, "lstm": 0.2, "broken": None, "ar": 0.3}, "val_mse", reference="naive"
    )
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["lstm", "ar", "naive", "broken"]
    bars = ax.patches
    np.testing.assert_allclose([b.get_width() for b in bars], [0.2, 0.3, 0.5])
    assert [b.get_y() + b.get_height() / 2 for b in bars] == [0, 1, 2]
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # best at the top
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["0.2", "0.3", "0.5", "no score"]
    (ref,) = ax.get_lines()
    assert list(ref.get_xdata()) == [0.5, 0.5]  # the score to beat
    assert "val_mse" in ax.get_xlabel()
    renders(fig)


# --- the call sites: what a model run and a pipeline run log ----------------------------------
class FakeRun:
    def __init__(self):
        self.figures: dict[str, Figure] = {}

    def log_figure(self, figure, artifact_file):
        self.figures[artifact_file] = figure

    def __getattr__(self, name):  # log_frame, log_text, set_tags, log_metrics: not under test
        return lambda *args, **kwargs: None


@pytest.fixture(scope="module")
def prepared_and_scored(tmp_path_factory):
    from forecasting.config import config_from_dict
    from forecasting.pipeline.prepare import prepare
    from forecasting.pipeline.train import ModelResult, fit_and_score

    path = tmp_path_factory.mktemp("plots") / "sales.csv"
    n = 400
    t = np.arange(n)
    rng = np.random.default_rng(0)
    y = 50 + 10 * np.sin(2 * np.pi * t / 24) + rng.standard_normal(n)
    ts = pd.date_range("2024-01-01", periods=n, freq="h").strftime("%Y-%m-%d %H:%M:%S")
    pd.DataFrame({"ts": ts, "sales": y}).to_csv(path, index=False)
    cfg = config_from_dict(
        {
            "data": {"path": str(path), "time_column": "ts", "target": "sales"},
            "split": {"method": "fractions", "train_fraction": 0.6, "test_fraction": 0.2},
            "window": {"lookback": 12, "horizon": 6},
            "models": [{"name": "seasonal_naive", "params": {"season_length": 6}}, {"name": "naive"}],
            "tracking": {"experiment": "plots", "log_models": False},
        }
    )
    prepared = prepare(cfg)
    results = []
    for spec in cfg.models:
        model, metrics, pred = fit_and_score(prepared, spec)
        results.append(
            ModelResult(
                spec.run_name, spec.name, "FINISHED", metrics=metrics, model=model, test_predictions=pred
            )
        )
    return prepared, results


def test_a_model_run_logs_its_forecast_in_the_datas_units(prepared_and_scored):
    from forecasting.pipeline.train import _log_artifacts_and_model

    prepared, results = prepared_and_scored
    model, pred = results[0].model, results[0].test_predictions
    run = FakeRun()
    assert _log_artifacts_and_model(run, prepared, model, pred) is None  # log_models off
    fig = run.figures["plots/forecast.png"]
    ax = fig.axes[-1]  # the last test origin
    assert ax.get_ylabel() == "" and fig.axes[0].get_ylabel() == "sales"  # the config's name, not y
    last = pred[pred.window == pred.window.max()]
    expected = prepared.scaler.inverse_y(last.yhat.to_numpy(), last.series_id.to_numpy())
    np.testing.assert_allclose(line(ax, "forecast").get_ydata(), expected)
    np.testing.assert_allclose(line(ax, "actual").get_ydata(), last.y_orig)
    past = line(ax, "history")
    assert len(past.get_xdata()) == 48  # lookback 12 < two days of hourly data
    frame = prepared.data.frame
    np.testing.assert_allclose(past.get_ydata(), frame[frame.t <= last.origin.iloc[0]].y.tail(48))


def test_a_pipeline_run_logs_the_comparison_and_the_leaderboard(prepared_and_scored):
    from forecasting.pipeline.board import leaderboard, log_pipeline_summary

    prepared, results = prepared_and_scored
    board = leaderboard(results, "val_mse")
    parent = FakeRun()
    log_pipeline_summary(parent, prepared, results, board)
    comparison = parent.figures["plots/comparison.png"]
    panels = [ax for ax in comparison.axes if ax.get_visible()]
    assert [ax.get_title().split()[0] for ax in panels] == list(board.model)  # best first
    assert panels[0].get_ylabel() == "sales"
    (ax,) = parent.figures["plots/leaderboard.png"].axes
    assert [t.get_text() for t in ax.get_yticklabels()] == list(board.model)
    np.testing.assert_allclose([b.get_width() for b in ax.patches], board.val_mse)


def test_a_result_keeps_the_test_forecasts_of_a_sample_of_series_for_the_comparison():
    """What a model's result holds for the run's comparison plot does not grow with the series:
    at most ``k`` series, evenly spread over them, the same ones for every model."""
    from forecasting.pipeline.train import plot_sample

    ids = [f"s{k:03d}" for k in range(250)]
    a, b = pred_frame(ids, windows=2), pred_frame(ids, windows=2, offset=3.0)
    kept_a, kept_b = plot_sample(a, k=10), plot_sample(b, k=10)
    chosen = list(pd.unique(kept_a["series_id"]))
    assert chosen == list(pd.unique(kept_b["series_id"]))
    assert chosen[0] == "s000" and chosen[-1] == "s249" and len(chosen) == 10
    assert len(kept_a) == 10 * 2 * H
    pd.testing.assert_frame_equal(kept_a, a[a["series_id"].isin(chosen)].reset_index(drop=True))
    few = pred_frame(ids[:5])
    assert plot_sample(few, k=10) is few  # every series when there are no more than k
    fig = comparison_plot({"a": kept_a, "b": kept_b}, history_frame(ids, periods=120))
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2
