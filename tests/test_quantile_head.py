"""The quantile head (``training.loss: quantile``): one network per deep family for the point
forecast and the quantiles, trained with the pinball loss, monotone by construction."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_frame
from test_deep_models import TINY

from forecasting.config import ModelSpec, TrainingConfig
from forecasting.errors import ConfigError
from forecasting.models.base import DataSpec, Forecaster
from forecasting.models.layers import Dims, QuantileHead
from forecasting.models.neural import NeuralForecaster
from forecasting.models.registry import FAMILIES, build_model, get_model_class
from forecasting.training.checkpoint import load_checkpoint
from forecasting.training.loop import pinball_loss

L, H = 48, 12
SIGMA = 0.3  # the noise's standard deviation: the true 10%-90% band is 2 * 1.2816 * SIGMA wide
LEVELS = [80.0, 95.0]  # taus 0.025, 0.1, 0.9, 0.975
DEEP = [name for name in FAMILIES if issubclass(get_model_class(name), NeuralForecaster)]


def fast(**overrides) -> TrainingConfig:
    base = {"epochs": 2, "batch_size": 64, "progress": False, "seed": 0, "patience": None, "loss": "quantile"}
    return TrainingConfig(**{**base, **overrides})


def model(name: str, training: TrainingConfig | None = None, levels=LEVELS, quantiles=(), **params):
    spec = DataSpec(lookback=L, horizon=H, levels=list(levels), quantiles=list(quantiles))
    return build_model(ModelSpec(name=name, params={**TINY[name], **params}), spec, training or fast())


@pytest.fixture
def noisy_sine() -> pd.DataFrame:
    """One sine of period 24 plus N(0, SIGMA^2) noise: its quantiles are known."""
    t = np.arange(800)
    noise = SIGMA * np.random.default_rng(1).standard_normal(len(t))
    return make_frame(np.sin(2 * np.pi * t / 24) + noise)


def thirds(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train (rows < 500), validation (500..600) and held-out test (600..), each with L rows of history."""
    return frame.iloc[:500], frame.iloc[500 - L : 600], frame.iloc[600 - L :]


def all_windows(m: Forecaster, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    w = m.make_windows(frame)
    return w.batch(np.arange(len(w)))


# --- the pieces ----------------------------------------------------------------------------------
def test_pinball_loss_by_hand() -> None:
    yhat = torch.tensor([[[0.0, 1.0, 2.0]]])  # (1, 1, 3) at taus 0.1, 0.5, 0.9
    target = torch.tensor([[1.5]])
    # under-forecasts cost tau per unit, over-forecasts 1 - tau: 0.1*1.5, 0.5*0.5, 0.1*0.5
    assert pinball_loss(yhat, target, (0.1, 0.5, 0.9)).item() == pytest.approx((0.15 + 0.25 + 0.05) / 3)
    total = pinball_loss(yhat.repeat(2, 4, 1), target.repeat(2, 4), (0.1, 0.5, 0.9), reduction="sum")
    assert total.item() == pytest.approx(8 * 0.15)  # 8 forecast values, each 0.15
    with pytest.raises(ValueError, match="3 quantiles in the output, 2 levels"):
        pinball_loss(yhat, target, (0.1, 0.9))


def test_head_is_monotone_whatever_its_weights_and_starts_normal() -> None:
    taus = [0.025, 0.1, 0.5, 0.9, 0.975]
    dims = Dims(lookback=L, horizon=H, n_past=0, n_future=0, n_static=0)
    torch.manual_seed(0)
    head = QuantileHead(taus, dims)
    y, median = torch.randn(5, L), torch.randn(5, H)
    with torch.no_grad():
        head.mlp[-1].weight.zero_()  # the bias alone: the gaps it starts with
        start = head(y, median)  # (5, H, 5)
        assert start.shape == (5, H, 5)
        assert torch.equal(start[..., 2], median)  # the median is the core's output
        z = torch.tensor([0.5 * NormalDist().inv_cdf(t) for t in taus])
        torch.testing.assert_close(start - median.unsqueeze(-1), z.expand(5, H, 5))
        for p in head.parameters():
            p.normal_(0, 10.0)  # wild weights: still no crossing
        assert (head(y, median).diff(dim=-1) >= 0).all()
    with pytest.raises(ValueError, match=r"hold 0\.5"):
        QuantileHead([0.1, 0.9], dims)


# --- the head learns the noise's quantiles --------------------------------------------------------
def test_head_learns_the_noise_quantiles(noisy_sine: pd.DataFrame) -> None:
    train, val, test = thirds(noisy_sine)
    m = model("linear", fast(epochs=40, lr=3e-3)).fit(train, val)
    batch = all_windows(m, test)
    q = m.native_quantiles(batch)  # (N, H, 4) at 0.025, 0.1, 0.9, 0.975
    y = batch["target"]  # (N, H)
    assert q.shape == (len(y), H, 4) and q.dtype == np.float64
    assert (np.diff(q, axis=-1) >= 0).all()
    inside_80 = ((q[..., 1] <= y) & (y <= q[..., 2])).mean()
    inside_95 = ((q[..., 0] <= y) & (y <= q[..., 3])).mean()
    assert 0.6 <= inside_80 <= 0.95, inside_80
    assert inside_80 < inside_95 <= 1.0, inside_95
    # the band is as wide as the noise says, not a constant guess
    width = np.mean(q[..., 2] - q[..., 1]) / (2 * NormalDist().inv_cdf(0.9) * SIGMA)
    assert 0.7 < width < 1.5, width
    # the point forecast is the median, and it learnt the sine (noise variance 0.09)
    yhat = m.predict_windows(batch)
    assert np.mean((yhat - y) ** 2) < 2 * SIGMA**2
    # an untrained network's band misses: its coverage is far from 0.8
    untrained = model("linear", fast(epochs=1, lr=1e-9)).fit(train)
    q0 = untrained.native_quantiles(batch)
    assert abs(((q0[..., 1] <= y) & (y <= q0[..., 2])).mean() - 0.8) > 0.2


def test_losses_are_the_pinball_loss(noisy_sine: pd.DataFrame) -> None:
    train, val, _ = thirds(noisy_sine)
    m = model("linear", fast(epochs=3)).fit(train, val)
    batch = all_windows(m, val)
    q = torch.from_numpy(m._forward(batch))  # (N, H, 5) at 0.025, 0.1, 0.5, 0.9, 0.975
    expected = pinball_loss(q, torch.from_numpy(batch["target"]), (0.025, 0.1, 0.5, 0.9, 0.975)).item()
    assert m.history_[m.best_epoch_ - 1]["val_loss"] == pytest.approx(expected, rel=1e-5)
    assert all(h["train_loss"] > 0 for h in m.history_)


# --- every deep family ----------------------------------------------------------------------------
def test_every_deep_family_is_covered() -> None:
    assert set(DEEP) == set(TINY)


@pytest.mark.parametrize("name", DEEP)
def test_every_family_trains_with_the_head(name: str, noisy_sine: pd.DataFrame) -> None:
    train, val, test = thirds(noisy_sine)
    m = model(name, levels=[80.0], quantiles=[0.5, 0.3]).fit(train, val)
    assert m.network_.taus == [0.1, 0.3, 0.5, 0.9]
    batch = all_windows(m, test)
    q = m.native_quantiles(batch)  # at spec.taus: 0.1, 0.3, 0.5, 0.9
    assert q.shape == (len(batch["y"]), H, 4) and np.isfinite(q).all()
    assert (np.diff(q, axis=-1) >= 0).all()
    np.testing.assert_array_equal(q[..., 2], m.predict_windows(batch))  # the point is the median
    swapped = m._predict_quantiles(batch, [0.9, 0.1])  # exactly the levels asked, in their order
    np.testing.assert_array_equal(swapped, q[..., [3, 0]])
    with pytest.raises(ValueError, match="no level"):
        m._predict_quantiles(batch, [0.2])
    assert m._predict_quantiles({k: v[:0] for k, v in batch.items()}, [0.1]).shape == (0, H, 1)


@pytest.mark.parametrize("name", DEEP)
def test_point_loss_models_have_no_head_and_unchanged_forecasts(name: str, noisy_sine: pd.DataFrame) -> None:
    train, val, test = thirds(noisy_sine)
    plain = model(name, fast(loss="mse"), levels=[]).fit(train, val)
    with_levels = model(name, fast(loss="mse")).fit(train, val)
    assert with_levels.network_.quantile_head is None
    batch = all_windows(plain, test)
    assert with_levels._predict_quantiles(batch, [0.1, 0.9]) is None
    assert with_levels.native_quantiles(batch) is None
    np.testing.assert_array_equal(with_levels.predict_windows(batch), plain.predict_windows(batch))
    assert with_levels.n_params == plain.n_params < model(name).n_params  # the head adds weights


# --- save, load, resume, errors -------------------------------------------------------------------
def test_save_load_round_trip_gives_identical_quantiles(noisy_sine: pd.DataFrame, tmp_path) -> None:
    train, val, test = thirds(noisy_sine)
    m = model("gru").fit(train, val)
    m.save(tmp_path / "gru")
    state = torch.load(tmp_path / "gru" / "weights.pt", weights_only=True)
    assert any(k.startswith("quantile_head.") for k in state)
    loaded = Forecaster.load(tmp_path / "gru")
    batch = all_windows(m, test)
    np.testing.assert_array_equal(loaded.native_quantiles(batch), m.native_quantiles(batch))
    pd.testing.assert_frame_equal(loaded.predict(test), m.predict(test))
    assert loaded.n_params == m.n_params


def test_resume_with_the_head_equals_an_uninterrupted_run(noisy_sine: pd.DataFrame, tmp_path) -> None:
    train, val, test = thirds(noisy_sine)

    class Interrupted(Exception):
        pass

    def interrupt(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 2:
            raise Interrupted

    full = model("lstm", fast(epochs=3)).fit(train, val)
    with pytest.raises(Interrupted):
        model("lstm", fast(epochs=3, checkpoint_dir=tmp_path)).fit(train, val, callbacks=[interrupt])
    assert load_checkpoint(tmp_path / "lstm.pt")["meta"]["quantile_head"] == [0.025, 0.1, 0.5, 0.9, 0.975]
    resumed = model("lstm", fast(epochs=3, checkpoint_dir=tmp_path, resume=True)).fit(train, val)
    batch = all_windows(full, test)
    np.testing.assert_array_equal(resumed.native_quantiles(batch), full.native_quantiles(batch))
    # a point-loss run must not pick up the quantile checkpoint
    with pytest.raises(ConfigError, match="different model"):
        model("lstm", fast(loss="mse", epochs=3, checkpoint_dir=tmp_path, resume=True)).fit(train, val)


def test_quantile_loss_without_levels_is_a_config_error(noisy_sine: pd.DataFrame) -> None:
    m = model("linear", levels=[], quantiles=[])
    with pytest.raises(ConfigError, match=r"intervals\.levels or intervals\.quantiles"):
        m.fit(noisy_sine)
