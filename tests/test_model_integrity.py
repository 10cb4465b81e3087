"""Logged models hold data only, and ``load_pyfunc`` checks every file against the hashes the
tracking store recorded when the model was logged before MLflow reads any of it.

Real MLflow on a throwaway SQLite store with a local artifact folder, which the tests edit as
someone with write access to the artifact store would. The only stand-in is a guard on
``mlflow.pyfunc.load_model`` that fails a test if a tampered model ever reaches it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_serving import H, L, training_frame, with_future

from forecasting import serving
from forecasting.config import DataConfig, ModelSpec
from forecasting.data.scaling import fit_scaler
from forecasting.errors import ModelIntegrityError, ModelLoadError
from forecasting.models.base import DataSpec
from forecasting.models.registry import build_model
from forecasting.serving import (
    example_input,
    file_manifest,
    load_bundle,
    load_pyfunc,
    load_pyfunc_bundle,
    log_pyfunc,
    manifest_digest,
    write_bundle,
)

mlflow = pytest.importorskip("mlflow")

REGISTERED = "guarded"


# --- a fitted AR bundle (a binary state file, ar.npz) and a throwaway store --------------------------
@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    frame = training_frame()
    frame["y"] += 0.05 * np.random.default_rng(0).standard_normal(len(frame))  # AR needs noise
    cfg = DataConfig(
        path=tmp_path_factory.mktemp("data") / "train.csv",
        time_column="ts",
        target="load",
        id_column="site",
        covariates={"hour": "future"},
    )
    model = build_model(ModelSpec(name="ar", params={"max_lag": 4}), DataSpec(L, H, future=["hour"]))
    scaler = fit_scaler(frame, ["y", "hour"])
    model.fit(scaler.transform(frame))
    return write_bundle(model, scaler, cfg, "h", tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return with_future(training_frame(200).groupby("series_id").tail(2 * L).reset_index(drop=True))


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    experiment_id = mlflow.create_experiment("integrity-tests", artifact_location=str(root / "artifacts"))
    yield experiment_id
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def logged(tracking, bundle_dir) -> dict:
    """A fresh model per test (tests tamper with it): logged, registered, aliased ``champion``."""
    example = example_input(training_frame(), load_bundle(bundle_dir))
    with mlflow.start_run(experiment_id=tracking) as run:
        uri = log_pyfunc(bundle_dir, example)
    client = mlflow.MlflowClient()
    version = mlflow.register_model(uri, REGISTERED).version
    client.set_registered_model_alias(REGISTERED, "champion", version)
    model_id = uri.removeprefix("models:/")
    return {
        "uri": uri,
        "run_id": run.info.run_id,
        "version": str(version),
        "store": Path(client.get_logged_model(model_id).artifact_location),
    }


def refuse_to_load(*args, **kwargs):
    pytest.fail("a model that failed its check reached mlflow.pyfunc.load_model")


@pytest.fixture
def never_loaded(monkeypatch):
    """Fail the test if MLflow is ever asked to load the model (set up after ``logged``: logging
    loads the model once to check its input example)."""
    monkeypatch.setattr(mlflow.pyfunc, "load_model", refuse_to_load)


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def store_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# --- what is logged, and where its hashes live --------------------------------------------------------
def test_the_artifact_is_data_and_its_hashes_are_run_tags(logged):
    store = logged["store"]
    listed = {a.path for a in mlflow.artifacts.list_artifacts(artifact_uri=logged["uri"])}
    assert "code" not in listed and not any(p.endswith((".py", ".pkl")) for p in listed), listed
    files = store_files(store)
    assert "data/bundle/model/ar.npz" in files and "data/bundle/scaler.npz" in files
    assert not [f for f in files if f.startswith("code/") or f.endswith((".py", ".pkl"))], files
    flavor = yaml.safe_load((store / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "forecasting.pyfunc_model" and "python_model" not in flavor

    tags = mlflow.MlflowClient().get_run(logged["run_id"]).data.tags
    manifest = json.loads(tags["model_manifest"])
    assert set(manifest) == files  # MLmodel included
    assert manifest == file_manifest(store)
    assert tags["model_sha256"] == manifest_digest(manifest)


def test_every_kind_of_uri_is_checked_and_forecasts_as_the_bundle(logged, bundle_dir, history):
    want = load_bundle(bundle_dir).forecast(history)
    uris = [
        logged["uri"],  # models:/m-<id>
        f"models:/{REGISTERED}/{logged['version']}",
        f"models:/{REGISTERED}@champion",
        f"runs:/{logged['run_id']}/model",
    ]
    for uri in uris:
        got = load_pyfunc(uri).predict(history)
        pd.testing.assert_frame_equal(got[["series_id", "t", "yhat"]], want, check_dtype=False)
        assert set(got["model_version"]) == {logged["version"]} and set(got["run_id"]) == {logged["run_id"]}
    bundle, metadata = load_pyfunc_bundle(uris[1])
    assert (bundle.model.name, metadata.run_id) == ("ar", logged["run_id"])


# --- a tampered artifact is refused before anything of it is loaded ----------------------------------
@pytest.mark.parametrize("path", ["data/bundle/scaler.npz", "data/bundle/model/ar.npz", "MLmodel"])
def test_one_flipped_byte_is_refused_naming_the_file(logged, never_loaded, path):
    target = logged["store"] / path
    text = target.read_bytes()
    flip_one_byte(target)
    for uri in (f"models:/{REGISTERED}/{logged['version']}", f"runs:/{logged['run_id']}/model"):
        with pytest.raises(ModelIntegrityError, match=f"changed {path}") as err:
            load_pyfunc(uri)
        message = str(err.value)
        assert uri in message and f"tag 'model_sha256' of run {logged['run_id']}" in message
        assert text[:12].decode("latin-1") not in message  # names the file, never quotes it
    assert isinstance(err.value, ModelLoadError)  # callers that handle load failures handle this


def test_mlmodel_pointed_at_other_code_is_refused_and_nothing_runs(
    logged, never_loaded, tmp_path, monkeypatch
):
    marker = tmp_path / "imported"
    (tmp_path / "planted_loader.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mlmodel = logged["store"] / "MLmodel"
    spec = yaml.safe_load(mlmodel.read_text())
    spec["flavors"]["python_function"]["loader_module"] = "planted_loader"
    mlmodel.write_text(yaml.safe_dump(spec))
    with pytest.raises(ModelIntegrityError, match="changed MLmodel"):
        load_pyfunc(f"models:/{REGISTERED}@champion")
    assert not marker.exists() and "planted_loader" not in sys.modules


def test_extra_and_missing_files_are_named(logged, never_loaded):
    store = logged["store"]
    (store / "code").mkdir()
    (store / "code" / "sitecustomize.py").write_text("raise SystemExit('ran')\n")
    (store / "input_example.json").unlink()
    with pytest.raises(ModelIntegrityError) as err:
        load_pyfunc(logged["uri"])
    assert "missing input_example.json" in str(err.value) and "extra code/sitecustomize.py" in str(err.value)


def test_a_model_without_recorded_hashes_is_refused(logged, tracking, bundle_dir, never_loaded):
    client = mlflow.MlflowClient()
    client.delete_tag(logged["run_id"], "model_sha256")
    with pytest.raises(ModelIntegrityError, match=r"no recorded hash .*no tag 'model_sha256'"):
        load_pyfunc(f"models:/{REGISTERED}/{logged['version']}")
    # A model logged another way (an older version of this code, by hand) recorded nothing.
    with mlflow.start_run(experiment_id=tracking) as run:
        info = mlflow.pyfunc.log_model(
            name="other", loader_module="forecasting.pyfunc_model", data_path=str(bundle_dir)
        )
    for uri in (info.model_uri, f"runs:/{run.info.run_id}/other"):
        with pytest.raises(ModelIntegrityError, match="no tag 'other_sha256'"):
            load_pyfunc(uri)


def test_a_uri_without_a_run_is_refused(logged, never_loaded):
    with pytest.raises(ModelIntegrityError, match="leads to no tracked run"):
        load_pyfunc(str(logged["store"]))
    with pytest.raises(ModelLoadError):
        load_pyfunc(f"models:/{REGISTERED}/99")


def test_mlflows_own_registered_model_meta_is_no_tampering(logged):
    """``mlflow.pyfunc.load_model("models:/...")`` on a local store writes ``registered_model_meta``
    into the store itself; it is MLflow's file, not the model's."""
    mlflow.pyfunc.load_model(f"models:/{REGISTERED}/{logged['version']}")
    assert (logged["store"] / "registered_model_meta").is_file()
    load_pyfunc(f"models:/{REGISTERED}/{logged['version']}")


@pytest.mark.parametrize(("budget", "named"), [(700, True), (10, False)])
def test_a_manifest_too_large_for_a_tag(tracking, bundle_dir, monkeypatch, budget, named):
    """Shortened per-file hashes when the full manifest does not fit a tag, none when even that
    does not: the digest still decides, the manifest only names the files. (This model's ten
    files take about 890 characters in full, 410 shortened.)"""
    monkeypatch.setattr(serving, "TAG_BUDGET", budget)
    example = example_input(training_frame(), load_bundle(bundle_dir))
    with mlflow.start_run(experiment_id=tracking) as run:
        uri = log_pyfunc(bundle_dir, example, name="small")
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert "small_sha256" in tags and ("small_manifest" in tags) == named
    if named:
        assert {len(v) for v in json.loads(tags["small_manifest"]).values()} == {serving.SHORT_HASH}
    store = Path(mlflow.MlflowClient().get_logged_model(uri.removeprefix("models:/")).artifact_location)
    flip_one_byte(store / "data" / "bundle" / "scaler.npz")
    monkeypatch.setattr(mlflow.pyfunc, "load_model", refuse_to_load)
    match = "changed data/bundle/scaler.npz" if named else "the record does not say which files"
    with pytest.raises(ModelIntegrityError, match=match):
        load_pyfunc(f"runs:/{run.info.run_id}/small")


# --- the second line: the bundle against the MLmodel's metadata, for mlflow models serve ----------------
def test_the_loader_checks_the_bundle_against_the_mlmodel(logged, tmp_path):
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=logged["uri"], dst_path=str(tmp_path)))
    mlflow.pyfunc.load_model(str(local))  # untouched: loads
    flip_one_byte(local / "data" / "bundle" / "scaler.npz")
    with pytest.raises(ModelIntegrityError, match=r"changed data/bundle/scaler\.npz"):
        mlflow.pyfunc.load_model(str(local))
    spec = yaml.safe_load((local / "MLmodel").read_text())
    del spec["metadata"]
    (local / "MLmodel").write_text(yaml.safe_dump(spec))
    with pytest.raises(ModelIntegrityError, match="records no bundle hash"):
        mlflow.pyfunc.load_model(str(local))


def test_forecast_predict_with_a_tampered_model_exits_1(logged, tracking, history, tmp_path, capsys):
    from forecasting.cli import main

    src = tmp_path / "in.parquet"
    history.to_parquet(src)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(src)},
                "tracking": {"tracking_uri": mlflow.get_tracking_uri(), "experiment": "integrity-tests"},
            }
        )
    )
    flip_one_byte(logged["store"] / "data" / "bundle" / "scaler.npz")
    out = tmp_path / "f.csv"
    args = ["predict", "--model", f"{REGISTERED}/{logged['version']}", "--input", str(src)]
    assert main([*args, "--output", str(out), "--config", str(cfg)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ModelIntegrityError: ") and "data/bundle/scaler.npz" in err, err
    assert not out.exists()
