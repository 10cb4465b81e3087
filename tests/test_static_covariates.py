"""Static covariates inform a global network: two series that differ only in a static value get
different forecasts, because the static is scaled across series rather than per series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from conftest import make_frame

from forecasting.config import DataConfig, ModelSpec, TrainingConfig
from forecasting.data.scaling import Scaler, fit_scaler
from forecasting.models.base import DataSpec
from forecasting.models.registry import build_model
from forecasting.serving import load_bundle, write_bundle

L, H, N = 48, 24, 600
DRIFT = 0.02  # per step: up for the large store, down for the small one; the noise has std 1
SIZES = {"small": 10.0, "large": 30.0}


def drift(size: float) -> float:
    return DRIFT if size > 20 else -DRIFT


def stores(rng: np.random.Generator) -> pd.DataFrame:
    """Two stores alike but for their size, which decides whether their sales drift up or down.

    Over a lookback the drift (about 1) hides in the noise (std 1): the size tells it at once.
    """
    t = np.arange(N)
    parts = [
        make_frame(drift(size) * t + rng.standard_normal(N), series_id=sid, size=np.full(N, size))
        for sid, size in SIZES.items()
    ]
    return pd.concat(parts, ignore_index=True)


def fitted_bundle(train: pd.DataFrame, scaler: Scaler, dest: Path):
    """A tiny seeded ``linear`` network trained on ``train`` and saved as a bundle, loaded back."""
    training = TrainingConfig(epochs=10, batch_size=64, lr=1e-2, progress=False, seed=0, patience=None)
    model = build_model(ModelSpec(name="linear"), DataSpec(L, H, static=["size"]), training)
    model.fit(scaler.transform(train))
    cfg = DataConfig(
        path=dest.parent / "train.csv",
        time_column="t",
        target="y",
        id_column="series_id",
        covariates={"size": "static"},
    )
    return load_bundle(write_bundle(model, scaler, cfg, "h", dest))


def forecasts(bundle, history: np.ndarray, sizes: dict[str, float]) -> dict[str, np.ndarray]:
    """Forecast every series in ``sizes`` from the same raw ``history`` (L values)."""
    frame = pd.concat(
        [
            make_frame(history, series_id=sid, start="2024-02-01", size=np.full(L, s))
            for sid, s in sizes.items()
        ],
        ignore_index=True,
    )
    out = bundle.forecast(frame)
    return {sid: part["yhat"].to_numpy() for sid, part in out.groupby("series_id", sort=False)}


def test_two_series_that_differ_only_in_a_static_value_get_different_forecasts(
    rng: np.random.Generator, tmp_path: Path
) -> None:
    train = stores(rng)
    history = rng.standard_normal(L)  # flat: says nothing of the drift
    j = np.arange(1, H + 1)
    truth = {  # the drift continued from the history's centre
        sid: history.mean() + drift(size) * (L + j - (L + 1) / 2) for sid, size in SIZES.items()
    }

    scaler = fit_scaler(train, ["y"], static=["size"])
    new = forecasts(fitted_bundle(train, scaler, tmp_path / "new"), history, {**SIZES, "unseen": 30.0})
    # The sizes reach the network as cross-series z-scores, -1 and +1 ...
    scaled = scaler.transform(train).groupby("series_id")["size"].first()
    np.testing.assert_allclose(scaled[["small", "large"]], [-1.0, 1.0])
    # ... so the same history gives opposite forecasts, each near its own store's truth.
    assert np.abs(new["small"] - new["large"]).max() > 0.5
    for sid, other in (("small", "large"), ("large", "small")):
        own = np.abs(new[sid] - truth[sid]).mean()
        assert own < 0.5 * np.abs(new[sid] - truth[other]).mean(), (sid, own)
    # A store unseen in training with the large store's size means the same to the network.
    np.testing.assert_allclose(new["unseen"], new["large"], atol=1e-3)

    # Scaled per series (the old way) both sizes become 0: the network cannot tell them apart.
    old_scaler = fit_scaler(train, ["y", "size"])
    np.testing.assert_allclose(old_scaler.transform(train)["size"], 0.0)
    old = forecasts(fitted_bundle(train, old_scaler, tmp_path / "old"), history, SIZES)
    np.testing.assert_allclose(old["small"], old["large"], atol=1e-3)
