"""Ingest on good data: the canonical frame, long and wide formats, CSV and Parquet, the content
hash, repairs under an explicit policy, and input files that are never modified."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.config import DataConfig, RepairPolicy
from forecasting.data.ingest import ingest, prepare_frame, read_table
from forecasting.errors import GapError, InputValidationError, UnsortedTimestampsError

ETT_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
CANONICAL = ["series_id", "t", "y"]


def ett_config(path: Path, **kw) -> DataConfig:
    kw.setdefault("target", "OT")
    return DataConfig(path=path, time_column="date", **kw)


@pytest.fixture(scope="module")
def ett_head() -> pd.DataFrame:
    """The first 300 rows of ETTh1 as read from the file (text timestamps)."""
    return pd.read_csv(Path(__file__).resolve().parents[1] / "data" / "ETTh1.csv", nrows=300)


def long_table(ett_head: pd.DataFrame) -> pd.DataFrame:
    """Two series (HUFL as 'a', OT as 'b') in long format with a covariate, series after series."""
    parts = [
        pd.DataFrame({"id": sid, "date": ett_head["date"], "value": ett_head[col], "load": ett_head["MULL"]})
        for sid, col in [("a", "HUFL"), ("b", "OT")]
    ]
    return pd.concat(parts, ignore_index=True)


def long_config(path: Path, **kw) -> DataConfig:
    return DataConfig(
        path=path, time_column="date", target="value", id_column="id", covariates={"load": "past"}, **kw
    )


# --- the canonical frame --------------------------------------------------------------------------
def test_etth1_wide_gives_seven_hourly_series(etth1_path):
    result = ingest(ett_config(etth1_path, target=ETT_COLUMNS))
    frame = result.frame
    assert list(frame.columns) == CANONICAL
    assert str(frame["t"].dtype) == "datetime64[us]"
    assert frame["y"].dtype == np.float64
    assert result.freq == "h"
    assert sorted(result.series_ids) == sorted(ETT_COLUMNS)
    assert result.series_ids == sorted(ETT_COLUMNS)  # canonical order: by series id
    assert (frame.groupby("series_id").size() == 17420).all()
    assert frame.equals(frame.sort_values(["series_id", "t"]).reset_index(drop=True))
    ot = frame[frame["series_id"] == "OT"]
    raw = pd.read_csv(etth1_path)
    np.testing.assert_array_equal(ot["y"].to_numpy(), raw["OT"].to_numpy())
    assert ot["t"].iloc[0] == pd.Timestamp("2016-07-01 00:00:00")
    assert ot["t"].iloc[-1] == pd.Timestamp("2018-06-26 19:00:00")
    assert result.report.counts == {}


def test_etth1_single_target_with_covariates(etth1_path):
    covariates = {c: "past" for c in ETT_COLUMNS[:-1]}
    result = ingest(ett_config(etth1_path, covariates=covariates))
    assert list(result.frame.columns) == CANONICAL + ETT_COLUMNS[:-1]
    assert result.series_ids == ["OT"]
    assert result.past == ETT_COLUMNS[:-1] and result.future == [] and result.static == []
    summary = result.summary()
    assert summary["series"] == 1 and summary["rows"] == 17420 and summary["freq"] == "h"
    assert summary["start"] == "2016-07-01 00:00:00" and summary["end"] == "2018-06-26 19:00:00"
    assert summary["repairs"] == {} and summary["dataset_hash"] == result.dataset_hash


def test_long_format_csv(tmp_path, ett_head):
    table = long_table(ett_head)
    path = tmp_path / "long.csv"
    table.to_csv(path, index=False)
    result = ingest(long_config(path))
    frame = result.frame
    assert list(frame.columns) == [*CANONICAL, "load"]
    assert result.series_ids == ["a", "b"]
    b = frame[frame["series_id"] == "b"]
    np.testing.assert_array_equal(b["y"].to_numpy(), ett_head["OT"].to_numpy())
    np.testing.assert_array_equal(b["load"].to_numpy(), ett_head["MULL"].to_numpy())


def test_long_format_sorted_by_time_needs_no_repair(tmp_path, ett_head):
    """A long table sorted by time (series interleaved) is in order within every series."""
    by_series = long_table(ett_head)
    path = tmp_path / "by_time.csv"
    by_series.sort_values(["date", "id"], kind="stable").to_csv(path, index=False)
    result = ingest(long_config(path))
    reference = prepare_frame(by_series, long_config(path))
    pd.testing.assert_frame_equal(result.frame, reference.frame)
    assert result.report.counts == {}
    assert result.dataset_hash == reference.dataset_hash


def test_csv_and_parquet_give_the_same_frame_and_hash(tmp_path, ett_head):
    table = long_table(ett_head)
    csv_path, pq_path = tmp_path / "long.csv", tmp_path / "long.parquet"
    table.to_csv(csv_path, index=False)
    table.assign(date=pd.to_datetime(table["date"])).to_parquet(pq_path, index=False)
    from_csv, from_parquet = ingest(long_config(csv_path)), ingest(long_config(pq_path))
    pd.testing.assert_frame_equal(from_csv.frame, from_parquet.frame)
    assert from_csv.dataset_hash == from_parquet.dataset_hash


def test_parquet_wide_with_nanosecond_timestamps(tmp_path, ett_head):
    path = tmp_path / "wide.parquet"
    ett_head.assign(date=pd.to_datetime(ett_head["date"]).astype("datetime64[ns]")).to_parquet(path)
    result = ingest(ett_config(path, target=ETT_COLUMNS))
    assert str(result.frame["t"].dtype) == "datetime64[us]"
    assert len(result.frame) == 7 * 300


def test_ids_keep_leading_zeros(tmp_path, ett_head):
    table = long_table(ett_head).replace({"id": {"a": "007", "b": "7"}})
    path = tmp_path / "ids.csv"
    table.to_csv(path, index=False)
    assert ingest(long_config(path)).series_ids == ["007", "7"]


def test_zone_aware_timestamps_become_utc(tmp_path, ett_head):
    path = tmp_path / "aware.csv"
    ett_head.assign(date=ett_head["date"] + "+02:00").to_csv(path, index=False)
    frame = ingest(ett_config(path)).frame
    assert str(frame["t"].dtype) == "datetime64[us, UTC]"
    assert frame["t"].iloc[0] == pd.Timestamp("2016-06-30 22:00:00", tz="UTC")


def test_local_times_with_a_declared_zone_cross_dst(tmp_path):
    """Naive Berlin times across the spring change (02:00 does not exist) are one regular UTC grid."""
    utc = pd.date_range("2021-03-27 20:00", periods=12, freq="h", tz="UTC")
    local = utc.tz_convert("Europe/Berlin").tz_localize(None)
    assert pd.Timestamp("2021-03-28 02:00") not in local
    path = tmp_path / "local.csv"
    pd.DataFrame({"date": local.astype(str), "OT": np.arange(12.0)}).to_csv(path, index=False)
    result = ingest(ett_config(path, timezone="Europe/Berlin"))
    assert result.freq == "h"
    assert (result.frame["t"].to_numpy() == utc.to_numpy()).all()


def test_daily_data_with_declared_day_frequency(tmp_path):
    # pandas 3 made "D" a calendar offset; a declared "D" is still a fixed 24 h on UTC clocks.
    path = tmp_path / "daily.csv"
    days = pd.date_range("2024-01-01", periods=40, freq="D")
    pd.DataFrame({"date": days.astype(str), "OT": np.sin(np.arange(40.0))}).to_csv(path, index=False)
    assert ingest(ett_config(path, freq="D")).freq == "D"
    with pytest.raises(GapError, match=r"2024-01-11 00:00:00 \(1 step missing after row 9\)"):
        ingest(ett_config(path, freq="D"), path=_drop_rows(path, [10]))


def test_month_start_data_is_calendar_regular(tmp_path):
    path = tmp_path / "monthly.csv"
    months = pd.date_range("2020-01-01", periods=36, freq="MS")
    pd.DataFrame({"date": months.astype(str), "OT": np.arange(36.0) % 7}).to_csv(path, index=False)
    result = ingest(ett_config(path))
    assert result.freq == "MS"
    with pytest.raises(GapError, match=r"series 'OT'.*2020-06-01 00:00:00 \(2 steps missing after row 4\)"):
        ingest(ett_config(path), path=_drop_rows(path, [5, 6]))
    filled = ingest(
        ett_config(path, repair=RepairPolicy(fill_gaps="ffill", max_gap=2)), path=_drop_rows(path, [5, 6])
    )
    pd.testing.assert_series_equal(filled.frame["t"], result.frame["t"])
    assert filled.report.counts == {"filled_gap_steps": 2}
    assert filled.frame["y"].iloc[5] == filled.frame["y"].iloc[6] == result.frame["y"].iloc[4]


def _drop_rows(path: Path, rows: list[int]) -> Path:
    out = path.with_name(f"{path.stem}-dropped{path.suffix}")
    pd.read_csv(path).drop(index=rows).to_csv(out, index=False)
    return out


def test_prepare_frame_leaves_its_input_alone(ett_head):
    raw = ett_head.iloc[::-1].copy()  # unsorted, so that the sort repair runs
    before = raw.copy()
    prepare_frame(raw, ett_config("x.csv", repair=RepairPolicy(sort=True)))
    pd.testing.assert_frame_equal(raw, before)


# --- the content hash -----------------------------------------------------------------------------
def test_hash_depends_on_content_not_on_the_file(tmp_path, ett_head):
    first, second = tmp_path / "one.csv", tmp_path / "two.csv"
    ett_head.to_csv(first, index=False)
    ett_head.to_csv(second, index=False)
    h1 = ingest(ett_config(first)).dataset_hash
    assert ingest(ett_config(first)).dataset_hash == h1
    assert ingest(ett_config(second)).dataset_hash == h1  # another path, same data
    changed = ett_head.copy()
    changed.loc[150, "OT"] += 0.001
    changed.to_csv(second, index=False)
    assert ingest(ett_config(second)).dataset_hash != h1
    # Other column roles over the same file are other data.
    assert ingest(ett_config(first, covariates={"HUFL": "past"})).dataset_hash != h1


def test_hash_of_shuffled_rows_matches_after_sorting(tmp_path, ett_head):
    path = tmp_path / "shuffled.csv"
    ett_head.sample(frac=1, random_state=0).to_csv(path, index=False)
    repaired = ingest(ett_config(path, repair=RepairPolicy(sort=True)))
    reference = prepare_frame(ett_head, ett_config(path))
    pd.testing.assert_frame_equal(repaired.frame, reference.frame)
    assert repaired.dataset_hash == reference.dataset_hash


# --- repairs under policy -------------------------------------------------------------------------
def test_sort_repair_counts_moved_rows(ett_head):
    raw = ett_head.copy()
    raw.iloc[[10, 11]] = raw.iloc[[11, 10]].to_numpy()
    with pytest.raises(UnsortedTimestampsError):
        prepare_frame(raw, ett_config("x.csv"))
    result = prepare_frame(raw, ett_config("x.csv", repair=RepairPolicy(sort=True)))
    assert result.report.counts == {"sorted_rows": 2}
    pd.testing.assert_frame_equal(result.frame, prepare_frame(ett_head, ett_config("x.csv")).frame)


def test_drop_duplicates_repair_drops_exact_copies_only(ett_head):
    raw = pd.concat([ett_head.iloc[:50], ett_head.iloc[[20, 30, 30]], ett_head.iloc[50:]], ignore_index=True)
    result = prepare_frame(raw, ett_config("x.csv", repair=RepairPolicy(drop_duplicates=True)))
    assert result.report.counts == {"dropped_duplicate_rows": 3}
    assert "rows 50, 51, 52" in result.report.notes[0]
    pd.testing.assert_frame_equal(result.frame, prepare_frame(ett_head, ett_config("x.csv")).frame)


@pytest.mark.parametrize(
    ("method", "expected"),
    [("ffill", [1.0, 1.0, 1.0, 4.0]), ("interpolate", [1.0, 2.0, 3.0, 4.0]), ("zero", [1.0, 0.0, 0.0, 4.0])],
)
def test_fill_gaps_by_method(method, expected):
    t = pd.date_range("2024-01-01", periods=8, freq="h")
    y = np.array([0.0, 1.0, np.nan, np.nan, 4.0, 5.0, 6.0, 7.0])
    raw = pd.DataFrame({"t": t, "y": y}).drop(index=[3])  # row 2 NaN, hour 3 missing
    policy = RepairPolicy(fill_gaps=method, max_gap=2)
    result = prepare_frame(raw, DataConfig(path="x.csv", repair=policy))
    frame = result.frame
    assert len(frame) == 8 and (frame["t"].to_numpy() == t.to_numpy()).all()
    np.testing.assert_allclose(frame["y"].to_numpy()[1:5], expected)
    assert result.report.counts == {"filled_gap_steps": 1, "filled_missing_values": 1}


def test_fill_gaps_respects_max_gap(gap_frame):
    raw = gap_frame[["t", "y"]]  # hours 50, 51 and 120 missing
    with pytest.raises(GapError, match="max_gap=1"):
        prepare_frame(raw, DataConfig(path="x.csv", repair=RepairPolicy(fill_gaps="interpolate", max_gap=1)))
    result = prepare_frame(
        raw, DataConfig(path="x.csv", repair=RepairPolicy(fill_gaps="interpolate", max_gap=2))
    )
    assert len(result.frame) == 200
    assert result.report.counts == {"filled_gap_steps": 3}
    expected = np.sin(np.arange(200) / 5.0)
    observed = np.setdiff1d(np.arange(200), [50, 51, 120])
    np.testing.assert_array_equal(result.frame["y"].to_numpy()[observed], expected[observed])


def test_trim_nan_drops_only_leading_and_trailing_rows(ett_head):
    raw = ett_head.copy()
    raw.loc[[0, 1, 299], "OT"] = np.nan
    result = prepare_frame(raw, ett_config("x.csv", repair=RepairPolicy(trim_nan=True)))
    assert result.report.counts == {"trimmed_nan_rows": 3}
    assert len(result.frame) == 297
    assert result.frame["t"].iloc[0] == pd.Timestamp(ett_head["date"].iloc[2])
    raw.loc[100, "OT"] = np.nan  # an interior NaN is not trimmed
    with pytest.raises(InputValidationError, match="row 100"):
        prepare_frame(raw, ett_config("x.csv", repair=RepairPolicy(trim_nan=True)))


def test_fills_never_cross_series():
    t = pd.date_range("2024-01-01", periods=4, freq="h")
    raw = pd.DataFrame(
        {
            "id": np.repeat(["a", "b"], 4),
            "t": np.tile(t, 2),
            "y": [1.0, 2.0, 3.0, np.nan, np.nan, 5.0, 6.0, 7.0],
        }
    )
    cfg = DataConfig(path="x.csv", id_column="id", repair=RepairPolicy(fill_gaps="ffill", max_gap=1))
    with pytest.raises(InputValidationError, match=r"series 'b'.*row 4 \(t=2024-01-01 00:00:00\)"):
        prepare_frame(raw, cfg)  # b's leading NaN has nothing of its own to carry forward
    result = prepare_frame(raw.drop(index=[4]), cfg)
    assert result.frame["y"].tolist() == [1.0, 2.0, 3.0, 3.0, 5.0, 6.0, 7.0]
    assert result.report.counts == {"filled_missing_values": 1}


def test_static_covariate_fills_inserted_rows_with_its_value(ett_head):
    raw = ett_head.assign(site=3.0).drop(index=[40])
    cfg = ett_config("x.csv", covariates={"site": "static"}, repair=RepairPolicy(fill_gaps="zero", max_gap=1))
    frame = prepare_frame(raw, cfg).frame
    assert (frame["site"] == 3.0).all()
    assert frame["y"].iloc[40] == 0.0


# --- the input file -------------------------------------------------------------------------------
def _fingerprint(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), os.stat(path).st_mtime_ns


@pytest.mark.parametrize("kind", ["csv", "parquet"])
@pytest.mark.parametrize("good", [True, False])
def test_input_files_are_never_modified(tmp_path, ett_head, kind, good):
    raw = ett_head.copy() if good else ett_head.iloc[::-1]  # reversed: unsorted, repaired by sort
    path = tmp_path / f"data.{kind}"
    if kind == "csv":
        raw.to_csv(path, index=False)
    else:
        raw.to_parquet(path)
    past = time.time() - 3600
    os.utime(path, (past, past))  # an mtime in the past, so that any write would show
    before = _fingerprint(path)
    if good:
        ingest(ett_config(path, repair=RepairPolicy(sort=True)))
    else:
        with pytest.raises(UnsortedTimestampsError):
            ingest(ett_config(path))
        ingest(ett_config(path, repair=RepairPolicy(sort=True)))
    assert _fingerprint(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # nothing written beside it


def test_read_table_resets_a_named_parquet_index(tmp_path, ett_head):
    path = tmp_path / "indexed.parquet"
    ett_head.set_index("date").to_parquet(path)
    assert list(read_table(path).columns) == ["date", *ETT_COLUMNS]


# --- many short series ----------------------------------------------------------------------------
@pytest.mark.slow
def test_ten_thousand_short_series_ingest_in_seconds(tmp_path):
    """Performance sanity, not a timing assertion: the validation path is vectorised over series."""
    n_series, length = 10_000, 300
    rng = np.random.default_rng(0)
    t = pd.date_range("2024-01-01", periods=length, freq="h")
    table = pd.DataFrame(
        {
            "id": np.repeat([f"s{i:05d}" for i in range(n_series)], length),
            "t": np.tile(t, n_series),
            "y": rng.standard_normal(n_series * length),
        }
    )
    path = tmp_path / "many.parquet"
    table.to_parquet(path)
    start = time.perf_counter()
    result = ingest(DataConfig(path=path, id_column="id"))
    elapsed = time.perf_counter() - start
    assert result.summary()["series"] == n_series and len(result.frame) == n_series * length
    print(f"ingest of {n_series} series x {length} rows: {elapsed:.1f} s")  # seconds, not minutes


# --- validation in chunks of series (the Dask path, here with an in-process map) ----------------
def _messy_long_table(ett_head: pd.DataFrame, n_series: int = 7) -> pd.DataFrame:
    """``n_series`` series (ids out of order, rows interleaved by time) with every kind of repair
    spread over them: exact duplicate rows, rows out of time order, leading NaN targets, missing
    timestamps and missing values in the target and the covariate."""
    parts = []
    for k in range(n_series):
        part = pd.DataFrame(
            {
                "id": f"s{(k * 3) % n_series}",
                "date": ett_head["date"].iloc[:120],
                "value": ett_head["OT"].iloc[:120] + k,
                "load": ett_head["MULL"].iloc[:120],
            }
        )
        if k % 2 == 0:
            part = part.drop(part.index[[30, 31]])  # two missing hours
        if k % 3 == 0:
            part.loc[part.index[:2], "value"] = np.nan  # leading rows without a target
            part.loc[part.index[50], "load"] = np.nan
        if k in (1, 4):
            part = pd.concat([part, part.iloc[[10, 20]]])  # exact duplicates
            part.loc[part.index[60], "value"] = np.nan
        if k == 5:
            part = part.iloc[np.r_[0:40, 41, 40, 42 : len(part)]]  # one row out of order
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    return table.iloc[np.argsort(np.arange(len(table)) % 120, kind="stable")]  # interleaved


def _in_chunks(size: int, calls: list[int] | None = None):
    """A ``cluster`` for ``ingest`` that runs the chunks here, one after another (``local_map``)."""
    import contextlib

    from forecasting.partition import local_map

    def run(fn, items, *args):
        for out in local_map(fn, items, *args):
            if calls is not None:
                calls.append(1)
            yield out

    return {"cluster": lambda: contextlib.nullcontext(run), "chunk_series": size}


def test_validation_in_chunks_of_series_gives_the_one_process_result(tmp_path, ett_head):
    path = tmp_path / "messy.csv"
    _messy_long_table(ett_head).to_csv(path, index=False)
    policy = RepairPolicy(sort=True, drop_duplicates=True, fill_gaps="interpolate", max_gap=2, trim_nan=True)
    cfg = long_config(path, repair=policy)
    whole = ingest(cfg)
    calls: list[int] = []
    chunked = ingest(cfg, **_in_chunks(2, calls))
    assert len(calls) == 4  # 7 series in chunks of 2
    pd.testing.assert_frame_equal(chunked.frame, whole.frame)
    assert (chunked.freq, chunked.dataset_hash) == (whole.freq, whole.dataset_hash)
    assert chunked.report.to_dict() == whole.report.to_dict()
    counts = whole.report.counts
    assert set(counts) == {
        "dropped_duplicate_rows",
        "sorted_rows",
        "trimmed_nan_rows",
        "filled_gap_steps",
        "filled_missing_values",
    }
    assert counts["dropped_duplicate_rows"] == 4 and counts["filled_gap_steps"] == 8
    # notes name the file's rows (data rows from 0), not a chunk's
    dupes = next(n for n in chunked.report.notes if n.startswith("dropped_duplicate_rows"))
    raw = pd.read_csv(path)
    listed = [int(r) for r in dupes.split("rows ")[1].rstrip(")").split(", ")]
    repeats = raw.duplicated(keep="first").to_numpy()
    assert repeats[listed].all() and len(listed) == 4
    assert "8 missing timestamp(s) in 4 series inserted" in " ".join(chunked.report.notes)


def test_a_bad_row_in_a_later_chunk_is_refused_as_the_whole_table_refuses_it(tmp_path, ett_head):
    table = _messy_long_table(ett_head)
    table.loc[table.index[(table["id"] == "s6").to_numpy()][40], "value"] = np.nan  # s6: a later chunk
    table.loc[table.index[(table["id"] == "s1").to_numpy()][70], "load"] = np.inf
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    cfg = long_config(path, repair=RepairPolicy(sort=True, drop_duplicates=True))
    with pytest.raises(InputValidationError) as whole:
        ingest(cfg)
    with pytest.raises(InputValidationError) as chunked:
        ingest(cfg, **_in_chunks(2))
    assert type(chunked.value) is type(whole.value) and str(chunked.value) == str(whole.value)


def test_chunks_that_disagree_on_the_interval_give_the_whole_tables_answer(tmp_path, ett_head):
    """Series s3, s5 and s6 every two hours, the rest hourly, a chunk per series: each chunk is
    valid on its own (1 h or 2 h); the whole table infers 1 h and refuses the two-hourly series'
    gaps, and so does the validation in chunks (the whole table validated again here)."""
    table = _messy_long_table(ett_head)
    two_hourly = table["id"].isin(["s3", "s5", "s6"]) & (pd.to_datetime(table["date"]).dt.hour % 2 == 1)
    path = tmp_path / "mixed.csv"
    table[~two_hourly].to_csv(path, index=False)
    policy = RepairPolicy(sort=True, drop_duplicates=True, fill_gaps="interpolate", max_gap=2, trim_nan=True)
    cfg = long_config(path, repair=policy)
    with pytest.raises(GapError) as whole:
        ingest(cfg)
    calls: list[int] = []
    with pytest.raises(GapError) as chunked:
        ingest(cfg, **_in_chunks(1, calls))
    assert len(calls) == 7 and str(chunked.value) == str(whole.value)
    assert "on the h grid" in str(whole.value)


def _two_series(tmp_path, a: list[str], b: list[str], values=None) -> Path:
    """Series 'a' and 'b' with the given timestamps (text) and a varying target."""
    table = pd.DataFrame(
        {
            "id": ["a"] * len(a) + ["b"] * len(b),
            "date": a + b,
            "value": np.arange(len(a) + len(b), dtype=float) % 7,
            "load": 1.0,
        }
    )
    path = tmp_path / "two.csv"
    table.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # a's format is month first: b's first day, 13, is no month
        (
            [f"01/{d:02d}/2024 00:00" for d in range(1, 11)],
            [f"{d:02d}/01/2024 00:00" for d in range(13, 23)],
        ),
        # a without a zone, b with one
        (
            [f"2024-01-{d:02d} 00:00" for d in range(1, 11)],
            [f"2024-01-{d:02d} 00:00+02:00" for d in range(1, 11)],
        ),
        # two UTC offsets and no data.timezone
        (
            [f"2024-01-{d:02d} 00:00+01:00" for d in range(1, 11)],
            [f"2024-01-{d:02d} 00:00+02:00" for d in range(1, 11)],
        ),
    ],
    ids=["formats", "zone-and-none", "two-offsets"],
)
def test_timestamps_are_checked_across_chunks_as_across_the_table(tmp_path, a, b):
    """Each series is valid alone; together they mix formats or zones. A chunk a series refuses
    the table as the whole table does."""
    cfg = long_config(_two_series(tmp_path, a, b))
    with pytest.raises(InputValidationError) as whole:
        ingest(cfg)
    with pytest.raises(InputValidationError) as chunked:
        ingest(cfg, **_in_chunks(1))
    assert type(chunked.value) is type(whole.value) and str(chunked.value) == str(whole.value)


def test_the_table_interval_comes_from_its_first_series_across_chunks(tmp_path):
    """Weekly: 'a' whole, 'b' with a missing week. Alone, each chunk reads 7 days; the table reads
    the first series' calendar offset (W-SUN), and so does the validation in chunks."""
    weeks = pd.date_range("2024-01-07", periods=12, freq="W-SUN").strftime("%Y-%m-%d").tolist()
    cfg = long_config(
        _two_series(tmp_path, weeks, weeks[:5] + weeks[6:]),
        repair=RepairPolicy(fill_gaps="interpolate", max_gap=1),
    )
    whole = ingest(cfg)
    chunked = ingest(cfg, **_in_chunks(1))
    assert whole.freq == chunked.freq == "W-SUN"
    pd.testing.assert_frame_equal(chunked.frame, whole.frame)
    assert chunked.report == whole.report and chunked.report.counts == {"filled_gap_steps": 1}
