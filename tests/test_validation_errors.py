"""Every way the input can be wrong raises a named ``InputValidationError`` subclass whose message
names the column, the series and the first offending rows or timestamps.

Most cases take ETTh1's first 300 rows, break one thing, and write the file to ``tmp_path``. Row
numbers count data rows from 0; ETTh1's row k is 2016-07-01 00:00 plus k hours.
"""

from __future__ import annotations

import gzip
import inspect
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forecasting import errors
from forecasting.cli import main
from forecasting.config import (
    DataConfig,
    RepairPolicy,
    SplitConfig,
    WindowConfig,
    config_from_dict,
    load_config,
)
from forecasting.data.ingest import WIDE_HEADER, ingest, prepare_frame, read_table
from forecasting.data.splits import split_borders, split_frame
from forecasting.errors import (
    ConfigError,
    ConstantSeriesError,
    CovariateNotFoundError,
    DSTTransitionError,
    DuplicateColumnError,
    DuplicateTimestampError,
    EmptyDataError,
    FrequencyMismatchError,
    GapError,
    InputValidationError,
    IrregularSamplingError,
    MissingColumnError,
    MissingValueError,
    MixedSeriesError,
    MixedTimezoneError,
    NonFiniteValueError,
    NonNumericValueError,
    SeriesTooShortError,
    StaticCovariateError,
    TimestampParseError,
    UnreadableFileError,
    UnsortedTimestampsError,
    ValueOutOfRangeError,
)

ETTH1 = Path(__file__).resolve().parents[1] / "data" / "ETTh1.csv"
DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
COLUMNS = ["date", "HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]


def stamp(row: int) -> str:
    """ETTh1's timestamp of data row ``row``."""
    return str(pd.Timestamp("2016-07-01") + pd.Timedelta(hours=row))


@pytest.fixture(scope="module")
def lines() -> list[str]:
    """Header and the first 300 data rows of ETTh1, as text lines."""
    with ETTH1.open() as fh:
        return [next(fh).rstrip("\n") for _ in range(301)]


def write(tmp_path: Path, lines: list[str], name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def set_cell(lines: list[str], row: int, column: str, value: str) -> list[str]:
    """A copy of ``lines`` with data row ``row``, ``column`` set to ``value``."""
    out = list(lines)
    cells = out[row + 1].split(",")
    cells[COLUMNS.index(column)] = value
    out[row + 1] = ",".join(cells)
    return out


def cfg(path: Path, **kw) -> DataConfig:
    kw.setdefault("target", "OT")
    return DataConfig(path=path, time_column="date", **kw)


def raises(error: type[Exception], path: Path, config: DataConfig | None = None, **kw) -> str:
    """Ingest ``path`` expecting exactly ``error``; return its message."""
    with pytest.raises(error) as info:
        ingest(config or cfg(path, **kw))
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    return str(info.value)


def test_every_validation_error_is_an_input_validation_error():
    named = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.ForecastingError)
    ]
    other = tuple(_NOT_INPUT - {errors.ForecastingError})  # and their subclasses
    data_errors = [
        c for c in named if c.__name__.endswith("Error") and c not in _NOT_INPUT and not issubclass(c, other)
    ]
    assert all(issubclass(c, InputValidationError) for c in data_errors)


_NOT_INPUT = {
    errors.ForecastingError,
    errors.NotFittedError,
    errors.TrainingDivergedError,
    errors.ModelLoadError,
    errors.TrackingError,
    errors.NonFiniteForecastError,
    errors.ArchiveError,  # the archive's database failed (or is misnamed): not the data
}


# --- files and columns ----------------------------------------------------------------------------
def test_missing_file(tmp_path):
    msg = raises(UnreadableFileError, tmp_path / "nope.csv")
    assert "nope.csv" in msg and "does not exist" in msg


def test_unknown_file_format(tmp_path, lines):
    msg = raises(UnreadableFileError, write(tmp_path, lines, "data.xlsx"))
    assert "data.xlsx" in msg and "data.format" in msg


def test_binary_garbage_csv(tmp_path):
    path = tmp_path / "garbage.csv"
    path.write_bytes(bytes(range(128, 256)) * 10)
    assert "garbage.csv" in raises(UnreadableFileError, path)


def test_corrupt_parquet(tmp_path, lines):
    path = write(tmp_path, lines, "data.parquet")  # CSV text under a Parquet name
    msg = raises(UnreadableFileError, path)
    assert "data.parquet" in msg and "Parquet" in msg


def test_ragged_csv(tmp_path, lines):
    path = write(tmp_path, [*lines[:50], lines[50] + ",1,2,3", *lines[51:]])
    assert "CSV" in raises(UnreadableFileError, path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    msg = raises(EmptyDataError, path)
    assert "empty.csv" in msg and "0 bytes" in msg


def test_header_without_rows(tmp_path, lines):
    assert "no data rows" in raises(EmptyDataError, write(tmp_path, lines[:1]))


def test_missing_target_column(tmp_path, lines):
    msg = raises(MissingColumnError, write(tmp_path, lines), target="Temp")
    assert "'Temp' not found" in msg and "8 column(s)" in msg
    assert "HUFL" not in msg  # the header is never quoted, only the names the config gives


def test_missing_column_differing_only_in_case(tmp_path, lines):
    msg = raises(MissingColumnError, write(tmp_path, lines), target="ot")
    assert "'ot' not found" in msg and "'OT' differ(s) only in case" in msg and "HUFL" not in msg


@pytest.mark.parametrize("fmt", ["csv", "auto"])
def test_a_file_that_is_not_a_table_is_never_quoted(tmp_path, fmt):
    """``data.path: /etc/passwd`` with ``format: csv``: the 'header' is the file's first line."""
    path = tmp_path / ("passwd" if fmt == "csv" else "passwd.csv")
    path.write_text("root:x:0:0:SECRET-TOKEN:/root:/bin/bash\ndaemon:x:1:1:OTHER-SECRET\n")
    msg = raises(MissingColumnError, path, format=fmt)
    assert "SECRET" not in msg and "root:x" not in msg and "daemon" not in msg
    assert "'date', 'OT' not found" in msg and "1 column(s)" in msg


def test_covariate_not_found_does_not_quote_the_header(tmp_path, lines):
    msg = raises(CovariateNotFoundError, write(tmp_path, lines), covariates={"Temp": "past"})
    assert "'Temp' (past)" in msg and "HUFL" not in msg and "8 column(s)" in msg


def test_duplicate_columns_not_in_the_config_are_counted_not_quoted(tmp_path, lines):
    path = write(tmp_path, [lines[0].replace("LULL", "SECRET").replace("HUFL", "SECRET"), *lines[1:]])
    msg = raises(DuplicateColumnError, path)
    assert "SECRET" not in msg and "1 column name(s) not named in the config" in msg


def test_a_gzip_error_does_not_quote_the_bytes(tmp_path):
    path = tmp_path / "data.csv.gz"
    path.write_text("SECRET,x\n1,2\n")
    msg = raises(UnreadableFileError, path)
    assert "SECRET" not in msg and "SE" not in msg.replace(str(path), "") and "not a gzip file" in msg


# --- files the operating system refuses -------------------------------------------------------------
def test_a_folder_as_data_path(tmp_path):
    msg = raises(UnreadableFileError, tmp_path)
    assert str(tmp_path) in msg and "is a folder" in msg


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_as_data_path_is_refused_before_reading(device):
    if not Path(device).exists():
        pytest.skip(f"no {device} here")
    msg = raises(UnreadableFileError, Path(device), format="csv")
    assert device in msg and "not a regular file" in msg


def test_a_pipe_as_data_path_does_not_block(tmp_path):
    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes
    msg = raises(UnreadableFileError, fifo)
    assert str(fifo) in msg and "not a regular file" in msg


def test_a_path_under_a_file(tmp_path, lines):
    path = write(tmp_path, lines) / "data.csv"
    assert "does not exist" in raises(UnreadableFileError, path)


def test_a_refused_open_is_named_with_the_path(tmp_path, lines, monkeypatch):
    """What a file without read permission gives a user who is not root (see the next test)."""
    path = write(tmp_path, lines)

    def refused(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refused)
    msg = raises(UnreadableFileError, path)
    assert msg == f"data file {str(path)!r} cannot be read: Permission denied"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permission bits")
def test_an_unreadable_data_file(tmp_path, lines):
    path = write(tmp_path, lines)
    path.chmod(0)
    try:
        msg = raises(UnreadableFileError, path)
    finally:
        path.chmod(0o600)
    assert str(path) in msg and "Permission denied" in msg


def test_duplicate_csv_columns(tmp_path, lines):
    path = write(tmp_path, [lines[0].replace("LULL", "OT"), *lines[1:]])
    msg = raises(DuplicateColumnError, path)
    assert "column 'OT' appears more than once" in msg


def test_duplicate_parquet_columns(tmp_path):
    table = pa.table([pa.array(["2024-01-01"]), pa.array([1.0]), pa.array([2.0])], names=["date", "OT", "OT"])
    path = tmp_path / "dup.parquet"
    pq.write_table(table, path)
    assert "column 'OT' appears more than once" in raises(DuplicateColumnError, path)


def test_declared_covariate_absent(tmp_path, lines):
    msg = raises(
        CovariateNotFoundError, write(tmp_path, lines), covariates={"HUFL": "past", "Temp": "future"}
    )
    assert "covariate 'Temp' (future)" in msg and "data.covariates" in msg


def test_covariate_with_a_reserved_name(tmp_path, lines):
    path = write(tmp_path, [lines[0].replace("HUFL", "y"), *lines[1:]])
    assert "covariate 'y'" in raises(ConfigError, path, covariates={"y": "past"})


def test_empty_series_id(tmp_path):
    path = tmp_path / "long.csv"
    t = pd.date_range("2024-01-01", periods=6, freq="h").astype(str)
    pd.DataFrame({"id": ["a", "a", None, "a", "a", "a"], "t": t, "y": np.arange(6.0)}).to_csv(
        path, index=False
    )
    msg = raises(MissingValueError, path, DataConfig(path=path, id_column="id"))
    assert "column 'id' (the series id)" in msg and "row 2" in msg


# --- timestamps -----------------------------------------------------------------------------------
def test_unparseable_timestamp(tmp_path, lines):
    msg = raises(TimestampParseError, write(tmp_path, set_cell(lines, 37, "date", "not a date")))
    assert "column 'date'" in msg and "row 37 (text of 10 characters)" in msg and "not a date" not in msg


def test_mixed_timestamp_formats(tmp_path, lines):
    msg = raises(TimestampParseError, write(tmp_path, set_cell(lines, 25, "date", "07/02/2016 01:00")))
    assert "column 'date' mixes timestamp formats: row 25 are not in the format of row 0" in msg
    assert "07/02" not in msg and stamp(0) not in msg  # neither cell is quoted


def test_empty_timestamp(tmp_path, lines):
    msg = raises(TimestampParseError, write(tmp_path, set_cell(lines, 12, "date", "")))
    assert "column 'date' has empty timestamps in 1 row(s): row 12" in msg


def test_numbers_as_timestamps(tmp_path):
    path = tmp_path / "epoch.csv"
    pd.DataFrame({"date": np.arange(10) * 3600, "OT": np.arange(10.0)}).to_csv(path, index=False)
    msg = raises(TimestampParseError, path)
    assert "column 'date' holds numbers, not timestamps" in msg and "3600" not in msg


def test_timestamps_with_and_without_zone(tmp_path, lines):
    broken = set_cell(lines, 40, "date", stamp(40) + "+02:00")
    msg = raises(MixedTimezoneError, write(tmp_path, broken))
    assert "column 'date' mixes timestamps with and without a time zone" in msg
    assert "row 40 (with a zone)" in msg and "+02:00" not in msg


def test_mixed_utc_offsets(tmp_path, lines):
    aware = [lines[0]] + [line.replace(",", "+01:00,", 1) for line in lines[1:]]
    msg = raises(MixedTimezoneError, write(tmp_path, set_cell(aware, 77, "date", stamp(77) + "+02:00")))
    assert "mixes UTC offsets ['+0100', '+0200']" in msg and "row 77 (offset +0200)" in msg
    assert "data.timezone" in msg and stamp(77) not in msg


def _local_clock(tmp_path: Path, stamps: list[str]) -> Path:
    path = tmp_path / "local.csv"
    pd.DataFrame({"date": stamps, "OT": np.arange(float(len(stamps)))}).to_csv(path, index=False)
    return path


def test_ambiguous_local_times(tmp_path):
    # Berlin clocks go back at 03:00 on 2021-10-31: 02:00-02:59 happens twice.
    stamps = [str(t) for t in pd.date_range("2021-10-30 22:00", "2021-10-31 05:00", freq="h")]
    msg = raises(DSTTransitionError, _local_clock(tmp_path, stamps), timezone="Europe/Berlin")
    assert "column 'date'" in msg and "Europe/Berlin" in msg
    assert "row 4 (t=2021-10-31 02:00:00, ambiguous)" in msg


def test_non_existent_local_times(tmp_path):
    # Berlin clocks go forward at 02:00 on 2021-03-28: 02:30 never happens.
    stamps = [str(t) for t in pd.date_range("2021-03-27 23:30", "2021-03-28 04:30", freq="h")]
    msg = raises(DSTTransitionError, _local_clock(tmp_path, stamps), timezone="Europe/Berlin")
    assert "row 3 (t=2021-03-28 02:30:00, non-existent)" in msg


def test_unknown_time_zone(tmp_path, lines):
    assert "data.timezone 'Mars/Olympus'" in raises(
        ConfigError, write(tmp_path, lines), timezone="Mars/Olympus"
    )


# --- duplicates, order, grid ----------------------------------------------------------------------
def test_conflicting_duplicate_timestamps(tmp_path, lines):
    path = write(tmp_path, set_cell(lines, 11, "date", stamp(10)))  # row 11 says 10:00 too
    msg = raises(DuplicateTimestampError, path, repair=RepairPolicy(drop_duplicates=True, sort=True))
    assert f"column 'date' of series 'OT': timestamp {stamp(10)} appears in rows 10, 11 with different" in msg


def test_exact_duplicate_rows_need_the_policy(tmp_path, lines):
    msg = raises(DuplicateTimestampError, write(tmp_path, [*lines[:61], lines[60], *lines[61:]]))
    assert f"row 60 (= row 59, t={stamp(59)})" in msg and "drop_duplicates" in msg


def test_unsorted_rows_need_the_policy(tmp_path, lines):
    swapped = [*lines[:6], lines[7], lines[6], *lines[8:]]  # data rows 5 and 6 swapped
    msg = raises(UnsortedTimestampsError, write(tmp_path, swapped))
    assert f"column 'date' of series 'OT': time goes backwards at row 6 ({stamp(5)} after {stamp(6)})" in msg
    assert "data.repair.sort" in msg


def test_timestamp_off_the_grid(tmp_path, lines):
    path = write(tmp_path, set_cell(lines, 123, "date", stamp(123).replace(":00:00", ":30:00")))
    msg = raises(IrregularSamplingError, path)
    assert "column 'date' of series 'OT'" in msg and "off the h sampling grid" in msg
    assert "row 123 (2016-07-06 03:30:00)" in msg


def test_no_regular_sampling_interval(tmp_path):
    rng = np.random.default_rng(0)
    t = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.cumsum(rng.integers(1, 600, 50)), unit="min")
    path = tmp_path / "irregular.csv"
    pd.DataFrame({"date": t.astype(str), "OT": rng.standard_normal(50)}).to_csv(path, index=False)
    msg = raises(IrregularSamplingError, path)
    assert "column 'date': no regular sampling interval" in msg and "data.freq" in msg


@pytest.mark.parametrize("freq", ["30min", "D"])
def test_declared_frequency_does_not_match(tmp_path, lines, freq):
    msg = raises(FrequencyMismatchError, write(tmp_path, lines), freq=freq)
    assert f"data.freq is {freq!r}" in msg and "column 'date' steps by 0 days 01:00:00 in 100%" in msg
    assert f"series 'OT', rows 0 -> 1: {stamp(0)} -> {stamp(1)}" in msg


def test_declared_calendar_frequency_does_not_match(tmp_path, lines):
    msg = raises(FrequencyMismatchError, write(tmp_path, lines), freq="MS")
    assert "data.freq is 'MS'" in msg and "series 'OT'" in msg and f"row 1 ({stamp(1)})" in msg


def test_gap(tmp_path, lines):
    path = write(tmp_path, [*lines[:201], *lines[204:]])  # data rows 200-202 missing
    msg = raises(GapError, path)
    assert f"column 'date' of series 'OT': 3 missing timestamp(s) on the h grid, first at {stamp(200)}" in msg
    assert "(3 steps missing after row 199)" in msg and "fill_gaps" in msg


def test_gap_longer_than_max_gap(tmp_path, lines):
    path = write(tmp_path, [*lines[:201], *lines[204:]])
    msg = raises(GapError, path, repair=RepairPolicy(fill_gaps="interpolate", max_gap=2))
    assert f"first at {stamp(200)}" in msg and "max_gap=2" in msg


def test_several_series_mixed_without_an_id_column(tmp_path, lines):
    other = [line.rsplit(",", 1)[0] + ",1.5" for line in lines[1:]]
    msg = raises(MixedSeriesError, write(tmp_path, [*lines, *other]))
    assert f"most timestamps appear 2 times with different values (e.g. {stamp(0)} in rows 0, 300)" in msg
    assert "column 'OT'" in msg and "data.id_column" in msg


# --- values ---------------------------------------------------------------------------------------
def test_nan_in_the_target(tmp_path, lines):
    msg = raises(MissingValueError, write(tmp_path, set_cell(lines, 150, "OT", "")))
    assert "column 'OT' (the target) of series 'OT' is empty (NaN) in 1 row(s)" in msg
    assert f"row 150 (t={stamp(150)})" in msg


def test_nan_in_a_covariate(tmp_path, lines):
    msg = raises(
        MissingValueError, write(tmp_path, set_cell(lines, 8, "HUFL", "")), covariates={"HUFL": "past"}
    )
    assert "column 'HUFL' (past covariate) of series 'OT'" in msg and f"row 8 (t={stamp(8)})" in msg


def test_nan_run_longer_than_max_gap(tmp_path, lines):
    broken = lines
    for row in (90, 91, 92):
        broken = set_cell(broken, row, "OT", "")
    msg = raises(
        MissingValueError, write(tmp_path, broken), repair=RepairPolicy(fill_gaps="ffill", max_gap=2)
    )
    assert "row 90" in msg and "row 92" in msg and "max_gap=2" in msg


def test_all_nan_series_with_trim(tmp_path, lines):
    broken = lines
    for row in range(300):
        broken = set_cell(broken, row, "OT", "")
    msg = raises(MissingValueError, write(tmp_path, broken), repair=RepairPolicy(trim_nan=True))
    assert "series 'OT'" in msg and "every row" in msg


@pytest.mark.parametrize(("column", "value"), [("OT", "1e308"), ("HUFL", "-3.5e38"), ("OT", "1.0000001e30")])
def test_value_that_would_overflow(tmp_path, lines, column, value):
    """Beyond 1e30 a value overflows float32 or the scaler's squares: named at ingest, not 40 s
    into training as ~70 RuntimeWarnings."""
    path = write(tmp_path, set_cell(lines, 299, column, value))
    msg = raises(ValueOutOfRangeError, path, covariates={"HUFL": "past"})
    assert f"column {column!r} of series 'OT' holds values beyond +/-1e+30 in 1 row(s)" in msg
    assert f"row 299 (t={stamp(299)})" in msg and value not in msg  # where, not the file's cells


def test_values_up_to_the_bound_pass(tmp_path, lines):
    path = write(tmp_path, set_cell(set_cell(lines, 299, "OT", "1e30"), 3, "HUFL", "-1e30"))
    assert len(ingest(cfg(path, covariates={"HUFL": "past"})).frame) == 300


def test_value_out_of_range_in_one_series_of_a_long_table(tmp_path):
    path = tmp_path / "long.csv"
    t = pd.date_range("2024-01-01", periods=5, freq="h").astype(str)
    frame = pd.DataFrame({"id": np.repeat(["a", "b"], 5), "t": np.tile(t, 2), "y": np.arange(10.0)})
    frame.loc[[8, 9], "y"] = [1e31, -1e300]
    frame.to_csv(path, index=False)
    msg = raises(ValueOutOfRangeError, path, DataConfig(path=path, id_column="id"))
    assert "column 'y'" in msg and "in 2 row(s)" in msg and "row 8 (series 'b'" in msg and "row 9" in msg


@pytest.mark.parametrize(("column", "value"), [("OT", "inf"), ("HUFL", "-inf")])
def test_infinite_value(tmp_path, lines, column, value):
    path = write(tmp_path, set_cell(lines, 222, column, value))
    msg = raises(NonFiniteValueError, path, covariates={"HUFL": "past"})
    assert f"column {column!r} of series 'OT' holds infinite values in 1 row(s)" in msg
    assert f"row 222 (t={stamp(222)}, {'-' if value.startswith('-') else '+'}inf)" in msg


def test_infinite_value_in_a_wide_target(tmp_path, lines):
    path = write(tmp_path, set_cell(lines, 5, "MULL", "-inf"))
    msg = raises(NonFiniteValueError, path, target=["HUFL", "MULL", "OT"])
    assert "column 'MULL' of series 'MULL'" in msg and "row 5" in msg


def test_infinite_value_in_one_series_of_a_long_table(tmp_path):
    path = tmp_path / "long.csv"
    t = pd.date_range("2024-01-01", periods=5, freq="h").astype(str)
    frame = pd.DataFrame({"id": np.repeat(["a", "b"], 5), "t": np.tile(t, 2), "y": np.arange(10.0)})
    frame.loc[7, "y"] = np.inf
    frame.to_csv(path, index=False)
    msg = raises(NonFiniteValueError, path, DataConfig(path=path, id_column="id"))
    assert "column 'y'" in msg and "row 7 (series 'b', t=2024-01-01 02:00:00, +inf)" in msg


@pytest.mark.parametrize("column", ["OT", "HUFL"])
def test_text_in_a_numeric_column(tmp_path, lines, column):
    path = write(tmp_path, set_cell(lines, 64, column, "n/a?"))
    msg = raises(NonNumericValueError, path, covariates={"HUFL": "future"})
    assert f"column {column!r} of series 'OT' must be numeric" in msg
    assert f"row 64 (t={stamp(64)}, text of 4 characters)" in msg and "n/a?" not in msg


def test_constant_series(tmp_path, lines):
    flat = lines
    for row in range(300):
        flat = set_cell(flat, row, "OT", "21.5")
    msg = raises(ConstantSeriesError, write(tmp_path, flat))
    assert "column 'OT' (the target) of series 'OT' never changes: it holds one value in all 300 rows" in msg
    assert "21.5" not in msg


def test_single_row_series(tmp_path):
    path = tmp_path / "long.csv"
    t = pd.date_range("2024-01-01", periods=4, freq="h").astype(str)
    pd.DataFrame({"id": ["a", "a", "a", "b"], "t": t, "y": [1.0, 2.0, 3.0, 4.0]}).to_csv(path, index=False)
    assert "series 'b' has a single row" in raises(
        SeriesTooShortError, path, DataConfig(path=path, id_column="id")
    )


def test_static_covariate_that_changes(tmp_path):
    path = tmp_path / "long.csv"
    t = pd.date_range("2024-01-01", periods=5, freq="h").astype(str)
    frame = pd.DataFrame(
        {
            "id": np.repeat(["a", "b"], 5),
            "t": np.tile(t, 2),
            "y": np.arange(10.0),
            "site": np.repeat([1.0, 2.0], 5),
        }
    )
    frame.loc[7, "site"] = 9.0
    frame.to_csv(path, index=False)
    msg = raises(
        StaticCovariateError, path, DataConfig(path=path, id_column="id", covariates={"site": "static"})
    )
    assert (
        "static covariate 'site' of series 'b' changes over time: row 7 differ from the series' first row 5"
        in msg
    )
    assert "9.0" not in msg and "2.0" not in msg


def test_series_too_short_for_the_split(etth1_path):
    frame = ingest(cfg(etth1_path)).frame.head(5000)
    split = SplitConfig(method="borders", borders=(8640, 11520, 14400))
    with pytest.raises(SeriesTooShortError) as info:
        split_frame(frame, split, WindowConfig(lookback=96, horizon=96))
    assert "'OT' (5000 rows)" in str(info.value) and "at least 14400 rows" in str(info.value)


def test_series_too_short_for_lookback_and_horizon():
    lengths = pd.Series([1000, 300, 900], index=["long", "short", "shorter"])
    with pytest.raises(SeriesTooShortError) as info:
        split_borders(lengths, SplitConfig(), WindowConfig(lookback=96, horizon=96))
    msg = str(info.value)
    assert "2 series too short for lookback 96 and horizon 96" in msg
    assert "'short' (300 rows), 'shorter' (900 rows)" in msg and "at least 944 rows" in msg


# --- configuration --------------------------------------------------------------------------------
def test_unknown_config_key():
    raw = {"data": {"path": "data/ETTh1.csv", "target": "OT", "time_colum": "date"}}
    with pytest.raises(ConfigError, match=re.escape("unknown key 'data.time_colum'")):
        config_from_dict(raw)


def test_unknown_config_key_in_a_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("data:\n  path: data.csv\n  repair:\n    fill_gap: ffill\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "config.yaml" in str(info.value) and "unknown key 'data.repair.fill_gap'" in str(info.value)


def test_prepare_frame_on_an_empty_frame():
    with pytest.raises(EmptyDataError):
        prepare_frame(pd.DataFrame({"t": [], "y": []}), DataConfig(path="x.csv"))


# --- bytes and sizes a table should not have (the README's bad-input table) ------------------------
# Each is read through ``ingest`` (what ``forecast validate`` runs) or the CLI itself; none may reach
# a user as a pandas traceback, quote the file's text, or change the file.
def _unchanged(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def validate(config: Path, *args: str, capsys) -> tuple[int, list[str]]:
    """``forecast validate CONFIG ...`` in this process: the exit status and the stderr lines."""
    code = main(["validate", str(config), *args])
    return code, capsys.readouterr().err.strip().splitlines()


def config_file(tmp_path: Path, data: Path, **extra: str) -> Path:
    """A config with only a ``data`` section: ``data`` read with ETTh1's roles (time column
    ``date``, target ``OT``, past covariate ``HUFL``), any of them replaced by ``extra``."""
    keys = {"path": str(data), "time_column": "date", "target": "OT", "covariates": "{HUFL: past}", **extra}
    text = "\n".join(["data:", *[f"  {k}: {v}" for k, v in keys.items()]])
    path = tmp_path / "config.yaml"
    path.write_text(text + "\n")
    return path


@pytest.mark.parametrize("value", ["1e308", "-1e308", "1e309", "-1e309", "-1E+400"])
@pytest.mark.parametrize(("column", "row"), [("OT", 299), ("HUFL", 3)])
def test_a_value_beyond_float_range_is_out_of_range(tmp_path, lines, value, column, row):
    """1e309 reads as infinity: it is still a number too large (ValueOutOfRangeError), not ``inf``."""
    path = write(tmp_path, set_cell(lines, row, column, value))
    before = _unchanged(path)
    msg = raises(ValueOutOfRangeError, path, covariates={"HUFL": "past"})
    assert f"column {column!r} of series 'OT' holds values beyond +/-1e+30 in 1 row(s)" in msg
    assert f"row {row} (t={stamp(row)})" in msg and value not in msg and "inf" not in msg
    assert _unchanged(path) == before


def test_a_value_beyond_float_range_in_one_series_of_a_long_table(tmp_path):
    path = tmp_path / "long.csv"
    t = pd.date_range("2024-01-01", periods=5, freq="h").astype(str)
    frame = pd.DataFrame(
        {"id": np.repeat(["a", "b"], 5), "t": np.tile(t, 2), "y": np.arange(10.0).astype(str)}
    )
    frame.loc[6, "y"] = "1e309"
    frame.to_csv(path, index=False)
    msg = raises(ValueOutOfRangeError, path, DataConfig(path=path, id_column="id"))
    assert "column 'y'" in msg and "row 6 (series 'b', t=2024-01-01 01:00:00)" in msg and "1e309" not in msg


def test_infinity_written_out_is_still_infinite(tmp_path, lines):
    path = write(tmp_path, set_cell(lines, 7, "OT", "-Infinity"))
    assert f"row 7 (t={stamp(7)}, -inf)" in raises(NonFiniteValueError, path)


def test_a_value_beyond_float_range_exits_2_in_a_fresh_process(tmp_path, lines):
    """`forecast validate` as a shell runs it: status 2, one line naming the error, the file as it was."""
    path = write(tmp_path, set_cell(lines, 120, "OT", "1e309"))
    before = _unchanged(path)
    exe = Path(sys.executable).with_name("forecast")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    proc = subprocess.run(
        [str(exe), "validate", str(config_file(tmp_path, path))],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ValueOutOfRangeError: "), err
    assert "column 'OT'" in err[0] and "row 120" in err[0] and "1e309" not in err[0]
    assert _unchanged(path) == before


def _bom_crlf(tmp_path: Path, lines: list[str], name: str = "excel.csv") -> Path:
    """What Excel's "CSV UTF-8" writes: a byte-order mark and CRLF line endings."""
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    return path


def test_a_bom_and_crlf_line_endings_are_read_as_plain_csv(tmp_path, lines):
    path = _bom_crlf(tmp_path, lines)
    plain = write(tmp_path, lines, "plain.csv")
    raw = read_table(path, columns=COLUMNS)
    assert list(raw.columns) == COLUMNS  # no BOM on 'date', no CR on 'OT'
    assert raw["date"].iloc[0] == stamp(0) and raw["date"].iloc[-1] == stamp(299)
    assert raw["OT"].dtype == np.float64 and raw["OT"].iloc[0] == float(lines[1].split(",")[-1])
    assert not raw.select_dtypes(exclude="number").apply(lambda c: c.str.contains("\r")).any().any()
    result = ingest(cfg(path, covariates={"HUFL": "past"}))
    reference = ingest(cfg(plain, covariates={"HUFL": "past"}))
    pd.testing.assert_frame_equal(result.frame, reference.frame)
    assert result.dataset_hash == reference.dataset_hash and result.freq == "h"


def test_crlf_does_not_reach_series_ids_in_the_last_column(tmp_path):
    path = tmp_path / "long.csv"
    t = pd.date_range("2024-01-01", periods=5, freq="h").astype(str)
    rows = [f"{stamp},{y}.5,{sid}" for sid in ("007", "b") for y, stamp in enumerate(t)]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(["t,y,id", *rows]).encode() + b"\r\n")
    frame = ingest(DataConfig(path=path, id_column="id")).frame
    assert frame["series_id"].unique().tolist() == ["007", "b"]
    assert frame["y"].tolist() == [0.5, 1.5, 2.5, 3.5, 4.5] * 2


def test_a_bom_and_crlf_file_validates_through_the_cli(tmp_path, capsys):
    with ETTH1.open() as fh:
        full = fh.read().splitlines()
    path = _bom_crlf(tmp_path, full)
    before = _unchanged(path)
    code, err = validate(DEMO, "--data", str(path), "--json", capsys=capsys)
    assert code == 0, err
    assert _unchanged(path) == before


def test_a_binary_file_named_csv(tmp_path):
    path = tmp_path / "model.csv"
    path.write_bytes(b"PK\x03\x04\x14\x00\x00\x00" + bytes(range(256)) * 8)  # a zip's first bytes
    msg = raises(UnreadableFileError, path)
    assert msg == (
        f"data file {str(path)!r} is not CSV text: its first line holds a NUL byte (a binary file?); "
        "give a CSV or Parquet file"
    )


def test_a_nul_byte_in_one_cell_names_the_line_and_row(tmp_path, lines):
    path = write(tmp_path, set_cell(lines, 41, "OT", "3\x007"))
    before = _unchanged(path)
    msg = raises(UnreadableFileError, path)
    assert str(path) in msg and "NUL byte at line 43 (data row 41)" in msg and "re-export" in msg
    assert _unchanged(path) == before


def test_a_nul_byte_in_a_column_the_config_does_not_use(tmp_path, lines):
    assert "data row 12" in raises(UnreadableFileError, write(tmp_path, set_cell(lines, 12, "LULL", "\x00")))


def test_a_nul_byte_in_a_gzipped_csv(tmp_path, lines):
    path = tmp_path / "data.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(set_cell(lines, 5, "OT", "\x00")) + "\n").encode()))
    assert "NUL byte at line 7 (data row 5)" in raises(UnreadableFileError, path)


def test_utf16_text_is_named(tmp_path, lines):
    path = tmp_path / "data.csv"
    path.write_bytes("\n".join(lines).encode("utf-16"))
    assert "UTF-16 text, not UTF-8" in raises(UnreadableFileError, path)


def test_a_huge_file_of_zeros_is_refused_at_once(tmp_path):
    """A regular file of zeros (a disk image, a preallocated file): refused at its first byte."""
    path = tmp_path / "zeros.csv"
    with path.open("wb") as fh:
        fh.truncate(1 << 30)  # 1 GiB, sparse: nothing is written
    start = time.perf_counter()
    assert "NUL byte" in raises(UnreadableFileError, path)
    assert time.perf_counter() - start < 5


def test_a_nul_byte_exits_2_through_the_cli(tmp_path, lines, capsys):
    path = write(tmp_path, set_cell(lines, 41, "OT", "3\x007"))
    before = _unchanged(path)
    code, err = validate(DEMO, "--data", str(path), capsys=capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: UnreadableFileError: ") and "data row 41" in err[0]
    assert "Traceback" not in err[0] and _unchanged(path) == before


def test_dev_zero_as_data_path_exits_2_at_once_in_a_fresh_process(tmp_path):
    """``data.path: /dev/zero`` never ends: it is refused by its file type, before a byte is read
    and before its name's missing suffix matters."""
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    config = config_file(tmp_path, Path("/dev/zero"))
    exe = Path(sys.executable).with_name("forecast")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    proc = subprocess.run(
        [str(exe), "validate", str(config)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: UnreadableFileError: data path '/dev/zero' is not a regular file (a device, pipe or "
        "socket); give a CSV or Parquet file"
    )


def test_dev_zero_is_refused_without_reading(monkeypatch):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    opened = []
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: opened.append(self))
    start = time.perf_counter()
    raises(UnreadableFileError, Path("/dev/zero"), format="csv")
    assert time.perf_counter() - start < 1 and opened == []


def _wide(tmp_path: Path, n_columns: int = 100_000, extra: dict[int, str] | None = None) -> Path:
    """48 hourly rows under a header of ``n_columns`` names, ``date`` first and ``OT`` last."""
    names = ["date", *[f"SECRET{i}" for i in range(n_columns - 2)], "OT"]
    t = pd.date_range("2024-01-01", periods=48, freq="h").astype(str)
    filler = ",".join(["1"] * (n_columns - 2))
    rows = [f"{t[i]},{filler},{np.sin(i):.6f}" for i in range(48)]
    for i, tail in (extra or {}).items():
        rows[i] += tail
    path = tmp_path / "wide.csv"
    path.write_text("\n".join([",".join(names), *rows]) + "\n")
    return path


def test_a_header_of_100000_columns_reads_only_the_configured_ones(tmp_path):
    path = _wide(tmp_path)
    start = time.perf_counter()
    result = ingest(cfg(path))
    assert time.perf_counter() - start < 5
    assert list(result.frame.columns) == ["series_id", "t", "y"] and len(result.frame) == 48
    np.testing.assert_allclose(result.frame["y"].to_numpy(), np.round(np.sin(np.arange(48)), 6))
    raw = read_table(path, columns=["date", "OT"])
    assert list(raw.columns) == ["date", "OT"]  # memory for two columns, not 100,000


def test_a_header_of_100000_columns_without_the_target(tmp_path, capsys):
    path = _wide(tmp_path)
    start = time.perf_counter()
    msg = raises(MissingColumnError, path, target="Temp")
    assert time.perf_counter() - start < 5
    assert "column 'Temp' not found (the data has 100000 column(s))" in msg
    assert len(msg) < 500 and "SECRET" not in msg
    before = _unchanged(path)
    code, err = validate(config_file(tmp_path, path, target="Temp", covariates="{}"), capsys=capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: MissingColumnError: "), err
    assert "'Temp' not found" in err[0] and len(err[0]) < 500 and "SECRET" not in err[0]
    assert _unchanged(path) == before


@pytest.mark.parametrize("tail", [",1", ',"1,2"'])  # no quotes: commas counted; quotes: read as CSV
def test_a_ragged_row_under_a_wide_header_is_still_refused(tmp_path, tail):
    path = _wide(tmp_path, n_columns=WIDE_HEADER + 5, extra={20: tail})
    msg = raises(UnreadableFileError, path)
    assert f"line 22 (data row 20) has {WIDE_HEADER + 6} fields, the header {WIDE_HEADER + 5}" in msg


def test_a_quoted_comma_under_a_wide_header_is_one_field(tmp_path):
    path = _wide(tmp_path, n_columns=WIDE_HEADER + 5)
    text = path.read_text().replace("\n2024-01-01 03:00:00,1,", '\n2024-01-01 03:00:00,"1,5",', 1)
    path.write_text(text)
    assert len(ingest(cfg(path)).frame) == 48
