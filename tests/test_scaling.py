"""Per-series standard scaling: fitted on the training split only, invertible, serialisable."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import ETTH1, make_frame

from forecasting.config import DataConfig, SplitConfig, WindowConfig
from forecasting.data.ingest import ingest
from forecasting.data.scaling import Scaler, fit_scaler, flat_target_series
from forecasting.data.splits import split_frame
from forecasting.data.windows import Windows, to_arrays
from forecasting.errors import ConfigError, ConstantSeriesError, InputValidationError, UnknownSeriesError

ETT_BORDERS = SplitConfig(method="borders", borders=(8640, 11520, 14400))
ETT_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
L96 = WindowConfig(lookback=96, horizon=96)


@pytest.fixture(scope="module")
def ett_wide():
    frame = ingest(DataConfig(path=ETTH1, time_column="date", target=ETT_COLUMNS)).frame
    return split_frame(frame, ETT_BORDERS, L96)


def test_etth1_ot_train_statistics_match_the_published_ones(ett_wide):
    scaler = fit_scaler(ett_wide.train, ["y"])
    assert scaler.mean.loc["OT", "y"] == pytest.approx(17.1283, abs=1e-4)
    assert scaler.std.loc["OT", "y"] == pytest.approx(9.1765, abs=1e-4)  # population std (ddof=0)


def test_fitted_per_series_on_the_training_split_only(ett_wide):
    scaler = fit_scaler(ett_wide.train, ["y"])
    raw = pd.read_csv(ETTH1)
    for column in ETT_COLUMNS:
        train = raw[column].to_numpy()[:8640]
        assert scaler.mean.loc[column, "y"] == pytest.approx(train.mean(), rel=1e-12)
        assert scaler.std.loc[column, "y"] == pytest.approx(train.std(ddof=0), rel=1e-12)
    # The validation and test rows do not move the statistics.
    full_mean = raw["OT"].to_numpy()[:14400].mean()
    assert abs(scaler.mean.loc["OT", "y"] - full_mean) > 1.0


def test_transform_standardises_train_and_round_trips(ett_wide):
    scaler = fit_scaler(ett_wide.train, ["y"])
    scaled_train = scaler.transform(ett_wide.train)
    stats = scaled_train.groupby("series_id")["y"].agg(["mean", lambda s: s.std(ddof=0)])
    np.testing.assert_allclose(stats.to_numpy(), np.tile([0.0, 1.0], (7, 1)), atol=1e-9)

    test = ett_wide.test
    scaled = scaler.transform(test)
    assert not np.allclose(scaled["y"], test["y"])
    back = scaler.inverse_y(scaled["y"].to_numpy(), scaled["series_id"].to_numpy())
    np.testing.assert_allclose(back, test["y"].to_numpy(), rtol=1e-12, atol=1e-12)
    pd.testing.assert_frame_equal(test, ett_wide.test)  # transform returns a new frame


def test_inverse_of_window_shaped_values(ett_wide):
    scaler = fit_scaler(ett_wide.train, ["y"])
    windows = Windows(to_arrays(scaler.transform(ett_wide.test)), 96, 96)
    idx = np.arange(0, len(windows), 500)
    batch = windows.batch(idx)
    ids = windows.arrays.series_ids[batch["series"]]
    target = scaler.inverse_y(batch["target"].astype(np.float64), ids)  # (N, H)
    originals = Windows(to_arrays(ett_wide.test), 96, 96).batch(idx)["target"]
    np.testing.assert_allclose(target, originals, rtol=1e-5, atol=1e-5)  # float32 windows


def test_covariates_scaled_per_series_and_constant_ones_left_in_spread():
    frame = make_frame(np.sin(np.arange(50.0)), x=np.arange(50.0), c=np.full(50, 3.0))
    scaler = fit_scaler(frame, ["y", "x", "c"])
    assert scaler.std.loc["s0", "c"] == 1.0
    out = scaler.transform(frame)
    assert out["x"].mean() == pytest.approx(0.0) and out["x"].std(ddof=0) == pytest.approx(1.0)
    np.testing.assert_allclose(out["c"], 0.0)


def test_missing_targets_stay_missing():
    frame = make_frame(np.arange(10.0))
    scaler = fit_scaler(frame, ["y"])
    future = make_frame(np.full(3, np.nan), start="2024-01-01 10:00")
    assert scaler.transform(future)["y"].isna().all()


def test_serialises_to_json_and_back(ett_wide):
    scaler = fit_scaler(ett_wide.train, ["y"])
    again = Scaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    pd.testing.assert_frame_equal(again.transform(ett_wide.val), scaler.transform(ett_wide.val))


def test_a_series_constant_on_its_training_rows_takes_the_panels_typical_spread():
    """An intermittent series with no demand before its validation rows: centred, divided by the
    median spread of the other series (not by 1 unit of y, which would let it dominate), named."""
    frame = pd.concat(
        [
            make_frame(np.arange(20.0), series_id="a"),  # std 5.766
            make_frame(np.arange(20.0) * 3, series_id="c"),  # std 17.3
            make_frame(np.arange(20.0) * 5, series_id="d"),  # std 28.8
            make_frame(np.full(20, 5.0), series_id="b"),
        ],
        ignore_index=True,
    )
    scaler = fit_scaler(frame, ["y"])
    typical = np.arange(20.0).std() * 3  # the median of the three spreads
    assert scaler.std.loc["b", "y"] == pytest.approx(typical) and scaler.mean.loc["b", "y"] == 5.0
    assert scaler.std.loc["a", "y"] == pytest.approx(np.arange(20.0).std())
    later = make_frame(np.array([5.0, 5.0 + typical, 5.0]), series_id="b")
    assert scaler.transform(later)["y"].tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert flat_target_series(frame) == ["b"]
    # A new series, flat on its history, met at prediction: the training panel's median spread.
    new = make_frame(np.full(10, 2.0), series_id="new")
    assert scaler.transform(new, unseen="fit")["y"].tolist() == [0.0] * 10
    assert scaler._stats_for(new, "fit")[1].loc["new", "y"] == pytest.approx(np.median(scaler.std["y"]))


def test_every_series_constant_on_its_training_rows_is_a_named_error(tmp_path):
    from forecasting.config import config_from_dict
    from forecasting.pipeline.prepare import prepare

    frame = pd.concat(
        [
            make_frame(np.r_[np.full(20, 1.0), np.arange(10.0)], series_id="a"),
            make_frame(np.r_[np.full(20, 5.0), np.arange(10.0)], series_id="b"),
        ],
        ignore_index=True,
    )
    path = tmp_path / "flat.csv"
    frame.to_csv(path, index=False)
    cfg = config_from_dict(
        {
            "data": {
                "path": str(path),
                "time_column": "t",
                "id_column": "series_id",
                "target": "y",
                "freq": "h",
            },
            "split": {"method": "borders", "borders": [20, 25, 30]},
            "window": {"lookback": 4, "horizon": 2},
        }
    )
    with pytest.raises(ConstantSeriesError, match="every series") as info:
        prepare(cfg)
    assert isinstance(info.value, InputValidationError)


def test_unseen_series():
    scaler = fit_scaler(make_frame(np.arange(20.0), series_id="a"), ["y"])
    other = make_frame(np.arange(100.0, 120.0), series_id="new")
    with pytest.raises(UnknownSeriesError, match="new"):
        scaler.transform(other)
    scaled = scaler.transform(other, unseen="fit")  # scaled by its own history
    assert scaled["y"].mean() == pytest.approx(0.0)
    back = scaler.inverse_y(scaled["y"].to_numpy(), scaled["series_id"].to_numpy(), history=other)
    np.testing.assert_allclose(back, other["y"].to_numpy())


def test_lookups_follow_each_row_in_any_order_and_name_unknown_series():
    a = make_frame(np.arange(10.0), series_id="a")
    b = make_frame(100 + 10 * np.arange(10.0), series_id="b")
    scaler = fit_scaler(pd.concat([a, b]), ["y"])
    mixed = pd.concat([b, a, b.iloc[:3]]).sample(frac=1.0, random_state=0)  # rows interleaved
    out = scaler.transform(mixed)
    for sid, frame in (("a", a), ("b", b)):
        expected = (mixed.loc[mixed["series_id"] == sid, "y"] - frame["y"].mean()) / frame["y"].std(ddof=0)
        np.testing.assert_allclose(out.loc[mixed["series_id"] == sid, "y"], expected)
    ids = mixed["series_id"].to_numpy()
    np.testing.assert_allclose(scaler.inverse_y(out["y"].to_numpy(), ids), mixed["y"].to_numpy())
    with pytest.raises(KeyError, match="zz"):
        scaler.inverse_y(np.zeros(2), np.array(["a", "zz"], dtype=object))


# --- static covariates: one mean/std across series ---------------------------------------------------
def stores() -> pd.DataFrame:
    """Three series of different lengths whose static ``size`` differs; ``x`` varies in time."""
    parts = [
        make_frame(
            np.sin(np.arange(n) / 3.0) * (k + 1) + 5 * k,
            series_id=f"s{k}",
            x=np.arange(n) % 7.0 + k,
            size=np.full(n, size),
            flat=np.full(n, 4.0),
        )
        for k, (n, size) in enumerate([(10, 10.0), (20, 20.0), (100, 60.0)])
    ]
    return pd.concat(parts, ignore_index=True)


def test_statics_are_cross_series_z_scores_and_the_rest_is_scaled_as_before():
    frame = stores()
    scaler = fit_scaler(frame, ["y", "x"], static=["size", "flat"])
    out = scaler.transform(frame)
    # One value per series, not weighted by its rows (s2 has 100 of the 130 rows).
    mean, std = 30.0, np.sqrt((20.0**2 + 10.0**2 + 30.0**2) / 3)
    assert scaler.static_mean["size"] == pytest.approx(mean)
    assert scaler.static_std["size"] == pytest.approx(std)
    per_series = out.groupby("series_id", sort=False)["size"].agg(["min", "max"])
    np.testing.assert_allclose(per_series["min"], per_series["max"])  # still constant in a series
    np.testing.assert_allclose(per_series["min"], (np.array([10.0, 20.0, 60.0]) - mean) / std)
    # A static equal in every series has std 0: left unscaled in spread, not divided by zero.
    assert scaler.static_std["flat"] == 1.0
    np.testing.assert_allclose(out["flat"], 0.0)
    # Target and time-varying covariates: exactly what the per-series scaler gave before.
    before = fit_scaler(frame, ["y", "x", "size", "flat"]).transform(frame)
    pd.testing.assert_frame_equal(out[["series_id", "t", "y", "x"]], before[["series_id", "t", "y", "x"]])
    for _, part in frame.groupby("series_id"):
        expected = (part["y"] - part["y"].mean()) / part["y"].std(ddof=0)
        np.testing.assert_allclose(out.loc[part.index, "y"], expected)
    np.testing.assert_allclose(before["size"], 0.0)  # what per-series scaling made of the sizes


def test_statics_of_an_unseen_series_get_the_cross_series_scaling():
    frame = stores()
    scaler = fit_scaler(frame, ["y"], static=["size"])
    new = make_frame(np.arange(30.0), series_id="new", size=np.full(30, 45.0))
    with pytest.raises(UnknownSeriesError, match="new"):
        scaler.transform(new)
    out = scaler.transform(new, unseen="fit")
    assert out["y"].mean() == pytest.approx(0.0)  # the target by its own history, as before
    np.testing.assert_allclose(out["size"], (45.0 - scaler.static_mean["size"]) / scaler.static_std["size"])


def test_static_statistics_round_trip_through_json():
    frame = stores()
    scaler = fit_scaler(frame, ["y", "x"], static=["size", "flat"])
    again = Scaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert again.static == ["size", "flat"] and again.columns == ["y", "x"]
    pd.testing.assert_frame_equal(again.transform(frame), scaler.transform(frame))


def test_saved_as_arrays_the_scaler_equals_its_json_form(tmp_path):
    """``save``/``load`` (the bundle's ``scaler.npz``, no pickle) give what the JSON form gives,
    ids that look like numbers kept as text."""
    odd = {"007": 3.0, "a\x00": 4.0, "é" * 3000: 5.0}  # digits, a trailing NUL, a long id
    extra = [
        make_frame(np.arange(30.0) % 7, series_id=k, x=np.ones(30), size=[v] * 30) for k, v in odd.items()
    ]
    frame = pd.concat([stores(), *extra])
    frame["flat"] = 1.0
    scaler = fit_scaler(frame, ["y", "x"], static=["size", "flat"])
    scaler.save(tmp_path / "scaler.npz")
    again = Scaler.load(tmp_path / "scaler.npz")
    as_json = Scaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert again.columns == as_json.columns and again.static == as_json.static == ["size", "flat"]
    assert list(again.mean.index) == list(as_json.mean.index) and set(odd) <= set(again.mean.index)
    # ids stored by their own length: 6 ids padded to the longest would take 6 x 3000 x 4 bytes
    assert (tmp_path / "scaler.npz").stat().st_size < 20_000
    pd.testing.assert_frame_equal(again.mean, as_json.mean)
    pd.testing.assert_frame_equal(again.std, as_json.std)
    pd.testing.assert_series_equal(again.static_mean, as_json.static_mean)
    pd.testing.assert_frame_equal(again.transform(frame), scaler.transform(frame))
    with np.load(tmp_path / "scaler.npz", allow_pickle=False) as z:  # no object arrays in it
        assert all(z[k].dtype != object for k in z.files)


def test_a_scaler_saved_before_cross_series_statics_loads_with_its_old_scaling():
    frame = stores()
    old = fit_scaler(frame, ["y", "x", "size"]).to_dict()
    del old["static"]  # the saved form before statics were scaled across series
    loaded = Scaler.from_dict(json.loads(json.dumps(old)))
    assert loaded.static == [] and loaded.columns == ["y", "x", "size"]
    out = loaded.transform(frame)
    np.testing.assert_allclose(out["size"], 0.0)  # per series, as the network was trained
    pd.testing.assert_frame_equal(out, fit_scaler(frame, ["y", "x", "size"]).transform(frame))


def test_a_column_scaled_both_per_series_and_as_static_is_a_named_error():
    with pytest.raises(ConfigError, match="size"):
        fit_scaler(stores(), ["y", "size"], static=["size"])


def test_a_flat_training_series_runs_and_keeps_scaled_metrics_finite(tmp_path):
    """One intermittent series with no demand in its training rows among moving ones: the run
    goes on, the series is counted, and MASE / MSIS / width skip it instead of going infinite."""
    from forecasting.config import ModelSpec, config_from_dict
    from forecasting.pipeline import fit_and_score
    from forecasting.pipeline.prepare import prepare

    rng = np.random.default_rng(0)
    moving = [make_frame(rng.normal(10, 2, 120).cumsum() / 10, series_id=f"m{i}") for i in range(3)]
    demand = np.r_[np.zeros(104), rng.poisson(3, 16).astype(float) + 1]  # zeros through training (102 rows)
    frame = pd.concat([*moving, make_frame(demand, series_id="late")], ignore_index=True)
    path = tmp_path / "panel.csv"
    frame.to_csv(path, index=False)
    cfg = config_from_dict(
        {
            "data": {"path": str(path), "time_column": "t", "id_column": "series_id", "target": "y"},
            "split": {"method": "counts", "val_horizons": 2, "test_horizons": 1},
            "window": {"lookback": 12, "horizon": 6},
            "intervals": {"levels": [80]},
        }
    )
    prepared = prepare(cfg)
    assert prepared.choices["flat_train_series"] == 1
    _, metrics, _ = fit_and_score(prepared, ModelSpec(name="naive"))
    for key in ("test_mase", "val_mase", "test_msis", "test_width_80", "test_mse"):
        assert np.isfinite(metrics[key]), key
