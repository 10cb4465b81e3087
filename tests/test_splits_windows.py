"""Splits by time (ETT borders and fractions) and lookback/horizon windows over strided views."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
from conftest import ETTH1, make_frame

from forecasting.config import DataConfig, SplitConfig, WindowConfig
from forecasting.data.ingest import ingest
from forecasting.data.splits import plan_split, split_borders, split_frame
from forecasting.data.windows import Windows, to_arrays, window_starts
from forecasting.errors import SeriesTooShortError

ETT_BORDERS = SplitConfig(method="borders", borders=(8640, 11520, 14400))
ETT_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
L96 = WindowConfig(lookback=96, horizon=96)


@pytest.fixture(scope="module")
def etth1_ot():
    return ingest(DataConfig(path=ETTH1, time_column="date", target="OT")).frame


def hour(row: int) -> pd.Timestamp:
    """ETTh1's timestamp of row ``row``."""
    return pd.Timestamp("2016-07-01") + pd.Timedelta(hours=row)


# --- splits ---------------------------------------------------------------------------------------------
def test_ett_borders_on_etth1(etth1_ot):
    split = split_frame(etth1_ot, ETT_BORDERS, L96)
    # train [0, 8640), val [8640 - 96, 11520), test [11520 - 96, 14400)
    for part, first, end in [(split.train, 0, 8640), (split.val, 8544, 11520), (split.test, 11424, 14400)]:
        assert len(part) == end - first
        assert part["t"].iloc[0] == hour(first) and part["t"].iloc[-1] == hour(end - 1)
        np.testing.assert_array_equal(part["y"].to_numpy(), etth1_ot["y"].to_numpy()[first:end])
    assert split.borders.loc["OT"].tolist() == [8640, 11520, 14400]
    assert split.lookback == 96


def test_ett_borders_per_series_in_wide_format():
    frame = ingest(DataConfig(path=ETTH1, time_column="date", target=ETT_COLUMNS)).frame
    split = split_frame(frame, ETT_BORDERS, L96)
    assert (split.train.groupby("series_id").size() == 8640).all()
    assert (split.val.groupby("series_id").size() == 2976).all()
    assert (split.test.groupby("series_id").size() == 2976).all()
    assert (split.test.groupby("series_id")["t"].first() == hour(11424)).all()


def test_fraction_split_per_series():
    frame = pd.concat(
        [make_frame(np.arange(1000.0), series_id="a"), make_frame(np.arange(500.0), series_id="b")],
        ignore_index=True,
    )
    window = WindowConfig(lookback=10, horizon=5)
    split = split_frame(frame, SplitConfig(train_fraction=0.7, test_fraction=0.2), window)
    assert split.borders.loc["a"].tolist() == [700, 800, 1000]
    assert split.borders.loc["b"].tolist() == [350, 400, 500]
    a = {
        name: part[part["series_id"] == "a"]["y"]
        for name, part in vars(split).items()
        if name in ("train", "val", "test")
    }
    # Values equal row positions: the segments start lookback rows before their border.
    assert (a["train"].iloc[0], a["train"].iloc[-1]) == (0, 699)
    assert (a["val"].iloc[0], a["val"].iloc[-1]) == (690, 799)
    assert (a["test"].iloc[0], a["test"].iloc[-1]) == (790, 999)
    b_val = split.val[split.val["series_id"] == "b"]["y"]
    assert (b_val.iloc[0], b_val.iloc[-1]) == (340, 399)


def test_count_split_keeps_the_same_periods_from_the_end_of_every_series():
    """The competitions' protocol: test the last H rows, validation the K x H before, whatever
    each series' length (M4 Weekly with H=13 and K=3 on series of 80 to 2,597 rows)."""
    frame = pd.concat(
        [make_frame(np.arange(300.0), series_id="long"), make_frame(np.arange(80.0), series_id="short")],
        ignore_index=True,
    )
    window = WindowConfig(lookback=13, horizon=13)
    split = split_frame(frame, SplitConfig(method="counts"), window)
    assert split.borders.loc["long"].tolist() == [248, 287, 300]
    assert split.borders.loc["short"].tolist() == [28, 67, 80]
    short_test = split.test[split.test["series_id"] == "short"]["y"]
    assert (short_test.iloc[0], short_test.iloc[-1]) == (67 - 13, 79)  # lookback rows, then the test
    wider = split_frame(frame, SplitConfig(method="counts", val_horizons=1, test_horizons=2), window)
    assert wider.borders.loc["short"].tolist() == [41, 54, 80]
    with pytest.raises(SeriesTooShortError, match=r"1 series too short .*3 validation and 1 test .*'short' "):
        split_frame(frame, SplitConfig(method="counts"), WindowConfig(lookback=16, horizon=13))


def test_a_split_plan_cuts_where_the_split_does_and_holds_no_rows():
    """What a pipeline keeps of its split: the borders and row counts, and per segment a mask of
    the frame's rows (the segments are cut, scaled and dropped one at a time)."""
    frame = pd.concat(
        [make_frame(np.arange(300.0), series_id="long"), make_frame(np.arange(80.0), series_id="short")],
        ignore_index=True,
    )
    window = WindowConfig(lookback=13, horizon=13)
    plan, masks = plan_split(frame, SplitConfig(method="counts"), window)
    split = split_frame(frame, SplitConfig(method="counts"), window)
    pd.testing.assert_frame_equal(plan.borders, split.borders)
    assert plan.rows == {"train": len(split.train), "val": len(split.val), "test": len(split.test)}
    assert plan.rows == {"train": 248 + 28, "val": 2 * (13 + 39), "test": 2 * (13 + 13)}
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(frame[masks[name]].reset_index(drop=True), getattr(split, name))
    assert not any(isinstance(v, pd.DataFrame) for v in vars(plan).values() if v is not plan.borders)


def test_first_val_and_test_windows_target_the_borders(etth1_ot):
    split = split_frame(etth1_ot, ETT_BORDERS, L96)
    for part, border in [(split.val, 8640), (split.test, 11520)]:
        w = Windows(to_arrays(part), 96, 96)
        assert w.target_times(np.array([0]))[0, 0] == hour(border)


def test_split_borders_fraction_edge_is_exact():
    window = WindowConfig(lookback=96, horizon=96)
    split_borders(pd.Series([944], index=["s"]), SplitConfig(), window)  # just long enough
    with pytest.raises(SeriesTooShortError, match="at least 944 rows"):
        split_borders(pd.Series([943], index=["s"]), SplitConfig(), window)


# --- windows --------------------------------------------------------------------------------------------
@pytest.fixture
def small() -> pd.DataFrame:
    """One series of 10 rows: y = 0..9, past covariate p = 100 + i, future covariate f = 200 + i."""
    i = np.arange(10.0)
    return make_frame(i, p=100 + i, f=200 + i)


def test_windows_by_hand(small):
    w = Windows(to_arrays(small, past=["p"], future=["f"]), lookback=3, horizon=2)
    assert len(w) == 10 - 3 - 2 + 1
    first = w[0]
    np.testing.assert_array_equal(first["y"], [0, 1, 2])
    np.testing.assert_array_equal(first["target"], [3, 4])
    np.testing.assert_array_equal(first["x_past"], [[100, 200], [101, 201], [102, 202]])  # (L, past + future)
    np.testing.assert_array_equal(first["x_future"], [[203], [204]])  # (H, future): the targets' times
    last = w[5]
    np.testing.assert_array_equal(last["y"], [5, 6, 7])
    np.testing.assert_array_equal(last["target"], [8, 9])
    np.testing.assert_array_equal(last["x_past"][:, 0], [105, 106, 107])
    np.testing.assert_array_equal(last["x_future"][:, 0], [208, 209])
    times = w.target_times(np.array([0, 5]))
    assert times[0, 0] == small["t"].iloc[3] and times[1, 1] == small["t"].iloc[9]
    batch = w.batch(np.arange(6))
    assert batch["y"].shape == (6, 3) and batch["target"].shape == (6, 2)
    assert batch["x_past"].shape == (6, 3, 2) and batch["x_future"].shape == (6, 2, 1)
    assert batch["y"].dtype == np.float32


def test_windows_never_cross_series_and_carry_static():
    frame = pd.concat(
        [
            make_frame(np.arange(8.0), series_id="a", s=np.full(8, 1.0)),
            make_frame(np.arange(100.0, 106.0), series_id="b", s=np.full(6, 2.0)),
            make_frame(np.arange(3.0), series_id="c", s=np.full(3, 3.0)),  # too short for a window
        ],
        ignore_index=True,
    )
    w = Windows(to_arrays(frame, static=["s"]), lookback=2, horizon=2)
    assert len(w) == (8 - 4 + 1) + (6 - 4 + 1)
    batch = w.batch(np.arange(len(w)))
    assert w.arrays.series_ids[batch["series"]].tolist() == ["a"] * 5 + ["b"] * 3
    np.testing.assert_array_equal(batch["static"][:, 0], [1.0] * 5 + [2.0] * 3)
    np.testing.assert_array_equal(batch["y"][5], [100, 101])
    np.testing.assert_array_equal(batch["target"][-1], [104, 105])


@pytest.mark.parametrize(
    ("stride", "starts"), [(1, [0, 1, 2, 3, 4, 5]), (2, [1, 3, 5]), (4, [1, 5]), (10, [5])]
)
def test_stride_steps_back_from_the_last_window(small, stride, starts):
    arrays = to_arrays(small)
    assert window_starts(arrays, 3, 2, stride).tolist() == starts
    assert len(Windows(arrays, 3, 2, stride)) == (10 - 5) // stride + 1


@pytest.mark.parametrize("stride", [1, 3])
def test_window_starts_are_compact_and_batches_need_no_series_array(stride):
    """Starts as int32 (the rows fit), each series' windows stepping back from its last row, as a
    plain loop places them; a batch finds its windows' series by itself, so a training loop never
    holds the whole (N,) series array; asked for, it is the same."""
    lengths = {"a": 9, "b": 5, "c": 4, "d": 12}  # c is too short for a window of 5
    frame = pd.concat([make_frame(np.arange(n, dtype=float), sid) for sid, n in lengths.items()])
    w = Windows(to_arrays(frame.reset_index(drop=True)), lookback=3, horizon=2, stride=stride)
    expected, owners, offset = [], [], 0
    for k, n in enumerate(lengths.values()):
        expected += sorted(range(offset + n - 5, offset - 1, -stride))
        owners += [k] * len(range(offset + n - 5, offset - 1, -stride))
        offset += n
    assert w.starts.dtype == np.int32 and w.starts.tolist() == expected
    batch = w.batch(np.arange(len(w))[::-1])
    assert batch["series"].tolist() == owners[::-1]
    assert w._series is None  # not built by batches
    assert w.series.tolist() == owners


def test_iter_batches_cover_every_window_once(small):
    w = Windows(to_arrays(small), 3, 2)
    seen = np.concatenate(list(w.iter_batches(4, shuffle=True, rng=np.random.default_rng(0))))
    assert sorted(seen.tolist()) == list(range(len(w)))


def test_ett_test_split_gives_2785_windows(etth1_ot):
    split = split_frame(etth1_ot, ETT_BORDERS, L96)
    assert len(Windows(to_arrays(split.test), 96, 96)) == 2785
    assert len(Windows(to_arrays(split.val), 96, 96)) == 2785
    assert len(Windows(to_arrays(split.train), 96, 96)) == 8640 - 192 + 1
    w = Windows(to_arrays(split.test), 96, 96)
    last = w[len(w) - 1]
    np.testing.assert_array_equal(last["target"], split.test["y"].to_numpy(dtype=np.float32)[-96:])


def test_windows_are_views_not_copies(etth1_ot):
    """No N x L array is ever materialised: the windows are strided views of one flat copy."""
    covariates = etth1_ot.assign(p=etth1_ot["y"] * 2, f=etth1_ot["y"] * 3)
    arrays = to_arrays(covariates, past=["p"], future=["f"])
    tracemalloc.start()
    try:
        w = Windows(arrays, 96, 96)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    n, lookback = len(w), 96
    one_copy = n * lookback * 4  # what a single (N, L) float32 copy would take
    assert peak < one_copy / 4  # a few (N,) index arrays, nothing of size N x L
    assert np.shares_memory(w._y, arrays.y) and w._y.base is not None
    assert np.shares_memory(w._xp, arrays.x_past) and np.shares_memory(w._xf, arrays.x_future)
    # The future-known columns are x_past's last ones: one copy serves both.
    assert np.shares_memory(arrays.x_future, arrays.x_past)
    np.testing.assert_array_equal(arrays.x_future, arrays.x_past[:, 1:])
    np.testing.assert_array_equal(arrays.x_future[:, 0], covariates["f"].to_numpy(np.float32))
    for name, value in vars(w).items():
        if isinstance(value, np.ndarray) and value.base is None:  # an array of its own
            assert value.nbytes < one_copy / 10, name


def test_window_stride_reaches_the_training_windows(tmp_path):
    """``window.stride`` 4: every model of the pipeline trains on a quarter of the windows (the
    last window of each series kept), and scores on all of them."""
    from forecasting.config import ModelSpec, config_from_dict
    from forecasting.models.registry import build_model
    from forecasting.pipeline import prepare

    frame = pd.concat(
        [make_frame(np.sin(np.arange(400) / 5) + k, series_id=f"s{k}") for k in range(2)], ignore_index=True
    )
    path = tmp_path / "two.csv"
    frame.to_csv(path, index=False)

    def fitted(stride: int):
        cfg = config_from_dict(
            {
                "data": {"path": str(path), "time_column": "t", "target": "y", "id_column": "series_id"},
                "window": {"lookback": 24, "horizon": 6, "stride": stride},
                "training": {"epochs": 1, "max_steps": 1, "progress": False},
            }
        )
        prepared = prepare(cfg)
        model = build_model(ModelSpec(name="naive"), prepared.spec, cfg.training).fit(prepared.train)
        return prepared, model

    every, one = fitted(1)
    quarter, four = fitted(4)
    per_series = len(every.train) // 2 - 24 - 6 + 1  # 251 windows per series at stride 1
    assert one.train_windows_ == 2 * per_series
    assert four.train_windows_ == 2 * ((per_series - 1) // 4 + 1)  # a quarter, rounded up
    assert quarter.spec.stride == 4 and len(quarter.windows(quarter.test)) == len(every.windows(every.test))
