"""The forecasting pyfunc, logged by MLflow "models from code" (``serving.log_pyfunc``).

MLflow stores this script as source and runs it when the model is loaded; ``set_model`` hands it
the model object. Nothing is pickled: the state comes from the bundle artifact (JSON and the
family's own files), read in ``load_context``.

Input: a long history frame ``series_id, t, y, covariates...``; rows after a series' last ``y``
(y empty) carry future covariates for the horizon. Output: ``series_id, t, yhat`` in original units.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel, PythonModelContext

from forecasting.errors import InputValidationError, NonFiniteForecastError
from forecasting.serving import BUNDLE_ARTIFACT, Bundle, load_bundle


class ForecastPyfunc(PythonModel):
    bundle: Bundle

    def load_context(self, context: PythonModelContext) -> None:
        self.bundle = load_bundle(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        try:
            return self.bundle.forecast(model_input)
        except InputValidationError as err:
            # A client's bad input: the scoring server answers 400 with this message, not 500.
            raise MlflowException(f"{type(err).__name__}: {err}", error_code=INVALID_PARAMETER_VALUE) from err
        except NonFiniteForecastError as err:
            # The model failed on this input: 500 with the series named, never a 200 carrying NaN.
            raise MlflowException(f"{type(err).__name__}: {err}", error_code=INTERNAL_ERROR) from err


mlflow.models.set_model(ForecastPyfunc())
