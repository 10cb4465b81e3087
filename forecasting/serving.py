"""The model bundle, the MLflow pyfunc around it, and batch prediction.

A *bundle* is a folder that holds everything needed to forecast raw data without the training
config, and nothing pickled::

    bundle.json    format version, family, lookback, horizon, frequency, covariate roles and the
                   data's column roles (time column, target, id column, timezone, repairs)
    scaler.npz     the scaler fitted on the model's training rows (``Scaler.save``: plain text,
                   UTF-8 and float64 arrays, read with ``allow_pickle=False``): the target and
                   past/future covariates per series, static covariates across series (format
                   version 2; version 1, before 2026-12-07, held it as ``scaler.json``,
                   ``Scaler.to_dict``; both load)
    model/         the model's own ``Forecaster.save`` output (JSON + the family's state files)

``Bundle.forecast`` validates a history frame exactly as training validated its data (same named
errors; only a series constant over its history is fine, a quiet spell to forecast from), scales
it with the bundled scaler (the target of a series unseen in training is scaled with its own
history, its statics with the cross-series statistics), forecasts and returns ``series_id, t,
yhat`` in the original units, every value finite (``NonFiniteForecastError`` otherwise), and
after ``yhat`` the interval bounds and quantiles of a calibrated model (``yhat_lo_80``,
``yhat_hi_80``, ... ``q0.1`` ...; ``forecasting.evaluation.intervals``), in the same units.
The pyfunc, batch prediction and ``forecast predict`` all forecast through it.

The MLflow model holds data only: the bundle (``data/bundle/``), the ``MLmodel``, the environment
files and the input example; no script, no ``code/`` folder, no pickle. Its ``loader_module`` is
``forecasting.pyfunc_model``, imported by name from the ``forecasting`` package installed where the
model is loaded, so whoever can write the artifact store can change data, never run code.

Every file of a logged model is hashed when it is logged (``log_pyfunc``) and the hashes are kept
*outside* the artifact store, as tags of the run that logged it (``<name>_sha256``, the digest of
the manifest, and ``<name>_manifest``, the manifest itself, to name what changed). ``load_pyfunc``
resolves the model URI to that run, downloads the model, checks every file against the record and
only then hands the checked local copy to MLflow; a changed, missing or extra file, or no record,
is a ``ModelIntegrityError`` and nothing of the model is read. The bundle's own digest in the
``MLmodel`` metadata is a second check for loads that bypass ``load_pyfunc`` (``mlflow models
serve``; see ``forecasting/pyfunc_model.py``). ``mlflow`` is imported only inside the functions
that need it.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import importlib.metadata
import json
import os
import tempfile
import threading
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from forecasting.config import DataConfig
from forecasting.data.ingest import (  # ingest's own checks, so that messages match training's
    _NAN_WORDS,
    _check_columns,
    _check_regular_file,
    _configured,
    _detect_format,
    _to_numeric,
    parse_timestamps,
    prepare_frame,
    read_table,
)
from forecasting.data.scaling import Scaler
from forecasting.data.schema import SERIES, TARGET, TIME
from forecasting.data.series_reader import SeriesChunks
from forecasting.errors import (
    ConfigError,
    DuplicateTimestampError,
    ForecastingError,
    ModelIntegrityError,
    ModelLoadError,
    NonFiniteForecastError,
    OutputPathError,
    UnknownSeriesError,
    format_rows,
)
from forecasting.integrity import (
    BUNDLE_FILES,
    BUNDLE_SHA256,
    LOADER_MODULE,
    check_manifest,
    check_model_dir,
    digest_tag,
    file_manifest,
    manifest_digest,
    manifest_tag,
    read_mlmodel,
)
from forecasting.models.base import Forecaster

# 2: the scaler as scaler.npz (2026-12-07); 1: as scaler.json. Both load; older code refuses a 2 by
# its version rather than by a missing file.
BUNDLE_FORMAT_VERSION = 2
SCALER_FILES = {2: "scaler.npz", 1: "scaler.json"}
TAG_BUDGET = 5000  # characters of a tag value that every MLflow backend keeps
SHORT_HASH = 16  # hex digits per file when the full manifest does not fit a tag
REGISTERED_MODEL_META = "registered_model_meta"  # MLflow's, not the model's (``_download_model``)
OUTPUT_COLUMNS = [SERIES, TIME, "yhat", "model_name", "model_version", "run_id"]


def output_columns(forecast: pd.DataFrame) -> list[str]:
    """The written columns of a forecast: ``OUTPUT_COLUMNS`` with the model's interval bounds and
    quantiles (``yhat_lo_80`` ... ``q0.9``) after ``yhat``."""
    head, identity = OUTPUT_COLUMNS[:3], OUTPUT_COLUMNS[3:]
    bands = [c for c in forecast.columns if c not in OUTPUT_COLUMNS]
    return [*head, *bands, *identity]


# Data-config keys a batch-prediction caller may override; covariate roles belong to the model.
OVERRIDABLE = ("time_column", "target", "id_column", "format", "timezone", "repair")
# Third-party packages the pyfunc imports. ``forecasting`` itself is not one: the model carries no
# code, so the package must be installed where the model is loaded (its version is in the metadata).
PYFUNC_REQUIREMENTS = ("mlflow", "numpy", "pandas", "pyarrow", "pydantic", "pyyaml", "statsmodels", "torch")


# --- the bundle --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bundle:
    """A fitted model with its scaler and the column roles of the data it was trained on."""

    model: Forecaster
    scaler: Scaler
    data: DataConfig  # column roles of raw input; ``data.path`` is unused here
    freq: str  # pandas offset alias of the sampling interval

    @property
    def lookback(self) -> int:
        return self.model.spec.lookback

    @property
    def horizon(self) -> int:
        return self.model.spec.horizon

    def data_config(self, overrides: dict[str, Any] | None = None) -> DataConfig:
        """The raw-data column roles, with ``overrides`` (keys in ``OVERRIDABLE``) applied."""
        if not overrides:
            return self.data
        unknown = sorted(set(overrides) - set(OVERRIDABLE))
        if unknown:
            raise ConfigError(
                f"data override(s) {unknown} not allowed at prediction; allowed: {list(OVERRIDABLE)} "
                "(covariate roles and frequency are fixed by the model)"
            )
        raw = {**self.data.model_dump(mode="json"), **overrides}
        try:
            return DataConfig.model_validate(raw)
        except ValidationError as err:
            msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise ConfigError(f"data overrides: {msgs}") from None

    def canonical(
        self, history: pd.DataFrame, overrides: dict[str, Any] | None = None, *, source: str = "history"
    ) -> pd.DataFrame:
        """Validate ``history`` (raw or canonical) into the canonical frame, future rows included.

        A frame with ``series_id, t, y`` columns is read as canonical, anything else by the
        bundle's column roles. Observed rows pass the training validation (``prepare_frame``);
        rows after a series' last observed ``y`` may carry only future covariates.
        """
        if overrides or not {SERIES, TIME, TARGET} <= {str(c) for c in history.columns}:
            cfg = self.data_config(overrides)
        else:
            cfg = self.data.model_copy(
                update={"time_column": TIME, "target": TARGET, "id_column": SERIES, "timezone": None}
            )
        cfg = cfg.model_copy(update={"freq": self.freq})
        return _canonical_with_future(history, cfg, source)

    def forecast(
        self, history: pd.DataFrame, overrides: dict[str, Any] | None = None, *, source: str = "history"
    ) -> pd.DataFrame:
        """Forecast the horizon after every series' last observed ``y``.

        Returns ``series_id, t, yhat`` (``horizon`` rows per series) in the target's original units.
        Raises ``NonFiniteForecastError`` rather than return a NaN or infinite forecast.
        """
        canon = self.canonical(history, overrides, source=source)
        if not self.model.handles_unseen_series:
            unseen = sorted(set(canon[SERIES]) - set(self.model.series_))
            if unseen:
                raise UnknownSeriesError(
                    f"model {self.model.name!r} cannot forecast series it was not trained on: "
                    f"{format_rows(unseen)}"
                )
        scaled = self.scaler.transform(canon, unseen="fit")
        pred = self.model.predict(scaled)
        # yhat, then the interval bounds and quantiles when the model is calibrated: each maps
        # back through the same increasing affine map (std > 0), so their order is kept.
        values = [c for c in pred.columns if c not in (SERIES, TIME)]
        original = self.scaler.inverse_y(
            pred[values].to_numpy(np.float64), pred[SERIES].to_numpy(), history=canon
        )
        _check_finite(original, pred, self.model.name)
        return pred.assign(**{c: original[:, j] for j, c in enumerate(values)})


def _check_finite(yhat: np.ndarray, pred: pd.DataFrame, model: str) -> None:
    """Every forecast finite, or a named error naming the series and their first bad timestamps."""
    bad = ~np.isfinite(np.asarray(yhat, dtype=np.float64))
    if bad.ndim == 2:  # one column per forecast value (yhat, bounds, quantiles): a row is bad once
        bad = bad.any(axis=1)
    if not bad.any():
        return
    ids = pred[SERIES].to_numpy()[bad]
    times = pred[TIME].to_numpy()[bad]
    series = pd.unique(ids)
    first = [f"{s!r} (from t={pd.Timestamp(times[np.argmax(ids == s)])})" for s in series[:5]]
    raise NonFiniteForecastError(
        f"model {model!r} forecast NaN or infinite values ({int(bad.sum())} of {bad.size}) for "
        f"series {format_rows(first)}{f' (+{series.size - 5} more)' if series.size > 5 else ''}; "
        "nothing was returned or written. A history far outside the training data's range can "
        "overflow the model's float32 arithmetic: check those series' latest values"
    )


def write_bundle(model: Forecaster, scaler: Scaler, data_cfg: DataConfig, freq: str, dest: Path) -> Path:
    """Write a bundle folder (see the module docstring) and return its path."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"bundle folder {str(dest)!r} is not empty")
    spec = model.spec
    roles = {
        "past": data_cfg.covariates_with("past"),
        "future": data_cfg.covariates_with("future"),
        "static": data_cfg.covariates_with("static"),
    }
    if {k: sorted(v) for k, v in roles.items()} != {
        "past": sorted(spec.past),
        "future": sorted(spec.future),
        "static": sorted(spec.static),
    }:
        raise ConfigError(
            f"covariate roles of the data config {roles} differ from the model's "
            f"(past={spec.past}, future={spec.future}, static={spec.static})"
        )
    extra = sorted(set(scaler.columns) - {TARGET, *spec.covariates})
    if TARGET not in scaler.columns or extra:
        raise ConfigError(
            f"scaler columns {scaler.columns} must include 'y' and only covariates of the model"
        )
    dest.mkdir(parents=True, exist_ok=True)
    model.save(dest / "model")
    scaler.save(dest / SCALER_FILES[BUNDLE_FORMAT_VERSION])
    meta = {
        "format_version": BUNDLE_FORMAT_VERSION,
        "family": model.name,
        "lookback": spec.lookback,
        "horizon": spec.horizon,
        "freq": freq,
        "covariates": {"past": list(spec.past), "future": list(spec.future), "static": list(spec.static)},
        "data": data_cfg.model_dump(mode="json", exclude={"path", "freq"}),
    }
    (dest / "bundle.json").write_text(json.dumps(meta, indent=2))
    return dest


def load_bundle(path: str | Path) -> Bundle:
    """Read a bundle folder written by ``write_bundle``."""
    path = Path(path)
    try:
        meta = json.loads((path / "bundle.json").read_text())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{path}: not a readable forecasting bundle ({err})") from None
    version = meta.get("format_version")
    if version not in SCALER_FILES:
        raise ModelLoadError(
            f"{path}: bundle format version {version} is not one of {sorted(SCALER_FILES)} (this "
            f"release writes {BUNDLE_FORMAT_VERSION})"
        )
    try:
        scaler = (
            Scaler.load(path / SCALER_FILES[version])
            if version >= 2
            else Scaler.from_dict(json.loads((path / SCALER_FILES[version]).read_text()))
        )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ModelLoadError(f"{path}: not a readable forecasting bundle ({err})") from None
    model = Forecaster.load(path / "model")
    data = DataConfig.model_validate({**meta["data"], "path": str(path), "freq": meta["freq"]})
    spec = model.spec
    if meta["covariates"] != {"past": spec.past, "future": spec.future, "static": spec.static}:
        raise ModelLoadError(f"{path}: bundle covariate roles {meta['covariates']} differ from the model's")
    return Bundle(model=model, scaler=scaler, data=data, freq=meta["freq"])


# --- history with future rows --------------------------------------------------------------------
def _is_blank(col: pd.Series) -> np.ndarray:
    """Empty cells: NaN/None, or text that ingest reads as empty ('', 'nan', 'NULL', ...)."""
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return col.isna().to_numpy()
    text = col.astype("string").str.strip().str.lower()
    return (col.isna() | text.isin(_NAN_WORDS).fillna(True)).to_numpy(dtype=bool)


def _canonical_with_future(raw: pd.DataFrame, cfg: DataConfig, source: str) -> pd.DataFrame:
    """Split off each series' rows after its last observed target, validate the rest as training
    does, and append the future rows (future covariates only; y and past covariates NaN).

    Future covariates that do not cover the horizon are left missing here: the model's
    ``prediction_batch`` names the missing timestamps (``FutureCovariateError``).
    """
    _check_columns(raw, cfg, source)
    raw = raw.reset_index(drop=True)
    t = parse_timestamps(raw[cfg.time_column], cfg.time_column, cfg.timezone)
    blank = np.column_stack([_is_blank(raw[c]) for c in cfg.targets]).all(axis=1)
    if cfg.is_wide or cfg.id_column is None:
        keys = pd.Series(0, index=raw.index)
    else:
        keys = raw[cfg.id_column]
    # Rows of an empty id have NaN keys here and stay "observed": prepare_frame names them.
    last_observed = t.where(~blank).groupby(keys).transform("max")
    future = (t > last_observed).to_numpy(dtype=bool)
    canon = prepare_frame(raw[~future], cfg, source=source, history=True).frame
    future_cols = cfg.covariates_with("future")
    if not future.any() or not future_cols:
        return canon  # future rows carry nothing the model uses

    rows = raw[future]
    tf = t[future].reset_index(drop=True)
    row_numbers = pd.Series(np.flatnonzero(future))
    values = {c: _to_numeric(rows[c].reset_index(drop=True), c, row_numbers, tf) for c in future_cols}
    if cfg.is_wide:
        ids = [np.full(len(rows), s, dtype=object) for s in cfg.targets]
    elif cfg.id_column is not None:
        ids = [rows[cfg.id_column].astype(str).to_numpy()]
    else:
        ids = [np.full(len(rows), cfg.targets[0], dtype=object)]
    fut = pd.concat(
        [pd.DataFrame({SERIES: sid, TIME: tf, TARGET: np.nan, **values}) for sid in ids], ignore_index=True
    )
    dup = fut.duplicated([SERIES, TIME], keep=False)
    if dup.any():
        sub = fut[dup]
        raise DuplicateTimestampError(
            f"{source}: series {sub[SERIES].iloc[0]!r}: future rows repeat timestamp(s) "
            f"{format_rows(pd.unique(sub[TIME]))}; keep one row per timestamp"
        )
    static = cfg.covariates_with("static")
    if static:
        per_series = canon.groupby(SERIES, sort=False)[static].first()
        fut[static] = per_series.reindex(fut[SERIES]).to_numpy()
    full = pd.concat([canon, fut.reindex(columns=canon.columns)], ignore_index=True)
    order = pd.Categorical(full[SERIES], categories=pd.unique(canon[SERIES]))
    full = full.assign(_k=order.codes).sort_values(["_k", TIME], kind="stable").drop(columns="_k")
    return full.reset_index(drop=True)


# --- MLflow pyfunc -------------------------------------------------------------------------------
def example_input(frame: pd.DataFrame, bundle: Bundle, n_series: int = 1) -> pd.DataFrame:
    """A small pyfunc input example from a canonical frame: the last ``lookback`` observed rows of
    the first ``n_series`` series, followed by ``horizon`` future rows (y empty) when the model has
    future covariates."""
    L, H = bundle.lookback, bundle.horizon
    has_future = bool(bundle.model.spec.future)
    parts = []
    for _, part in list(frame.groupby(SERIES, sort=False))[:n_series]:
        part = part.tail(L + H) if has_future else part.tail(L)
        if has_future:
            part = part.copy()
            part.loc[part.index[L:], TARGET] = np.nan
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


@functools.cache
def pip_requirements() -> tuple[str, ...]:
    """Exact versions of the third-party packages the pyfunc imports, as installed here (read
    once a process: every model a run logs gets the same)."""
    reqs = []
    for name in PYFUNC_REQUIREMENTS:
        try:
            reqs.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return tuple(reqs)


def log_pyfunc(bundle_dir: Path, input_example: pd.DataFrame, name: str = "model") -> str:
    """Log the bundle as an MLflow pyfunc in the active run and record its hashes; returns its URI.

    The model is data only (``loader_module=forecasting.pyfunc_model``, the bundle as
    ``data_path``); the bundle's manifest and digest go into the ``MLmodel`` metadata. The
    signature is inferred from ``input_example`` and the bundle's forecast of it. Once logged, the
    model is downloaded back, checked (our loader, no code, the bundle we wrote) and every file of
    it hashed: the digest and the manifest become tags of the run (``digest_tag(name)``,
    ``manifest_tag(name)``), which ``load_pyfunc`` checks before it loads anything.
    """
    import mlflow
    from mlflow.models import infer_signature

    if mlflow.active_run() is None:
        raise RuntimeError("log_pyfunc needs an active MLflow run (mlflow.start_run())")
    bundle_dir = Path(bundle_dir)
    output = load_bundle(bundle_dir).forecast(input_example, source="input example")
    bundle_files = file_manifest(bundle_dir)
    metadata = {BUNDLE_SHA256: manifest_digest(bundle_files), BUNDLE_FILES: bundle_files}
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        metadata["forecasting_version"] = importlib.metadata.version("forecasting")
    info = mlflow.pyfunc.log_model(
        name=name,
        loader_module=LOADER_MODULE,
        data_path=str(bundle_dir),
        signature=infer_signature(input_example, output),
        input_example=input_example,
        pip_requirements=list(pip_requirements()),
        metadata=metadata,
    )
    _record_hashes(info, name, metadata[BUNDLE_SHA256])
    return info.model_uri


def load_pyfunc(model_uri: str) -> Any:
    """Verify the model against the hashes its run recorded, then ``mlflow.pyfunc.load_model`` it.

    ``model_uri`` is ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/m-ID`` (a logged
    model) or ``runs:/RUN_ID/NAME``: each leads to the run that logged the model. The model is
    downloaded to a temporary folder, every file hashed and compared with the run's record, and
    only that checked copy is loaded. Raises ``ModelIntegrityError`` (before MLflow reads any of
    the model's files) when a file changed, is missing or extra, or nothing was recorded; other
    load failures are ``ModelLoadError``. The result's ``predict(frame)`` takes the pyfunc input
    (see ``forecasting/pyfunc_model.py``) and raises ``MlflowException`` naming the forecasting
    error for bad input.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    what = f"model {model_uri!r}"
    try:
        source = resolve_model_source(model_uri)
        with tempfile.TemporaryDirectory(prefix="forecasting-model-") as tmp:
            local = _download_model(source.location, tmp)
            check_manifest(file_manifest(local), source.digest, source.manifest, what, source.record)
            check_model_dir(local, what)
            return mlflow.pyfunc.load_model(str(local))  # reads everything it needs before returning
    except MlflowException as err:
        raise ModelLoadError(f"cannot load model {model_uri!r}: {err.message}") from None


def load_pyfunc_bundle(model_uri: str) -> tuple[Bundle, Any]:
    """Load (verified) an MLflow model logged by ``log_pyfunc``: its bundle and the model's metadata."""
    pyfunc = load_pyfunc(model_uri)
    try:
        bundle = pyfunc.get_raw_model()
    except NotImplementedError:
        bundle = None
    if not isinstance(bundle, Bundle):
        raise ModelLoadError(f"model {model_uri!r} is not a forecasting pyfunc (logged by log_pyfunc)")
    return bundle, pyfunc.metadata


@dataclass(frozen=True)
class ModelSource:
    """Where a model URI leads: the run that logged it and the hashes it recorded there."""

    run_id: str
    name: str  # the model's name in its run (log_pyfunc's ``name``)
    location: str  # artifact URI of the model's files
    digest: str
    manifest: dict[str, str] | None  # None when too large for a tag

    @property
    def record(self) -> str:
        return f"tag {digest_tag(self.name)!r} of run {self.run_id}"


def resolve_model_source(model_uri: str) -> ModelSource:
    """Follow a model URI through the tracking store to the run that logged it and its record.

    ``models:/NAME/VERSION`` and ``models:/NAME@ALIAS`` go through the registry to the version's
    logged model, ``models:/m-ID`` is a logged model, ``runs:/RUN_ID/NAME`` the run's logged
    model of that name. A URI that leads to no run (a path, ``s3://...``), or a run that recorded
    no hash for the model, is a ``ModelIntegrityError``.
    """
    import mlflow

    client = mlflow.MlflowClient()
    if model_uri.startswith("models:/"):
        rest = model_uri[len("models:/") :].strip("/")
        if "@" in rest or "/" in rest:
            if "@" in rest:
                version = client.get_model_version_by_alias(*rest.split("@", 1))
            else:
                version = client.get_model_version(*rest.split("/", 1))
            location = client.get_model_version_download_uri(version.name, version.version)
            model_id = getattr(version, "model_id", None) or logged_model_id(version.source or "")
            if model_id:
                logged = client.get_logged_model(model_id)
                run_id, name = logged.source_run_id, logged.name
            elif (version.source or "").startswith("runs:/"):
                run_id, _, name = version.source[len("runs:/") :].strip("/").partition("/")
            else:  # a path in the run's artifacts (a model registered before MLflow 3)
                run_id, name = version.run_id, (version.source or "").rstrip("/").rpartition("/")[2]
        else:
            logged = client.get_logged_model(rest)
            run_id, name, location = logged.source_run_id, logged.name, logged.artifact_location
    elif model_uri.startswith("runs:/"):
        run_id, _, name = model_uri[len("runs:/") :].strip("/").partition("/")
        location = None  # found below, once the run is known to have recorded the model
    else:
        raise ModelIntegrityError(
            f"model {model_uri!r} leads to no tracked run, so its files cannot be checked; load it "
            "as models:/NAME/VERSION, models:/NAME@ALIAS, models:/m-ID or runs:/RUN_ID/NAME"
        )
    if not run_id or not name:
        raise ModelIntegrityError(f"model {model_uri!r}: the tracking store does not say which run logged it")
    run = client.get_run(run_id)
    digest = run.data.tags.get(digest_tag(name))
    if not digest:
        raise ModelIntegrityError(
            f"model {model_uri!r} has no recorded hash (run {run_id} has no tag {digest_tag(name)!r}): "
            "it was logged before models were hashed, or not by log_pyfunc, so it cannot be "
            "checked and is not loaded. Log it again (forecast run)"
        )
    if location is None:
        location = _run_model_location(client, run, name, model_uri)
    try:
        manifest = json.loads(run.data.tags.get(manifest_tag(name), ""))
    except ValueError:
        manifest = None
    return ModelSource(run_id, name, location, digest, manifest if isinstance(manifest, dict) else None)


def _download_model(location: str, dst: str) -> Path:
    """Copy the model's files from the artifact store into ``dst``; the copy's path.

    MLflow writes ``registered_model_meta`` (name and version, read by nothing) into a model
    folder whenever it downloads a ``models:/`` URI, and into the store itself when the store is a
    local folder and no destination is given (``mlflow.pyfunc.load_model("models:/...")``). It is
    no part of the model: it is dropped from the copy, neither hashed nor loaded.
    """
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=dst))
    meta = local / REGISTERED_MODEL_META
    if meta.is_file() and not meta.is_symlink():
        meta.unlink()
    return local


def logged_model_id(source: str | None) -> str | None:
    """The id of the logged model a ``models:/m-ID`` URI names (what ``log_pyfunc`` returns);
    None for any other URI or none."""
    source = source or ""
    rest = source[len("models:/") :] if source.startswith("models:/") else ""
    return rest if rest.startswith("m-") and "/" not in rest else None


def _run_model_location(client: Any, run: Any, name: str, model_uri: str) -> str:
    """Artifact URI of the newest logged model called ``name`` of ``run``."""
    outputs = run.outputs.model_outputs if run.outputs else []
    models = [client.get_logged_model(out.model_id) for out in outputs]
    models = [m for m in models if m.name == name and m.source_run_id == run.info.run_id]
    if not models:
        raise ModelLoadError(
            f"cannot load model {model_uri!r}: run {run.info.run_id} logged no model {name!r}"
        )
    return max(models, key=lambda m: m.creation_timestamp or 0).artifact_location


def _record_hashes(info: Any, name: str, bundle_digest: str) -> None:
    """Download the model just logged, check it is what ``log_pyfunc`` wrote, and tag its run with
    the digest and the manifest of its files (``digest_tag``, ``manifest_tag``).

    The manifest is kept with full hashes when it fits ``TAG_BUDGET`` characters, else with
    ``SHORT_HASH`` hex digits per file, else not at all: it only names files, the digest decides.
    """
    import mlflow

    client = mlflow.MlflowClient()
    location = client.get_logged_model(info.model_id).artifact_location
    what = f"model {info.model_uri!r} (just logged)"
    with tempfile.TemporaryDirectory(prefix="forecasting-model-") as tmp:
        local = _download_model(location, tmp)
        manifest = file_manifest(local)
        check_model_dir(local, what)
        if read_mlmodel(local, what)["metadata"][BUNDLE_SHA256] != bundle_digest:
            raise ModelIntegrityError(f"{what}: its bundle is not the one logged; nothing was recorded")
    tags = {digest_tag(name): manifest_digest(manifest)}
    for width in (64, SHORT_HASH):
        value = json.dumps({k: v[:width] for k, v in manifest.items()}, sort_keys=True, separators=(",", ":"))
        if len(value) <= TAG_BUDGET:
            tags[manifest_tag(name)] = value
            break
    for key, value in tags.items():
        client.set_tag(info.run_id, key, value)


# --- batch prediction ------------------------------------------------------------------------------
def model_identity(model_uri: str, run_id: str | None = None) -> tuple[str | None, str | None, str | None]:
    """(model_name, model_version, run_id) as far as the URI tells them.

    ``models:/<name>/<version>`` gives both; ``models:/<name>@<alias>`` gives the name only (the
    caller resolves the alias to a version); ``runs:/<run_id>/<path>`` gives the run and the path.
    """
    name = version = None
    if model_uri.startswith("models:/"):
        rest = model_uri[len("models:/") :].strip("/")
        if "@" in rest:
            name = rest.split("@", 1)[0]
        elif "/" in rest:
            name, version = rest.split("/", 1)
        else:
            name = rest  # a logged model id (m-...)
    elif model_uri.startswith("runs:/"):
        parts = model_uri[len("runs:/") :].strip("/").split("/", 1)
        run_id = run_id or parts[0]
        name = parts[1] if len(parts) > 1 else None
    return name, version, run_id


def _output_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise ConfigError(f"output {str(path)!r}: the name must end in .csv, .csv.gz, .parquet or .pq")


def check_output_path(path: Path) -> None:
    """Fail before any work when ``path`` cannot be written (``OutputPathError``): a bad suffix
    (``ConfigError``), a folder, a path under a file, or a folder this process may not write.

    Missing folders are fine: ``write_table_atomic`` creates them (``outputs/`` by default).
    """
    path = Path(path)
    _output_format(path)
    try:
        if path.is_dir():
            raise OutputPathError(f"output {str(path)!r} is a folder; name a file in it (e.g. forecast.csv)")
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    except OSError as err:
        raise OutputPathError(f"output {str(path)!r} cannot be written: {_reason(err)}") from None
    if not folder.is_dir():
        raise OutputPathError(
            f"output {str(path)!r} cannot be written: {str(folder)!r} is a file, not a folder"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"output {str(path)!r} cannot be written: folder {str(folder)!r} is not writable (read-only "
            "or no permission); choose another --output"
        )


def _reason(err: OSError) -> str:
    return err.strerror or str(err) or type(err).__name__


class TableWriter:
    """Write CSV or Parquet (by suffix) chunk by chunk, so that ``path`` ends up either the whole
    new file or untouched.

    The chunks go to a hidden temporary file in the same folder (a CSV chunk appended under one
    header, a Parquet chunk as one row group); leaving the ``with`` block without an error flushes
    it to disk and renames it over ``path`` (``os.replace`` is atomic within one file system), an
    error removes it. Missing folders are created with the first chunk; any OS error (no
    permission, read-only, disk full) is an ``OutputPathError``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.format = _output_format(self.path)
        self.tmp = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex}.tmp"
        self._files = contextlib.ExitStack()  # the open temporary file, closed on the way out
        self._parquet: Any = None
        self._csv: Any = None
        self.chunks = 0

    def __enter__(self) -> TableWriter:
        return self

    def write(self, frame: pd.DataFrame) -> None:
        if self.chunks == 0:  # the folder appears with the first chunk, never for a failed call
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                folder = str(self.path.parent)
                raise OutputPathError(
                    f"output {str(self.path)!r}: cannot create its folder {folder!r}: {_reason(err)}"
                ) from None
        try:
            if self.format == "csv":
                if self._csv is None:
                    gz = self.path.name.lower().endswith(".gz")
                    opener = gzip.open if gz else open
                    self._csv = self._files.enter_context(opener(self.tmp, "wt", newline=""))
                frame.to_csv(self._csv, index=False, header=self.chunks == 0)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.Table.from_pandas(frame, preserve_index=False)
                if self._parquet is None:
                    self._parquet = self._files.enter_context(pq.ParquetWriter(self.tmp, table.schema))
                self._parquet.write_table(table.cast(self._parquet.schema), row_group_size=max(len(frame), 1))
        except OSError as err:
            raise OutputPathError(f"output {str(self.path)!r} cannot be written: {_reason(err)}") from err
        self.chunks += 1

    def __exit__(self, kind: Any, err: BaseException | None, tb: Any) -> None:
        try:
            self._files.close()
            if err is None:
                if self.chunks == 0:
                    raise ValueError("TableWriter: nothing was written")
                with open(self.tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(self.tmp, self.path)
        except BaseException as failure:
            with contextlib.suppress(OSError):
                self.tmp.unlink(missing_ok=True)
            if isinstance(failure, OSError):
                raise OutputPathError(
                    f"output {str(self.path)!r} cannot be written: {_reason(failure)}"
                ) from failure
            raise
        finally:
            if err is not None:
                with contextlib.suppress(OSError):
                    self.tmp.unlink(missing_ok=True)


def write_table_atomic(frame: pd.DataFrame, path: Path) -> Path:
    """Write one frame as CSV or Parquet (by suffix) atomically (``TableWriter``)."""
    with TableWriter(path) as writer:
        writer.write(frame)
    return Path(path)


def batch_predict(
    model_uri: str,
    input_path: Path,
    output_path: Path,
    data_cfg_overrides: dict[str, Any] | None = None,
    *,
    model_name: str | None = None,
    model_version: str | int | None = None,
    run_id: str | None = None,
    chunk_series: int | None = None,
    dask_address: str | None = None,
    dask_local_workers: int | None = None,
) -> pd.DataFrame:
    """Forecast every series of a CSV/Parquet file with an MLflow model logged by ``log_pyfunc``.

    The input is canonical long format (``series_id, t, y, ...``) or the raw format the bundle's
    column roles describe (``data_cfg_overrides`` may rename them); it is validated as training
    data is. Rows after a series' last ``y`` may carry future covariates for the horizon.
    The output (``series_id, t, yhat, model_name, model_version, run_id``) is written atomically
    as CSV or Parquet by ``output_path``'s suffix and returned. Unset identity fields default to
    what ``model_uri`` and the model's metadata tell (see ``model_identity``).

    The series go in chunks of ``chunk_series`` (None: all at once), each validated, forecast and
    written (a Parquet row group) in turn; with ``dask_address`` or ``dask_local_workers`` the
    chunks are forecast on Dask workers (``forecasting.partition``), each loading the model once
    from the tracking store this process uses. The file and the frame returned are the same
    whatever the chunking. A validation error in one chunk of several is reported as validating
    the whole file reports it (its row numbers are the file's).
    """
    from forecasting.partition import chunk_map, from_ipc, series_chunks, to_ipc

    output_path = Path(output_path)
    check_output_path(output_path)  # a bad suffix or an unwritable folder fails before any work
    bundle, metadata = load_pyfunc_bundle(model_uri)
    cfg = bundle.data_config(data_cfg_overrides)
    ids = [c for c in (cfg.id_column, SERIES) if c]  # read as text: ids like 007 keep their zeros
    # The training file's format says nothing about this file: detect it unless overridden.
    fmt = (data_cfg_overrides or {}).get("format", "auto")
    wanted = [*_configured(cfg), SERIES, TIME, TARGET]
    streamed = _series_chunks_of(input_path, fmt, cfg, data_cfg_overrides, chunk_series, [*wanted, *ids])
    raw = None if streamed is not None else read_table(input_path, fmt, text_columns=ids, columns=wanted)
    uri_name, uri_version, uri_run = model_identity(model_uri, getattr(metadata, "run_id", None))
    identity = {
        "model_name": model_name if model_name is not None else uri_name,
        "model_version": str(model_version) if model_version is not None else uri_version,
        "run_id": run_id if run_id is not None else uri_run,
    }
    source = str(input_path)
    if streamed is not None:
        chunks: Any = streamed  # read one at a time: the file is never whole in memory
        frames: Any = iter(streamed)
    else:
        key = _id_column_of(raw, cfg, data_cfg_overrides)
        chunks = series_chunks(raw[key], chunk_series) if key and chunk_series else []
        frames = (raw.iloc[rows] for rows in chunks)
    parts: list[pd.DataFrame] = []
    on_dask = len(chunks) > 1 and bool(dask_address or dask_local_workers)  # one chunk: here
    try:
        with (
            contextlib.closing(streamed) if streamed is not None else contextlib.nullcontext(),
            TableWriter(output_path) as writer,
            chunk_map(dask_address if on_dask else None, dask_local_workers if on_dask else None) as run,
        ):
            if len(chunks) <= 1:
                results: Any = [bundle.forecast(raw, data_cfg_overrides, source=source)]
            elif on_dask:
                import mlflow

                pieces = (to_ipc(frame) for frame in frames)
                uris = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
                pinned = _pinned_uri(model_uri)  # every worker loads the same version
                results = (
                    from_ipc(part)
                    for part in run(forecast_chunk, pieces, pinned, *uris, data_cfg_overrides, source)
                )
            else:
                results = (bundle.forecast(frame, data_cfg_overrides, source=source) for frame in frames)
            for forecasts in results:
                forecasts = forecasts.assign(**identity)[output_columns(forecasts)]
                writer.write(forecasts)
                parts.append(forecasts)
    except ForecastingError as err:
        # One chunk of several failed: a bad cell in any chunk is reported as the whole file's
        # validation reports it (its first offending rows, the file's row numbers), whatever
        # failed first; a file that cannot be written is reported as it is.
        if len(chunks) > 1 and not isinstance(err, OutputPathError):
            if raw is None:  # streamed: the whole file, read only to name its first bad rows
                raw = read_table(input_path, fmt, text_columns=ids, columns=wanted)
            bundle.canonical(raw, data_cfg_overrides, source=source)
        raise
    forecasts = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    forecasts.attrs["freq"] = bundle.freq  # the step between rows: the archive's origin and steps
    return forecasts


def _series_chunks_of(
    path: Path,
    fmt: str,
    cfg: DataConfig,
    overrides: dict[str, Any] | None,
    chunk_series: int | None,
    columns: list[str],
) -> SeriesChunks | None:
    """The chunks of a long Parquet input read one at a time (``SeriesChunks``), or None where the
    file is read whole: CSV (a text file cannot be read by series without parsing all of it), a
    wide or one-series table, ids not stored as text, no ``chunk_series``, or one chunk in all."""
    _check_regular_file(Path(path))  # a pipe or device is refused before anything reads it
    if not chunk_series or _detect_format(Path(path), fmt) != "parquet":
        return None
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception:  # not Parquet after all, or unreadable: read_table names what is wrong
        return None
    key = _id_column_of(pd.DataFrame(columns=names), cfg, overrides)
    return SeriesChunks.open(path, key, chunk_series, columns) if key else None


def _pinned_uri(model_uri: str) -> str:
    """``models:/NAME@alias`` as ``models:/NAME/VERSION`` (the version the alias holds now), so that
    every Dask worker loads the one version; any other URI as given."""
    if not model_uri.startswith("models:/") or "@" not in model_uri:
        return model_uri
    from mlflow import MlflowClient

    name, alias = model_uri.removeprefix("models:/").split("@", 1)
    return f"models:/{name}/{MlflowClient().get_model_version_by_alias(name, alias).version}"


def _id_column_of(raw: pd.DataFrame, cfg: DataConfig, overrides: dict[str, Any] | None) -> str | None:
    """The column that names each row's series in ``raw``, as ``Bundle.canonical`` reads it; None
    for one series or a wide table (whose series are columns: one chunk)."""
    if not overrides and {SERIES, TIME, TARGET} <= {str(c) for c in raw.columns}:
        return SERIES
    if cfg.is_wide or cfg.id_column is None or cfg.id_column not in raw.columns:
        return None
    return cfg.id_column


# The bundle a Dask worker process has loaded, by tracking store and model URI (one at a time).
_WORKER_BUNDLE: dict[tuple[str, str, str], Bundle] = {}
_WORKER_LOCK = threading.Lock()


def loaded_models() -> list[str]:
    """The model URIs this process holds for ``forecast_chunk`` (a Dask worker's cache)."""
    with _WORKER_LOCK:
        return [key[2] for key in _WORKER_BUNDLE]


def forecast_chunk(
    chunk: bytes,
    model_uri: str,
    tracking_uri: str,
    registry_uri: str,
    overrides: dict[str, Any] | None,
    source: str,
) -> bytes:
    """A Dask task of ``batch_predict``: the forecasts (Arrow IPC) of one chunk of the input (Arrow
    IPC), with the model loaded (and verified) once per worker process from the given store."""
    key = (tracking_uri, registry_uri, model_uri)
    with _WORKER_LOCK:
        bundle = _WORKER_BUNDLE.get(key)
        if bundle is None:
            import mlflow

            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(registry_uri)
            bundle, _ = load_pyfunc_bundle(model_uri)
            _WORKER_BUNDLE.clear()
            _WORKER_BUNDLE[key] = bundle
    from forecasting.partition import from_ipc, to_ipc

    return to_ipc(bundle.forecast(from_ipc(chunk), overrides, source=source))
