"""Read a `<t, x, y>` table and turn it into the canonical, validated frame.

Canonical frame: one row per (series_id, t), sorted by series then time, columns
``series_id`` (str), ``t`` (datetime64, UTC when the input carried zones), ``y`` (float64), then
the covariates in config order (float64). Nothing here writes anywhere; the input file is only
read. Every problem is a named ``InputValidationError`` that says what, where and what to do.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting.config import DataConfig
from forecasting.errors import (
    ConstantSeriesError,
    InputValidationError,
    UnsortedTimestampsError,
    CovariateNotFoundError,
    DSTTransitionError,
    DuplicateColumnError,
    DuplicateTimestampError,
    EmptyDataError,
    MissingColumnError,
    MixedSeriesError,
    MixedTimezoneError,
    NonFiniteValueError,
    NonNumericValueError,
    TimestampParseError,
    UnreadableFileError,
    format_rows,
    names,
)
from forecasting.data.regularity import check_and_repair_grid, infer_step
from forecasting.data.repair import RepairReport

SERIES, TIME, TARGET = "series_id", "t", "y"
_ROW = "_row"  # original data-row number, kept while validating for error messages
_TZ_SUFFIX = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")
_TZ_PRESENT = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")


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
            "rows": int(len(f)),
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


def read_table(path: str | Path, fmt: str = "auto") -> pd.DataFrame:
    """Read CSV or Parquet into a frame, checking the file and its header. Never writes."""
    path = Path(path)
    if not path.exists():
        raise UnreadableFileError(f"data file {str(path)!r} does not exist")
    if path.is_dir():
        raise UnreadableFileError(f"data path {str(path)!r} is a folder, not a file")
    if path.stat().st_size == 0:
        raise EmptyDataError(f"data file {str(path)!r} is empty (0 bytes)")
    kind = _detect_format(path, fmt)
    if kind == "csv":
        header = _csv_header(path)
        _check_duplicate_columns(header, path)
        try:
            frame = pd.read_csv(path, low_memory=False)
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
            raise UnreadableFileError(f"cannot parse {str(path)!r} as CSV: {err}") from None
    else:
        try:
            import pyarrow.parquet as pq

            schema_names = list(pq.read_schema(path).names)
            _check_duplicate_columns(schema_names, path)
            frame = pd.read_parquet(path)
        except DuplicateColumnError:
            raise
        except Exception as err:  # pyarrow raises many unrelated types for a bad file
            raise UnreadableFileError(f"cannot read {str(path)!r} as Parquet: {err}") from None
        frame = frame.reset_index(drop=not _has_named_index(frame))
    if frame.empty:
        raise EmptyDataError(f"data file {str(path)!r} has a header but no data rows")
    return frame


def _has_named_index(frame: pd.DataFrame) -> bool:
    return any(n is not None for n in frame.index.names)


def _csv_header(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8") as fh:
            first = next(csv.reader(fh), None)
    except (UnicodeDecodeError, OSError, csv.Error) as err:
        raise UnreadableFileError(f"cannot read the header of {str(path)!r}: {err}") from None
    if not first or all(not c.strip() for c in first):
        raise EmptyDataError(f"data file {str(path)!r} has no header row")
    return [c.strip() for c in first]


def _check_duplicate_columns(header: list[str], path: Path | str) -> None:
    seen: set[str] = set()
    dupes = [c for c in header if c in seen or seen.add(c)]  # type: ignore[func-returns-value]
    if dupes:
        raise DuplicateColumnError(
            f"{str(path)!r}: column {names(sorted(set(dupes)))} appears more than once in the "
            "header; rename or drop the copies"
        )


# --- validation and canonicalisation ---------------------------------------------------------
def prepare_frame(raw: pd.DataFrame, cfg: DataConfig, *, source: str = "data") -> IngestResult:
    """Validate a raw table against the config and return the canonical frame.

    Raises only ``InputValidationError`` subclasses for bad data. Repairs happen only where
    ``cfg.repair`` allows them, and each is counted in the report.
    """
    if len(raw) == 0:
        raise EmptyDataError(f"{source} has no data rows")
    _check_duplicate_columns([str(c) for c in raw.columns], source)
    _check_columns(raw, cfg, source)
    report = RepairReport()
    frame = raw.reset_index(drop=True)
    frame = frame.assign(**{_ROW: np.arange(len(frame))})

    t = parse_timestamps(frame[cfg.time_column], cfg.time_column, cfg.timezone, frame[_ROW])
    numeric_cols = cfg.targets + list(cfg.covariates)
    values = {c: _to_numeric(frame[c], c, frame[_ROW], t) for c in numeric_cols}

    if cfg.is_wide:
        parts = []
        for target in cfg.targets:
            part = {SERIES: target, TIME: t, TARGET: values[target], _ROW: frame[_ROW].to_numpy()}
            part.update({c: values[c] for c in cfg.covariates})
            parts.append(pd.DataFrame(part))
        canon = pd.concat(parts, ignore_index=True)
    else:
        if cfg.id_column is not None:
            ids = frame[cfg.id_column]
            if ids.isna().any():
                bad = frame.loc[ids.isna(), _ROW].tolist()
                raise MissingColumnError(
                    f"column {cfg.id_column!r} (the series id) is empty in rows {format_rows(bad)}"
                )
            series = ids.astype(str).to_numpy()
        else:
            series = np.full(len(frame), cfg.targets[0], dtype=object)
        data = {SERIES: series, TIME: t, TARGET: values[cfg.targets[0]], _ROW: frame[_ROW].to_numpy()}
        data.update({c: values[c] for c in cfg.covariates})
        canon = pd.DataFrame(data)
        if cfg.id_column is None:
            _check_mixed_series(canon, cfg)

    canon = _check_order_and_duplicates(canon, cfg, report)
    step = infer_step(canon, cfg.freq)
    canon = check_and_repair_grid(canon, step, cfg, report)
    _check_static(canon, cfg)
    _check_constant(canon)
    canon = canon.drop(columns=_ROW).reset_index(drop=True)
    return IngestResult(
        frame=canon,
        freq=step.alias,
        report=report,
        dataset_hash=dataset_hash(canon, cfg),
        past=cfg.covariates_with("past"),
        future=cfg.covariates_with("future"),
        static=cfg.covariates_with("static"),
    )


def _check_columns(raw: pd.DataFrame, cfg: DataConfig, source: str) -> None:
    present = {str(c) for c in raw.columns}
    required = [cfg.time_column, *cfg.targets] + ([cfg.id_column] if cfg.id_column else [])
    missing = [c for c in required if c not in present]
    if missing:
        raise MissingColumnError(
            f"{source}: column {names(missing)} not found; the data has {names(sorted(present))}"
        )
    absent = [c for c in cfg.covariates if c not in present]
    if absent:
        roles = ", ".join(f"{c!r} ({cfg.covariates[c]})" for c in absent)
        raise CovariateNotFoundError(
            f"{source}: covariate {roles} is declared in data.covariates but not in the data; "
            f"the data has {names(sorted(present))}"
        )


def parse_timestamps(
    col: pd.Series, name: str, timezone: str | None, rows: pd.Series | None = None
) -> pd.Series:
    """Parse a timestamp column into datetime64 (UTC if zone-aware input or ``timezone``)."""
    rows = rows if rows is not None else pd.Series(np.arange(len(col)))
    if pd.api.types.is_datetime64_any_dtype(col):
        t = pd.Series(col.to_numpy(), index=col.index) if col.dt.tz is None else col
        if t.isna().any():
            bad = rows[t.isna()].tolist()
            raise TimestampParseError(f"column {name!r} has empty timestamps in rows {format_rows(bad)}")
    else:
        t = _parse_text_timestamps(col, name, timezone, rows)
    if getattr(t.dt, "tz", None) is None and timezone is not None:
        t = _localize(t, name, timezone, rows)
    elif getattr(t.dt, "tz", None) is not None:
        t = t.dt.tz_convert("UTC")
    return t.reset_index(drop=True)


def _parse_text_timestamps(col: pd.Series, name: str, timezone: str | None, rows: pd.Series) -> pd.Series:
    text = col.astype("string").str.strip()
    empty = text.isna() | (text == "")
    if empty.any():
        raise TimestampParseError(
            f"column {name!r} has empty timestamps in rows {format_rows(rows[empty].tolist())}"
        )
    if pd.api.types.is_numeric_dtype(col):
        raise TimestampParseError(
            f"column {name!r} holds numbers ({text.iloc[0]!r} in row {rows.iloc[0]}), not "
            "timestamps; write them as ISO 8601 (2024-01-31 13:00:00)"
        )
    aware = text.str.contains(_TZ_PRESENT, regex=True).to_numpy(dtype=bool)
    if aware.any() and not aware.all():
        bad = rows[~aware if aware.sum() > (~aware).sum() else aware].tolist()
        raise MixedTimezoneError(
            f"column {name!r} mixes timestamps with and without a time zone; rows "
            f"{format_rows(bad)} differ from the rest; write every timestamp with its offset or none"
        )
    if aware.all():
        offsets = text.str.extract(_TZ_SUFFIX, expand=False).str.replace(":", "", regex=False)
        offsets = offsets.replace("Z", "+0000")
        distinct = pd.unique(offsets)
        if len(distinct) > 1 and timezone is None:
            first = offsets.iloc[0]
            bad = rows[offsets != first].tolist()
            raise MixedTimezoneError(
                f"column {name!r} mixes UTC offsets {sorted(distinct)[:4]}: rows {format_rows(bad)} "
                f"differ from the first row's {first}; if these are one zone's daylight-saving "
                "offsets, set data.timezone (e.g. Europe/Berlin) so they are read as one clock"
            )
    parsed = _strict_parse(text, utc=bool(aware.all()))
    bad_mask = parsed.isna().to_numpy()
    if bad_mask.any():
        mixed = pd.to_datetime(text, format="mixed", errors="coerce", utc=bool(aware.all()))
        unparseable = mixed.isna().to_numpy()
        if unparseable.any():
            bad = rows[unparseable].tolist()
            examples = text[unparseable].head(3).tolist()
            raise TimestampParseError(
                f"column {name!r} has values that are not timestamps in rows {format_rows(bad)}: "
                f"{examples}"
            )
        bad = rows[bad_mask].tolist()
        raise TimestampParseError(
            f"column {name!r} mixes timestamp formats: rows {format_rows(bad)} "
            f"({text[bad_mask].head(2).tolist()}) differ from row {rows.iloc[0]} "
            f"({text.iloc[0]!r}); write every timestamp in one format"
        )
    return parsed


def _strict_parse(text: pd.Series, utc: bool) -> pd.Series:
    """Parse with the format of the first value; values in another format become NaT."""
    first = text.iloc[0]
    try:
        pd.to_datetime(pd.Series([first]), format="ISO8601", utc=utc)
        return pd.to_datetime(text, format="ISO8601", errors="coerce", utc=utc)
    except (ValueError, TypeError):
        pass
    from pandas.tseries.api import guess_datetime_format

    fmt = guess_datetime_format(first)
    if fmt is None:
        return pd.to_datetime(text, format="mixed", errors="coerce", utc=utc).where(
            text == text.iloc[0], pd.NaT
        ) if len(text) == 1 else pd.Series(pd.NaT, index=text.index)
    return pd.to_datetime(text, format=fmt, errors="coerce", utc=utc)


def _localize(t: pd.Series, name: str, timezone: str, rows: pd.Series) -> pd.Series:
    try:
        local = t.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    except Exception as err:  # unknown zone names raise pytz/zoneinfo errors
        raise MixedTimezoneError(f"data.timezone {timezone!r} is not a known time zone: {err}") from None
    bad = local.isna().to_numpy() & t.notna().to_numpy()
    if bad.any():
        offending = [f"row {r} ({ts})" for r, ts in zip(rows[bad], t[bad], strict=True)]
        raise DSTTransitionError(
            f"column {name!r}: local times in {timezone} that are ambiguous or do not exist across "
            f"a daylight-saving change: {format_rows(offending)}; write timestamps in UTC or with "
            "their UTC offset"
        )
    return local.dt.tz_convert("UTC")


def _to_numeric(col: pd.Series, name: str, rows: pd.Series, t: pd.Series) -> np.ndarray:
    if pd.api.types.is_bool_dtype(col):
        values = col.astype("float64").to_numpy()
    elif pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_complex_dtype(col):
        values = col.astype("float64").to_numpy()
    else:
        coerced = pd.to_numeric(col, errors="coerce")
        if pd.api.types.is_complex_dtype(coerced):
            coerced = pd.Series(np.nan, index=col.index)
        text = col.astype("string").str.strip()
        nan_words = text.str.lower().isin(["nan", "na", "n/a", "null", "none", ""])
        bad = coerced.isna().to_numpy() & col.notna().to_numpy() & ~nan_words.fillna(True).to_numpy()
        if bad.any():
            where_ = [f"row {r} (t={ts}, value {v!r})" for r, ts, v in
                      zip(rows[bad].head(5), t[bad].head(5), col[bad].head(5), strict=True)]
            raise NonNumericValueError(
                f"column {name!r} must be numeric but has non-numeric values at "
                f"{format_rows(where_ + [''] * max(0, int(bad.sum()) - 5))}"
            )
        values = coerced.astype("float64").to_numpy()
    inf = np.isinf(values)
    if inf.any():
        where_ = [f"row {r} (t={ts}, {v})" for r, ts, v in zip(rows[inf], t[inf], values[inf], strict=True)]
        raise NonFiniteValueError(f"column {name!r} holds infinite values at {format_rows(where_)}")
    return values


def _check_mixed_series(canon: pd.DataFrame, cfg: DataConfig) -> None:
    counts = canon.groupby(TIME, sort=False).size()
    if counts.max() <= 1:
        return
    repeated = counts[counts > 1]
    k = int(counts.mode().iloc[0])
    # Most timestamps repeated the same number of times: several series stacked together.
    if k >= 2 and (counts == k).mean() >= 0.5:
        example = repeated.index[0]
        rows = canon.loc[canon[TIME] == example, _ROW].tolist()
        raise MixedSeriesError(
            f"every timestamp appears about {k} times (e.g. {example} in rows {format_rows(rows)}): "
            f"this looks like {k} series stacked without an id column; set data.id_column to the "
            "column that tells them apart, or list them as data.target for wide format"
        )


def _check_order_and_duplicates(canon: pd.DataFrame, cfg: DataConfig, report: RepairReport) -> pd.DataFrame:
    key = [SERIES, TIME]
    dup_any = canon.duplicated(key, keep=False)
    if dup_any.any():
        value_cols = [c for c in canon.columns if c != _ROW]
        exact = canon.duplicated(value_cols, keep="first")
        conflicting = dup_any & ~canon.duplicated(value_cols, keep=False)
        if conflicting.any():
            sub = canon[conflicting]
            sid = sub[SERIES].iloc[0]
            ts = sub[TIME].iloc[0]
            rows = canon.loc[(canon[SERIES] == sid) & (canon[TIME] == ts), _ROW].tolist()
            raise DuplicateTimestampError(
                f"series {sid!r}: timestamp {ts} appears in rows {format_rows(rows)} with different "
                f"values ({int(conflicting.sum())} conflicting rows in all); keep one row per timestamp"
            )
        if not cfg.repair.drop_duplicates:
            sub = canon[exact]
            rows = sub[_ROW].tolist()
            raise DuplicateTimestampError(
                f"series {sub[SERIES].iloc[0]!r}: rows {format_rows(rows)} repeat earlier rows exactly "
                f"(first at t={sub[TIME].iloc[0]}); set data.repair.drop_duplicates: true to drop them"
            )
        report.add("dropped_duplicate_rows", int(exact.sum()), f"rows {format_rows(canon.loc[exact, _ROW])}")
        canon = canon[~exact]
    # Order by series in first-appearance order, then time within each series.
    order = pd.Categorical(canon[SERIES], categories=pd.unique(canon[SERIES]))
    sorted_within = (
        canon.assign(_cat=order.codes).groupby("_cat", sort=False)[TIME].apply(lambda s: s.is_monotonic_increasing)
    )
    contiguous = bool(np.all(np.diff(order.codes) >= 0))
    if not (sorted_within.all() and contiguous):
        if not cfg.repair.sort:
            bad_series = [order.categories[i] for i in sorted_within.index[~sorted_within.to_numpy()]]
            sid = bad_series[0] if bad_series else order.categories[0]
            sub = canon[canon[SERIES] == sid]
            back = sub[TIME].diff() < pd.Timedelta(0) if bad_series else pd.Series(False, index=sub.index)
            rows = sub.loc[back, _ROW].tolist() if back.any() else sub[_ROW].head(1).tolist()
            detail = (f"series {sid!r}: rows {format_rows(rows)} go back in time"
                      if bad_series else "rows of different series are interleaved")
            raise UnsortedTimestampsError(
                f"{detail}; sort the file by series and time, or set data.repair.sort: true"
            )
        moved = int((canon.assign(_cat=order.codes).sort_values(["_cat", TIME], kind="stable")[_ROW].to_numpy()
                     != canon[_ROW].to_numpy()).sum())
        report.add("sorted_rows", moved, "rows moved into time order")
        canon = canon.assign(_cat=order.codes).sort_values(["_cat", TIME], kind="stable").drop(columns="_cat")
    return canon.reset_index(drop=True)


def _check_static(canon: pd.DataFrame, cfg: DataConfig) -> None:
    for col in cfg.covariates_with("static"):
        n = canon.groupby(SERIES, sort=False)[col].nunique(dropna=False)
        if (n > 1).any():
            sid = n.index[(n > 1).to_numpy()][0]
            raise InputValidationError(
                f"static covariate {col!r} changes over time in series {sid!r}; a static covariate "
                "holds one value per series (declare it 'past' or 'future' instead)"
            )


def _check_constant(canon: pd.DataFrame) -> None:
    spread = canon.groupby(SERIES, sort=False)[TARGET].agg(lambda s: float(np.nanmax(s) - np.nanmin(s)))
    const = spread[spread.to_numpy() == 0]
    if len(const):
        sid = const.index[0]
        value = canon.loc[canon[SERIES] == sid, TARGET].dropna().iloc[0]
        raise ConstantSeriesError(
            f"series {format_rows(list(const.index))}: the target never changes (e.g. series {sid!r} "
            f"is {value} throughout); a constant series cannot be scaled or learnt, drop it"
        )


def dataset_hash(frame: pd.DataFrame, cfg: DataConfig) -> str:
    """A content hash of the canonical data and the column roles (not the file's path)."""
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    roles = cfg.model_dump(mode="json", exclude={"path"})
    h.update(json.dumps(roles, sort_keys=True).encode())
    return h.hexdigest()[:16]


def ingest(cfg: DataConfig, path: str | Path | None = None) -> IngestResult:
    """Read and validate the configured file (or ``path`` with the config's column roles)."""
    path = Path(path) if path is not None else cfg.path
    raw = read_table(path, cfg.format)
    return prepare_frame(raw, cfg, source=str(path))
