"""The loader module of the forecasting pyfunc (``serving.log_pyfunc``).

The logged model holds data only; its ``MLmodel`` names this module (``loader_module``), which
MLflow imports by name from the installed ``forecasting`` package and calls as
``_load_pyfunc(data_path)`` with the model's bundle folder. Nothing is pickled and no code comes
from the artifact: the state is the bundle's JSON and the family's own files.

Before reading the bundle, ``_load_pyfunc`` checks its files against the digest in the
``MLmodel``'s ``metadata`` (``integrity.check_bundle``), the only check when MLflow loads the model
without ``serving.load_pyfunc`` (``mlflow models serve``, ``mlflow.pyfunc.load_model``). That
digest sits in the artifact store beside the bundle, so this catches corruption and partial edits,
not someone who rewrites both. The authoritative check is ``serving.load_pyfunc``'s: every file of
the model, ``MLmodel`` included, against the hashes recorded in the tracking store when it was
logged, before MLflow reads any of them.

Input: a long history frame ``series_id, t, y, covariates...``; rows after a series' last ``y`` (y
empty) carry future covariates for the horizon. Output: ``series_id, t, yhat`` in original units,
the interval bounds and quantiles of a calibrated model (``yhat_lo_80``, ``yhat_hi_80``, ...,
``q0.1`` ...; in the signature), and on every row the model that answered: ``model_name``,
``model_version`` (the registered version logged from the model's run, looked up once at load when
the tracking store answers; empty otherwise) and ``run_id`` (from the ``MLmodel``), the columns
batch prediction writes too. A REST client of ``mlflow models serve`` thus learns which version
answered it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

from forecasting.errors import InputValidationError, NonFiniteForecastError
from forecasting.integrity import check_bundle, read_mlmodel
from forecasting.serving import Bundle, load_bundle
from forecasting.tracking import check_server

IDENTITY = ("model_name", "model_version", "run_id")


class ForecastPyfunc:
    """What ``mlflow.pyfunc.load_model`` wraps: ``predict`` forecasts through the bundle."""

    def __init__(self, bundle: Bundle, identity: dict[str, str | None] | None = None) -> None:
        self.bundle = bundle
        self.identity = {key: (identity or {}).get(key) for key in IDENTITY}

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        try:
            return self.bundle.forecast(model_input).assign(**self.identity)
        except InputValidationError as err:
            # A client's bad input: the scoring server answers 400 with this message, not 500.
            raise MlflowException(f"{type(err).__name__}: {err}", error_code=INVALID_PARAMETER_VALUE) from err
        except NonFiniteForecastError as err:
            # The model failed on this input: 500 with the series named, never a 200 carrying NaN.
            raise MlflowException(f"{type(err).__name__}: {err}", error_code=INTERNAL_ERROR) from err

    def get_raw_model(self) -> Bundle:
        """The bundle (``PyFuncModel.get_raw_model()``)."""
        return self.bundle


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> ForecastPyfunc:
    """MLflow's entry point: ``data_path`` is ``<model>/data/<bundle>``; the MLmodel is two up."""
    bundle_dir = Path(data_path)
    model_dir = bundle_dir.parent.parent
    what = f"model at {str(model_dir)!r}"
    mlmodel = read_mlmodel(model_dir, what)
    check_bundle(
        bundle_dir, mlmodel.get("metadata"), what, prefix=f"{bundle_dir.relative_to(model_dir).as_posix()}/"
    )
    return ForecastPyfunc(load_bundle(bundle_dir), _identity(mlmodel.get("run_id")))


def _identity(run_id: Any) -> dict[str, str | None]:
    """The registered name and version logged from ``run_id`` (the only one, else none), asked of
    the tracking store once; a store that does not answer leaves them empty."""
    run_id = run_id if isinstance(run_id, str) and run_id else None
    name = version = None
    if run_id is not None:
        try:
            check_server(mlflow.get_tracking_uri())  # seconds, not MLflow's minutes of retries
            found = MlflowClient().search_model_versions(f"run_id = '{run_id}'")
        except Exception:  # no store, or it is down: the forecast does not depend on it
            found = []
        if len({v.name for v in found}) == 1:
            name, version = found[0].name, str(min(int(v.version) for v in found))
    return {"model_name": name, "model_version": version, "run_id": run_id}
