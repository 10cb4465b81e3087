"""The model bundle, the MLflow pyfunc (in process, in a fresh process, behind a real server) and
batch prediction with atomic output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import make_frame
from servers import free_port, models_serve

from forecasting.config import DataConfig, ModelSpec
from forecasting.data.scaling import fit_scaler
from forecasting.errors import (
    ConfigError,
    CovariateNotFoundError,
    FrequencyMismatchError,
    FutureCovariateError,
    MissingColumnError,
    MissingValueError,
    ModelLoadError,
    NonFiniteForecastError,
    NonNumericValueError,
    OutputPathError,
    SeriesTooShortError,
    ValueOutOfRangeError,
)
from forecasting.models.base import DataSpec
from forecasting.models.baselines import Naive
from forecasting.models.registry import build_model
from forecasting.serving import (
    Bundle,
    batch_predict,
    check_output_path,
    example_input,
    load_bundle,
    log_pyfunc,
    model_identity,
    write_bundle,
    write_table_atomic,
)

mlflow = pytest.importorskip("mlflow")

L, H = 24, 6
VENV_BIN = Path(sys.executable).parent
FORECAST = ["series_id", "t", "yhat"]  # the forecast columns (the pyfunc adds who answered)
PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".pt", ".pth"}


# --- data and a fitted bundle ---------------------------------------------------------------------
def training_frame(n: int = 120) -> pd.DataFrame:
    """Two hourly series at different levels with a future-known covariate (hour of day)."""
    t = np.arange(n)
    parts = [
        make_frame(10.0 * (k + 1) + np.sin(t / 3.0 + k), series_id=f"s{k}", hour=(t % 24).astype(float))
        for k in range(2)
    ]
    return pd.concat(parts, ignore_index=True)


def with_future(frame: pd.DataFrame, steps: int = H) -> pd.DataFrame:
    """Append ``steps`` future rows per series (y empty, hour known)."""
    parts = []
    for sid, part in frame.groupby("series_id", sort=False):
        t = pd.date_range(part["t"].iloc[-1], periods=steps + 1, freq="h")[1:]
        fut = pd.DataFrame({"series_id": sid, "t": t, "y": np.nan, "hour": t.hour.astype(float)})
        parts += [part, fut]
    return pd.concat(parts, ignore_index=True)


def to_raw(canon: pd.DataFrame) -> pd.DataFrame:
    """The canonical frame in the raw format the data config describes (text timestamps)."""
    return pd.DataFrame(
        {
            "ts": canon["t"].dt.strftime("%Y-%m-%d %H:%M:%S"),
            "site": canon["series_id"],
            "load": canon["y"],
            "hour": canon["hour"],
        }
    )


def last_values(frame: pd.DataFrame) -> pd.Series:
    return frame.dropna(subset=["y"]).groupby("series_id")["y"].last()


@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory) -> DataConfig:
    return DataConfig(
        path=tmp_path_factory.mktemp("data") / "train.csv",
        time_column="ts",
        target="load",
        id_column="site",
        covariates={"hour": "future"},
    )


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, data_cfg) -> Path:
    frame = training_frame()
    model = build_model(ModelSpec(name="naive"), DataSpec(L, H, future=["hour"]))
    scaler = fit_scaler(frame, ["y", "hour"])
    model.fit(scaler.transform(frame))
    return write_bundle(model, scaler, data_cfg, "h", tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture(scope="module")
def bundle(bundle_dir) -> Bundle:
    return load_bundle(bundle_dir)


@pytest.fixture
def history() -> pd.DataFrame:
    """Canonical history: the last 2*L observed rows of each series plus H future rows."""
    frame = training_frame(200)
    return with_future(frame.groupby("series_id").tail(2 * L).reset_index(drop=True))


# --- MLflow: a throwaway store, one logged and registered model -------------------------------------
@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.create_experiment("serving-tests", artifact_location=str(root / "artifacts"))
    yield {"uri": uri, "experiment_id": experiment_id}
    running = mlflow.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
    mlflow.set_tracking_uri(previous)
    assert running.empty, f"runs left RUNNING: {list(running.run_id)}"


@pytest.fixture(autouse=True)
def no_open_run():
    yield
    if mlflow.active_run() is not None:
        mlflow.end_run("FAILED")
        pytest.fail("a test left an MLflow run open")


@pytest.fixture(scope="module")
def logged(tracking, bundle_dir, bundle) -> dict:
    example = example_input(training_frame(), bundle)
    with mlflow.start_run(experiment_id=tracking["experiment_id"]) as run:
        uri = log_pyfunc(bundle_dir, example)
    version = mlflow.register_model(uri, "forecaster").version
    return {"uri": uri, "run_id": run.info.run_id, "version": str(version), "example": example}


def subprocess_env(tracking) -> dict[str, str]:
    env = dict(os.environ)
    env.update(MLFLOW_TRACKING_URI=tracking["uri"], MLFLOW_DISABLE_TELEMETRY="true")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def no_pickles(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert path.suffix not in PICKLE_SUFFIXES, path
            head = path.read_bytes()[:2]
            assert not (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"), f"pickle in {path}"


# --- the bundle --------------------------------------------------------------------------------------
def test_bundle_holds_everything_to_forecast_without_config(bundle_dir, bundle):
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    assert meta["lookback"] == L and meta["horizon"] == H and meta["freq"] == "h"
    assert meta["covariates"] == {"past": [], "future": ["hour"], "static": []}
    assert meta["data"]["time_column"] == "ts" and meta["data"]["target"] == "load"
    assert meta["data"]["id_column"] == "site" and "path" not in meta["data"]
    assert (bundle_dir / "scaler.npz").is_file() and (bundle_dir / "model" / "model.json").is_file()
    no_pickles(bundle_dir)
    assert (bundle.lookback, bundle.horizon, bundle.freq) == (L, H, "h")
    assert bundle.model.name == "naive"


def test_a_bundle_written_with_a_json_scaler_still_loads(tmp_path, bundle_dir, bundle, history):
    """Bundles before 2026-12-07 hold ``scaler.json``: they load and forecast as they did."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(bundle_dir, old)
    (old / "scaler.npz").unlink()
    (old / "scaler.json").write_text(json.dumps(bundle.scaler.to_dict()))
    meta = json.loads((old / "bundle.json").read_text())
    assert meta["format_version"] == 2
    (old / "bundle.json").write_text(json.dumps({**meta, "format_version": 1}))
    pd.testing.assert_frame_equal(load_bundle(old).forecast(history), bundle.forecast(history))
    (old / "bundle.json").write_text(json.dumps({**meta, "format_version": 3}))  # a newer release's
    with pytest.raises(ModelLoadError, match=r"format version 3 is not one of \[1, 2\]"):
        load_bundle(old)


def test_forecast_in_original_units(bundle, history):
    out = bundle.forecast(history)
    assert list(out.columns) == ["series_id", "t", "yhat"]
    assert len(out) == 2 * H
    last = last_values(history)
    for sid, part in out.groupby("series_id"):
        np.testing.assert_allclose(part["yhat"], last[sid], rtol=1e-6)  # naive: the last value
        t_last = history.loc[history.series_id == sid].dropna(subset=["y"])["t"].iloc[-1]
        assert list(part["t"]) == list(pd.date_range(t_last, periods=H + 1, freq="h")[1:])


def test_raw_format_gives_the_same_forecast(bundle, history):
    raw = to_raw(history)
    assert raw["load"].isna().sum() == 2 * H
    pd.testing.assert_frame_equal(bundle.forecast(raw), bundle.forecast(history))
    # Empty text cells (as a CSV round trip gives them) count as missing y too.
    text = raw.astype({"load": object}).fillna({"load": ""})
    pd.testing.assert_frame_equal(bundle.forecast(text), bundle.forecast(history))


def test_unseen_series_scaled_with_its_own_history(bundle, history):
    t = np.arange(3 * L)
    new = with_future(make_frame(1000.0 + 50 * np.sin(t / 2.0), series_id="new", hour=(t % 24).astype(float)))
    out = bundle.forecast(pd.concat([history, new], ignore_index=True))
    assert set(out.series_id) == {"s0", "s1", "new"}
    np.testing.assert_allclose(out.loc[out.series_id == "new", "yhat"], last_values(new)["new"], rtol=1e-9)


def test_overrides_rename_columns(bundle, history):
    raw = to_raw(history).rename(columns={"ts": "when", "site": "store"})
    out = bundle.forecast(raw, {"time_column": "when", "id_column": "store"})
    pd.testing.assert_frame_equal(out, bundle.forecast(history))
    with pytest.raises(ConfigError, match="covariates"):
        bundle.forecast(raw, {"covariates": {}})
    with pytest.raises(ConfigError, match="two roles"):
        bundle.data_config({"id_column": "load"})


def test_input_errors_are_the_named_training_errors(bundle, history):
    short = history.groupby("series_id").tail(L - 5 + H)
    with pytest.raises(SeriesTooShortError, match="lookback = 24"):
        bundle.forecast(short)
    with pytest.raises(CovariateNotFoundError, match="hour"):
        bundle.forecast(to_raw(history).drop(columns="hour"))
    with pytest.raises(MissingColumnError, match="site"):
        bundle.forecast(to_raw(history).drop(columns="site"))
    gap = history.copy()
    gap.loc[5, "y"] = np.nan
    with pytest.raises(MissingValueError):
        bundle.forecast(gap)
    text = to_raw(history).astype({"load": object})
    text.loc[3, "load"] = "n.a."
    with pytest.raises(NonNumericValueError, match=r"column 'load' .*row 3 \(series 's0'"):
        bundle.forecast(text)  # the row is named; the cell's text is not quoted
    daily = history.assign(
        t=history.groupby("series_id").cumcount().map(lambda i: pd.Timestamp("2024") + pd.Timedelta(days=i))
    )
    with pytest.raises(FrequencyMismatchError):
        bundle.forecast(daily)


def test_future_covariates_must_cover_the_horizon(bundle, history):
    partial = history.drop(index=history.index[history.y.isna()][-2:])  # s1 lacks its last 2 steps
    with pytest.raises(FutureCovariateError, match="s1") as err:
        bundle.forecast(partial)
    assert str(history["t"].iloc[-1]) in str(err.value)
    blank = history.copy()
    blank.loc[blank.index[blank.y.isna()][0], "hour"] = np.nan
    with pytest.raises(FutureCovariateError, match="s0"):
        bundle.forecast(blank)
    with pytest.raises(FutureCovariateError):
        bundle.forecast(history.dropna(subset=["y"]))


def test_write_and_load_bundle_check_their_inputs(tmp_path, bundle, data_cfg):
    with pytest.raises(ConfigError, match="covariate roles"):
        write_bundle(
            bundle.model, bundle.scaler, data_cfg.model_copy(update={"covariates": {}}), "h", tmp_path / "b"
        )
    with pytest.raises(ModelLoadError):
        load_bundle(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError):
        write_bundle(bundle.model, bundle.scaler, data_cfg, "h", tmp_path / "full")


# --- the pyfunc ----------------------------------------------------------------------------------------
def test_pyfunc_is_data_only_with_signature_example_and_no_pickle(logged, tmp_path):
    listed = {a.path for a in mlflow.artifacts.list_artifacts(artifact_uri=logged["uri"])}
    assert "code" not in listed and "python_model.pkl" not in listed  # no code, no pickled model
    assert {"MLmodel", "data", "requirements.txt", "input_example.json"} <= listed
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=logged["uri"], dst_path=str(tmp_path)))
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith(".py") or f.startswith("code/")], files
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    assert flavor["loader_module"] == "forecasting.pyfunc_model"  # imported from the installed package
    assert flavor["data"] == "data/bundle" and not flavor.get("code")
    assert "python_model" not in flavor  # the key of a pickled PythonModel
    assert len(mlmodel["metadata"]["bundle_sha256"]) == 64
    assert set(mlmodel["metadata"]["bundle_files"]) == {
        p.relative_to(local / "data" / "bundle").as_posix()
        for p in (local / "data" / "bundle").rglob("*")
        if p.is_file()
    }
    no_pickles(local)
    info = mlflow.models.get_model_info(logged["uri"])
    assert info.signature.inputs.input_names() == ["series_id", "t", "y", "hour"]
    assert info.signature.outputs.input_names() == ["series_id", "t", "yhat"]
    assert info.saved_input_example_info is not None
    reqs = (local / "requirements.txt").read_text()
    assert "pandas==" in reqs and "mlflow==" in reqs


def test_pyfunc_in_process_matches_bundle(logged, bundle, history):
    model = mlflow.pyfunc.load_model(logged["uri"])
    got = model.predict(history)
    pd.testing.assert_frame_equal(got[FORECAST], bundle.forecast(history), check_dtype=False)
    # Every row names the model that answered: the run that logged it and its registered version.
    assert got[["model_name", "model_version", "run_id"]].drop_duplicates().values.tolist() == [
        ["forecaster", logged["version"], logged["run_id"]]
    ]
    with pytest.raises(mlflow.exceptions.MlflowException, match="SeriesTooShortError"):
        model.predict(history.groupby("series_id").tail(H + 3))


def test_pyfunc_in_a_fresh_process(logged, bundle, history, tracking, tmp_path):
    history.to_parquet(tmp_path / "in.parquet")
    script = f"""
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model({logged["uri"]!r})
model.predict(pd.read_parquet({str(tmp_path / "in.parquet")!r})).to_parquet({str(tmp_path / "out.parquet")!r})
import forecasting
print(forecasting.__file__)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=subprocess_env(tracking),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The model carries no code: its loader comes from the installed package (this project).
    loaded_from = Path(done.stdout.strip().splitlines()[-1]).resolve()
    assert loaded_from == (Path(__file__).parents[1] / "forecasting" / "__init__.py").resolve()
    out = pd.read_parquet(tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(out[FORECAST], bundle.forecast(history), check_dtype=False)
    assert set(out["run_id"]) == {logged["run_id"]}


def post(url: str, payload: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.mark.slow
@pytest.mark.server
def test_mlflow_models_serve_on_loopback(logged, bundle, history, tracking, tmp_path):
    port = free_port()
    argv = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", logged["uri"], "--env-manager", "local"]
    argv += ["-p", str(port), "-h", "127.0.0.1"]
    with models_serve(argv, port, subprocess_env(tracking), tmp_path / "serve.log") as base:
        split = json.loads(history.to_json(orient="split", date_format="iso", index=False))
        status, body = post(f"{base}/invocations", {"dataframe_split": split})
        assert status == 200, body
        got = pd.DataFrame(body["predictions"])
        want = bundle.forecast(history)
        assert list(got.columns) == ["series_id", "t", "yhat", "model_name", "model_version", "run_id"]
        assert set(got.run_id) == {logged["run_id"]}  # the model that answered
        assert list(got.series_id) == list(want.series_id)
        assert list(pd.to_datetime(got.t)) == list(want.t)
        np.testing.assert_allclose(got.yhat, want.yhat, rtol=1e-9)
        short = json.loads(
            history.groupby("series_id").tail(H + 3).to_json(orient="split", date_format="iso", index=False)
        )
        status, body = post(f"{base}/invocations", {"dataframe_split": short})
        assert status == 400 and "SeriesTooShortError" in body.get("message", ""), body


# --- batch prediction -----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_batch_predict_raw_file(logged, bundle, history, tmp_path, suffix):
    src = tmp_path / f"in{suffix}"
    raw = to_raw(history)
    raw.to_csv(src, index=False) if suffix == ".csv" else raw.to_parquet(src)
    out_path = tmp_path / "out" / f"forecast{suffix}"
    uri = f"models:/forecaster/{logged['version']}"
    out = batch_predict(uri, src, out_path)
    assert list(out.columns) == ["series_id", "t", "yhat", "model_name", "model_version", "run_id"]
    assert (out.model_name == "forecaster").all() and (out.model_version == logged["version"]).all()
    assert (out.run_id == logged["run_id"]).all()
    np.testing.assert_allclose(out.yhat, bundle.forecast(history).yhat, rtol=1e-9)
    back = pd.read_csv(out_path, parse_dates=["t"]) if suffix == ".csv" else pd.read_parquet(out_path)
    assert len(back) == len(out) and list(back.columns) == list(out.columns)
    np.testing.assert_allclose(back.yhat, out.yhat)
    assert sorted(p.name for p in out_path.parent.iterdir()) == [out_path.name]


def test_batch_predict_identity_arguments_and_overrides(logged, history, tmp_path):
    src = tmp_path / "in.csv"
    to_raw(history).rename(columns={"ts": "when"}).to_csv(src, index=False)
    out = batch_predict(
        logged["uri"],
        src,
        tmp_path / "f.csv",
        {"time_column": "when"},
        model_name="forecaster",
        model_version=7,
        run_id="abc",
    )
    assert (
        set(out.model_name) == {"forecaster"}
        and set(out.model_version) == {"7"}
        and set(out.run_id) == {"abc"}
    )
    canon = tmp_path / "canon.parquet"
    history.to_parquet(canon)
    out = batch_predict(logged["uri"], canon, tmp_path / "g.parquet")
    assert set(out.run_id) == {logged["run_id"]}


def test_batch_predict_failure_leaves_no_file(logged, history, tmp_path):
    out_path = tmp_path / "forecast.parquet"
    out_path.write_bytes(b"previous forecasts")
    src = tmp_path / "short.csv"
    to_raw(history.groupby("series_id").tail(10)).to_csv(src, index=False)
    with pytest.raises(SeriesTooShortError):
        batch_predict(logged["uri"], src, out_path)
    with pytest.raises(ConfigError, match=r"\.csv"):
        batch_predict(logged["uri"], src, tmp_path / "forecast.xlsx")
    with pytest.raises(ModelLoadError):
        batch_predict("models:/no-such-model/1", src, tmp_path / "x.csv")
    assert out_path.read_bytes() == b"previous forecasts"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forecast.parquet", "short.csv"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_atomic_write_failure_midway(tmp_path, monkeypatch, suffix):
    import pyarrow.parquet as pq

    frame = pd.DataFrame({"series_id": ["a"], "t": [pd.Timestamp("2024")], "yhat": [1.0]})

    def broken(self, where, *args, **kwargs):  # some bytes reach the file, then the disk is full
        if hasattr(where, "write"):
            where.write("partial")
        raise OSError("disk full")

    target = tmp_path / f"out{suffix}"
    if suffix == ".csv":
        monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    else:  # the writer has created the file when its first row group fails
        monkeypatch.setattr(pq.ParquetWriter, "write_table", broken)
    with pytest.raises(OutputPathError, match="disk full"):
        write_table_atomic(frame, target)
    assert list(tmp_path.iterdir()) == []
    target.write_text("old")
    with pytest.raises(OutputPathError):
        write_table_atomic(frame, target)
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    monkeypatch.undo()
    write_table_atomic(frame, target)
    assert (pd.read_csv(target) if suffix == ".csv" else pd.read_parquet(target)).yhat.tolist() == [1.0]


def test_model_identity_from_uri():
    assert model_identity("models:/forecaster/3") == ("forecaster", "3", None)
    assert model_identity("models:/forecaster@champion", "r1") == ("forecaster", None, "r1")
    assert model_identity("runs:/abc123/model") == ("model", None, "abc123")
    assert model_identity("models:/m-0123") == ("m-0123", None, None)


# --- finite forecasts only -------------------------------------------------------------------------
def nan_after_the_first_series(self, batch: dict) -> np.ndarray:
    """A broken naive model: NaN for every window but the first (the first series)."""
    out = np.repeat(batch["y"][:, -1:], self.spec.horizon, axis=1).astype(np.float64)
    out[1:] = np.nan
    return out


def test_a_non_finite_forecast_is_a_named_error(bundle, history, monkeypatch):
    monkeypatch.setattr(Naive, "_predict_windows", nan_after_the_first_series)
    with pytest.raises(NonFiniteForecastError, match=r"\(6 of 12\) for series 's1' \(from t=") as err:
        bundle.forecast(history)
    assert "'s0'" not in str(err.value)


def test_a_non_finite_forecast_is_never_written_or_served(logged, history, tmp_path, monkeypatch):
    model = mlflow.pyfunc.load_model(logged["uri"])
    src = tmp_path / "in.csv"
    to_raw(history).to_csv(src, index=False)
    out = tmp_path / "out" / "forecast.csv"
    monkeypatch.setattr(Naive, "_predict_windows", nan_after_the_first_series)
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"NonFiniteForecastError: .*'s1'") as err:
        model.predict(history)
    assert err.value.get_http_status_code() == 500  # the scoring server's answer, not a 200 with NaN
    with pytest.raises(NonFiniteForecastError, match="'s1'"):
        batch_predict(logged["uri"], src, out)
    assert not out.parent.exists()


def test_a_history_constant_over_its_rows_is_forecast(bundle, history):
    """A quiet spell (the last rows of an intermittent series all equal) is a history to forecast
    from, not a constant series to refuse: naive repeats the constant, the other series as before."""
    quiet = history.copy()
    observed = quiet["y"].notna() & (quiet["series_id"] == "s1")
    quiet.loc[observed, "y"] = 0.0
    out = bundle.forecast(quiet)
    assert out[out.series_id == "s1"].yhat.to_numpy() == pytest.approx(0.0, abs=1e-5)  # float32
    pd.testing.assert_frame_equal(
        out[out.series_id != "s1"].reset_index(drop=True),
        bundle.forecast(history).pipe(lambda f: f[f.series_id != "s1"]).reset_index(drop=True),
    )


def test_a_history_ending_in_1e308_is_refused_at_validation(logged, bundle, history):
    huge = history.copy()
    huge.loc[huge.index[huge.y.notna()][-1], "y"] = 1e308  # s1's last observed value
    with pytest.raises(ValueOutOfRangeError, match=r"column 'y' holds values beyond .* \(series 's1'"):
        bundle.forecast(huge)
    with pytest.raises(mlflow.exceptions.MlflowException, match="ValueOutOfRangeError") as err:
        mlflow.pyfunc.load_model(logged["uri"]).predict(huge)
    assert err.value.get_http_status_code() == 400


# --- output paths the operating system refuses ---------------------------------------------------------
def test_output_path_errors_are_named_before_any_work(history, tmp_path):
    src = tmp_path / "in.csv"
    to_raw(history).to_csv(src, index=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    folder = tmp_path / "forecast.csv"
    folder.mkdir()
    no_model = "models:/no-such-model/1"  # a model error would come later: the path is checked first
    with pytest.raises(OutputPathError, match="is a file, not a folder") as err:
        batch_predict(no_model, src, blocker / "sub" / "f.csv")
    assert str(blocker / "sub" / "f.csv") in str(err.value)
    with pytest.raises(OutputPathError, match="is a folder"):
        batch_predict(no_model, src, folder)
    with pytest.raises(ModelLoadError):  # a folder still to be created is fine
        batch_predict(no_model, src, tmp_path / "new" / "f.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "forecast.csv", "in.csv"]


def test_an_output_folder_without_write_access(tmp_path, monkeypatch):
    """What a read-only folder gives a user who is not root (see the next test)."""
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(OutputPathError, match=r"folder '.*' is not writable") as err:
        check_output_path(tmp_path / "f.csv")
    assert str(tmp_path / "f.csv") in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere whatever the permission bits")
def test_output_in_a_read_only_or_missing_system_folder(tmp_path):
    with pytest.raises(OutputPathError, match="not writable"):
        check_output_path(Path("/nonexistent/dir/f.csv"))
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputPathError, match="not writable"):
            check_output_path(tmp_path / "f.csv")
    finally:
        tmp_path.chmod(0o700)


def test_an_os_error_while_writing_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    frame = pd.DataFrame({"series_id": ["a"], "t": [pd.Timestamp("2024")], "yhat": [1.0]})

    def refused(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(OutputPathError, match=r"out\.csv' cannot be written: Permission denied"):
        write_table_atomic(frame, tmp_path / "out.csv")
    assert list(tmp_path.iterdir()) == []
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match="cannot create its folder"):
        write_table_atomic(frame, blocker / "f.csv")


def test_forecast_predict_to_an_unwritable_path_exits_2(logged, tracking, history, tmp_path, capsys):
    from forecasting.cli import main

    src = tmp_path / "in.csv"
    to_raw(history).to_csv(src, index=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(src), "time_column": "ts", "target": "load", "id_column": "site"},
                "tracking": {"tracking_uri": tracking["uri"], "experiment": "serving-tests"},
            }
        )
    )
    out = blocker / "dir" / "f.csv"
    model = f"forecaster/{logged['version']}"
    args = ["predict", "--model", model, "--input", str(src), "--output", str(out), "--config", str(cfg)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: OutputPathError: ") and str(out) in err, err


def test_loading_models_in_threads_leaves_no_mock_module_behind(logged):
    """Loads in several threads at once (a pipeline's models are logged and checked concurrently)
    leave no mock ``dbutils`` in ``sys.modules``: MLflow swaps one in while it runs a
    models-from-code script, which broke hypothesis (it reads every module's ``__file__``). Models
    are no longer logged from code; this stays as a regression check."""
    import sys
    import threading

    from forecasting import serving

    errors = []

    def load_some() -> None:
        try:
            for _ in range(3):
                serving.load_pyfunc(logged["uri"])
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=load_some) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert "dbutils" not in sys.modules
