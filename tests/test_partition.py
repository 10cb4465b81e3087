"""Per-series work in chunks and on Dask: chunked batch prediction writes the same file as one
pass (Parquet row groups, one per chunk), a bad row in a later chunk is named as the whole file
names it and leaves nothing behind, Parquet is read column by column and, in chunks, a chunk of
series at a time, and a real `dask scheduler`
with two `dask worker` processes on loopback trains a pipeline and forecasts its chunks, giving
the single process's forecasts to the last digit, with an MLflow server on PostgreSQL as the
store every process shares (the scale-out configuration of docs/scaling-out.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from servers import free_port, mlflow_server, postgres_database, stop
from test_pipeline import make_config, raw_config

from forecasting import serving
from forecasting.config import config_from_dict, load_config
from forecasting.data.ingest import read_table
from forecasting.errors import ForecastingError, NonNumericValueError
from forecasting.partition import from_ipc, series_chunks, to_ipc

MODELS = [{"name": "naive"}, {"name": "ar", "params": {"max_lag": 24}}]


def test_series_chunks_follow_the_canonical_order_and_keep_file_order():
    ids = pd.Series(["b", "a", "c", "a", "b", "d", "c"], dtype="str")
    chunks = series_chunks(ids, 2)
    assert [ids.iloc[c].tolist() for c in chunks] == [["a", "a", "b", "b"], ["c", "c", "d"]]
    assert chunks[0].tolist() == [1, 3, 0, 4]  # rows of one series in file order
    assert [len(c) for c in series_chunks(ids, 10)] == [7]
    assert sum(len(c) for c in series_chunks(ids, 1)) == 7 and len(series_chunks(ids, 1)) == 4


def test_a_column_of_numbers_and_text_goes_as_text():
    """A wide CSV read in blocks can give a column of floats and strings: it crosses as text."""
    frame = pd.DataFrame({"y": pd.array([20.184781744560667, "oops", None, np.nan, pd.NA], dtype=object)})
    back = from_ipc(to_ipc(frame))
    assert (
        back["y"].tolist()[:2] == ["20.184781744560667", "oops"]
        and back["y"].isna().tolist()[2:] == [True] * 3
    )
    assert float(back["y"][0]) == 20.184781744560667


def test_arrow_ipc_round_trip_keeps_values_and_dtypes():
    frame = pd.DataFrame(
        {
            "series_id": pd.array(["007", "x"], dtype="str"),
            "t": pd.to_datetime(["2024-01-01 00:00", "2024-01-01 01:00"]).tz_localize("UTC"),
            "y": [1.5, np.nan],
        }
    )
    back = from_ipc(to_ipc(frame))
    pd.testing.assert_frame_equal(back, frame)


def test_parquet_is_read_column_by_column(tmp_path):
    frame = pd.DataFrame(
        {"ts": ["2024-01-01"] * 3, "Sales": [1.0, 2, 3], "blob": ["x" * 100] * 3, "id": ["a"] * 3}
    )
    frame.to_parquet(tmp_path / "wide.parquet", index=False)
    read = read_table(tmp_path / "wide.parquet", columns=["ts", "sales", "id"])
    assert list(read.columns) == ["ts", "Sales", "id"]  # "Sales" kept: it differs only in case
    assert read.attrs["columns_in_file"] == 4
    assert list(read_table(tmp_path / "wide.parquet").columns) == ["ts", "Sales", "blob", "id"]


def _long_file(path: Path, order: str, row_group: int, dictionary: bool = False) -> pd.DataFrame:
    """12 series x 10 hours (one with a missing id) as Parquet, grouped by series or shuffled."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "series_id": np.repeat([f"s{i:02d}" for i in range(12)], 10),
            "timestamp": np.tile(pd.date_range("2024-01-01", periods=10, freq="h"), 12),
            "y": rng.normal(size=120),
        }
    )
    frame.loc[25, "series_id"] = None
    if order == "shuffled":
        frame = frame.sample(frac=1.0, random_state=4)
    if dictionary:
        frame = frame.astype({"series_id": "category"})
    frame.to_parquet(path, index=False, row_group_size=row_group)
    return frame


@pytest.mark.parametrize(
    ("order", "dictionary", "groups_read"),
    [("grouped", False, 4), ("grouped", True, 4), ("shuffled", False, 4 * 4)],
)
def test_a_parquet_file_is_read_a_chunk_of_series_at_a_time(tmp_path, order, dictionary, groups_read):
    """Each chunk holds the rows ``read_table`` + ``series_chunks`` give it, with the file's row
    numbers, in file order; a file grouped by series is read once (each row group a chunk's),
    a shuffled one once per chunk."""
    from forecasting.data.series_reader import SeriesChunks

    path = tmp_path / "long.parquet"
    _long_file(path, order, row_group=30, dictionary=dictionary)  # 3 series per row group
    chunks = SeriesChunks.open(path, "series_id", 3, ["series_id", "timestamp", "y"])
    raw = read_table(path, columns=["series_id", "timestamp", "y"])
    expected = series_chunks(raw["series_id"], 3)
    assert chunks is not None and len(chunks) == len(expected) == 4
    for got, rows in zip(chunks, expected, strict=True):
        pd.testing.assert_frame_equal(got, raw.iloc[np.sort(rows)], check_categorical=False)
    assert chunks.groups_read == groups_read  # 4 row groups, each read by its chunk (or by all 4)
    assert chunks.read(0)["series_id"].isna().sum() == 1  # the row with no id goes with the first chunk


def test_a_nested_column_before_the_ids_and_a_pipe(tmp_path):
    """The id's statistics are its own leaf's, whatever nested columns come first; and a pipe
    named ``.parquet`` is refused as ``read_table`` refuses it, before anything reads it."""
    import pyarrow as pa

    from forecasting.config import DataConfig
    from forecasting.data.series_reader import SeriesChunks
    from forecasting.errors import UnreadableFileError

    frame = _long_file(tmp_path / "flat.parquet", "grouped", row_group=20)
    info = pa.array([{"a": i, "b": f"z{i % 3}"} for i in range(len(frame))])
    table = pa.Table.from_pandas(frame, preserve_index=False)
    path = tmp_path / "nested.parquet"
    pq.write_table(
        pa.table({"info": info, **{c: table[c] for c in table.column_names}}), path, row_group_size=20
    )
    raw = read_table(path, columns=["series_id", "timestamp", "y"])
    with SeriesChunks.open(path, "series_id", 3, ["series_id", "timestamp", "y"]) as chunks:
        got = [len(c) for c in chunks]
        assert chunks.groups_read == 8  # 6 row groups of 2 series, 2 of them holding ids of two chunks
    assert got == [len(rows) for rows in series_chunks(raw["series_id"], 3)] == chunks.rows
    # Statistics a writer got wrong (every group said to hold none of the ids): the chunk comes up
    # short of the rows counted from the id column, and is read again without them.
    with SeriesChunks.open(path, "series_id", 3, ["series_id", "timestamp", "y"]) as chunks:
        chunks._bounds = [("x", "y", False)] * 6
        pd.testing.assert_frame_equal(
            chunks.read(1), raw.iloc[np.sort(series_chunks(raw["series_id"], 3)[1])]
        )

    fifo = tmp_path / "input.parquet"
    os.mkfifo(fifo)
    cfg = DataConfig(path=fifo, id_column="series_id", time_column="timestamp")
    with pytest.raises(UnreadableFileError, match="not a regular file"):
        serving._series_chunks_of(fifo, "auto", cfg, None, 3, ["series_id"])


def test_what_cannot_be_streamed_is_read_whole(tmp_path):
    from forecasting.data.series_reader import SeriesChunks

    path = tmp_path / "long.parquet"
    frame = _long_file(path, "grouped", row_group=30)
    assert SeriesChunks.open(path, "series_id", 12) is None  # one chunk
    frame.assign(series_id=frame["series_id"].str[1:].astype(float)).to_parquet(tmp_path / "n.parquet")
    assert SeriesChunks.open(tmp_path / "n.parquet", "series_id", 3) is None  # numbers: no text order
    assert SeriesChunks.open(path, "store", 3) is None  # no such column: a wide or one-series table


def test_a_chunk_of_windows_forecast_from_the_models_archive_is_the_models_forecast(tmp_path):
    """What a scoring task on a worker does (``evaluation.spread.forecast_windows``), here: the
    model travels as its saved folder in a tar, and a chunk's forecasts, bands included, are the
    in-process ones to the last digit, in batches of any size."""
    from forecasting.evaluation.metrics import collect_forecasts
    from forecasting.evaluation.spread import (
        forecast_windows,
        loaded_digests,
        model_archive,
        pack_arrays,
        unpack_arrays,
    )
    from forecasting.models.base import series_positions
    from forecasting.pipeline import prepare
    from forecasting.pipeline.train import fit_and_score

    cfg = make_config(tmp_path, "archive", [{"name": "ar", "params": {"max_lag": 24}}])
    prepared = prepare(cfg)
    model, _, _ = fit_and_score(prepared, cfg.models[0])  # calibrated: it has bands
    windows = model.make_windows(prepared.test)
    here = collect_forecasts(model, windows, bands=True)
    chunk = windows.batch(np.arange(len(windows)))
    chunk["series"] = series_positions(model.series_, windows.arrays.series_ids)[chunk["series"]]
    del chunk["target"]
    archive = model_archive(model)
    out = unpack_arrays(forecast_windows(pack_arrays(chunk), archive, 5, False, True))  # bytes in, bytes out
    np.testing.assert_array_equal(out["yhat"], here.yhat)
    np.testing.assert_array_equal(out["bands"], here.bands)
    assert set(out) == {"yhat", "bands"} and out["bands"].shape == (len(windows), 12, 4)
    assert len(loaded_digests()) == 1  # loaded once, kept for the next chunk


def test_a_scoring_archive_with_a_link_is_refused(tmp_path):
    import io
    import tarfile

    from forecasting.errors import ModelLoadError
    from forecasting.evaluation.spread import forecast_windows, pack_arrays

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("model/model.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(ModelLoadError, match="not plain files"):
        forecast_windows(pack_arrays({"y": np.zeros((1, 4))}), buf.getvalue(), 8, False, False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A registered AR model over 3 synthetic series, and its input as CSV and Parquet."""
    from forecasting.pipeline import run_pipeline

    tmp = tmp_path_factory.mktemp("chunks")
    cfg = make_config(tmp, "chunks", MODELS)
    run_pipeline(cfg)
    uri = "models:/chunks-model@champion"
    csv = tmp / "sales.csv"
    frame = pd.read_csv(csv, dtype={"store": str})
    frame.to_parquet(tmp / "sales.parquet", index=False)
    return uri, tmp, csv


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_chunked_prediction_writes_the_same_forecasts(trained, suffix):
    uri, tmp, _ = trained
    source = tmp / f"sales.{suffix}"
    whole = serving.batch_predict(uri, source, tmp / f"whole.{suffix}")
    chunked = serving.batch_predict(uri, source, tmp / f"chunked.{suffix}", chunk_series=1)
    assert len(whole) == 3 * 12 and whole["series_id"].nunique() == 3
    pd.testing.assert_frame_equal(chunked, whole)
    read = pd.read_csv if suffix == "csv" else pd.read_parquet
    pd.testing.assert_frame_equal(read(tmp / f"chunked.{suffix}"), read(tmp / f"whole.{suffix}"))
    if suffix == "parquet":  # one row group per chunk: a reader can stream the file
        assert pq.ParquetFile(tmp / "chunked.parquet").metadata.num_row_groups == 3
        assert pq.ParquetFile(tmp / "whole.parquet").metadata.num_row_groups == 1
    two = serving.batch_predict(uri, source, tmp / f"two.{suffix}", chunk_series=2)
    pd.testing.assert_frame_equal(two, whole)


@pytest.mark.slow
def test_chunked_prediction_of_parquet_never_reads_the_whole_file(trained, monkeypatch):
    """Parquet in chunks streams (``SeriesChunks``): the same forecasts, and ``read_table`` (the
    whole file at once) is never called; a bad row in a later chunk still gets the whole file's
    message, the only time the file is read whole."""
    uri, tmp, csv = trained
    whole = serving.batch_predict(uri, tmp / "sales.parquet", tmp / "whole-pq.parquet")
    frame = pd.read_csv(csv, dtype={"store": str}, keep_default_na=False)
    last = frame.index[frame["store"] == "store-2"][-5]
    frame.loc[last, "sales"] = np.inf
    frame.to_parquet(tmp / "bad.parquet", index=False)
    with pytest.raises(ForecastingError) as named:
        serving.batch_predict(uri, tmp / "bad.parquet", tmp / "bad-out.parquet")

    def whole_read(*args, **kwargs):
        raise AssertionError("the whole file was read")

    with monkeypatch.context() as patch:
        patch.setattr(serving, "read_table", whole_read)
        streamed = serving.batch_predict(uri, tmp / "sales.parquet", tmp / "streamed.parquet", chunk_series=1)
    pd.testing.assert_frame_equal(streamed, whole)
    with pytest.raises(type(named.value)) as chunked:
        serving.batch_predict(uri, tmp / "bad.parquet", tmp / "bad-out.parquet", chunk_series=1)
    assert str(chunked.value) == str(named.value) and f"row {last}" in str(named.value)
    assert not (tmp / "bad-out.parquet").exists()


@pytest.mark.slow
def test_a_bad_row_in_a_later_chunk_is_named_as_the_whole_file_names_it(trained):
    uri, tmp, csv = trained
    frame = pd.read_csv(csv, dtype=str)
    last = frame.index[frame["store"] == "store-2"][-5]
    frame.loc[last, "sales"] = "n/a?"
    bad = tmp / "bad.csv"
    frame.to_csv(bad, index=False)
    out = tmp / "bad-out.csv"
    with pytest.raises(NonNumericValueError) as whole:
        serving.batch_predict(uri, bad, out)
    with pytest.raises(NonNumericValueError) as chunked:
        serving.batch_predict(uri, bad, out, chunk_series=1)
    assert str(chunked.value) == str(whole.value) and f"row {last} (series 'store-2'" in str(whole.value)
    assert not out.exists() and not [p for p in tmp.iterdir() if p.name.startswith(".bad-out")]


def test_prediction_chunk_setting_reaches_the_prediction(tmp_path):
    """``predict.chunk_series`` is logged with the prediction run and sets the row groups."""
    from mlflow import MlflowClient

    from forecasting.pipeline import batch_predict, run_pipeline

    raw = raw_config(tmp_path, "chunk-key", MODELS[:1], predict={"output": str(tmp_path / "f.parquet")})
    raw["predict"]["chunk_series"] = 2
    cfg = config_from_dict(raw)
    run_pipeline(cfg)
    out = batch_predict(cfg)
    assert pq.ParquetFile(out["output"]).metadata.num_row_groups == 2  # 3 series in chunks of 2
    params = MlflowClient().get_run(out["prediction_run_id"]).data.params
    assert params["chunk_series"] == "2" and params["executor"] == "process"


# --- a real Dask cluster on loopback -------------------------------------------------------------
def _dask(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "dask"), *args],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture
def shared_mlflow(tmp_path, monkeypatch, mlflow_globals):
    """An MLflow server on a new PostgreSQL database, artifacts proxied through it: the tracking
    store of this process and of the workers started after it (``MLFLOW_TRACKING_URI``)."""
    with (
        postgres_database() as backend,
        mlflow_server(backend, tmp_path / "artifacts", tmp_path / "mlflow-server.log") as uri,
    ):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


@pytest.fixture
def dask_cluster(tmp_path, prefect_harness, shared_mlflow):
    """`dask scheduler` and two `dask worker` processes (one thread each) on loopback, whose
    tracking store is the shared MLflow server."""
    pytest.importorskip("distributed")
    from distributed import Client
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value() or "",
        "PREFECT_HOME": str(tmp_path / "ph"),
    }
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        _dask(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            ":0",
            env=env,
            log=tmp_path / "scheduler.log",
        )
    ]
    try:
        for k in range(2):
            procs.append(
                _dask(
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--nworkers",
                    "1",
                    "--no-nanny",
                    "--dashboard-address",
                    ":0",
                    "--name",
                    f"w{k}",
                    env=env,
                    log=tmp_path / f"worker{k}.log",
                )
            )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            yield address, client
    finally:
        for proc in reversed(procs):
            stop(proc)


@pytest.mark.slow
@pytest.mark.server
def test_a_pipeline_and_its_prediction_run_on_a_dask_cluster(tmp_path, dask_cluster):
    from distributed import get_task_stream

    import flows.pipeline as fp
    from forecasting.pipeline.predict import resolve_model
    from forecasting.tracking import Tracker

    address, client = dask_cluster
    server = os.environ["MLFLOW_TRACKING_URI"]
    assert server.startswith("http://") and client.run(os.getenv, "MLFLOW_TRACKING_URI") == {
        w: server for w in client.scheduler_info()["workers"]
    }
    ar_params = {"max_lag": 24, "solver": "batched", "parallel_above": 1}  # 3 series in chunks, as tasks
    theta = {"name": "theta", "params": {"parallel_above": 1}}  # its 3 series as tasks
    models = [MODELS[0], {"name": "ar", "params": ar_params}, theta]
    # a validation task a series; scoring passes in chunks of 8 windows
    orchestration = {"dask_address": address, "validate_chunk_series": 1, "score_chunk_windows": 8}
    raw = raw_config(tmp_path, "on-dask", models, orchestration=orchestration)
    raw["predict"]["chunk_series"] = 1
    path = tmp_path / "on-dask.yaml"
    path.write_text(yaml.safe_dump(raw))
    with get_task_stream(client) as stream:
        outcome = fp.forecast_pipeline(str(path))
    assert {row["status"] for row in outcome["leaderboard"]} == {"FINISHED"}
    ran, count = {}, {}
    for task in stream.data:
        name = str(task["key"]).split("-")[0].strip("('\"")
        ran.setdefault(name, set()).add(task["worker"])
        count[name] = count.get(name, 0) + 1
    # theta's series, AR's chunks of series, the prediction chunks
    assert {"fit_packed", "fit_chunk", "forecast_chunk", "validate_chunk"} <= set(ran), sorted(ran)
    assert count["fit_chunk"] >= 2 and count["validate_chunk"] == 3
    on_dask = pd.read_parquet(outcome["prediction"]["output"])
    assert len(on_dask) == 3 * 12
    # every chunk ran on a worker: the workers loaded the model, this process did not
    loaded = client.run(serving.loaded_models)  # a function of the package, by name: no code shipped
    workers = set(client.scheduler_info()["workers"])
    assert count["forecast_windows"] >= 2 * 3 * 2  # validation and test of 3 models, 2+ chunks each
    tasks = ("forecast_chunk", "fit_packed", "fit_chunk", "validate_chunk", "forecast_windows")
    assert all(ran[task] <= workers for task in tasks)
    assert {w for w, models in loaded.items() if models} == ran["forecast_chunk"]
    assert not serving.loaded_models()
    # the same model in this process, in one pass: the same forecasts to the last digit
    cfg = load_config(path)
    name, version, run_id, uri = resolve_model(
        Tracker(cfg.tracking), f"{cfg.tracking.registered_model}@champion"
    )
    here = serving.batch_predict(
        uri,
        tmp_path / "sales.csv",
        tmp_path / "here.parquet",
        model_name=name,
        model_version=version,
        run_id=run_id,
    )
    pd.testing.assert_frame_equal(on_dask, pd.read_parquet(tmp_path / "here.parquet"))
    # AR fitted in chunks on the workers has the coefficients of one process's fit, to the last
    # digit (its logged model, loaded and verified as any served model is)
    from mlflow import MlflowClient

    from forecasting.pipeline import prepare
    from forecasting.pipeline.prepare import ingest_data
    from forecasting.pipeline.train import fit_and_score

    ar_row = next(r for r in outcome["leaderboard"] if r["model"] == "ar")
    ar_run = MlflowClient().get_run(ar_row["run_id"])
    assert ar_run.info.artifact_uri.startswith("mlflow-artifacts:")  # logged through the server
    # validated in chunks on the workers, the data is the data one process validates
    here_only = cfg.orchestration.model_copy(update={"dask_address": None})
    alone = cfg.model_copy(update={"orchestration": here_only})
    assert ar_run.data.tags["dataset_hash"] == ingest_data(alone).dataset_hash
    # scored in chunks on the workers, each model has one process's metrics, to the last digit
    here_prepared = prepare(alone)
    for spec in here_prepared.cfg.models:
        row = next(r for r in outcome["leaderboard"] if r["model"] == spec.run_name)
        logged = MlflowClient().get_run(row["run_id"]).data.metrics
        _, metrics, _ = fit_and_score(here_prepared, spec)
        scored = {k: v for k, v in metrics.items() if k.startswith(("val_", "test_")) and np.isfinite(v)}
        assert len(scored) > 20 and scored == {k: logged[k] for k in scored}, spec.run_name
    uri = ar_run.data.tags["model_uri"]
    remote = serving.load_pyfunc_bundle(uri)[0].model
    local = type(remote)(remote.settings, spec=remote.spec).fit(prepare(cfg).train)
    for name in ("coef_", "order_", "sigma2_"):
        np.testing.assert_array_equal(getattr(remote, name), getattr(local, name))
    assert np.array_equal(on_dask["yhat"].to_numpy(), here["yhat"].to_numpy())
    assert pq.ParquetFile(outcome["prediction"]["output"]).metadata.num_row_groups == 3
