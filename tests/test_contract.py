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
    """Train and validation (with ``L`` rows of history); nothing here is scored against truth."""
    pos = frame.groupby("series_id").cumcount()
    return frame[pos < 450].reset_index(drop=True), frame[pos >= 450 - L].reset_index(drop=True)


@pytest.mark.parametrize("name", available_models())
def test_contract(name, sine_frame, tmp_path):
    train, val = _split(sine_frame)
    model = _model(name)
    assert model.name == name and not model.fitted_
    with pytest.raises(NotFittedError):
        model.predict(val)
    assert model.fit(train, val) is model

    # Declared on the base class, so callers read them without getattr; families fill their own.
    assert model.fitted_ and model.freq_ == "h" and list(model.series_) == ["s0", "s1", "s2"]
    assert bool(model.history_) == (model.best_epoch_ is not None) == model.uses_training_loop
    assert (model.weights_ is not None) == (name == "ensemble")

    forecast = model.predict(val)
    assert list(forecast.columns) == ["series_id", "t", "yhat"]
    assert len(forecast) == 3 * H
    assert np.isfinite(forecast["yhat"]).all()
    last_t = val.groupby("series_id")["t"].max()
    first_forecast = forecast.groupby("series_id")["t"].min()
    assert (first_forecast - last_t == pd.Timedelta("1h")).all()

    windows = model.make_windows(val)
    batch = windows.batch(np.arange(len(windows)))
    out = model.predict_windows(batch)
    assert out.shape == (len(windows), H) and np.isfinite(out).all()

    # Same seed, same data, same threads: identical forecasts.
    again = _model(name).fit(train, val).predict(val)
    np.testing.assert_array_equal(again["yhat"].to_numpy(), forecast["yhat"].to_numpy())

    # Save / load without pickle gives identical forecasts.
    model.save(tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.pkl"))
    loaded = Forecaster.load(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.name == name
    np.testing.assert_array_equal(loaded.predict(val)["yhat"].to_numpy(), forecast["yhat"].to_numpy())

    # A shorter horizon is a prefix of the full one.
    short = model.predict(val, horizon=3)
    assert len(short) == 3 * 3


@pytest.mark.parametrize("name", available_models())
def test_unseen_series(name, sine_frame):
    train, val = _split(sine_frame)
    model = _model(name).fit(train[train["series_id"] != "s2"])
    unseen = val[val["series_id"] == "s2"]
    forecast = model.predict(unseen)
    assert len(forecast) == H and np.isfinite(forecast["yhat"]).all()


def test_future_covariates_must_cover_the_horizon(sine_frame):
    frame = sine_frame.assign(hour=sine_frame["t"].dt.hour.astype(float))
    train, val = _split(frame)
    model = _model("naive", DataSpec(L, H, future=["hour"])).fit(train)
    history = val[val["series_id"] == "s0"]
    last = history["t"].max()
    future = pd.DataFrame(
        {"series_id": "s0", "t": pd.date_range(last, periods=H + 1, freq="h")[1:], "y": np.nan, "hour": 1.0}
    )
    ok = model.predict(pd.concat([history, future], ignore_index=True))
    assert len(ok) == H
    with pytest.raises(FutureCovariateError, match="missing at") as err:
        model.predict(pd.concat([history, future.iloc[:-2]], ignore_index=True))
    assert str(future["t"].iloc[-1]) in str(err.value)
