"""The forecast archive: every batch prediction appended to one table, ``forecasts``.

One row per forecast value, keyed by (``model_name``, ``model_version``, ``origin``,
``series_id``, ``step``), the table's primary key: appending a batch again (a retried task, a
re-run prediction) inserts nothing twice. The store is any SQLAlchemy URL of SQLite or
PostgreSQL; by default a SQLite file beside MLflow's SQLite store (``archive_uri``).

Storage choices:

- ``t`` and ``origin`` are ``DateTime`` columns without a zone. Forecasts with zone-aware
  timestamps are stored as UTC wall time, naive ones as the wall time given; the ``tz`` column
  says which (``""`` naive, else the zone's name: ``UTC``, ``Europe/Paris``, ``UTC+02:00``), and
  ``read`` gives each row back in the kind its writer passed (microsecond resolution). Rows of
  several kinds read together come back in UTC (naive ones taken as UTC).
- ``intervals`` is JSON text holding the batch's interval bounds and quantiles by column name
  (``{"yhat_lo_80": 1.2, "yhat_hi_80": 3.4, "q0.5": 2.3}``, ``{}`` for a model without them);
  ``read`` expands it back into columns.
- ``created_at`` is the UTC time of the append (one value per call); ``read`` returns it UTC-aware.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pandas.tseries.frequencies import to_offset

from forecasting.data.schema import SERIES, TIME
from forecasting.errors import ArchiveError, names

if TYPE_CHECKING:
    from forecasting.config import Config

ARCHIVE_FILE = "forecast_archive.db"
IDENTITY = ("model_name", "model_version", "run_id")
REQUIRED = (SERIES, TIME, "yhat", "model_name", "model_version")
CHUNK_ROWS = 5000  # rows per executemany; all chunks of one append share one transaction
DIALECTS = ("sqlite", "postgresql")

METADATA = sa.MetaData()
FORECASTS = sa.Table(
    "forecasts",
    METADATA,
    sa.Column("model_name", sa.String, primary_key=True),
    sa.Column("model_version", sa.String, primary_key=True),
    sa.Column("origin", sa.DateTime, primary_key=True),  # t of step 1 minus one period
    sa.Column("series_id", sa.String, primary_key=True),
    sa.Column("step", sa.Integer, primary_key=True, autoincrement=False),  # 1..H
    sa.Column("t", sa.DateTime, nullable=False),
    sa.Column("tz", sa.String, nullable=False),  # "" naive, else the zone t and origin were in
    sa.Column("yhat", sa.Double, nullable=False),
    sa.Column("intervals", sa.Text, nullable=False),  # JSON object, {} without intervals
    sa.Column("run_id", sa.String),  # the model's MLflow run
    sa.Column("prediction_run_id", sa.String),  # the MLflow run of the batch prediction
    sa.Column("created_at", sa.DateTime, nullable=False),  # UTC
    sa.Index("ix_forecasts_model_t", "model_name", "t"),
)


def archive_uri(cfg: Config) -> str:
    """The archive's SQLAlchemy URL: ``monitoring.archive_uri``, else ``forecast_archive.db``
    beside the MLflow SQLite store, else (a tracking server) ``<project>/mlruns/forecast_archive.db``."""
    if cfg.monitoring.archive_uri:
        return cfg.monitoring.archive_uri
    from forecasting.tracking import PROJECT_ROOT, resolve_tracking_uri

    tracking = resolve_tracking_uri(cfg.tracking)[0]
    folder = PROJECT_ROOT / "mlruns"
    if tracking.startswith("sqlite:///"):
        db = tracking[len("sqlite:///") :].split("?", 1)[0]
        if db and db != ":memory:":
            folder = Path(db).parent.resolve()
    return f"sqlite:///{folder / ARCHIVE_FILE}"


class Archive:
    """The ``forecasts`` table of the database at ``uri`` (created if missing).

    Opening it connects once: a URL that cannot be opened is an ``ArchiveError`` naming it
    (without its password). Use it as a context manager, or call ``close``.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.shown = _shown(uri)
        try:
            url = sa.make_url(uri)
        except sa.exc.ArgumentError:
            raise ArchiveError(
                f"forecast archive URL {self.shown!r} is not a database URL; set monitoring.archive_uri "
                "to a SQLAlchemy URL (sqlite:///path/archive.db, postgresql+psycopg2://user@host/db)"
            ) from None
        self.dialect = url.get_backend_name()
        if self.dialect not in DIALECTS:
            raise ArchiveError(
                f"forecast archive {self.shown}: {self.dialect!r} databases are not supported; "
                f"use one of {names(DIALECTS)}"
            )
        self.engine = self._create_engine(url)
        self._create_table()

    def _create_engine(self, url: sa.URL) -> sa.Engine:
        connect_args: dict[str, Any] = {}
        if self.dialect == "sqlite":
            connect_args["timeout"] = 30  # wait for another writer's transaction, not 5 s
            if url.database and url.database != ":memory:":
                try:
                    Path(url.database).parent.mkdir(parents=True, exist_ok=True)
                except OSError as err:
                    raise ArchiveError(
                        f"forecast archive {self.shown}: its folder cannot be created ({err.strerror})"
                    ) from None
        elif "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = 10  # a host that does not answer fails in seconds
        try:
            return sa.create_engine(url, connect_args=connect_args)
        except (ImportError, sa.exc.NoSuchModuleError) as err:
            raise ArchiveError(
                f"forecast archive {self.shown}: its database driver is not installed ({err}); "
                "install the postgres extra (psycopg2-binary) or use a sqlite:/// URL"
            ) from None

    def _create_table(self) -> None:
        for attempt in range(2):
            try:
                METADATA.create_all(self.engine, checkfirst=True)
                return
            except sa.exc.SQLAlchemyError as err:
                if not attempt and isinstance(err, sa.exc.IntegrityError | sa.exc.ProgrammingError):
                    continue  # another process created it between our check and ours: look again
                self.engine.dispose()
                raise ArchiveError(
                    f"forecast archive {self.shown} cannot be opened: {_reason(err)}; check "
                    "monitoring.archive_uri (or the MLflow store folder it defaults to)"
                ) from None

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing -------------------------------------------------------------------------------
    def append(self, forecasts: pd.DataFrame, freq: str, prediction_run_id: str | None = None) -> int:
        """Append a batch's ``forecasts`` (``series_id, t, yhat, <bounds...>, model_name,
        model_version, run_id``; H rows per series); the number of rows actually inserted.

        ``step`` is 1..H in time order per series and model version, ``origin`` the t of step 1
        minus one period of ``freq`` (a pandas offset alias). Rows whose key is already in the
        table are skipped, so appending a batch again inserts 0. All or nothing: one transaction.
        """
        columns = _columns(forecasts, freq, prediction_run_id)
        n = len(columns["step"])
        if not n:
            return 0
        inserted = 0
        try:
            with self.engine.begin() as conn:
                if self.dialect == "sqlite":
                    inserted = _insert_sqlite(conn, columns)
                else:
                    rows = _as_dicts(columns)
                    insert = _dialect_insert(self.dialect)
                    statement = insert(FORECASTS).on_conflict_do_nothing().returning(FORECASTS.c.step)
                    for i in range(0, n, CHUNK_ROWS):
                        inserted += len(conn.execute(statement, rows[i : i + CHUNK_ROWS]).all())
        except sa.exc.SQLAlchemyError as err:
            raise ArchiveError(
                f"forecast archive {self.shown}: appending {n} forecasts failed, nothing "
                f"was written: {_reason(err)}"
            ) from None
        return inserted

    # --- reading -------------------------------------------------------------------------------
    def read(
        self, model_name: str, version: str | None = None, since: Any = None, until: Any = None
    ) -> pd.DataFrame:
        """The archived forecasts of ``model_name`` (one ``version`` or all) with target time
        ``since <= t <= until`` (either bound optional; a zone-aware bound is compared in UTC).

        Columns: ``model_name, model_version, origin, series_id, step, t, yhat, <bounds...>,
        run_id, prediction_run_id, created_at``; the bounds in a stable order (each level's
        ``yhat_lo``/``yhat_hi`` by level, then quantiles by probability). Sorted by version
        (numerically), origin, series and step.
        """
        table = FORECASTS.c
        query = sa.select(FORECASTS).where(table.model_name == model_name)
        if version is not None:
            query = query.where(table.model_version == str(version))
        if since is not None:
            query = query.where(table.t >= _stored_bound(since))
        if until is not None:
            query = query.where(table.t <= _stored_bound(until))
        try:
            with self.engine.connect() as conn:
                result = conn.execute(query)
                stored = pd.DataFrame([tuple(r) for r in result], columns=list(result.keys()))
        except sa.exc.SQLAlchemyError as err:
            raise ArchiveError(f"forecast archive {self.shown}: reading failed: {_reason(err)}") from None
        return _frame(stored)

    def versions(self, model_name: str) -> list[str]:
        """The versions of ``model_name`` with archived forecasts, in numeric order."""
        query = sa.select(FORECASTS.c.model_version).where(FORECASTS.c.model_name == model_name).distinct()
        try:
            with self.engine.connect() as conn:
                found = list(conn.execute(query).scalars())
        except sa.exc.SQLAlchemyError as err:
            raise ArchiveError(f"forecast archive {self.shown}: reading failed: {_reason(err)}") from None
        return sorted(found, key=_version_key)


# --- frames <-> rows ---------------------------------------------------------------------------
def _columns(forecasts: pd.DataFrame, freq: str, prediction_run_id: str | None) -> dict[str, Any]:
    """The table's columns for a batch's forecasts (no I/O): a list per column, but ``origin``,
    ``t`` and ``created_at`` as naive datetime64 Series, which each dialect's writer converts."""
    missing = [c for c in REQUIRED if c not in forecasts.columns]
    if missing:
        raise ArchiveError(f"forecasts to archive lack column(s) {names(missing)}")
    if forecasts.empty:
        return {"step": []}
    forecasts = forecasts.reset_index(drop=True)
    if not pd.api.types.is_datetime64_any_dtype(forecasts[TIME]):
        raise ArchiveError(
            f"forecasts to archive: column {TIME!r} holds {forecasts[TIME].dtype}, not timestamps"
        )
    try:
        period = to_offset(freq)
    except (TypeError, ValueError):
        raise ArchiveError(f"forecasts to archive: {freq!r} is not a pandas frequency alias") from None
    bands = [c for c in forecasts.columns if c not in (*REQUIRED, "run_id")]
    try:
        bounds = forecasts[bands].to_numpy(dtype=np.float64)  # (N, n_bands)
    except (TypeError, ValueError):
        raise ArchiveError(
            f"forecasts to archive: interval column(s) {names(bands)} are not numeric"
        ) from None
    yhat = forecasts["yhat"].to_numpy(dtype=np.float64)
    if not np.isfinite(yhat).all():
        raise ArchiveError("forecasts to archive: 'yhat' holds NaN or infinite values")
    if forecasts[["model_name", "model_version"]].isna().any(axis=None):
        raise ArchiveError("forecasts to archive: some rows have no model_name or model_version")

    frame = forecasts[[SERIES, TIME, "model_name", "model_version"]].astype(
        {SERIES: str, "model_name": str, "model_version": str}
    )
    keys = ["model_name", "model_version", SERIES]
    in_time_order = frame.sort_values(TIME, kind="stable")
    step = in_time_order.groupby(keys, sort=False).cumcount().add(1).reindex(frame.index)
    origin = frame.groupby(keys, sort=False)[TIME].transform("min") - period
    tz = frame[TIME].dt.tz
    zone = "" if tz is None else _zone_name(tz)
    if tz is not None:
        frame[TIME] = frame[TIME].dt.tz_convert("UTC").dt.tz_localize(None)
        origin = origin.dt.tz_convert("UTC").dt.tz_localize(None)

    run_ids = forecasts["run_id"] if "run_id" in forecasts.columns else pd.Series(None, index=forecasts.index)
    n = len(frame)
    return {
        "model_name": frame["model_name"].tolist(),  # lists: iterating an Arrow-backed column is slow
        "model_version": frame["model_version"].tolist(),
        "origin": origin.astype("datetime64[us]").reset_index(drop=True),
        "series_id": frame[SERIES].tolist(),
        "step": step.astype(int).tolist(),
        "t": frame[TIME].astype("datetime64[us]").reset_index(drop=True),
        "tz": [zone] * n,
        "yhat": yhat.tolist(),
        "intervals": _intervals_json(bands, bounds),
        "run_id": [
            None if r is None else str(r) for r in run_ids.astype(object).where(run_ids.notna(), None)
        ],
        "prediction_run_id": [prediction_run_id] * n,
        "created_at": pd.Series(np.full(n, np.datetime64(datetime.now(UTC).replace(tzinfo=None), "us"))),
    }


_DATETIMES = ("origin", "t", "created_at")


def _as_dicts(columns: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows as SQLAlchemy takes them (``datetime`` objects), for ``executemany``."""
    values = {c: _pydatetimes(v) if c in _DATETIMES else v for c, v in columns.items()}
    names = [c.name for c in FORECASTS.columns]
    return [dict(zip(names, row, strict=True)) for row in zip(*(values[c] for c in names), strict=True)]


def _insert_sqlite(conn: sa.Connection, columns: dict[str, Any]) -> int:
    """Insert the rows into SQLite through the driver's ``executemany``, skipping keys already
    there; the number inserted (sqlite3 sums the rows each statement changed).

    SQLAlchemy's per-row parameter processing cost ~40 s for 2.4 M rows; this writes the same
    text: its SQLite ``DateTime`` stores ``YYYY-MM-DD HH:MM:SS.ffffff`` (pinned by
    ``tests/test_archive.py``), so keys compare equal whichever path wrote them."""
    names = [c.name for c in FORECASTS.columns]
    values = {c: _sqlite_text(v) if c in _DATETIMES else v for c, v in columns.items()}
    marks = ", ".join("?" * len(names))
    sql = f"INSERT INTO {FORECASTS.name} ({', '.join(names)}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    rows = list(zip(*(values[c] for c in names), strict=True))
    inserted = 0
    for i in range(0, len(rows), CHUNK_ROWS):
        inserted += conn.exec_driver_sql(sql, rows[i : i + CHUNK_ROWS]).rowcount
    return inserted


def _sqlite_text(stamps: pd.Series) -> list[str]:
    """Naive datetime64 values as SQLAlchemy's SQLite ``DateTime`` stores them,
    ``YYYY-MM-DD HH:MM:SS.ffffff``; each distinct value formatted once (a batch holds a few)."""
    codes, uniques = pd.factorize(stamps)  # NaT: code -1, stored as NULL (and refused: NOT NULL)
    iso = np.datetime_as_string(np.asarray(uniques, dtype="datetime64[us]"), unit="us")
    text = np.append(np.asarray(np.char.replace(iso, "T", " "), dtype=object), None)
    return text[codes].tolist()


def _intervals_json(bands: list[str], bounds: np.ndarray) -> list[str]:
    """One JSON object per row of ``bounds`` (N, n_bands), keys ``bands``; NaN and inf as null.

    Each value is Arrow's shortest text that reads back as the same float (``2`` for 2.0, ``1e+16``;
    ``-0`` is written ``-0.0`` to keep its sign), joined column by column in Arrow: a Python
    ``repr`` per value was 30 s of an append of 2.4 M rows with four bounds.
    """
    if not bands:
        return ["{}"] * len(bounds)
    import pyarrow as pa
    import pyarrow.compute as pc

    pieces: list[Any] = []
    for j, band in enumerate(bands):
        values = pa.array(np.ascontiguousarray(bounds[:, j]))
        text = pc.cast(values, pa.string())
        text = pc.if_else(pc.equal(text, "-0"), "-0.0", text)
        pieces += [
            ("{" if j == 0 else ", ") + json.dumps(band) + ": ",
            pc.if_else(pc.is_finite(values), text, "null"),
        ]
    return pc.binary_join_element_wise(*pieces, "}", "").to_pylist()


def _frame(stored: pd.DataFrame) -> pd.DataFrame:
    """The frame ``read`` returns from the table's rows (intervals expanded, zones restored)."""
    head = ["model_name", "model_version", "origin", SERIES, "step", TIME, "yhat"]
    tail = ["run_id", "prediction_run_id", "created_at"]
    if stored.empty:
        return pd.DataFrame(columns=[*head, *tail])
    stored = stored.assign(_v=pd.to_numeric(stored["model_version"], errors="coerce"))
    stored = stored.sort_values(["_v", "model_version", "origin", SERIES, "step"], kind="stable")
    stored = stored.reset_index(drop=True)
    parsed = [json.loads(text) for text in stored["intervals"].tolist()]
    bounds = pd.DataFrame.from_records(parsed, index=stored.index)
    bounds = bounds[sorted(bounds.columns, key=_band_key)].astype(np.float64)
    out = stored[head + tail].copy()
    out["step"] = out["step"].astype(np.int64)
    out["yhat"] = out["yhat"].astype(np.float64)
    out[TIME] = _restore(stored[TIME], stored["tz"])
    out["origin"] = _restore(stored["origin"], stored["tz"])
    out["created_at"] = pd.to_datetime(stored["created_at"]).dt.as_unit("us").dt.tz_localize("UTC")
    return pd.concat([out[head], bounds, out[tail]], axis=1)


def _restore(stored: pd.Series, tz: pd.Series) -> pd.Series:
    """Stored wall times back in their writer's kind: naive, or UTC converted to the zone."""
    values = pd.to_datetime(stored).dt.as_unit("us")
    zones = set(tz)
    if zones == {""}:
        return values
    utc = values.dt.tz_localize("UTC")
    return utc.dt.tz_convert(zones.pop()) if len(zones) == 1 else utc


_BAND = re.compile(r"^yhat_(lo|hi)_(\d+(?:\.\d+)?)$")
_QUANTILE = re.compile(r"^q(\d*\.?\d+)$")


def _band_key(column: str) -> tuple[int, float, str]:
    """``yhat_lo_80, yhat_hi_80, yhat_lo_95, yhat_hi_95`` (serving's order), then ``q0.1 ...``."""
    if match := _BAND.match(column):
        return (0, float(match[2]), "0" if match[1] == "lo" else "1")
    if match := _QUANTILE.match(column):
        return (1, float(match[1]), column)
    return (2, 0.0, column)


def _version_key(version: str) -> tuple[int, int, str]:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def _zone_name(tz: Any) -> str:
    """A name pandas turns back into ``tz``; UTC for a zone without one (dateutil files)."""
    name = getattr(tz, "key", None) or getattr(tz, "zone", None) or str(tz)
    try:
        pd.Timestamp(0, tz=name)
    except (ValueError, TypeError, KeyError):
        return "UTC"
    return name


def _pydatetimes(values: pd.Series) -> list[datetime]:
    return list(np.asarray(values.dt.to_pydatetime(), dtype=object))


def _stored_bound(bound: Any) -> datetime:
    """A ``since``/``until`` bound as stored: zone-aware bounds in UTC wall time."""
    stamp = pd.Timestamp(bound)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()


def _dialect_insert(dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _reason(err: sa.exc.SQLAlchemyError) -> str:
    """The database's own message, one line, without the statement SQLAlchemy appends."""
    reason = getattr(err, "orig", None) or err
    return " ".join(str(reason).split()) or type(reason).__name__


def _shown(uri: str) -> str:
    """``uri`` with its password replaced by ``***``, even when it does not parse."""
    try:
        return sa.make_url(uri).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", uri)
