"""Property tests of the data layer (hypothesis).

1. ``prepare_frame`` either succeeds or raises an ``InputValidationError`` subclass, whatever the
   frame holds: text, floats with NaN/inf, huge ints, naive and zone-aware timestamps (duplicated,
   unsorted, across a DST change), mixed objects, empty frames.
2. Repairs are idempotent (repairing a repaired frame changes nothing) and never change an
   observed (series, t, y) value.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.config import DataConfig, RepairPolicy
from forecasting.data.ingest import prepare_frame
from forecasting.errors import InputValidationError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
ZONES = [
    dt.timezone.utc,
    dt.timezone(dt.timedelta(hours=5, minutes=30)),
    zoneinfo.ZoneInfo("Europe/Berlin"),
    zoneinfo.ZoneInfo("America/New_York"),
]
BASE = dt.datetime(2021, 3, 28, 0)  # Berlin skips 02:00 that night: naive local times hit DST
# Sampling frequencies of the generated panels, and a shift that takes a timestamp off their grid.
FREQS = {
    "h": pd.Timedelta(minutes=30),
    "15min": pd.Timedelta(minutes=7),
    "D": pd.Timedelta(hours=12),
    "MS": pd.Timedelta(days=3),
    "B": pd.Timedelta(hours=5),
}


# --- arbitrary frames ----------------------------------------------------------------------------
def _column(n: int) -> st.SearchStrategy[list]:
    floats = st.floats(allow_nan=True, allow_infinity=True)
    naive = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31))
    on_grid = st.integers(-3, 30).map(lambda k: BASE + dt.timedelta(hours=k))
    aware = st.builds(
        lambda k, z: (BASE + dt.timedelta(hours=k)).replace(tzinfo=z),
        st.integers(-3, 30),
        st.sampled_from(ZONES),
    )
    anything = st.one_of(floats, st.integers(), st.text(max_size=6), st.none(), naive, aware, st.booleans())
    stamp_text = st.one_of(
        on_grid.map(str), aware.map(str), on_grid.map(lambda d: d.strftime("%d/%m/%Y %H:%M"))
    )
    kinds = [
        floats,
        st.integers(-(2**70), 2**70),
        st.integers(-3, 3),
        st.text(max_size=6),
        on_grid,
        naive,
        aware,
        st.one_of(stamp_text, st.text(max_size=12)),
        anything,
    ]
    return st.one_of(*[st.lists(k, min_size=n, max_size=n) for k in kinds])


@st.composite
def arbitrary_frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(0, 8))
    if n == 0:
        dtype = draw(st.sampled_from(["float64", "object", "str"]))
        return pd.DataFrame({c: pd.Series([], dtype=dtype) for c in ["t", "y", "x", "id"]})
    return pd.DataFrame({c: draw(_column(n)) for c in ["t", "y", "x", "id"]})


@st.composite
def policies(draw: st.DrawFn, all_on: bool = False) -> RepairPolicy:
    method = draw(
        st.sampled_from(
            ["ffill", "interpolate", "zero"] if all_on else [None, "ffill", "interpolate", "zero"]
        )
    )
    flag = st.just(True) if all_on else st.booleans()
    return RepairPolicy(
        sort=draw(flag),
        drop_duplicates=draw(flag),
        trim_nan=draw(flag),
        fill_gaps=method,
        max_gap=draw(st.integers(1, 3)) if method else 0,
    )


@st.composite
def configs(draw: st.DrawFn) -> DataConfig:
    layout = draw(st.sampled_from(["single", "long", "wide"]))
    kw: dict = {"path": "in.csv", "time_column": "t"}
    if layout == "wide":
        kw["target"] = ["y", "x"]
    else:
        kw["target"] = "y"
        kw["id_column"] = "id" if layout == "long" else None
        if draw(st.booleans()):
            kw["covariates"] = {"x": draw(st.sampled_from(["past", "future", "static"]))}
    kw["freq"] = draw(st.sampled_from([None, None, "h", "D", "30min", "MS"]))
    kw["timezone"] = draw(st.sampled_from([None, None, "Europe/Berlin", "UTC"]))
    kw["repair"] = draw(policies())
    return DataConfig(**kw)


# --- nearly valid frames -------------------------------------------------------------------------
@st.composite
def messy_panels(draw: st.DrawFn, repairable: bool = False) -> pd.DataFrame:
    """A regular long panel (id, t, y, x), then broken: rows dropped, repeated, shuffled, NaN...

    ``repairable`` keeps to what a policy can fix (no conflicting duplicates, no inf, no
    off-grid times); otherwise anything goes.
    """
    freq = draw(st.sampled_from(sorted(FREQS)))
    value = st.one_of(st.integers(-3, 3).map(float), st.floats(-1e6, 1e6, allow_subnormal=False))
    parts = []
    for k in range(draw(st.integers(1, 3))):
        n = draw(st.integers(2, 12))
        start = pd.Timestamp(BASE) + pd.Timedelta(days=draw(st.integers(-2, 2)))
        t = pd.date_range(start.normalize() if freq in ("MS", "B") else start, periods=n, freq=freq)
        y = draw(st.lists(value, min_size=n, max_size=n))
        x = draw(st.lists(value, min_size=n, max_size=n))
        parts.append(pd.DataFrame({"id": f"s{k}", "t": t, "y": y, "x": x}))
    frame = pd.concat(parts, ignore_index=True)
    n = len(frame)
    index = st.integers(0, n - 1)
    edits = draw(
        st.lists(st.sampled_from(["drop", "repeat", "nan_y", "nan_x", "swap", "shuffle"]), max_size=5)
    )
    if not repairable:
        edits += draw(st.lists(st.sampled_from(["conflict", "inf", "offgrid", "text"]), max_size=1))
    for edit in edits:
        n = len(frame)
        if n < 2:
            break
        i = draw(index.filter(lambda v, n=n: v < n))
        if edit == "drop":
            frame = frame.drop(index=frame.index[i])
        elif edit == "repeat":
            frame = pd.concat([frame, frame.iloc[[i]]])
        elif edit == "nan_y":
            frame.iloc[i, 2] = np.nan
        elif edit == "nan_x":
            frame.iloc[i, 3] = np.nan
        elif edit == "swap":
            j = draw(index.filter(lambda v, n=n: v < n))
            order = np.arange(n)
            order[[i, j]] = order[[j, i]]
            frame = frame.iloc[order]
        elif edit == "shuffle":
            frame = frame.sample(frac=1, random_state=draw(st.integers(0, 9)))
        elif edit == "conflict":
            row = frame.iloc[[i]].copy()
            row["y"] = row["y"] + 1
            frame = pd.concat([frame, row])
        elif edit == "inf":
            frame.iloc[i, 2] = np.inf
        elif edit == "offgrid":
            frame.iloc[i, 1] = frame.iloc[i, 1] + FREQS[freq]
        elif edit == "text":
            frame = frame.astype({"y": object})
            frame.iloc[i, 2] = "n/a?"
    return frame.reset_index(drop=True)


def _panel_config(draw: st.DrawFn, repair: RepairPolicy, layout: str) -> DataConfig:
    covariates = {"x": draw(st.sampled_from(["past", "future"]))} if draw(st.booleans()) else {}
    if layout == "long":
        return DataConfig(
            path="in.csv", time_column="t", target="y", id_column="id", covariates=covariates, repair=repair
        )
    return DataConfig(path="in.csv", time_column="t", target="y", covariates=covariates, repair=repair)


def _expect_validation_error_or_result(raw: pd.DataFrame, cfg: DataConfig):
    before = raw.copy()
    try:
        result = prepare_frame(raw, cfg)
    except InputValidationError:
        result = None
    # Anything else (KeyError, ValueError from pandas, numpy warnings-as-errors...) fails the test.
    pd.testing.assert_frame_equal(raw, before)  # the input frame is never modified
    return result


def _check_canonical(frame: pd.DataFrame, cfg: DataConfig) -> None:
    assert list(frame.columns) == ["series_id", "t", "y", *cfg.covariates]
    assert frame["y"].dtype == np.float64 and np.isfinite(frame["y"]).all()
    assert not frame.duplicated(["series_id", "t"]).any()
    ordered = frame.sort_values(["series_id", "t"], kind="stable")
    assert ordered.index.equals(frame.index)


# --- property 1: only named errors -------------------------------------------------------------------
@FAST
@given(arbitrary_frames(), configs())
def test_prepare_frame_raises_only_validation_errors_on_arbitrary_frames(raw, cfg):
    result = _expect_validation_error_or_result(raw, cfg)
    if result is not None:
        _check_canonical(result.frame, cfg)


@FAST
@given(st.data())
def test_prepare_frame_raises_only_validation_errors_on_messy_panels(data):
    raw = data.draw(messy_panels())
    layout = data.draw(st.sampled_from(["long", "single"]))
    cfg = _panel_config(data.draw, data.draw(policies()), layout)
    if data.draw(st.booleans()):
        cfg = cfg.model_copy(
            update={"timezone": data.draw(st.sampled_from(["Europe/Berlin", "America/New_York"]))}
        )
    if data.draw(st.booleans()):  # the same values as text, as a CSV would give them
        raw = raw.astype({"t": str})
    result = _expect_validation_error_or_result(raw, cfg)
    if result is not None:
        _check_canonical(result.frame, cfg)


# --- property 2: repairs are idempotent and keep observed values ---------------------------------------
def _observed(raw: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """Every raw (series, t, y) with an observed y, once (exact repeats collapse)."""
    ids = raw["id"] if cfg.id_column else pd.Series("y", index=raw.index)
    out = pd.DataFrame({"series_id": ids.astype(str), "t": raw["t"], "y": raw["y"].astype(float)})
    return out.dropna(subset=["y"]).drop_duplicates()


@FAST
@given(st.data())
def test_repairs_are_idempotent_and_keep_observed_values(data):
    raw = data.draw(messy_panels(repairable=True))
    layout = data.draw(st.sampled_from(["long", "single"]))
    cfg = _panel_config(data.draw, data.draw(policies(all_on=True)), layout)
    result = _expect_validation_error_or_result(raw, cfg)
    if result is None:
        return
    frame = result.frame
    _check_canonical(frame, cfg)

    # Observed values are untouched: each one is in the canonical frame at its (series, t).
    observed = _observed(raw, cfg)
    merged = observed.merge(frame, on=["series_id", "t"], how="left", suffixes=("_raw", ""))
    assert merged["y"].notna().all(), "an observed row disappeared"
    np.testing.assert_array_equal(merged["y"].to_numpy(), merged["y_raw"].to_numpy())

    # Repairing the repaired frame changes nothing and reports nothing.
    again_cfg = DataConfig(
        path="in.csv",
        time_column="t",
        target="y",
        id_column="series_id",
        covariates=cfg.covariates,
        repair=cfg.repair,
    )
    again = prepare_frame(frame, again_cfg)
    pd.testing.assert_frame_equal(again.frame, frame)
    assert again.report.counts == {}
    assert again.freq == result.freq


@FAST
@given(st.data())
def test_repair_counts_match_what_changed(data):
    raw = data.draw(messy_panels(repairable=True))
    cfg = _panel_config(data.draw, data.draw(policies(all_on=True)), "long")
    result = _expect_validation_error_or_result(raw, cfg)
    if result is None:
        return
    counts = result.report.counts
    distinct = len(raw.drop_duplicates(["id", "t", "y", *cfg.covariates]))
    assert counts.get("dropped_duplicate_rows", 0) == len(raw) - distinct
    expected_rows = distinct - counts.get("trimmed_nan_rows", 0) + counts.get("filled_gap_steps", 0)
    assert len(result.frame) == expected_rows
