"""The one training loop and its learning-rate schedule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from forecasting.config import ModelSpec, TrainingConfig
from forecasting.data.windows import Windows, to_arrays
from forecasting.errors import ConfigError, TrainingDivergedError
from forecasting.models.base import DataSpec
from forecasting.models.registry import build_model
from forecasting.training.checkpoint import load_checkpoint, save_checkpoint
from forecasting.training.loop import (
    LOSSES,
    _early_stopping,
    _LoopState,
    evaluate,
    make_optimizer,
    resolve_device,
    steps_per_epoch,
    to_tensors,
    train,
)
from forecasting.training.schedule import lr_at, lr_schedule, scaled_lr

L, H = 48, 24


def cfg(**overrides) -> TrainingConfig:
    base = {"epochs": 2, "batch_size": 64, "progress": False, "seed": 0, "patience": None}
    return TrainingConfig(**{**base, **overrides})


def windows(frame: pd.DataFrame) -> Windows:
    return Windows(to_arrays(frame), L, H)


class TinyNet(nn.Module):
    """A linear map from the lookback to the horizon: the smallest model the loop can train."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(L, H)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.lin(batch["y"])  # (B, H)


@pytest.fixture
def train_val(sine_frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first 480 rows of every series to train on, the rest (with L rows of history) to validate."""
    pos = sine_frame.groupby("series_id").cumcount()
    return sine_frame[pos < 480], sine_frame[pos >= 480 - L]


def lstm(training: TrainingConfig, **params):
    """A small LSTM with dropout: it draws on torch's RNG (dropout) and numpy's (shuffling)."""
    params = {"hidden": 16, "segment_len": 8, "dropout": 0.2, **params}
    return build_model(ModelSpec(name="lstm", params=params), DataSpec(lookback=L, horizon=H), training)


# --- schedule ------------------------------------------------------------------------------------
def test_warmup_rises_linearly_to_the_peak() -> None:
    lrs = [lr_at(s, peak_lr=2.0, total_steps=100, warmup_steps=10) for s in range(11)]
    np.testing.assert_allclose(lrs[:10], 2.0 * np.arange(1, 11) / 10)
    assert lrs[10] == pytest.approx(2.0)  # the first decay step starts at the peak


def test_cosine_decays_to_the_floor_at_the_last_step() -> None:
    kw = {"peak_lr": 1.0, "total_steps": 101, "warmup_steps": 10, "min_lr_ratio": 0.1}
    lrs = np.array([lr_at(s, **kw) for s in range(101)])
    assert lrs[-1] == pytest.approx(0.1)
    assert lrs[10 + 45] == pytest.approx(0.1 + 0.5 * 0.9)  # half-way down: the cosine's midpoint
    assert np.all(np.diff(lrs[10:]) <= 1e-12)
    assert lr_at(500, **kw) == pytest.approx(0.1)  # past the end it stays at the floor


def test_step_and_constant_schedules() -> None:
    kw = {"peak_lr": 1.0, "total_steps": 100, "warmup_steps": 0}
    step = [
        lr_at(s, schedule="step", step_every=30, gamma=0.1, min_lr_ratio=0.005, **kw)
        for s in (0, 29, 30, 60, 99)
    ]
    np.testing.assert_allclose(step, [1.0, 1.0, 0.1, 0.01, 0.005])
    assert {lr_at(s, schedule="constant", **kw) for s in range(100)} == {1.0}


def test_lr_scales_linearly_with_the_batch_size() -> None:
    assert scaled_lr(1e-3, 256, 32) == pytest.approx(8e-3)
    assert scaled_lr(1e-3, 16, 32) == pytest.approx(5e-4)
    assert scaled_lr(1e-3, 256, 32, scale=False) == 1e-3
    lr = lr_schedule(TrainingConfig(lr=1e-3, batch_size=128, base_batch_size=32, warmup_fraction=0.1), 100)
    assert lr(9) == pytest.approx(4e-3)  # end of warm-up: the scaled peak
    assert lr(99) == pytest.approx(4e-3 * 0.01)  # the default floor is 1% of the peak
    flat = lr_schedule(TrainingConfig(lr=1e-3, batch_size=128, scale_lr=False, warmup_fraction=0.1), 100)
    assert flat(9) == pytest.approx(1e-3)


# --- the step ------------------------------------------------------------------------------------
class NaNOnBatch(Windows):
    """Windows whose ``n``-th training batch carries a NaN in its inputs."""

    def __init__(self, frame: pd.DataFrame, n: int):
        super().__init__(to_arrays(frame), L, H)
        self.calls, self.n = 0, n

    def batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        out = super().batch(idx)
        self.calls += 1
        if self.calls == self.n:
            out["y"] = out["y"].copy()
            out["y"][0, 5] = np.nan
        return out


def test_nan_in_a_batch_stops_training_at_once(sine_frame: pd.DataFrame) -> None:
    net = TinyNet()
    with pytest.raises(TrainingDivergedError, match=r"loss became non-finite at epoch 1, step 3"):
        train(net, NaNOnBatch(sine_frame, n=3), None, cfg())
    assert all(torch.isfinite(p).all() for p in net.parameters())  # the bad step was not applied


def test_nan_in_the_data_is_caught_through_fit(sine_frame: pd.DataFrame) -> None:
    frame = sine_frame.copy()
    frame.loc[300, "y"] = np.nan
    with pytest.raises(TrainingDivergedError, match="epoch 1"):
        lstm(cfg()).fit(frame)


def test_nan_in_the_validation_data_is_named(sine_frame: pd.DataFrame) -> None:
    val = sine_frame.copy()
    val.loc[300, "y"] = np.nan
    with pytest.raises(TrainingDivergedError, match="validation loss is non-finite after epoch 1"):
        train(TinyNet(), windows(sine_frame), windows(val), cfg())


class InfiniteGradient(TinyNet):
    """Finite output, infinite gradient: d sqrt(p) / dp at p = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return super().forward(batch) + torch.sqrt(self.p)


def test_non_finite_gradient_stops_training(sine_frame: pd.DataFrame) -> None:
    with pytest.raises(TrainingDivergedError, match=r"gradient norm became non-finite at epoch 1, step 1"):
        train(InfiniteGradient(), windows(sine_frame), None, cfg(clip_grad_norm=None))


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("loss", ["mse", "mae", "huber"])
@pytest.mark.parametrize("schedule", ["cosine", "step", "constant"])
def test_optimisers_losses_and_schedules_train(optimizer: str, loss: str, schedule: str, sine_frame) -> None:
    w = windows(sine_frame)
    net = TinyNet()
    c = cfg(
        optimizer=optimizer, loss=loss, schedule=schedule, epochs=3, lr=1e-2 if optimizer == "sgd" else 1e-3
    )
    before = evaluate(net, w, LOSSES[loss], torch.device("cpu"))
    result = train(net, w, w, c)
    after = evaluate(net, w, LOSSES[loss], torch.device("cpu"))
    assert after < before
    assert [h["epoch"] for h in result.history] == [1, 2, 3]


def test_optimiser_settings_reach_torch() -> None:
    net = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    opt = make_optimizer(net, cfg(optimizer="sgd", momentum=0.8, weight_decay=0.05), lr=0.1)
    assert isinstance(opt, torch.optim.SGD)
    decayed, plain = opt.param_groups
    assert decayed["momentum"] == 0.8 and decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert [p.dim() for p in decayed["params"]] == [2]  # only the weight matrix decays
    assert isinstance(make_optimizer(net, cfg(optimizer="adamw"), 0.1), torch.optim.AdamW)
    assert type(make_optimizer(net, cfg(optimizer="adam"), 0.1)) is torch.optim.Adam


def test_gradients_are_clipped(sine_frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real = nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        params = list(params)
        norm = real(params, max_norm, *args, **kwargs)
        seen.append((max_norm, torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item()))
        return norm

    monkeypatch.setattr(nn.utils, "clip_grad_norm_", spy)
    train(TinyNet(), windows(sine_frame), None, cfg(clip_grad_norm=0.01, epochs=1))
    assert seen and all(limit == 0.01 and norm <= 0.01 * 1.001 for limit, norm in seen)


# --- epochs --------------------------------------------------------------------------------------
def test_max_steps_and_max_train_windows(sine_frame: pd.DataFrame) -> None:
    w = windows(sine_frame)  # 3 x (600 - 72 + 1) = 1587 windows
    result = train(TinyNet(), w, None, cfg(max_steps=5, epochs=10))
    assert result.steps == 5 and len(result.history) == 1
    result = train(TinyNet(), w, None, cfg(max_train_windows=100, batch_size=32, epochs=3))
    assert result.steps == 3 * 4  # 100 windows: batches of 32, 32, 32 and 4
    assert steps_per_epoch(len(w), cfg(max_train_windows=97, batch_size=32)) == 3  # a lone window is dropped


def test_max_val_windows_scores_one_fixed_sample(sine_frame: pd.DataFrame) -> None:
    """Early stopping's validation loss is the loss on one seeded sample of the validation windows,
    the same every epoch: with the best weights restored, the sample's loss is the best epoch's."""
    from forecasting.training.loop import validation_sample

    w = windows(sine_frame)  # 1587 windows
    settings = cfg(max_val_windows=40, epochs=3, max_train_windows=64, batch_size=32)
    sample = validation_sample(len(w), settings)
    assert len(sample) == 40 and np.all(np.diff(sample) > 0)
    assert np.array_equal(sample, validation_sample(len(w), settings))
    assert len(np.unique(w.series[sample])) == 3  # drawn across every series
    assert validation_sample(len(w), cfg(max_val_windows=5000)) is None
    net = TinyNet()
    result = train(net, w, w, settings)
    losses = [h["val_loss"] for h in result.history]
    mse = lambda yhat, y, reduction="mean": nn.functional.mse_loss(yhat, y, reduction=reduction)  # noqa: E731
    assert evaluate(net, w, mse, torch.device("cpu"), sample=sample) == pytest.approx(min(losses), rel=1e-5)
    assert evaluate(net, w, mse, torch.device("cpu")) != pytest.approx(min(losses), rel=1e-5)


def test_callbacks_and_history(train_val: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    calls = []
    m = lstm(cfg(epochs=3)).fit(*train_val, callbacks=[lambda e, m: calls.append((e, m))])
    assert [e for e, _ in calls] == [1, 2, 3]
    assert all(set(metrics) == {"train_loss", "val_loss", "lr"} for _, metrics in calls)
    assert [h["epoch"] for h in m.history_] == [1, 2, 3]
    for (_, metrics), record in zip(calls, m.history_, strict=True):
        assert all(record[k] == v for k, v in metrics.items())
    vals = [h["val_loss"] for h in m.history_]
    assert m.best_epoch_ == 1 + int(np.argmin(vals))
    # The lr of each epoch is the schedule's value at its last step.
    total = 3 * steps_per_epoch(len(m.make_windows(train_val[0])), m.training)
    assert m.history_[-1]["lr"] == pytest.approx(lr_schedule(m.training, total)(total - 1))


def test_without_validation_there_is_no_val_loss(sine_frame: pd.DataFrame) -> None:
    calls = []
    m = lstm(cfg()).fit(sine_frame, callbacks=[lambda e, m: calls.append(m)])
    assert all("val_loss" not in c for c in calls)
    assert m.best_epoch_ == 2


def test_early_stopping_counts_epochs_without_improvement() -> None:
    state, net = _LoopState(), TinyNet()
    for epoch, loss in enumerate([1.0, 0.5, 0.6, 0.5, 0.7], start=1):
        _early_stopping(state, net, epoch, loss, patience=3)
    assert (state.best_epoch, state.bad_epochs, state.stopped_early) == (2, 3, True)


class FlippedTargets(Windows):
    """Validation windows whose targets are negated: the better the fit, the worse the score."""

    def batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        out = super().batch(idx)
        return {**out, "target": -out["target"]}


def test_early_stopping_restores_the_best_weights(sine_frame: pd.DataFrame) -> None:
    net = TinyNet()
    val = FlippedTargets(to_arrays(sine_frame), L, H)
    result = train(net, windows(sine_frame), val, cfg(epochs=30, patience=2))
    vals = [h["val_loss"] for h in result.history]
    assert result.stopped_early and len(vals) < 30
    assert len(vals) == result.best_epoch + 2  # stopped after `patience` epochs without a gain
    assert evaluate(net, val, LOSSES["mse"], torch.device("cpu")) == pytest.approx(min(vals), rel=1e-6)
    assert evaluate(net, val, LOSSES["mse"], torch.device("cpu")) < vals[-1]


def test_progress_bar_only_on_a_terminal(sine_frame, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    train(TinyNet(), windows(sine_frame), windows(sine_frame), cfg(progress=True))
    assert capsys.readouterr().out == ""  # pytest's stdout is not a terminal
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    train(TinyNet(), windows(sine_frame), windows(sine_frame), cfg(progress=True), name="tiny")
    out = capsys.readouterr().out
    assert "tiny epoch 2/2" in out and "val" in out


def test_to_tensors_keeps_float32_and_shapes(sine_frame: pd.DataFrame) -> None:
    w = Windows(to_arrays(sine_frame.assign(p=1.0), past=["p"]), L, H)
    tensors = to_tensors(w.batch(np.arange(2)))
    assert tensors["y"].dtype == torch.float32 and tuple(tensors["x_past"].shape) == (2, L, 1)
    assert tuple(tensors["target"].shape) == (2, H)


# --- reproducibility and resumption ------------------------------------------------------------------
def test_same_seed_gives_identical_forecasts(train_val: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    val = train_val[1]
    torch.manual_seed(123)
    outside = torch.get_rng_state()
    a = lstm(cfg()).fit(*train_val).predict(val)
    b = lstm(cfg()).fit(*train_val).predict(val)
    c = lstm(cfg(seed=1)).fit(*train_val).predict(val)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["yhat"], c["yhat"])
    assert torch.equal(torch.get_rng_state(), outside)  # fit leaves the caller's RNG alone


def test_thread_count_is_set_for_the_fit_and_restored(sine_frame: pd.DataFrame) -> None:
    before = torch.get_num_threads()
    during = []
    lstm(cfg(num_threads=2, epochs=1)).fit(
        sine_frame, callbacks=[lambda e, m: during.append(torch.get_num_threads())]
    )
    assert during == [2] and torch.get_num_threads() == before


class Interrupted(Exception):
    pass


def interrupt_after(epoch: int):
    def callback(e: int, metrics: dict[str, float]) -> None:
        if e == epoch:
            raise Interrupted

    return callback


def test_resumed_run_equals_an_uninterrupted_one(
    train_val: tuple[pd.DataFrame, pd.DataFrame], tmp_path
) -> None:
    val = train_val[1]
    full = lstm(cfg(epochs=4)).fit(*train_val)
    training = cfg(epochs=4, checkpoint_dir=tmp_path)
    with pytest.raises(Interrupted):  # the process dies after epoch 2 (its checkpoint is written)
        lstm(training).fit(*train_val, callbacks=[interrupt_after(2)])
    assert load_checkpoint(tmp_path / "lstm.pt")["epoch"] == 2
    seen = []
    resumed = lstm(training.model_copy(update={"resume": True})).fit(
        *train_val, callbacks=[lambda e, m: seen.append(e)]
    )
    assert seen == [3, 4]  # it went on from the checkpoint, not from scratch
    pd.testing.assert_frame_equal(resumed.predict(val), full.predict(val))
    strip = lambda hist: [{k: v for k, v in h.items() if k != "seconds"} for h in hist]  # noqa: E731
    assert strip(resumed.history_) == strip(full.history_)
    assert resumed.best_epoch_ == full.best_epoch_


def test_checkpoint_holds_everything_to_resume(
    train_val: tuple[pd.DataFrame, pd.DataFrame], tmp_path
) -> None:
    lstm(cfg(checkpoint_dir=tmp_path)).fit(*train_val)
    assert [p.name for p in tmp_path.iterdir()] == ["lstm.pt"]  # no temporary files left behind
    saved = load_checkpoint(tmp_path / "lstm.pt")
    assert {
        "model",
        "optimizer",
        "epoch",
        "step",
        "best_weights",
        "best_loss",
        "rng",
        "history",
        "meta",
    } <= set(saved)
    assert saved["meta"]["family"] == "lstm" and saved["meta"]["settings"]["hidden"] == 16
    assert saved["epoch"] == 2 and saved["step"] == 2 * steps_per_epoch(3 * (480 - L - H + 1), cfg())


def test_resume_refuses_another_models_checkpoint(sine_frame: pd.DataFrame, tmp_path) -> None:
    lstm(cfg(checkpoint_dir=tmp_path, epochs=1)).fit(sine_frame)
    with pytest.raises(ConfigError, match="different model"):
        lstm(cfg(checkpoint_dir=tmp_path, resume=True), hidden=8).fit(sine_frame)


def test_resume_without_a_checkpoint_starts_afresh(sine_frame: pd.DataFrame, tmp_path) -> None:
    a = lstm(cfg(checkpoint_dir=tmp_path / "none", resume=True)).fit(sine_frame).predict(sine_frame)
    b = lstm(cfg()).fit(sine_frame).predict(sine_frame)
    pd.testing.assert_frame_equal(a, b)


def test_checkpoint_write_is_atomic(tmp_path) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(path, {"step": 1})
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises for an unpicklable value
        save_checkpoint(path, {"step": 2, "oops": lambda: None})
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_device_resolution() -> None:
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
