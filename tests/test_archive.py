"""The forecast archive on real databases (a SQLite file, a PostgreSQL database on the local
server): values come back as written, appending again inserts nothing, versions and origins
coexist, and batch prediction archives beside the tracking store."""

from __future__ import annotations

import re
import sqlite3

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from servers import postgres_database
from test_pipeline import raw_config

from forecasting.config import config_from_dict
from forecasting.errors import ArchiveError
from forecasting.monitoring import archive as archive_module
from forecasting.monitoring.archive import ARCHIVE_FILE, Archive, archive_uri
from forecasting.tracking import PROJECT_ROOT

BANDS = ["yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95", "q0.1", "q0.9"]


def batch(
    start: str = "2024-01-01 01:00",
    n_series: int = 2,
    horizon: int = 4,
    version: str = "1",
    tz: str | None = None,
    bands: list[str] = BANDS,
    seed: int = 0,
) -> pd.DataFrame:
    """A batch prediction's output: ``horizon`` hourly rows per series from ``start``."""
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(n_series):
        yhat = rng.standard_normal(horizon) * 10.0
        part = pd.DataFrame(
            {"series_id": f"s{k}", "t": pd.date_range(start, periods=horizon, freq="h", tz=tz), "yhat": yhat}
        )
        for i, band in enumerate(bands):
            part[band] = yhat + (i - len(bands) / 2) / 3.0
        parts.append(part.assign(model_name="m", model_version=version, run_id=f"run-{version}"))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def archive_url(request, tmp_path):
    """A new, empty archive database: a SQLite file, or a PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'archive.db'}"
    else:
        with postgres_database() as url:
            yield url


@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Paris"])
def test_append_then_read_gives_back_what_was_written(tz, tmp_path):
    written = batch(tz=tz, horizon=5)
    with Archive(f"sqlite:///{tmp_path / 'archive.db'}") as archive:
        assert archive.append(written, "h", prediction_run_id="p1") == len(written)
        got = archive.read("m")

    assert list(got.columns) == [
        "model_name", "model_version", "origin", "series_id", "step", "t", "yhat",
        *BANDS, "run_id", "prediction_run_id", "created_at",
    ]  # fmt: skip
    same = ["series_id", "t", "yhat", *BANDS, "model_name", "model_version", "run_id"]
    pd.testing.assert_frame_equal(got[same], written[same], check_dtype=False)
    assert got["t"].dt.tz == written["t"].dt.tz  # naive stays naive, a zone comes back as itself
    assert got["step"].tolist() == [1, 2, 3, 4, 5] * 2
    first = pd.Timestamp("2024-01-01 00:00", tz=tz)
    assert (got["origin"] == first).all() and got["origin"].dt.tz == written["t"].dt.tz
    assert set(got["prediction_run_id"]) == {"p1"} and str(got["created_at"].dt.tz) == "UTC"


def test_a_model_without_intervals_and_rows_out_of_time_order(tmp_path):
    written = batch(bands=[]).iloc[::-1]  # every row reversed: steps follow t, not row order
    with Archive(f"sqlite:///{tmp_path / 'archive.db'}") as archive:
        archive.append(written, "h")
        got = archive.read("m")
    assert list(got.columns[6:]) == ["yhat", "run_id", "prediction_run_id", "created_at"]
    assert got["prediction_run_id"].isna().all()
    by_step = got[got["series_id"] == "s0"].set_index("step")["t"]
    assert by_step.is_monotonic_increasing and by_step.index.tolist() == [1, 2, 3, 4]


def test_appending_the_same_forecasts_again_inserts_nothing(archive_url):
    written = batch(n_series=3, horizon=6)
    with Archive(archive_url) as archive:
        assert archive.append(written, "h", "p1") == 18
        assert archive.append(written, "h", "p2") == 0  # a retried task or a re-run prediction
        assert archive.append(written.iloc[:7], "h", "p3") == 0  # a part of it, too
        got = archive.read("m")
    assert len(got) == 18 and set(got["prediction_run_id"]) == {"p1"}  # the first write stands
    assert np.array_equal(got["yhat"].to_numpy(), written["yhat"].to_numpy())


def test_versions_and_origins_coexist_and_read_filters_them(archive_url):
    with Archive(archive_url) as archive:
        for version in ("2", "10"):
            for start in ("2024-01-01 01:00", "2024-01-01 02:00"):  # two origins, overlapping t
                assert archive.append(batch(start, version=version), "h") == 8
        assert archive.versions("m") == ["2", "10"]  # numeric order, not text order
        assert archive.versions("other") == []

        everything = archive.read("m")
        assert len(everything) == 32
        assert everything["model_version"].tolist() == ["2"] * 16 + ["10"] * 16
        origins = sorted(everything["origin"].unique())
        assert origins == [pd.Timestamp("2024-01-01 00:00"), pd.Timestamp("2024-01-01 01:00")]

        one = archive.read("m", version="10")
        assert set(one["model_version"]) == {"10"} and len(one) == 16
        window = archive.read("m", "2", since="2024-01-01 03:00", until=pd.Timestamp("2024-01-01 04:00"))
        assert window["t"].between("2024-01-01 03:00", "2024-01-01 04:00").all()
        assert len(window) == 2 * 2 * 2  # two hours, two origins, two series
        assert archive.read("m", "3").empty and archive.read("other").empty


def test_a_zone_aware_bound_is_compared_in_utc(tmp_path):
    with Archive(f"sqlite:///{tmp_path / 'archive.db'}") as archive:
        archive.append(batch(tz="Europe/Paris", horizon=6), "h")
        got = archive.read("m", since=pd.Timestamp("2024-01-01 02:00", tz="UTC"))  # 03:00 in Paris
    assert got["t"].min() == pd.Timestamp("2024-01-01 03:00", tz="Europe/Paris") and len(got) == 2 * 4


def test_one_append_is_all_or_nothing(tmp_path, monkeypatch):
    """A failure in the last chunk leaves nothing of the earlier ones."""
    path = tmp_path / "archive.db"
    with Archive(f"sqlite:///{path}") as archive:
        with sqlite3.connect(path) as db:  # the database refuses the last series' rows
            db.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON forecasts WHEN NEW.series_id = 's2' "
                "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
            )
        db.close()
        monkeypatch.setattr(archive_module, "CHUNK_ROWS", 3)
        with pytest.raises(ArchiveError, match="nothing was written: refused by a test trigger"):
            archive.append(batch(n_series=3), "h")
        assert archive.read("m").empty


def test_sqlite_rows_are_written_as_sqlalchemy_writes_them(tmp_path):
    """``append`` writes SQLite through the driver (``_insert_sqlite``); what it relies on is
    SQLAlchemy's storage of the same rows (``DateTime`` as ``YYYY-MM-DD HH:MM:SS.ffffff``): the
    rows are identical to SQLAlchemy's, a batch SQLAlchemy wrote is not inserted again, and
    bounds read back as the same floats (a negative zero and a missing bound too)."""
    import sqlalchemy as sa

    written = batch(tz="Europe/Paris", horizon=3)
    written.loc[0, "t"] += pd.Timedelta(microseconds=7)
    written.loc[1, "q0.1"], written.loc[2, "q0.9"] = -0.0, np.nan
    columns = archive_module._columns(written, "h", "p1")
    raw = {}
    for name in ("driver", "sqlalchemy"):
        path = tmp_path / f"{name}.db"
        with Archive(f"sqlite:///{path}") as archive:
            if name == "driver":
                assert archive.append(written, "h", "p1") == len(written)
            else:
                with archive.engine.begin() as conn:
                    statement = sa.dialects.sqlite.insert(archive_module.FORECASTS).on_conflict_do_nothing()
                    conn.execute(statement, archive_module._as_dicts(columns))
                assert archive.append(written, "h", "p1") == 0  # the same keys, whoever wrote them
                got = archive.read("m")
        with sqlite3.connect(path) as db:
            raw[name] = db.execute("SELECT * FROM forecasts ORDER BY series_id, step").fetchall()
        db.close()
    assert [r[:-1] for r in raw["driver"]] == [r[:-1] for r in raw["sqlalchemy"]]  # all but created_at
    assert raw["driver"][0][2] == "2023-12-31 23:00:00.000007"  # origin: UTC wall time, microseconds
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", raw["driver"][0][-1])  # created_at
    same = ["series_id", "t", "yhat", *BANDS]
    got = got.sort_values(same[:2], ignore_index=True)  # read sorts by origin: s0's is 7 us later
    pd.testing.assert_frame_equal(got[same], written[same], check_dtype=False)
    assert np.signbit(got.loc[1, "q0.1"]) and np.isnan(got.loc[2, "q0.9"])


def test_more_rows_than_one_chunk(archive_url):
    written = batch(n_series=120, horizon=96, bands=BANDS[:2])  # 11,520 rows: three executemany
    with Archive(archive_url) as archive:
        assert archive.append(written, "h") == 11_520
        assert archive.append(written, "h") == 0
        assert len(archive.read("m", since="2024-01-04 00:00")) == 120 * 25


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("postgresql+psycopg2://forecaster:s3cret@127.0.0.1:1/archive", "cannot be opened"),
        ("not a url", "is not a database URL"),
        ("mysql://forecaster:s3cret@127.0.0.1/archive", "are not supported"),
    ],
)
def test_an_archive_that_cannot_be_opened_is_a_named_error_without_the_password(uri, says):
    with pytest.raises(ArchiveError, match=says) as err:
        Archive(uri)
    assert "s3cret" not in str(err.value)
    if "://" in uri:
        assert "forecaster:***@127.0.0.1" in str(err.value)


def test_a_sqlite_archive_under_a_file_is_a_named_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ArchiveError, match="folder cannot be created"):
        Archive(f"sqlite:///{tmp_path / 'file' / 'archive.db'}")


def test_a_batch_without_the_columns_or_frequency_is_a_named_error(tmp_path):
    with Archive(f"sqlite:///{tmp_path / 'archive.db'}") as archive:
        with pytest.raises(ArchiveError, match="'model_version'"):
            archive.append(batch().drop(columns="model_version"), "h")
        with pytest.raises(ArchiveError, match="'fortnightly' is not a pandas frequency"):
            archive.append(batch(), "fortnightly")
        assert archive.append(batch().iloc[:0], "h") == 0


def test_the_archive_sits_beside_the_mlflow_sqlite_store(tmp_path):
    def uri(**monitoring_and_tracking):
        return archive_uri(config_from_dict({"data": {"path": "x.csv"}, **monitoring_and_tracking}))

    store = tmp_path / "store" / "mlflow.db"
    beside = f"sqlite:///{store.parent / ARCHIVE_FILE}"
    assert uri(tracking={"tracking_uri": f"sqlite:///{store}"}) == beside
    server = uri(tracking={"tracking_uri": "http://127.0.0.1:5000"})
    assert server == f"sqlite:///{PROJECT_ROOT / 'mlruns' / ARCHIVE_FILE}"
    chosen = "postgresql+psycopg2://me@db/archive"
    assert uri(tracking={"tracking_uri": f"sqlite:///{store}"}, monitoring={"archive_uri": chosen}) == chosen


@pytest.mark.slow
def test_batch_predict_archives_beside_the_store_once(tmp_path, mlflow_globals):
    """Through the library: a naive champion on a new SQLite store; predicting with the archive
    off writes none, on appends every row once (a second prediction adds nothing), and an
    archive that cannot be opened fails the call but keeps the forecast file."""
    from forecasting.pipeline import batch_predict, run_pipeline

    store = tmp_path / "store" / "mlflow.db"
    raw = raw_config(tmp_path, "archive", [{"name": "naive"}], monitoring={"archive": False})
    raw["tracking"]["tracking_uri"] = f"sqlite:///{store}"
    cfg = config_from_dict(raw)
    result = run_pipeline(cfg)
    version = result.decision.version
    archive_path = store.parent / ARCHIVE_FILE

    off = batch_predict(cfg)
    assert off["archived"] is None and not archive_path.exists()

    cfg = config_from_dict({**raw, "monitoring": {"archive": True}})
    first, second = batch_predict(cfg), batch_predict(cfg)
    assert (first["archived"], second["archived"]) == (36, 0)  # 3 series x 12 steps, once
    with Archive(f"sqlite:///{archive_path}") as archive:
        got = archive.read(cfg.tracking.registered_model)
        assert archive.versions(cfg.tracking.registered_model) == [version]
    written = pd.read_parquet(first["output"])
    assert len(got) == 36 and set(got["prediction_run_id"]) == {first["prediction_run_id"]}
    same = ["series_id", "t", "yhat", "yhat_lo_80", "yhat_hi_95", "run_id"]
    pd.testing.assert_frame_equal(got[same], written[same], check_dtype=False)
    assert got["step"].max() == 12 and got["run_id"].iloc[0] == result.refit.run_id
    client = MlflowClient(f"sqlite:///{store}")
    assert client.get_run(first["prediction_run_id"]).data.metrics["archived_rows"] == 36
    assert client.get_run(second["prediction_run_id"]).data.metrics["archived_rows"] == 0

    (tmp_path / "file").write_text("")
    broken = config_from_dict({**raw, "monitoring": {"archive_uri": f"sqlite:///{tmp_path}/file/a.db"}})
    output = tmp_path / "kept.csv"
    with pytest.raises(ArchiveError, match=re.escape(f"{tmp_path}/file/a.db")):
        batch_predict(broken, output_path=output)
    assert len(pd.read_csv(output)) == 36  # written before the archive was tried
    failed = client.search_runs([client.get_experiment_by_name("archive").experiment_id])
    assert [r.info.status for r in failed if r.data.params.get("output") == str(output)] == ["FAILED"]
