"""One contract test, parametrised over every registered model family."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting.config import ModelSpec, TrainingConfig
from forecasting.errors import FutureCovariateError, NotFittedError
from forecasting.models.base import DataSpec, Forecaster
from forecasting.models.registry import available_models, build_model

L, H = 48, 12
TRAINING = TrainingConfig(epochs=2, batch_size=64, patience=None, progress=False, seed=7, num_threads=1)


def _model(name: str, spec: DataSpec | None = None) -> Forecaster:
    return build_model(ModelSpec(name=name), spec or DataSpec(L, H), TRAINING)


def _split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    pos = frame.groupby("series_id").cumcount()
    return frame[pos < 450].reset_index(drop=True), frame[pos >= 450 - L].reset_index(drop=True)


@pytest.mark.parametrize("name", available_models())
def test_contract(name, sine_frame, tmp_path):
    train, holdout = _split(sine_frame)
    model = _model(name)
    with pytest.raises(NotFittedError):
        model.predict(holdout)
    assert model.fit(train, holdout) is model

    forecast = model.predict(holdout)
    assert list(forecast.columns) == ["series_id", "t", "yhat"]
    assert len(forecast) == 3 * H
    assert np.isfinite(forecast["yhat"]).all()
    last_t = holdout.groupby("series_id")["t"].max()
    first_forecast = forecast.groupby("series_id")["t"].min()
    assert (first_forecast - last_t == pd.Timedelta("1h")).all()

    windows = model.make_windows(holdout)
    batch = windows.batch(np.arange(len(windows)))
    out = model.predict_windows(batch)
    assert out.shape == (len(windows), H) and np.isfinite(out).all()

    # Same seed, same data, same threads: identical forecasts.
    again = _model(name).fit(train, holdout).predict(holdout)
    np.testing.assert_array_equal(again["yhat"].to_numpy(), forecast["yhat"].to_numpy())

    # Save / load without pickle gives identical forecasts.
    model.save(tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.pkl"))
    loaded = Forecaster.load(tmp_path / "m")
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.predict(holdout)["yhat"].to_numpy(), forecast["yhat"].to_numpy())

    # A shorter horizon is a prefix of the full one.
    short = model.predict(holdout, horizon=3)
    assert len(short) == 3 * 3


@pytest.mark.parametrize("name", available_models())
def test_unseen_series(name, sine_frame):
    train, holdout = _split(sine_frame)
    model = _model(name).fit(train[train["series_id"] != "s2"])
    unseen = holdout[holdout["series_id"] == "s2"]
    forecast = model.predict(unseen)
    assert len(forecast) == H and np.isfinite(forecast["yhat"]).all()


def test_future_covariates_must_cover_the_horizon(sine_frame):
    frame = sine_frame.assign(hour=sine_frame["t"].dt.hour.astype(float))
    train, holdout = _split(frame)
    model = _model("naive", DataSpec(L, H, future=["hour"])).fit(train)
    history = holdout[holdout["series_id"] == "s0"]
    last = history["t"].max()
    future = pd.DataFrame(
        {"series_id": "s0", "t": pd.date_range(last, periods=H + 1, freq="h")[1:], "y": np.nan, "hour": 1.0}
    )
    ok = model.predict(pd.concat([history, future], ignore_index=True))
    assert len(ok) == H
    with pytest.raises(FutureCovariateError, match="missing at") as err:
        model.predict(pd.concat([history, future.iloc[:-2]], ignore_index=True))
    assert str(future["t"].iloc[-1]) in str(err.value)
