"""Calendar features: the encodings, the auto rule, the config, and the way they reach the deep
families (computed from the timestamps at training, recomputed from them at prediction)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame

from forecasting.config import DataConfig, ModelSpec, config_from_dict, dump_config
from forecasting.data.calendar import CALENDAR_FEATURES, auto_calendar, calendar_features, resolve_calendar
from forecasting.data.scaling import fit_scaler
from forecasting.errors import ConfigError
from forecasting.models.base import DataSpec, Forecaster
from forecasting.models.registry import build_model
from forecasting.pipeline.prepare import prepare
from forecasting.serving import Bundle, load_bundle, write_bundle
from forecasting.training.settings import TrainingConfig

L, H = 8, 12
DAILY = ["hour_of_day", "day_of_week"]


def fast(**overrides) -> TrainingConfig:
    base = {"epochs": 2, "batch_size": 64, "progress": False, "seed": 0, "patience": None}
    return TrainingConfig(**{**base, **overrides})


def linear(spec: DataSpec, training: TrainingConfig | None = None) -> Forecaster:
    return build_model(ModelSpec(name="linear", params={"kind": "nlinear"}), spec, training or fast())


def hourly_profile(seed: int = 0, n_series: int = 8, n: int = 24 * 20, noise: float = 0.5) -> pd.DataFrame:
    """Series whose level follows the hour of day (a sine plus an evening step), each starting at
    a random hour (so a row's position in its series says nothing of its hour), in noise: a
    lookback of L = 8 hours cannot tell where in the day the horizon falls, the clock can."""
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(n_series):
        start = pd.Timestamp("2024-01-01") + pd.Timedelta(hours=int(rng.integers(24)))
        hours = (start.hour + np.arange(n)) % 24
        y = 2.0 * np.sin(2 * np.pi * hours / 24) + 1.5 * (hours >= 18) + 0.3 * k
        parts.append(make_frame(y + noise * rng.standard_normal(n), series_id=f"s{k}", start=str(start)))
    return pd.concat(parts, ignore_index=True)


def split_last(frame: pd.DataFrame, n_last: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All but the last ``n_last`` rows of each series, and those rows with L rows of history."""
    pos = frame.groupby("series_id").cumcount()
    n = frame.groupby("series_id")["y"].transform("size")
    return frame[pos < n - n_last], frame[pos >= n - n_last - L]


# --- the encodings ---------------------------------------------------------------------------------
def test_encodings_of_known_timestamps() -> None:
    t = pd.DatetimeIndex(["2024-01-01 06:00", "2024-04-16 18:45", "2024-12-31 00:00"])  # Mon, Tue, Tue
    enc = calendar_features(t, list(CALENDAR_FEATURES))  # (3, 14)
    assert enc.shape == (3, 14) and enc.dtype == np.float32
    assert np.all(np.abs(enc) <= 1)
    sin, cos = enc[:, 0::2], enc[:, 1::2]  # (3, 7) each, features in CALENDAR_FEATURES order
    angle = lambda p: (np.sin(2 * np.pi * p), np.cos(2 * np.pi * p))  # noqa: E731
    expected = {
        "minute_of_hour": [0, 45 / 60, 0],
        "hour_of_day": [6 / 24, 18 / 24, 0],
        "day_of_week": [0, 1 / 7, 1 / 7],
        "day_of_month": [0, 15 / 30, 30 / 31],
        "day_of_year": [0, (31 + 29 + 31 + 15) / 366, 365 / 366],  # 2024 is a leap year
        "week_of_year": [0, 15 / 52, 0],  # 2024-12-31 lies in ISO week 1 of 2025
        "month_of_year": [0, 3 / 12, 11 / 12],
    }
    for j, name in enumerate(CALENDAR_FEATURES):
        s, c = angle(np.array(expected[name]))
        np.testing.assert_allclose(sin[:, j], s, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(cos[:, j], c, atol=1e-6, err_msg=name)
    # 06:00 is a quarter of the day: sin 1, cos 0; 18:45 on the hour_of_day cycle is 18:00
    np.testing.assert_allclose(enc[0, 2:4], [1, 0], atol=1e-6)
    np.testing.assert_allclose(enc[1, 2:4], [-1, 0], atol=1e-6)


def test_encodings_keep_the_shape_of_the_timestamps_and_the_order_of_the_names() -> None:
    t = pd.date_range("2024-03-01", periods=6, freq="h").to_numpy().reshape(2, 3)
    both = calendar_features(t, ["day_of_week", "hour_of_day"])
    assert both.shape == (2, 3, 4)
    np.testing.assert_array_equal(both[..., 2:], calendar_features(t, ["hour_of_day"]))
    assert calendar_features(t.reshape(-1), []).shape == (6, 0)
    with pytest.raises(ValueError, match="fortnight"):
        calendar_features(t, ["fortnight"])


@pytest.mark.parametrize(
    ("freq", "names"),
    [
        ("15min", ["minute_of_hour", "hour_of_day"]),
        ("30min", ["minute_of_hour", "hour_of_day"]),
        ("h", ["hour_of_day"]),
        ("D", ["day_of_week"]),
        ("B", ["day_of_week"]),
        ("W", ["week_of_year"]),
        ("W-SUN", ["week_of_year"]),
        ("MS", ["month_of_year"]),
        ("QS", ["month_of_year"]),
        ("YS", []),
        (None, []),
    ],
)
def test_auto_keeps_the_cycles_within_the_season(freq: str | None, names: list[str]) -> None:
    assert auto_calendar(freq) == names


def test_resolve_calendar() -> None:
    assert resolve_calendar("auto", "h") == ["hour_of_day"]
    assert resolve_calendar("none", "h") == []
    assert resolve_calendar(["month_of_year"], "h") == ["month_of_year"]


# --- the config -------------------------------------------------------------------------------------
def test_config_defaults_to_auto_and_is_logged_with_the_config(tmp_path) -> None:
    cfg = config_from_dict({"data": {"path": str(tmp_path / "x.csv")}})
    assert cfg.features.calendar == "auto"
    assert cfg.to_dict()["features"] == {"calendar": "auto"}  # the pipeline run logs cfg.model_dump
    assert "features:\n  calendar: auto" in dump_config(cfg)  # the config.yaml artifact
    listed = config_from_dict({"data": {"path": "x.csv"}, "features": {"calendar": ["month_of_year"]}})
    assert listed.features.calendar == ["month_of_year"]


@pytest.mark.parametrize(
    ("calendar", "named"),
    [(["hour_of_day", "fortnight"], "fortnight"), ("hourly", "hourly"), (["day_of_week"] * 2, "twice")],
)
def test_a_bad_calendar_setting_is_a_config_error_naming_it(calendar, named: str) -> None:
    with pytest.raises(ConfigError, match=named) as err:
        config_from_dict({"data": {"path": "x.csv"}, "features": {"calendar": calendar}})
    assert "features.calendar" in str(err.value)
    if named != "twice":
        assert "hour_of_day" in str(err.value) and "month_of_year" in str(err.value)  # the allowed names


def write_csv(path, frame: pd.DataFrame) -> None:
    frame.rename(columns={"series_id": "site", "t": "ts"}).to_csv(path, index=False)


@pytest.fixture
def data_path(tmp_path):
    path = tmp_path / "hourly.csv"
    write_csv(path, hourly_profile(n_series=3, n=24 * 10))
    return path


def prepared_with(data_path, calendar) -> object:
    raw = {
        "data": {"path": str(data_path), "time_column": "ts", "id_column": "site"},
        "window": {"lookback": L, "horizon": H},
        "features": {"calendar": calendar},
    }
    return prepare(config_from_dict(raw))


def test_prepare_resolves_auto_with_the_datas_frequency(data_path) -> None:
    prepared = prepared_with(data_path, "auto")
    assert prepared.spec.calendar == ["hour_of_day"]
    batch = prepared.windows(prepared.val).batch(np.arange(3))
    assert batch["x_future"].shape == (3, H, 2) and batch["x_past"].shape == (3, L, 2)
    assert prepared_with(data_path, ["month_of_year"]).spec.calendar == ["month_of_year"]


def test_calendar_none_reproduces_todays_windows_and_forecasts(data_path) -> None:
    prepared = prepared_with(data_path, "none")
    # As the pipeline built it before calendars (the interval levels it carries since change nothing
    # of the windows or the point forecasts).
    today = DataSpec(lookback=L, horizon=H, pad_short=True, levels=[80.0, 95.0])
    assert prepared.spec == today
    old, new = linear(today).fit(prepared.train), linear(prepared.spec).fit(prepared.train)
    w_old, w_new = old.make_windows(prepared.val), prepared.windows(prepared.val)
    b_old, b_new = w_old.batch(np.arange(len(w_old))), w_new.batch(np.arange(len(w_new)))
    assert b_new["x_future"].shape[-1] == 0
    for key in b_old:
        np.testing.assert_array_equal(b_new[key], b_old[key])
    np.testing.assert_array_equal(new.predict_windows(b_new), old.predict_windows(b_old))
    pd.testing.assert_frame_equal(new.predict(prepared.val), old.predict(prepared.val))


# --- where they enter ----------------------------------------------------------------------------------
@pytest.mark.parametrize("with_future", [False, True], ids=["gathered", "per-series"])
def test_features_recomputed_at_prediction_equal_those_at_training(with_future: bool) -> None:
    """The x_past and x_future the network sees in a training window are the ones
    ``prediction_batch`` builds from the history up to that window's origin (both of its paths)."""
    frame = hourly_profile(n_series=3, n=24 * 4)
    future = []
    if with_future:
        frame["planned"] = np.arange(len(frame)) % 5.0
        future = ["planned"]
    spec = DataSpec(
        lookback=L, horizon=H, future=future, calendar=["day_of_week", "hour_of_day", "minute_of_hour"]
    )
    m = linear(spec, fast(epochs=1)).fit(frame)
    windows = m.make_windows(frame)
    for origin in (L, 37, 24 * 4 - H):  # rows of history per series at the window's origin
        idx = np.flatnonzero(windows.starts - windows.arrays.offsets[windows.series] == origin - L)
        history = frame.groupby("series_id").head(origin)
        if with_future:  # the horizon's rows, carrying only the future covariate
            horizon = frame.groupby("series_id").nth(list(range(origin, origin + H)))
            history = pd.concat([history, horizon.assign(y=np.nan)]).sort_values(["series_id", "t"])
        history = history.reset_index(drop=True)
        if not with_future:  # the fast path serves it (a future covariate takes the per-series one)
            assert m._prediction_batch_gathered(history) is not None
        batch, times, ids = m.prediction_batch(history)
        train = windows.batch(idx)
        assert list(ids) == list(windows.arrays.series_ids[windows.series[idx]])
        np.testing.assert_array_equal(times, windows.target_times(idx))
        assert batch["x_future"].shape == (3, H, len(future) + 6)
        np.testing.assert_array_equal(batch["x_future"], train["x_future"])
        np.testing.assert_array_equal(batch["x_past"], train["x_past"])
        np.testing.assert_array_equal(m.predict_windows(batch), m.predict_windows(train))


@pytest.mark.parametrize(
    ("name", "params"), [("linear", {"kind": "nlinear"}), ("gru", {"hidden": 16, "segment_len": 4})]
)
def test_networks_learn_the_daily_profile_from_the_calendar(name: str, params: dict) -> None:
    train, val = split_last(hourly_profile(seed=1), 96)
    mse = {}
    for calendar in ([], DAILY):
        spec = DataSpec(lookback=L, horizon=H, calendar=calendar)
        m = build_model(ModelSpec(name=name, params=params), spec, fast(epochs=5, lr=3e-3)).fit(train)
        w = m.make_windows(val)
        b = w.batch(np.arange(len(w)))
        mse[len(calendar)] = float(np.mean((m.predict_windows(b) - b["target"]) ** 2))
    # without the clock the 8-hour lookback cannot place the horizon in the day (MSE ~2.2-2.5
    # measured); with it the error approaches the noise (0.25; ~0.5-0.7 measured)
    assert mse[2] < 0.5 * mse[0], mse


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("naive", {}),
        ("seasonal_naive", {"season_length": 4}),
        ("ar", {"max_lag": 4}),
        ("ar", {"lags": 3, "ic": "fixed"}),
    ],
)
def test_other_families_ignore_the_calendar(name: str, params: dict) -> None:
    frame = hourly_profile(n_series=3, n=24 * 6)
    frame["planned"] = np.cos(np.arange(len(frame)) / 7.0)
    plain = build_model(ModelSpec(name=name, params=params), DataSpec(L, H, future=["planned"]))
    dated = build_model(
        ModelSpec(name=name, params=params), DataSpec(L, H, future=["planned"], calendar=DAILY)
    )
    plain.fit(frame), dated.fit(frame)
    if name == "ar":  # the calendar never becomes an exogenous regressor
        np.testing.assert_array_equal(dated.coef_, plain.coef_)
    w_plain, w_dated = plain.make_windows(frame), dated.make_windows(frame)
    idx = np.arange(len(w_plain))
    # Their windows compute and hold no calendar column (the networks' carry 2 per feature).
    assert dated.window_calendar == [] and w_dated.batch(idx)["x_future"].shape[-1] == 1
    assert w_dated.arrays.x_past.nbytes == w_plain.arrays.x_past.nbytes
    network = build_model(ModelSpec(name="linear"), DataSpec(L, H, future=["planned"], calendar=DAILY))
    assert network.window_calendar == DAILY and network.make_windows(frame).arrays.x_past.shape[1] == 1 + 4
    history = frame.assign(y=frame["y"].where(frame.groupby("series_id").cumcount(ascending=False) >= H))
    batch, _, _ = dated.prediction_batch(history)  # the horizon's rows carry only the covariate
    assert batch["x_future"].shape[-1] == 1 and batch["x_past"].shape[-1] == 1
    np.testing.assert_array_equal(
        dated.predict_windows(w_dated.batch(idx)), plain.predict_windows(w_plain.batch(idx))
    )


def test_a_model_saved_with_calendar_features_loads_and_predicts_identically(tmp_path) -> None:
    frame = hourly_profile(n_series=2, n=24 * 4)
    m = linear(DataSpec(lookback=L, horizon=H, calendar=DAILY)).fit(frame)
    m.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["spec"]["calendar"] == DAILY
    loaded = Forecaster.load(tmp_path / "m")
    assert loaded.spec == m.spec
    pd.testing.assert_frame_equal(loaded.predict(frame), m.predict(frame))


def test_a_model_saved_before_calendar_features_loads_without_them(tmp_path) -> None:
    frame = hourly_profile(n_series=2, n=24 * 4)
    m = linear(DataSpec(lookback=L, horizon=H)).fit(frame)
    m.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "model.json").read_text())
    del meta["spec"]["calendar"]  # model.json as written before this key existed
    (tmp_path / "old" / "model.json").write_text(json.dumps(meta))
    loaded = Forecaster.load(tmp_path / "old")
    assert loaded.spec.calendar == []
    pd.testing.assert_frame_equal(loaded.predict(frame), m.predict(frame))


def test_a_bundle_forecasts_raw_history_with_nothing_new_from_the_user(tmp_path) -> None:
    """The served model recomputes the features from the raw frame's text timestamps."""
    frame = hourly_profile(n_series=2, n=24 * 4)
    scaler = fit_scaler(frame, ["y"])
    m = linear(DataSpec(lookback=L, horizon=H, calendar=DAILY)).fit(scaler.transform(frame))
    data_cfg = DataConfig(path=tmp_path / "train.csv", time_column="ts", target="load", id_column="site")
    folder = write_bundle(m, scaler, data_cfg, "h", tmp_path / "bundle")
    raw = pd.DataFrame(
        {"ts": frame["t"].dt.strftime("%Y-%m-%d %H:%M:%S"), "site": frame["series_id"], "load": frame["y"]}
    )
    served = load_bundle(folder).forecast(raw)
    assert len(served) == 2 * H
    pd.testing.assert_frame_equal(served, Bundle(m, scaler, data_cfg, "h").forecast(raw))
    expected = scaler.inverse_y(
        m.predict(scaler.transform(frame))["yhat"].to_numpy(), served["series_id"].to_numpy()
    )
    np.testing.assert_allclose(served["yhat"].to_numpy(), expected, rtol=1e-6)


def test_a_model_run_logs_the_calendar_its_family_reads(data_path) -> None:
    """The ``features.calendar`` param of a model run is what its windows carried: the resolved
    features for a network, "none" for a family that reads none (an analyst comparing runs is not
    told that AR used the hour of day)."""
    from forecasting.pipeline.train import run_params

    prepared = prepared_with(data_path, "auto")
    logged = {}
    for name in ("linear", "ensemble", "ar", "naive", "seasonal_naive"):
        spec = ModelSpec(name=name)
        model = build_model(spec, prepared.spec)
        logged[name] = run_params(prepared.cfg, spec, model)["features"]["calendar"]
    assert logged == {
        "linear": ["hour_of_day"],
        "ensemble": ["hour_of_day"],
        "ar": "none",
        "naive": "none",
        "seasonal_naive": "none",
    }
