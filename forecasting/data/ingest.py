"""Read a `<t, x, y>` table and turn it into the canonical, validated frame.

Canonical frame: one row per (series_id, t), sorted by series id then time, columns
``series_id`` (str), ``t`` (datetime64[us]; UTC when the input carried zones or ``data.timezone``
is set), ``y`` (float64), then the covariates in config order (float64). Nothing here writes
anywhere; the input file is only read. Every problem is a named ``InputValidationError`` that
says what, where and what to do. Row numbers in messages count data rows from 0 (the header is
not a row), as in ``pandas.read_csv``. Messages quote column names, series ids, row numbers and
parsed timestamps (they say where), never a cell's text: a bad cell is described ("text of 12
characters"), not echoed, since the file may hold anything.

Checks run in this order, and the first failure raises: file and header; columns; series ids;
timestamps; numeric values; duplicate timestamps (and series mixed without an id column); time
order; leading/trailing NaN (``trim_nan``); the sampling interval; the grid and its gaps; missing
values; static covariates; constant series.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import json
import re
import stat
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.errors import OutOfBoundsDatetime
from pandas.tseries.api import guess_datetime_format

from forecasting.config import DataConfig
from forecasting.data.regularity import (
    check_and_repair_grid,
    infer_step,
    listing,
    series_codes,
    stamp,
    step_of_table,
    time_us,
    trim_missing_ends,
)
from forecasting.data.repair import LISTED, RepairReport
from forecasting.data.schema import ROW, SERIES, TARGET, TIME
from forecasting.errors import (
    ConfigError,
    ConstantSeriesError,
    CovariateNotFoundError,
    DSTTransitionError,
    DuplicateColumnError,
    DuplicateTimestampError,
    EmptyDataError,
    InputValidationError,
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
    names,
)

RESERVED = (SERIES, TIME, TARGET, ROW)  # columns of the canonical frame a covariate may not take
_TZ_SUFFIX = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")
_HAS_TZ = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")
_NAN_WORDS = ["", "nan", "na", "n/a", "null", "none", "<na>"]
_INF_WORDS = ["inf", "infinity"]  # after a sign: what pandas and float() read as infinity
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")
# Headers wider than this are read column by column as configured (``usecols``): a 100,000-column
# file then costs the columns the config names, not 100,000 of them.
WIDE_HEADER = 1_000
_CHUNK = 1 << 20  # bytes read at a time when a file is scanned
# The largest magnitude a target or covariate may have. Models compute in float32 (max ~3.4e38) and
# the scaler sums squares per series in float64: 1e30 leaves both finite with room to spare.
MAX_ABS_VALUE = 1e30


@dataclass(frozen=True)
class IngestResult:
    """The validated canonical frame and what was learnt and done on the way."""

    frame: pd.DataFrame
    freq: str  # pandas offset alias of the sampling interval
    report: RepairReport
    dataset_hash: str
    past: list[str] = field(default_factory=list)
    future: list[str] = field(default_factory=list)
    static: list[str] = field(default_factory=list)

    @property
    def series_ids(self) -> list[str]:
        return list(pd.unique(self.frame[SERIES]))

    def summary(self) -> dict[str, object]:
        f = self.frame
        lengths = f.groupby(SERIES, sort=False).size()
        return {
            "series": int(lengths.size),
            "rows": len(f),
            "freq": self.freq,
            "start": str(f[TIME].min()),
            "end": str(f[TIME].max()),
            "min_length": int(lengths.min()),
            "max_length": int(lengths.max()),
            "past_covariates": self.past,
            "future_covariates": self.future,
            "static_covariates": self.static,
            "repairs": self.report.counts,
            "dataset_hash": self.dataset_hash,
        }


# --- reading -----------------------------------------------------------------------------------
def _detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix.endswith((".parquet", ".pq")):
        return "parquet"
    if suffix.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    raise UnreadableFileError(
        f"cannot tell the format of {str(path)!r} from its name; set data.format to csv or parquet"
    )


def read_table(
    path: str | Path, fmt: str = "auto", *, text_columns: Sequence[str] = (), columns: Sequence[str] = ()
) -> pd.DataFrame:
    """Read CSV or Parquet into a frame, checking the file and its header. Never writes.

    ``text_columns`` are read from CSV as text, so that ids such as ``007`` keep their zeros.
    ``columns`` are the column names the caller configured: messages quote those, never other
    header text (the file may be anything, e.g. ``/etc/passwd`` read as CSV). Of a CSV header
    wider than ``WIDE_HEADER`` only those columns are read (see ``_read_csv``).
    """
    path = Path(path)
    _check_regular_file(path)
    kind = _detect_format(path, fmt)
    if kind == "csv":
        _check_no_nul(path)
        header = _csv_header(path)
        _check_duplicate_columns(header, path, [*columns, *text_columns])
        frame = _read_csv(path, header, columns, text_columns)
    else:
        try:
            import pyarrow.parquet as pq

            schema_names = list(pq.read_schema(path).names)
            _check_duplicate_columns(schema_names, path, [*columns, *text_columns])
            selected = _parquet_columns(schema_names, [*columns, *text_columns])
            frame = pd.read_parquet(path, columns=selected)
            if selected is not None:
                frame.attrs["columns_in_file"] = len(schema_names)
        except DuplicateColumnError:
            raise
        except Exception as err:  # pyarrow raises many unrelated types for a bad file
            raise UnreadableFileError(f"cannot read {str(path)!r} as Parquet: {err}") from None
        frame = frame.reset_index(drop=not _has_named_index(frame))
    if frame.empty:
        raise EmptyDataError(f"data file {str(path)!r} has a header but no data rows")
    return frame


def _parquet_columns(names: list[str], wanted: Sequence[str]) -> list[str] | None:
    """The columns of a Parquet file worth reading: the configured ones and any that differ from
    one only in case (so that messages can name them), or every column when nothing is configured.
    Parquet stores columns apart, so the others are never read (a wide file costs what it uses)."""
    if not wanted:
        return None
    folded = {c.casefold() for c in wanted}
    return [c for c in names if c in wanted or c.casefold() in folded] or names[:1]


def _check_regular_file(path: Path) -> None:
    """A readable, non-empty regular file, or a named error with the path.

    Devices, pipes and sockets are refused before anything is read: ``/dev/zero`` never ends and
    a pipe may block forever.
    """
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise UnreadableFileError(f"data file {str(path)!r} does not exist") from None
    except OSError as err:
        raise UnreadableFileError(f"data file {str(path)!r} cannot be read: {_reason(err)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UnreadableFileError(f"data path {str(path)!r} is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableFileError(
            f"data path {str(path)!r} is not a regular file (a device, pipe or socket); give a CSV "
            "or Parquet file"
        )
    if info.st_size == 0:
        raise EmptyDataError(f"data file {str(path)!r} is empty (0 bytes)")
    try:
        with path.open("rb"):
            pass
    except OSError as err:
        raise UnreadableFileError(f"data file {str(path)!r} cannot be read: {_reason(err)}") from None


def _check_no_nul(path: Path) -> None:
    """NUL bytes are never CSV text: a binary file, UTF-16 text, or a block of zeros left by a crash.

    One pass over the bytes, a megabyte at a time; for ``/dev/zero``-like files it stops at once.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    line, utf16 = 1, False
    try:
        with opener(path, "rb") as fh:
            first = True
            while chunk := fh.read(_CHUNK):
                if first:
                    utf16, first = chunk.startswith((b"\xff\xfe", b"\xfe\xff")), False
                at = chunk.find(b"\0")
                if at >= 0:
                    line += chunk.count(b"\n", 0, at)
                    break
                line += chunk.count(b"\n")
            else:
                return
    except (OSError, EOFError, zlib.error):
        return  # not gzip, truncated...: reading the header names what is wrong
    if utf16:
        raise UnreadableFileError(f"data file {str(path)!r} is UTF-16 text, not UTF-8: save it as UTF-8 CSV")
    if line == 1:
        raise UnreadableFileError(
            f"data file {str(path)!r} is not CSV text: its first line holds a NUL byte (a binary "
            "file?); give a CSV or Parquet file"
        )
    raise UnreadableFileError(
        f"data file {str(path)!r} holds a NUL byte at line {line} (data row {line - 2}): not CSV "
        "text; the file is damaged (e.g. a block of zeros left by a crash): repair or re-export it"
    )


def _read_csv(
    path: Path, header: list[str], columns: Sequence[str], text_columns: Sequence[str]
) -> pd.DataFrame:
    """The table; of a header wider than ``WIDE_HEADER``, only the configured columns (and any
    that differ from one only in case), with the header's width in ``attrs["columns_in_file"]``.

    Text that overflows a float (``1e309``) reads as infinity: such columns are read again as text,
    so that ``_to_numeric`` can tell ``1e309`` (out of range) from ``inf``.
    """
    wanted = {*columns, *text_columns}
    usecols = None
    if wanted and len(header) > WIDE_HEADER:
        _check_field_counts(path, len(header))  # pandas checks no row against the header with usecols
        folded = {c.casefold() for c in wanted}
        usecols = [i for i, c in enumerate(header) if c in wanted or c.casefold() in folded] or [0]
    dtype = {c: "str" for c in text_columns if c in header}
    frame = _parse_csv(path, usecols, dtype)
    infinite = [
        c
        for c in frame.columns
        if (str(c) in wanted or not wanted)
        and frame[c].dtype.kind == "f"
        and np.isinf(frame[c].to_numpy()).any()
    ]
    if infinite:
        frame[infinite] = _parse_csv(path, usecols, {**dtype, **{c: "str" for c in infinite}})[infinite]
    if usecols is not None:
        frame.attrs["columns_in_file"] = len(header)
    return frame


def _parse_csv(path: Path, usecols: list[int] | None, dtype: dict[str, str]) -> pd.DataFrame:
    # Selected columns of a wide file are parsed in chunks (low_memory): all at once, pandas keeps
    # a pointer for every field of every column. A column whose chunks differ in type comes back as
    # objects, which the checks read as any other text; pandas' warning about it is not for users.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            return pd.read_csv(path, low_memory=usecols is not None, usecols=usecols, dtype=dtype or None)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as err:
        raise UnreadableFileError(f"cannot parse {str(path)!r} as CSV: {_describe(err)}") from None


def _check_field_counts(path: Path, width: int) -> None:
    """A row with more fields than the header shifts its cells; ``pandas.read_csv`` refuses one
    unless it reads selected columns, so check it here: by counting commas while the file has no
    quotes (a wide numeric table), else with the ``csv`` module (about 60 MB/s)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            line, row, tail = 0, -1, b""  # row -1: the header
            while chunk := fh.read(_CHUNK):
                if b'"' in chunk:
                    break
                *lines, tail = (tail + chunk).split(b"\n")
                for text in lines:
                    line += 1
                    if text.strip(b"\r"):  # pandas skips blank lines
                        _refuse_long_row(path, text.count(b",") + 1, width, line, row)
                        row += 1
            else:
                if tail.strip(b"\r"):
                    _refuse_long_row(path, tail.count(b",") + 1, width, line + 1, row)
                return
        with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            next(reader, None)
            row = 0
            for fields in reader:
                _refuse_long_row(path, len(fields), width, reader.line_num, row)
                row += bool(fields)
    except (UnicodeDecodeError, OSError, csv.Error, EOFError) as err:
        raise UnreadableFileError(f"cannot parse {str(path)!r} as CSV: {_describe(err)}") from None


def _refuse_long_row(path: Path, fields: int, width: int, line: int, row: int) -> None:
    if fields > width:
        raise UnreadableFileError(
            f"cannot parse {str(path)!r} as CSV: line {line} (data row {row}) has {fields} fields, "
            f"the header {width}"
        )


def _reason(err: OSError) -> str:
    """The operating system's reason without the path it repeats (``Permission denied``)."""
    return err.strerror or str(err) or type(err).__name__


def _describe(err: Exception) -> str:
    """A reader's error without the bytes of the file that some of them quote."""
    if isinstance(err, gzip.BadGzipFile):
        return "not a gzip file"  # its message quotes the file's first bytes
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text (an invalid byte at offset {err.start})"
    return str(err)


def _has_named_index(frame: pd.DataFrame) -> bool:
    return any(n is not None for n in frame.index.names)


def _csv_header(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:
            first = next(csv.reader(fh), None)
    except (UnicodeDecodeError, OSError, csv.Error, EOFError) as err:
        raise UnreadableFileError(f"cannot read the header of {str(path)!r}: {_describe(err)}") from None
    if not first or all(not c.strip() for c in first):
        raise EmptyDataError(f"data file {str(path)!r} has no header row")
    return [c.strip() for c in first]


def _check_duplicate_columns(header: list[str], path: Path | str, configured: Sequence[str] = ()) -> None:
    """Names repeated in the header; only the ``configured`` ones are quoted, others counted."""
    seen: set[str] = set()
    dupes = {c for c in header if c in seen or seen.add(c)}  # type: ignore[func-returns-value]
    if dupes:
        quoted = sorted(dupes & set(configured))
        others = len(dupes) - len(quoted)
        what = []
        if quoted:
            what.append(
                f"column {names(quoted)} appears" if len(quoted) == 1 else f"columns {names(quoted)} appear"
            )
        if others:
            what.append(f"{others} column name(s) not named in the config appear")
        raise DuplicateColumnError(
            f"{str(path)!r}: {'; '.join(what)} more than once in the header; rename or drop the copies"
        )


# --- validation and canonicalisation ---------------------------------------------------------
def prepare_frame(
    raw: pd.DataFrame,
    cfg: DataConfig,
    *,
    source: str = "data",
    history: bool = False,
    row_numbers: np.ndarray | None = None,
    first_timestamp: str | None = None,
    facts: dict[str, Any] | None = None,
) -> IngestResult:
    """Validate a raw table against the config and return the canonical frame.

    Raises only ``InputValidationError`` subclasses for bad data. Repairs happen only where
    ``cfg.repair`` allows them, and each is counted in the report. ``raw`` is not modified.
    ``history``: the table is a history to forecast from, not data to learn from: a series
    constant over it is fine (a quiet spell of intermittent demand; its scale comes from
    training, or from the training panel's typical spread for a new series).
    ``row_numbers``: each row's number in the file it came from (``raw`` is a chunk of it), for
    messages and notes; default 0, 1, 2... ``first_timestamp``: the file's first timestamp (text),
    whose format every timestamp must have; default ``raw``'s first. ``facts``: filled with what
    the whole table's checks need beyond this chunk (``ingest_in_chunks``): time zones, UTC
    offsets and the steps between rows (``regularity.infer_step``).
    """
    if len(raw) == 0 or len(raw.columns) == 0:
        raise EmptyDataError(f"{source} has no data rows")
    columns = [str(c) for c in raw.columns]
    _check_duplicate_columns(columns, source, _configured(cfg))
    _check_columns(raw, cfg, source)
    frame = raw.set_axis(columns, axis=1).reset_index(drop=True)
    _check_reserved(cfg, source)
    numbers = np.arange(len(frame)) if row_numbers is None else np.asarray(row_numbers, dtype=np.int64)
    rows = pd.Series(numbers)

    ids = _series_ids(frame[cfg.id_column], cfg.id_column, rows) if cfg.id_column else None
    t = parse_timestamps(
        frame[cfg.time_column],
        cfg.time_column,
        cfg.timezone,
        rows,
        series=ids,
        first=first_timestamp,
        facts=facts,
    )
    values = {}
    for col in [*cfg.targets, *cfg.covariates]:
        if ids is not None:
            series: object = ids
        elif cfg.is_wide:
            series = col if col in cfg.targets else None  # a wide covariate belongs to every series
        else:
            series = cfg.targets[0]
        values[col] = _to_numeric(frame[col], col, rows, t, series=series)

    canon = _build_canonical(cfg, t, values, ids, rows.to_numpy())
    report = RepairReport()
    canon = _check_order_and_duplicates(canon, cfg, report)
    canon = trim_missing_ends(canon, cfg, report)
    step = infer_step(canon, cfg.freq, cfg.time_column, facts)
    canon = check_and_repair_grid(canon, step, cfg, report)
    _check_static(canon, cfg)
    _check_constant(canon, cfg, flat_ok=history)
    canon = canon.drop(columns=ROW).reset_index(drop=True)
    return IngestResult(
        frame=canon,
        freq=step.alias,
        report=report,
        dataset_hash=dataset_hash(canon, cfg),
        past=cfg.covariates_with("past"),
        future=cfg.covariates_with("future"),
        static=cfg.covariates_with("static"),
    )


def _configured(cfg: DataConfig) -> list[str]:
    """Every column name the data config gives (the only header text messages may quote)."""
    ids = [cfg.id_column] if cfg.id_column else []
    return [cfg.time_column, *cfg.targets, *ids, *cfg.covariates]


def _check_columns(raw: pd.DataFrame, cfg: DataConfig, source: str) -> None:
    """Configured columns must be present. Messages quote configured names only, never the
    header: the file may not be a table at all (``/etc/passwd`` read as CSV has a one-column
    'header' that is its first line)."""
    present = {str(c) for c in raw.columns}
    width = int(raw.attrs.get("columns_in_file", len(present)))  # a wide CSV: only configured read
    required = [cfg.time_column, *cfg.targets] + ([cfg.id_column] if cfg.id_column else [])
    missing = [c for c in required if c not in present]
    if missing:
        raise MissingColumnError(
            f"{source}: column {names(missing)} not found ({_what_is_there(present, missing, width)}); "
            "check data.time_column, data.target and data.id_column"
        )
    absent = [c for c in cfg.covariates if c not in present]
    if absent:
        roles = ", ".join(f"{c!r} ({cfg.covariates[c]})" for c in absent)
        raise CovariateNotFoundError(
            f"{source}: covariate {roles} is declared in data.covariates but not in the data "
            f"({_what_is_there(present, absent, width)})"
        )


def _what_is_there(present: set[str], missing: Sequence[str], width: int) -> str:
    """``the data has 8 columns`` and, for a missing name that a column matches but for case, that
    column (the user's own name, differently cased: nothing else of the header is quoted)."""
    folded = {c.casefold(): c for c in present}
    near = [folded[m.casefold()] for m in missing if m.casefold() in folded]
    hint = f"; {names(near)} differ(s) only in case" if near else ""
    return f"the data has {width} column(s){hint}"


def _check_reserved(cfg: DataConfig, source: str) -> None:
    taken = [c for c in cfg.covariates if c in RESERVED]
    if taken:
        raise ConfigError(
            f"{source}: covariate {names(taken)} uses a name the canonical frame reserves "
            f"({names(list(RESERVED))}); rename the column"
        )


def _row_labels(
    rows: pd.Series | np.ndarray,
    idx: np.ndarray,
    series: object = None,
    *,
    t: np.ndarray | None = None,
    notes: Sequence[str] | None = None,
) -> list[str]:
    """``row 10 (series 'a', t=..., note)`` labels for the positions ``idx`` (first five only).

    ``t`` and ``notes`` hold one entry per label. Notes describe a cell (``_describe_cell``); no
    label quotes one.
    """
    rows = np.asarray(rows)
    labels = []
    for k, i in enumerate(idx[:5]):
        parts = []
        if isinstance(series, np.ndarray | RowSeries):
            parts.append(f"series {series[i]!r}")
        if t is not None:
            parts.append(f"t={pd.Timestamp(t[k])}")
        if notes is not None:
            parts.append(notes[k])
        labels.append(f"row {rows[i]}" + (f" ({', '.join(parts)})" if parts else ""))
    return labels


def _describe_cell(value: object) -> str:
    """What a bad cell holds, without its text: ``text of 12 characters``, ``a number``."""
    if not isinstance(value, str):
        return f"a {type(value).__name__}"
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return "a number"
    if _DECIMAL_COMMA.fullmatch(text):
        return "a number with a decimal comma"
    return f"text of {len(value)} character{'' if len(value) == 1 else 's'}"


class RowSeries:
    """The series id (text) of every row, held as a code per row into the distinct ids: a table of
    100,000 series and 50 million rows keeps 50 million integers, not 50 million strings.
    ``ids[i]`` is row ``i``'s id (messages index it as they would an array of ids)."""

    def __init__(self, codes: np.ndarray, names: np.ndarray):
        self.codes = codes
        self.names = names  # (S,) object array of str

    def __getitem__(self, i: Any) -> Any:
        return self.names[self.codes[i]]

    def __len__(self) -> int:
        return len(self.codes)

    def to_strings(self) -> Any:
        """Every row's id as a pandas ``str`` array (gathered by Arrow, no Python string per row)."""
        import pyarrow as pa

        return pd.array(pa.array(self.names, type=pa.string()).take(pa.array(self.codes)), dtype="str")


def _series_ids(col: pd.Series, name: str, rows: pd.Series) -> RowSeries:
    """The id column as text, per row; empty ids are an error. Distinct values with the same text
    (``7`` and ``"7"``) are one series."""
    codes, uniques = pd.factorize(col.reset_index(drop=True), sort=False)  # a categorical: its codes
    text = pd.Index(uniques).astype("string")
    blank_id = (text.isna() | (text.str.strip() == "")).to_numpy(dtype=bool, na_value=True)
    blank = (codes < 0) | (blank_id[codes] if blank_id.any() else False)
    if np.any(blank):
        bad = np.flatnonzero(blank)
        raise MissingValueError(
            f"column {name!r} (the series id) is empty in {bad.size} row(s): "
            f"{listing(_row_labels(rows, bad), bad.size)}; give every row its series id"
        )
    same, names = pd.factorize(text.to_numpy(dtype=object), sort=False)
    return RowSeries(same[codes].astype(np.int64), np.asarray(names, dtype=object))


# --- timestamps --------------------------------------------------------------------------------
def parse_timestamps(
    col: pd.Series,
    name: str,
    timezone: str | None,
    rows: pd.Series | None = None,
    *,
    series: np.ndarray | None = None,
    first: str | None = None,
    facts: dict[str, Any] | None = None,
) -> pd.Series:
    """Parse a timestamp column into datetime64[us] (UTC if zone-aware input or ``timezone``).
    ``first``: the text whose format every value must have (default the column's first value);
    ``facts`` gets which kinds of zone the text had and its UTC offsets (see ``prepare_frame``)."""
    col = col.reset_index(drop=True)
    rows = pd.Series(np.arange(len(col))) if rows is None else pd.Series(np.asarray(rows))
    try:
        if pd.api.types.is_datetime64_any_dtype(col):
            nat = col.isna().to_numpy()
            if nat.any():
                bad = np.flatnonzero(nat)
                raise TimestampParseError(
                    f"column {name!r} has empty timestamps in {bad.size} row(s): "
                    f"{listing(_row_labels(rows, bad, series), bad.size)}"
                )
            t, aware = col, col.dt.tz is not None
        else:
            t, aware = _parse_text_timestamps(col, name, timezone, rows, series, first, facts)
        if aware:
            t = t.dt.tz_convert("UTC")
        elif timezone is not None:
            t = _localize(t, name, timezone, rows, series)
        return _as_microseconds(t, name, rows, series)
    except (OutOfBoundsDatetime, OverflowError):
        raise TimestampParseError(  # pandas' message quotes the value
            f"column {name!r} has timestamps outside the range microsecond timestamps support "
            "(about 290,000 years either side of 1970)"
        ) from None


def _as_microseconds(t: pd.Series, name: str, rows: pd.Series, series: np.ndarray | None) -> pd.Series:
    if t.dt.unit == "ns":
        finer = (t.dt.nanosecond != 0).to_numpy()
        if finer.any():
            bad = np.flatnonzero(finer)
            raise TimestampParseError(
                f"column {name!r} has timestamps finer than a microsecond in {bad.size} row(s): "
                f"{listing(_row_labels(rows, bad, series, t=t.to_numpy()[bad[:5]]), bad.size)}"
            )
    return t.dt.as_unit("us")


def _parse_text_timestamps(
    col: pd.Series,
    name: str,
    timezone: str | None,
    rows: pd.Series,
    series: np.ndarray | None,
    first: str | None = None,
    facts: dict[str, Any] | None = None,
) -> tuple[pd.Series, bool]:
    """Parse text (or objects) with the first value's format; returns (timestamps, zone-aware)."""
    text = _timestamp_text(col)
    empty = (text.isna() | (text == "")).to_numpy(dtype=bool, na_value=True)
    if empty.any():
        bad = np.flatnonzero(empty)
        labels = _row_labels(rows, bad, series)
        raise TimestampParseError(
            f"column {name!r} has empty timestamps in {bad.size} row(s): {listing(labels, bad.size)}"
        )
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        raise TimestampParseError(
            f"column {name!r} holds numbers, not timestamps; write them as ISO 8601 (2024-01-31 13:00:00)"
        )
    parsed = _parse_like_first(text, first)
    failed = parsed.isna().to_numpy()
    if failed.any():
        loose = _parse_loose(text[failed]).isna().to_numpy()
        if loose.any():
            bad = np.flatnonzero(failed)[loose]
            notes = [_describe_cell(v) for v in text.to_numpy()[bad[:5]]]
            raise TimestampParseError(
                f"column {name!r} has values that are not timestamps: "
                f"{listing(_row_labels(rows, bad, series, notes=notes), bad.size)}"
            )
        bad = np.flatnonzero(failed)
        raise TimestampParseError(
            f"column {name!r} mixes timestamp formats: "
            f"{listing(_row_labels(rows, bad, series), bad.size)} are not in the format of row "
            f"{rows.iloc[0]}; write every timestamp in one format (ISO 8601: 2024-01-31 13:00:00)"
        )
    aware = text.str.contains(_HAS_TZ, regex=True).to_numpy(dtype=bool, na_value=False)
    if facts is not None:
        facts.update(zoned=bool(aware.any()), unzoned=not bool(aware.all()), offsets=[])
    if aware.any() and not aware.all():
        minority = aware if aware.sum() <= (~aware).sum() else ~aware
        bad = np.flatnonzero(minority)
        note = "with a zone" if aware[bad[0]] else "without a zone"
        raise MixedTimezoneError(
            f"column {name!r} mixes timestamps with and without a time zone: "
            f"{listing(_row_labels(rows, bad, series, notes=[note] * 5), bad.size)} differ from "
            "the rest; write every timestamp with its offset or none"
        )
    if not aware.any():
        return parsed.dt.tz_convert(None), False
    offsets = text.str.extract(_TZ_SUFFIX, expand=False).str.replace(":", "", regex=False)
    offsets = offsets.replace("Z", "+0000")
    distinct = sorted(pd.unique(offsets.astype(str)))
    if facts is not None:
        facts["offsets"] = distinct
    if len(distinct) > 1 and timezone is None:
        first = offsets.iloc[0]
        bad = np.flatnonzero((offsets != first).to_numpy(dtype=bool, na_value=True))
        notes = [f"offset {o}" for o in offsets.to_numpy()[bad[:5]]]  # parsed, as t= is
        raise MixedTimezoneError(
            f"column {name!r} mixes UTC offsets {distinct[:4]}: "
            f"{listing(_row_labels(rows, bad, series, notes=notes), bad.size)} "
            f"differ from the first row's {first}; if these are one zone's daylight-saving "
            "offsets, set data.timezone (e.g. Europe/Berlin) so they are read as one clock"
        )
    return parsed, True


def _timestamp_text(col: pd.Series) -> pd.Series:
    """A timestamp column as the parser reads it: text, stripped."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype(object)
    return col.astype("string").str.strip()


def _parse_like_first(text: pd.Series, first: str | None = None) -> pd.Series:
    """Parse (as UTC) with the format of ``first`` (default the first value); values in another
    format become NaT."""
    first = text.iloc[0] if first is None else first
    try:
        pd.to_datetime(pd.Series([first]), format="ISO8601", utc=True)
        fmt: str | None = "ISO8601"
    except (ValueError, TypeError, OverflowError):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "dayfirst" hints: the format is what we want
                fmt = guess_datetime_format(first)
        except (ValueError, TypeError):
            fmt = None
    if fmt is None:
        return _parse_loose(text)  # no recognisable format: each value on its own
    try:
        return pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    except (ValueError, TypeError, OverflowError):
        return _parse_loose(text)


def _parse_loose(text: pd.Series) -> pd.Series:
    """Parse each value in whatever format it has (UTC); NaT where it is not a timestamp."""
    try:
        return pd.to_datetime(text, format="mixed", errors="coerce", utc=True)
    except (ValueError, TypeError, OverflowError):
        out = []
        for value in text:
            try:
                out.append(pd.to_datetime(value, utc=True))
            except (ValueError, TypeError, OverflowError):
                out.append(pd.NaT)
        return pd.Series(pd.DatetimeIndex(out, tz="UTC"), index=text.index)


def _localize(
    t: pd.Series, name: str, timezone: str, rows: pd.Series, series: np.ndarray | None = None
) -> pd.Series:
    """Read naive times as local times of ``timezone``; ambiguous or non-existent ones raise."""
    try:
        pd.Timestamp("2000-01-01").tz_localize(timezone)
    except Exception:  # zoneinfo / pytz raise their own types for unknown names
        raise ConfigError(
            f"data.timezone {timezone!r} is not a known time zone (e.g. Europe/Berlin)"
        ) from None
    local = t.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    bad = np.flatnonzero(local.isna().to_numpy())
    if bad.size:
        shifted = t.iloc[bad[:5]].dt.tz_localize(timezone, ambiguous="NaT", nonexistent="shift_forward")
        kinds = ["ambiguous" if pd.isna(s) else "non-existent" for s in shifted]
        labels = _row_labels(rows, bad, series, t=t.to_numpy()[bad[:5]], notes=kinds)
        raise DSTTransitionError(
            f"column {name!r}: local times in {timezone} that are ambiguous (clocks go back) or do "
            f"not exist (clocks go forward) at a daylight-saving change: {listing(labels, bad.size)}; "
            "write timestamps in UTC or with their UTC offset"
        )
    return local.dt.tz_convert("UTC")


# --- values ------------------------------------------------------------------------------------
def _to_numeric(
    col: pd.Series, name: str, rows: pd.Series, t: pd.Series, series: object = None
) -> np.ndarray:
    """A numeric column as float64 (NaN for empty cells); text, infinities and magnitudes above
    ``MAX_ABS_VALUE`` raise. Text that overflows a float (``1e309``) is out of range, not infinite.

    ``series`` names the series of each row (an array) or of the whole column (a string).
    """
    col = col.reset_index(drop=True)
    rows = pd.Series(np.asarray(rows))
    where = f"column {name!r}" + (f" of series {series!r}" if isinstance(series, str) else "")
    each = series if isinstance(series, np.ndarray | RowSeries) else None
    if isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype(object)
    kind = col.dtype.kind if isinstance(col.dtype, np.dtype) else ""
    if (
        kind in ("m", "M")
        or pd.api.types.is_datetime64_any_dtype(col)
        or isinstance(col.dtype, pd.PeriodDtype)
    ):
        raise NonNumericValueError(
            f"{where} must be numeric but holds timestamps or durations ({col.dtype}); check the "
            "column roles in data.target / data.covariates"
        )
    if pd.api.types.is_bool_dtype(col) or (
        pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_complex_dtype(col)
    ):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        overflow = np.zeros(len(values), dtype=bool)
    else:
        values = _coerce_numbers(col)
        text = col.astype("string").str.strip().str.lower()
        blank = (col.isna() | text.isin(_NAN_WORDS)).to_numpy(dtype=bool, na_value=True)
        bad_mask = np.isnan(values) & ~blank
        if bad_mask.any():
            bad = np.flatnonzero(bad_mask)
            notes = [_describe_cell(v) for v in col.to_numpy()[bad[:5]]]
            labels = _row_labels(rows, bad, each, t=t.to_numpy()[bad[:5]], notes=notes)
            raise NonNumericValueError(
                f"{where} must be numeric but has non-numeric values in {bad.size} row(s): "
                f"{listing(labels, bad.size)}; fix or empty those cells"
            )
        word = text.str.lstrip("+-").isin(_INF_WORDS).to_numpy(dtype=bool, na_value=False)
        overflow = np.isinf(values) & ~word  # 1e309: a number too large, caught as out of range
    inf = np.isinf(values) & ~overflow
    if inf.any():
        bad = np.flatnonzero(inf)
        signs = ["+inf" if v > 0 else "-inf" for v in values[bad[:5]]]
        labels = _row_labels(rows, bad, each, t=t.to_numpy()[bad[:5]], notes=signs)
        raise NonFiniteValueError(
            f"{where} holds infinite values in {bad.size} row(s): {listing(labels, bad.size)}; "
            "replace them with numbers or empty cells"
        )
    huge = np.abs(values) > MAX_ABS_VALUE  # False for NaN
    if huge.any():
        bad = np.flatnonzero(huge)
        labels = _row_labels(rows, bad, each, t=t.to_numpy()[bad[:5]])  # rows and times, no cells
        raise ValueOutOfRangeError(
            f"{where} holds values beyond +/-{MAX_ABS_VALUE:g} in {bad.size} row(s): "
            f"{listing(labels, bad.size)}; models compute in float32 and the scaler squares values, "
            "so these would overflow: rescale the column (other units) or fix those cells"
        )
    return values


def _coerce_numbers(col: pd.Series) -> np.ndarray:
    """Text/objects to float64, NaN where a value is not a real number."""
    try:
        coerced = pd.to_numeric(col, errors="coerce")
        if not pd.api.types.is_complex_dtype(coerced):
            return coerced.to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError, OverflowError):
        pass
    out = np.full(len(col), np.nan)
    for i, v in enumerate(col.to_numpy(dtype=object)):
        if isinstance(v, (bool, np.bool_, int, float, np.integer, np.floating, str)):
            with contextlib.suppress(OverflowError, ValueError):
                out[i] = float(v.strip() if isinstance(v, str) else v)
    return out


# --- the canonical frame -----------------------------------------------------------------------
def _build_canonical(
    cfg: DataConfig, t: pd.Series, values: dict[str, np.ndarray], ids: RowSeries | None, row: np.ndarray
) -> pd.DataFrame:
    """Stack the parsed columns into (series_id, t, y, covariates..., _row), in input order;
    ``row``: each row's number in the file."""
    n = len(t)
    tu = time_us(t)
    if cfg.is_wide:
        k = len(cfg.targets)
        series = np.repeat(np.asarray(cfg.targets, dtype=object), n)
        tu, row = np.tile(tu, k), np.tile(row, k)
        y = np.concatenate([values[c] for c in cfg.targets])
        covs = {c: np.tile(values[c], k) for c in cfg.covariates}
    else:
        series = ids.to_strings() if ids is not None else np.full(n, cfg.targets[0], dtype=object)
        y = values[cfg.targets[0]]
        covs = {c: values[c] for c in cfg.covariates}
    times = pd.Series(tu.view("datetime64[us]"))
    if getattr(t.dt, "tz", None) is not None:
        times = times.dt.tz_localize("UTC")
    data = {SERIES: pd.array(series, dtype="str"), TIME: times, TARGET: y, **covs, ROW: row}
    return pd.DataFrame(data)


def _value_columns(canon: pd.DataFrame) -> list[str]:
    return [c for c in canon.columns if c not in (SERIES, TIME, ROW)]


def _check_order_and_duplicates(canon: pd.DataFrame, cfg: DataConfig, report: RepairReport) -> pd.DataFrame:
    """Sort rows by series then time; duplicates and rows going back in time need a policy.

    Rows of different series may be interleaved (a long table sorted by time): grouping them by
    series moves no row within its series and is not a repair.
    """
    codes, _ = pd.factorize(canon[SERIES], sort=True)
    tu = time_us(canon[TIME])
    rows = canon[ROW].to_numpy()
    n = len(canon)
    in_order = n < 2 or bool(
        np.all((codes[1:] > codes[:-1]) | ((codes[1:] == codes[:-1]) & (tu[1:] > tu[:-1])))
    )
    order = np.arange(n) if in_order else np.lexsort((tu, codes))  # stable: file order on ties
    c, tt = codes[order], tu[order]
    dup = np.r_[False, (c[1:] == c[:-1]) & (tt[1:] == tt[:-1])]  # repeats the previous row's key
    keep = np.ones(n, dtype=bool)
    if dup.any():
        vals = canon[_value_columns(canon)].to_numpy(dtype=np.float64)
        i = np.flatnonzero(dup)
        a, b = vals[order[i]], vals[order[i - 1]]
        same = ((a == b) | (np.isnan(a) & np.isnan(b))).all(axis=1)
        conflicting, exact = i[~same], i[same]
        if conflicting.size:
            if cfg.id_column is None and not cfg.is_wide:
                _check_mixed_series(canon, cfg, order, dup, tt)
            k = conflicting[0]
            start = k
            while start > 0 and dup[start]:
                start -= 1
            stop = k
            while stop + 1 < n and dup[stop + 1]:
                stop += 1
            group = order[start : stop + 1]
            keys = len(np.unique((np.cumsum(~dup) - 1)[conflicting]))  # distinct (series, t) keys
            raise DuplicateTimestampError(
                f"column {cfg.time_column!r} of series {canon[SERIES].iloc[group[0]]!r}: timestamp "
                f"{stamp(tt[k])} appears in rows {listing([str(r) for r in rows[group]], group.size)} "
                f"with different values ({keys} timestamp(s) with conflicting rows in all); keep one "
                "row per timestamp"
            )
        if not cfg.repair.drop_duplicates:
            labels = [
                f"row {rows[order[j]]} (= row {rows[order[j - 1]]}, t={stamp(tt[j])})" for j in exact[:5]
            ]
            raise DuplicateTimestampError(
                f"column {cfg.time_column!r} of series {canon[SERIES].iloc[order[exact[0]]]!r}: "
                f"{exact.size} row(s) repeat an earlier row exactly: {listing(labels, exact.size)}; "
                "set data.repair.drop_duplicates: true to drop them"
            )
        report.add(
            "dropped_duplicate_rows",
            int(exact.size),
            "rows {rows}",
            rows=[str(r) for r in rows[order[exact[:LISTED]]]],
        )
        keep[order[exact]] = False
        order = order[~dup]
    if not in_order:
        grouped = np.argsort(codes, kind="stable")
        grouped = grouped[keep[grouped]]  # file order within each series
        gc, gt = codes[grouped], tu[grouped]
        back = np.flatnonzero((gc[1:] == gc[:-1]) & (gt[1:] < gt[:-1])) + 1
        if back.size:
            if not cfg.repair.sort:
                sid = canon[SERIES].iloc[grouped[back[0]]]
                in_series = back[gc[back] == gc[back[0]]]
                labels = [
                    f"row {rows[grouped[j]]} ({stamp(gt[j])} after {stamp(gt[j - 1])})" for j in in_series[:5]
                ]
                raise UnsortedTimestampsError(
                    f"column {cfg.time_column!r} of series {sid!r}: time goes backwards at "
                    f"{listing(labels, in_series.size)}; sort the file by series and time, or set "
                    "data.repair.sort: true"
                )
            moved = int((grouped != order).sum())
            report.add("sorted_rows", moved, "rows moved into time order within their series")
        canon = canon.take(order)
    elif not keep.all():
        canon = canon[keep]
    return canon.reset_index(drop=True)


def _check_mixed_series(
    canon: pd.DataFrame, cfg: DataConfig, order: np.ndarray, dup: np.ndarray, tt: np.ndarray
) -> None:
    """One series with most timestamps repeated the same number of times: several stacked."""
    exact = np.zeros(len(dup), dtype=bool)  # exact repeats do not count as another series
    vals = canon[_value_columns(canon)].to_numpy(dtype=np.float64)[order]
    i = np.flatnonzero(dup)
    a, b = vals[i], vals[i - 1]
    exact[i] = ((a == b) | (np.isnan(a) & np.isnan(b))).all(axis=1)
    distinct_t = tt[~exact]
    _, counts = np.unique(distinct_t, return_counts=True)
    k_values, k_counts = np.unique(counts, return_counts=True)
    k = int(k_values[np.argmax(k_counts)])
    if k < 2 or k_counts.max() / counts.size < 0.5:
        return
    example = int(distinct_t[np.argmax(np.isin(distinct_t, np.unique(distinct_t)[counts == k]))])
    rows = canon[ROW].to_numpy()[order[(tt == example)]]
    raise MixedSeriesError(
        f"column {cfg.targets[0]!r}: most timestamps appear {k} times with different values (e.g. "
        f"{stamp(example)} in rows {listing([str(r) for r in rows], rows.size)}): this looks like {k} "
        "series stacked without an id column; set data.id_column to the column that tells them "
        "apart, or list them as data.target for wide format"
    )


def _check_static(canon: pd.DataFrame, cfg: DataConfig) -> None:
    static = cfg.covariates_with("static")
    if not static or len(canon) == 0:
        return
    codes, starts = series_codes(canon)
    rows = canon[ROW].to_numpy()
    for col in static:
        v = canon[col].to_numpy(dtype=np.float64)
        differs = v != v[starts][codes]
        if differs.any():
            bad = np.flatnonzero(differs)
            sid = canon[SERIES].iloc[bad[0]]
            first = starts[codes[bad[0]]]
            in_series = bad[codes[bad] == codes[bad[0]]]
            labels = [f"row {rows[i]}" for i in in_series[:5]]
            raise StaticCovariateError(
                f"static covariate {col!r} of series {sid!r} changes over time: "
                f"{listing(labels, in_series.size)} differ from the series' first row {rows[first]}; a "
                "static covariate holds one value per series (declare it 'past' or 'future' instead)"
            )


def _check_constant(canon: pd.DataFrame, cfg: DataConfig, flat_ok: bool = False) -> None:
    _, starts = series_codes(canon)
    if len(starts) == 0:
        return
    y = canon[TARGET].to_numpy(dtype=np.float64)
    lengths = np.diff(np.r_[starts, len(canon)])
    ids = canon[SERIES].take(starts).to_numpy()  # the first row's id of each series, not every row's
    single = np.flatnonzero(lengths < 2)
    if single.size:
        raise SeriesTooShortError(
            f"series {listing([repr(s) for s in ids[single]], single.size)} "
            f"{'has' if single.size == 1 else 'have'} a single row; a series needs at least two "
            "rows (and enough for the lookback and horizon): drop it"
        )
    if flat_ok:
        return
    spread = np.maximum.reduceat(y, starts) - np.minimum.reduceat(y, starts)
    flat = np.flatnonzero(spread == 0)
    if flat.size:
        sid = ids[flat[0]]
        target = str(sid) if cfg.is_wide else cfg.targets[0]
        rows = canon[ROW].to_numpy()
        s, e = starts[flat[0]], starts[flat[0]] + lengths[flat[0]] - 1
        more = listing([repr(x) for x in ids[flat[1:]]], flat.size - 1)
        others = f" ({flat.size - 1} more constant series: {more})"
        raise ConstantSeriesError(
            f"column {target!r} (the target) of series {sid!r} never changes: it holds one value in all "
            f"{lengths[flat[0]]} rows (rows {rows[s]}..{rows[e]}){others if flat.size > 1 else ''}; "
            "a constant series cannot be scaled or learnt: drop it"
        )


def dataset_hash(frame: pd.DataFrame, cfg: DataConfig) -> str:
    """A content hash of the canonical frame and the column roles.

    Independent of the file's path and format and of the repair policy: the same canonical data
    with the same roles hashes the same, from CSV or Parquet alike.
    """
    h = hashlib.sha256()
    meta = {
        "columns": [str(c) for c in frame.columns],
        "dtypes": [str(d) for d in frame.dtypes],
        "targets": cfg.targets,
        "id_column": cfg.id_column,
        "covariates": cfg.covariates,
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def ingest(
    cfg: DataConfig,
    path: str | Path | None = None,
    *,
    cluster: Callable[[], contextlib.AbstractContextManager[Callable[..., Iterator[Any]]]] | None = None,
    chunk_series: int = 10_000,
) -> IngestResult:
    """Read and validate the configured file (or ``path`` with the config's column roles).

    ``cluster``: where chunks of series may run (a ``partition.chunk_map``, entered only when the
    table has more than ``chunk_series`` series): the series are then validated in chunks, one
    task each (``validate_chunk``), and the result is the one-process result: the same frame,
    frequency, report and hash, and for bad data the same error (``ingest_in_chunks``).
    """
    path = Path(path) if path is not None else cfg.path
    text = [cfg.id_column] if cfg.id_column else []
    raw = read_table(path, cfg.format, text_columns=text, columns=_configured(cfg))
    if cluster is not None:
        return ingest_in_chunks(raw, cfg, cluster, chunk_series, source=str(path))
    return prepare_frame(raw, cfg, source=str(path))


def ingest_in_chunks(
    raw: pd.DataFrame,
    cfg: DataConfig,
    cluster: Callable[[], contextlib.AbstractContextManager[Callable[..., Iterator[Any]]]],
    size: int,
    *,
    source: str,
) -> IngestResult:
    """``prepare_frame(raw, cfg)`` with the series validated in chunks of ``size`` series, each a
    call of ``validate_chunk`` through the map ``cluster()`` gives (on Dask, a task on a worker:
    a chunk goes out as Arrow IPC with its rows' numbers in the file, and comes back canonical,
    with its sampling interval and its repairs as plain values).

    Chunks follow the canonical order (series by id), so their frames concatenate to the whole
    table's, and their reports add up to its report (``RepairReport.merge``). What the checks
    decide for the whole table is decided for it: every chunk parses timestamps in the format of
    the file's first one, and reports its kinds of time zone, its UTC offsets and its steps
    between rows (``facts``), from which the table's interval is found as one pass finds it
    (``regularity.step_of_table``). When any chunk refuses its rows, the facts refuse the table
    (zones mixed, several offsets, no regular interval), or a chunk's interval is not the
    table's, the whole table is validated here, so that the error (or the result) is word for
    word the one-process one: its first offending rows, its row numbers.
    """
    from forecasting.partition import from_ipc, series_chunks, to_ipc

    long_ids = cfg.id_column is not None and not cfg.is_wide and cfg.id_column in raw.columns
    parts = series_chunks(raw[cfg.id_column], size) if long_ids else []
    if len(parts) <= 1:
        return prepare_frame(raw, cfg, source=source)
    items = ((to_ipc(raw.iloc[rows]), rows.astype(np.int64).tobytes()) for rows in parts)
    first = _first_timestamp(raw[cfg.time_column])
    with cluster() as chunks:  # no Dask installed, a scheduler out of reach: raised, as it is
        try:
            done = [
                (frame, json.loads(rest))
                for frame, rest in chunks(validate_chunk, items, cfg.model_dump_json(), source, first)
            ]
            step = _step_of_chunks([rest["facts"] for _, rest in done], cfg)
        except InputValidationError:
            done = None
    if done is None:
        return prepare_frame(raw, cfg, source=source)  # the whole table's first offending rows
    frames = [from_ipc(frame) for frame, _ in done]
    last_ids = [f[SERIES].iloc[-1] for f in frames[:-1]]
    first_ids = [f[SERIES].iloc[0] for f in frames[1:]]
    in_order = all(a < b for a, b in zip(last_ids, first_ids, strict=True))
    if any(rest["freq"] != step.alias for _, rest in done) or not in_order:
        return prepare_frame(raw, cfg, source=source)
    frame = pd.concat(frames, ignore_index=True)
    del frames
    report = RepairReport()
    for _, rest in done:
        report.merge(RepairReport.from_parts(rest["repairs"]))
    return IngestResult(
        frame=frame,
        freq=step.alias,
        report=report,
        dataset_hash=dataset_hash(frame, cfg),
        past=cfg.covariates_with("past"),
        future=cfg.covariates_with("future"),
        static=cfg.covariates_with("static"),
    )


def _first_timestamp(col: pd.Series) -> str | None:
    """The file's first timestamp as the parser reads it (text), or None (timestamps already, or
    an empty first cell, which validation refuses)."""
    if pd.api.types.is_datetime64_any_dtype(col) or len(col) == 0:
        return None
    text = _timestamp_text(col.iloc[:1]).iloc[0]
    return None if pd.isna(text) or text == "" else str(text)


def _step_of_chunks(facts: list[dict[str, Any]], cfg: DataConfig) -> Any:
    """The whole table's sampling interval from its chunks' ``facts``; raises what validating the
    whole table would raise on its time zones, offsets and steps (without rows to name)."""
    zoned = any(f.get("zoned") for f in facts)
    if zoned and any(f.get("unzoned") for f in facts):
        raise MixedTimezoneError(f"column {cfg.time_column!r} mixes timestamps with and without a time zone")
    offsets = {o for f in facts for o in f.get("offsets", [])}
    if len(offsets) > 1 and cfg.timezone is None:
        raise MixedTimezoneError(f"column {cfg.time_column!r} mixes UTC offsets")
    return step_of_table(facts, cfg.freq, cfg.time_column)


def validate_chunk(
    chunk: tuple[bytes, bytes], cfg: str, source: str, first_timestamp: str | None
) -> tuple[bytes, bytes]:
    """A task of ``ingest_in_chunks``: one chunk of series (Arrow IPC, and its rows' numbers in
    the file as int64 bytes) validated by ``prepare_frame`` with the data config ``cfg`` (JSON),
    its timestamps in the format of the file's first; its canonical frame (Arrow IPC) and, as
    JSON, its sampling interval, its repairs (``RepairReport.to_parts``) and the facts the whole
    table's checks need. Only bytes and text cross."""
    from forecasting.partition import from_ipc, to_ipc

    table, numbers = chunk
    facts: dict[str, Any] = {}
    result = prepare_frame(
        from_ipc(table),
        DataConfig.model_validate_json(cfg),
        source=source,
        row_numbers=np.frombuffer(numbers, dtype=np.int64),
        first_timestamp=first_timestamp,
        facts=facts,
    )
    rest = {"freq": result.freq, "repairs": result.report.to_parts(), "facts": facts}
    return to_ipc(result.frame), json.dumps(rest).encode()
