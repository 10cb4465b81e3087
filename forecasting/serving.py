"""The model bundle, the MLflow pyfunc around it, and batch prediction.

A *bundle* is a folder that holds everything needed to forecast raw data without the training
config, and nothing pickled::

    bundle.json    format version, family, lookback, horizon, frequency, covariate roles and the
                   data's column roles (time column, target, id column, timezone, repairs)
    scaler.json    the scaler fitted on the model's training rows (``Scaler.to_dict``): the target
                   and past/future covariates per series, static covariates across series
    model/         the model's own ``Forecaster.save`` output (JSON + the family's state files)

``Bundle.forecast`` validates a history frame exactly as training validated its data (same named
errors), scales it with the bundled scaler (the target of a series unseen in training is scaled
with its own history, its statics with the cross-series statistics), forecasts and returns
``series_id, t, yhat`` in the original units, every value finite (``NonFiniteForecastError``
otherwise). The pyfunc, batch prediction and ``forecast predict`` all forecast through it.

The MLflow model is logged *from code* (``forecasting/pyfunc_model.py``): MLflow stores that
script as source, the bundle as an artifact and a copy of the ``forecasting`` package
(``code_paths``), so the artifact holds no pickle. The copy makes the model self-contained: a
fresh process (``mlflow models serve``, another environment with the pinned third-party
requirements) imports the package version the model was logged with; a process that has already
imported ``forecasting`` (batch prediction here) keeps using its own. ``mlflow`` is imported only
inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import threading
import uuid
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
    _configured,
    _to_numeric,
    parse_timestamps,
    prepare_frame,
    read_table,
)
from forecasting.data.scaling import Scaler
from forecasting.data.schema import SERIES, TARGET, TIME
from forecasting.errors import (
    ConfigError,
    DuplicateTimestampError,
    ModelLoadError,
    NonFiniteForecastError,
    OutputPathError,
    UnknownSeriesError,
    format_rows,
)
from forecasting.models.base import Forecaster

BUNDLE_FORMAT_VERSION = 1
BUNDLE_ARTIFACT = "bundle"  # the key of the bundle in the pyfunc's ``artifacts``
PYFUNC_SCRIPT = Path(__file__).with_name("pyfunc_model.py")
OUTPUT_COLUMNS = [SERIES, TIME, "yhat", "model_name", "model_version", "run_id"]
# Data-config keys a batch-prediction caller may override; covariate roles belong to the model.
OVERRIDABLE = ("time_column", "target", "id_column", "format", "timezone", "repair")
# Third-party packages the pyfunc imports (the ``forecasting`` package itself travels as code).
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
        yhat = self.scaler.inverse_y(pred["yhat"].to_numpy(), pred[SERIES].to_numpy(), history=canon)
        _check_finite(yhat, pred, self.model.name)
        return pred.assign(yhat=yhat)


def _check_finite(yhat: np.ndarray, pred: pd.DataFrame, model: str) -> None:
    """Every forecast finite, or a named error naming the series and their first bad timestamps."""
    bad = ~np.isfinite(np.asarray(yhat, dtype=np.float64))
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
    (dest / "scaler.json").write_text(json.dumps(scaler.to_dict()))
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
        scaler = Scaler.from_dict(json.loads((path / "scaler.json").read_text()))
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"{path}: not a readable forecasting bundle ({err})") from None
    if meta.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise ModelLoadError(
            f"{path}: bundle format version {meta.get('format_version')} is not {BUNDLE_FORMAT_VERSION}"
        )
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
    canon = prepare_frame(raw[~future], cfg, source=source).frame
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


def pip_requirements() -> list[str]:
    """Exact versions of the third-party packages the pyfunc imports, as installed here."""
    reqs = []
    for name in PYFUNC_REQUIREMENTS:
        try:
            reqs.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return reqs


# MLflow runs a models-from-code script with a mock ``dbutils`` module swapped into ``sys.modules``
# and swapped back afterwards (``mlflow.models.utils._mock_dbutils``). Two threads doing it at once
# (two models of a pipeline logged together) can restore each other's mock and leave it there for
# good, and anything that reads ``sys.modules`` then breaks on it. One load or log at a time.
CODE_MODEL_LOCK = threading.Lock()


def log_pyfunc(bundle_dir: Path, input_example: pd.DataFrame, name: str = "model") -> str:
    """Log the bundle as an MLflow pyfunc (models from code) in the active run; returns its URI.

    The signature is inferred from ``input_example`` and the bundle's forecast of it. The
    ``forecasting`` package is copied into the model (``code_paths``) so that loading it needs
    only the pinned third-party requirements, not this project installed.
    """
    import mlflow
    from mlflow.models import infer_signature

    if mlflow.active_run() is None:
        raise RuntimeError("log_pyfunc needs an active MLflow run (mlflow.start_run())")
    bundle_dir = Path(bundle_dir)
    output = load_bundle(bundle_dir).forecast(input_example, source="input example")
    with CODE_MODEL_LOCK:
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(PYFUNC_SCRIPT),
            artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
            code_paths=[str(Path(__file__).parent)],
            signature=infer_signature(input_example, output),
            input_example=input_example,
            pip_requirements=pip_requirements(),
        )
    return info.model_uri


def load_pyfunc(model_uri: str) -> Any:
    """``mlflow.pyfunc.load_model`` with load failures as ``ModelLoadError``.

    Its ``predict(frame)`` takes the pyfunc input (see ``forecasting/pyfunc_model.py``) and raises
    ``MlflowException`` naming the forecasting error for bad input.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        with CODE_MODEL_LOCK:
            return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as err:
        raise ModelLoadError(f"cannot load model {model_uri!r}: {err.message}") from None


def load_pyfunc_bundle(model_uri: str) -> tuple[Bundle, Any]:
    """Load an MLflow model logged by ``log_pyfunc``: its bundle and the model's metadata."""
    pyfunc = load_pyfunc(model_uri)
    bundle = getattr(pyfunc.unwrap_python_model(), "bundle", None)
    if not isinstance(bundle, Bundle):
        raise ModelLoadError(f"model {model_uri!r} is not a forecasting pyfunc (logged by log_pyfunc)")
    return bundle, pyfunc.metadata


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


def write_table_atomic(frame: pd.DataFrame, path: Path) -> Path:
    """Write CSV or Parquet (by suffix) so that ``path`` is either the whole new file or untouched.

    The data goes to a hidden temporary file in the same folder, is flushed to disk and then
    renamed over ``path`` (``os.replace`` is atomic within one file system). Missing folders are
    created; any OS error (no permission, read-only, disk full) is an ``OutputPathError``.
    """
    path = Path(path)
    fmt = _output_format(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputPathError(
            f"output {str(path)!r}: cannot create its folder {str(path.parent)!r}: {_reason(err)}"
        ) from None
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        if fmt == "csv":
            frame.to_csv(tmp, index=False, compression="gzip" if path.name.lower().endswith(".gz") else None)
        else:
            frame.to_parquet(tmp, index=False)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OutputPathError(f"output {str(path)!r} cannot be written: {_reason(err)}") from err
        raise
    return path


def batch_predict(
    model_uri: str,
    input_path: Path,
    output_path: Path,
    data_cfg_overrides: dict[str, Any] | None = None,
    *,
    model_name: str | None = None,
    model_version: str | int | None = None,
    run_id: str | None = None,
) -> pd.DataFrame:
    """Forecast every series of a CSV/Parquet file with an MLflow model logged by ``log_pyfunc``.

    The input is canonical long format (``series_id, t, y, ...``) or the raw format the bundle's
    column roles describe (``data_cfg_overrides`` may rename them); it is validated as training
    data is. Rows after a series' last ``y`` may carry future covariates for the horizon.
    The output (``series_id, t, yhat, model_name, model_version, run_id``) is written atomically
    as CSV or Parquet by ``output_path``'s suffix and returned. Unset identity fields default to
    what ``model_uri`` and the model's metadata tell (see ``model_identity``).
    """
    output_path = Path(output_path)
    check_output_path(output_path)  # a bad suffix or an unwritable folder fails before any work
    bundle, metadata = load_pyfunc_bundle(model_uri)
    cfg = bundle.data_config(data_cfg_overrides)
    ids = [c for c in (cfg.id_column, SERIES) if c]  # read as text: ids like 007 keep their zeros
    # The training file's format says nothing about this file: detect it unless overridden.
    fmt = (data_cfg_overrides or {}).get("format", "auto")
    raw = read_table(input_path, fmt, text_columns=ids, columns=[*_configured(cfg), SERIES, TIME, TARGET])
    forecasts = bundle.forecast(raw, data_cfg_overrides, source=str(input_path))
    uri_name, uri_version, uri_run = model_identity(model_uri, getattr(metadata, "run_id", None))
    forecasts = forecasts.assign(
        model_name=model_name if model_name is not None else uri_name,
        model_version=str(model_version) if model_version is not None else uri_version,
        run_id=run_id if run_id is not None else uri_run,
    )[OUTPUT_COLUMNS]
    write_table_atomic(forecasts, output_path)
    return forecasts
