"""The one training loop for every torch model.

A model here is any ``nn.Module`` that maps a batch of windows (the dict of ``Windows.batch`` as
tensors) to forecasts (B, H), or to quantiles (B, H, Q) at ``taus`` when trained with the pinball
loss (``training.loss: quantile``). The loop owns everything else: the optimiser, the learning-rate
schedule, early stopping on the validation loss with the best weights restored, gradient
clipping, divergence checks, checkpoints, the progress bar and the per-epoch callbacks.

One training step, as in nanoGPT: set the lr for this step, forward, loss, backward, check that
loss and gradients are finite, clip, optimiser step.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from forecasting.data.windows import Windows
from forecasting.errors import ConfigError, TrainingDivergedError
from forecasting.training.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from forecasting.training.progress import EpochProgress
from forecasting.training.randomness import RandomStream, draws_in_training
from forecasting.training.schedule import lr_schedule
from forecasting.training.settings import TrainingConfig

EpochCallback = Callable[[int, dict[str, float]], None]
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": F.mse_loss,
    "mae": F.l1_loss,
    "huber": F.huber_loss,
}
LossFn = Callable[..., torch.Tensor]  # (yhat, target, reduction="mean") -> loss
EVAL_BATCH = 1024  # windows per forward pass when scoring (no gradients: memory is small)


@dataclass
class TrainResult:
    """What a run leaves behind besides the (best) weights in the model."""

    history: list[dict[str, float]]  # one dict per epoch: epoch, train_loss, [val_loss], lr, seconds
    best_epoch: int  # 1-based; the last epoch when there is no validation
    steps: int  # optimiser steps taken (across resumes)
    stopped_early: bool


@dataclass
class _LoopState:
    """Everything that changes from epoch to epoch and must survive a restart."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    best_loss: float = math.inf
    best_epoch: int = 0
    best_weights: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0  # epochs since the best validation loss
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


# --- small pieces -------------------------------------------------------------------------------
def pinball_loss(
    yhat: torch.Tensor, target: torch.Tensor, taus: Sequence[float], reduction: str = "mean"
) -> torch.Tensor:
    """Pinball (quantile) loss averaged over the levels: yhat (B, H, Q) at ``taus``, target (B, H).

    ``reduction`` as torch's losses: ``mean`` over every forecast value, ``sum`` of the per-value
    means over the levels (``evaluate`` divides by the number of values), ``none`` gives (B, H).
    """
    if yhat.shape[-1] != len(taus):
        raise ValueError(f"pinball_loss: {yhat.shape[-1]} quantiles in the output, {len(taus)} levels")
    tau = yhat.new_tensor(taus)  # (Q,)
    diff = target.unsqueeze(-1) - yhat  # (B, H, Q): positive where the quantile is under the truth
    loss = torch.maximum(tau * diff, (tau - 1) * diff).mean(dim=-1)  # (B, H)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def loss_function(cfg: TrainingConfig, taus: Sequence[float] = ()) -> LossFn:
    """The loss ``cfg.loss`` names; ``quantile`` scores the model's outputs at ``taus``."""
    if cfg.loss != "quantile":
        return LOSSES[cfg.loss]
    if not taus:
        raise ConfigError(
            "training.loss is quantile but the model outputs no quantile levels; set "
            "intervals.levels or intervals.quantiles, or choose another training.loss"
        )
    return functools.partial(pinball_loss, taus=tuple(taus))


def to_tensors(batch: dict[str, np.ndarray], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A batch of ``Windows.batch`` arrays as tensors on ``device`` (the one place numpy meets torch)."""
    return {
        k: torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True) for k, v in batch.items()
    }


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when there is one; asking for CUDA without one is a config error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device is 'cuda' but torch sees no CUDA device; use 'cpu' or 'auto'")
    return torch.device(name)


def inference_device(name: str) -> torch.device:
    """Where a saved network is loaded to forecast: the device it was trained for when this
    process has it, else the CPU. A model trained on a GPU is served, scored on a Dask worker or
    batch-predicted on machines without one; loading is not training, so ``training.device``
    there is a preference, not a requirement."""
    if name in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def autocast(device: torch.device, amp: bool) -> torch.autocast:
    """bf16 autocast on CUDA when ``amp``; a no-op elsewhere."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"
    )


@contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch threads (unchanged when None), then restore the previous count."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_optimizer(model: nn.Module, cfg: TrainingConfig, lr: float) -> torch.optim.Optimizer:
    """SGD with momentum, Adam or AdamW; weight decay on weight matrices only (not biases, norms)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr)


def epoch_batches(n_windows: int, cfg: TrainingConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled window indices for one epoch, at most ``max_train_windows`` of them, in batches.

    A trailing batch of one window is dropped when there are others: batch norm cannot train on it.
    """
    order = rng.permutation(n_windows)[: cfg.max_train_windows]
    batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def steps_per_epoch(n_windows: int, cfg: TrainingConfig) -> int:
    n = min(n_windows, cfg.max_train_windows or n_windows)
    full, rest = divmod(n, cfg.batch_size)
    return full + (rest > 1 or (rest == 1 and full == 0))


def validation_sample(n_windows: int, cfg: TrainingConfig) -> np.ndarray | None:
    """The validation windows early stopping scores: None (every one) when there are at most
    ``max_val_windows``, else a sorted sample of that many, seeded by ``cfg.seed``."""
    if cfg.max_val_windows is None or n_windows <= cfg.max_val_windows:
        return None
    rng = np.random.default_rng([cfg.seed, 1])  # its own stream: the training order is untouched
    return np.sort(rng.choice(n_windows, cfg.max_val_windows, replace=False))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    windows: Windows,
    loss_fn: LossFn,
    device: torch.device,
    amp: bool = False,
    sample: np.ndarray | None = None,
) -> float:
    """Mean loss over every window (or the windows in ``sample``; per forecast value), in eval
    mode."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    order = np.arange(len(windows)) if sample is None else sample
    for start in range(0, len(order), EVAL_BATCH):
        idx = order[start : start + EVAL_BATCH]
        batch = to_tensors(windows.batch(idx), device)
        with autocast(device, amp):
            yhat = model(batch)  # (B, H), or (B, H, Q)
        total += loss_fn(yhat.float(), batch["target"], reduction="sum").item()
        count += batch["target"].numel()
    model.train(was_training)
    return total / max(count, 1)


def _copy_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# --- the loop -----------------------------------------------------------------------------------
def train(
    model: nn.Module,
    train_windows: Windows,
    val_windows: Windows | None,
    cfg: TrainingConfig,
    callbacks: Sequence[EpochCallback] = (),
    *,
    name: str = "model",
    meta: dict[str, Any] | None = None,
    random_stream: RandomStream | None = None,
    taus: Sequence[float] = (),
) -> TrainResult:
    """Train ``model`` in place (ending with its best weights) and return the run's history.

    ``name`` labels the progress bar and the checkpoint file; ``meta`` (JSON-like) is stored in
    checkpoints and must match on resume. Callbacks get ``(epoch, {"train_loss", "val_loss",
    "lr"})`` after every epoch (1-based; ``val_loss`` only when there is validation data).
    ``taus``: the quantile levels along the model's last output axis (``training.loss: quantile``).
    Raises ``TrainingDivergedError`` at the first non-finite loss or gradient.
    """
    device = resolve_device(cfg.device)
    model.to(device)
    loss_fn = loss_function(cfg, taus)
    use_amp = cfg.amp and device.type == "cuda"
    has_val = val_windows is not None and len(val_windows) > 0
    val_sample = validation_sample(len(val_windows), cfg) if has_val else None
    rng = np.random.default_rng(cfg.seed)

    total_steps = cfg.epochs * steps_per_epoch(len(train_windows), cfg)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    lr_of = lr_schedule(cfg, total_steps)
    optimizer = make_optimizer(model, cfg, lr_of(0))
    state = _LoopState()

    # Dropout masks come from the network's own stream of torch's generator when the caller gave
    # one (``randomness``: models training in other threads), else from the generator itself.
    drawing = random_stream.drawing if random_stream is not None else contextlib.nullcontext
    ckpt = checkpoint_path(cfg.checkpoint_dir, name)
    if cfg.resume and ckpt is not None and ckpt.exists():
        state = _resume(ckpt, model, optimizer, rng, meta, random_stream)

    lr = lr_of(max(state.step - 1, 0))
    with num_threads(cfg.num_threads), EpochProgress(cfg.progress, label=name) as progress:
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            if state.stopped_early or state.step >= total_steps:
                break
            t0 = time.perf_counter()
            model.train()
            batches = epoch_batches(len(train_windows), cfg, rng)
            progress.start_epoch(epoch, cfg.epochs, len(batches))
            loss_sum, n_sum = 0.0, 0
            for idx in batches:
                if state.step >= total_steps:
                    break
                lr = lr_of(state.step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batch = to_tensors(train_windows.batch(idx), device)
                with drawing(), autocast(device, use_amp):
                    yhat = model(batch)  # (B, H), or (B, H, Q)
                loss = loss_fn(yhat.float(), batch["target"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm or math.inf)
                loss_value, norm_value = torch.stack([loss.detach(), grad_norm.float()]).tolist()
                if not math.isfinite(loss_value) or not math.isfinite(norm_value):
                    what = "loss" if not math.isfinite(loss_value) else "gradient norm"
                    raise TrainingDivergedError(
                        f"{name}: the {what} became non-finite at epoch {epoch}, step {state.step + 1} "
                        f"(lr {lr:.3g}); check the input for NaN/inf, or lower training.lr"
                    )
                optimizer.step()
                state.step += 1
                loss_sum += loss_value * len(idx)
                n_sum += len(idx)
                progress.step(loss_value)

            train_loss = loss_sum / max(n_sum, 1)
            val_loss = evaluate(model, val_windows, loss_fn, device, use_amp, val_sample) if has_val else None
            if val_loss is not None and not math.isfinite(val_loss):
                raise TrainingDivergedError(
                    f"{name}: the validation loss is non-finite after epoch {epoch}; check the "
                    "validation data for NaN/inf"
                )
            _early_stopping(state, model, epoch, val_loss, cfg.patience)
            record = {"epoch": epoch, "train_loss": train_loss, "lr": lr}
            if val_loss is not None:
                record["val_loss"] = val_loss
            record["seconds"] = time.perf_counter() - t0
            state.history.append(record)
            state.epoch = epoch
            progress.end_epoch(train_loss, val_loss)
            if ckpt is not None:
                save_checkpoint(ckpt, _checkpoint_payload(state, model, optimizer, rng, meta, random_stream))
            metrics = {k: v for k, v in record.items() if k in ("train_loss", "val_loss", "lr")}
            for callback in callbacks:
                callback(epoch, metrics)

    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    return TrainResult(
        history=state.history,
        best_epoch=state.best_epoch if has_val else state.epoch,
        steps=state.step,
        stopped_early=state.stopped_early,
    )


def _early_stopping(
    state: _LoopState, model: nn.Module, epoch: int, val_loss: float | None, patience: int | None
) -> None:
    """Keep the best weights by validation loss; stop after ``patience`` epochs without a gain."""
    if val_loss is None:
        return
    if val_loss < state.best_loss:
        state.best_loss, state.best_epoch, state.bad_epochs = val_loss, epoch, 0
        state.best_weights = _copy_weights(model)
    else:
        state.bad_epochs += 1
        state.stopped_early = patience is not None and state.bad_epochs >= patience


def _checkpoint_payload(
    state: _LoopState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    meta: dict[str, Any] | None,
    random_stream: RandomStream | None = None,
) -> dict[str, Any]:
    # the network's own stream, when it has one, is what its training draws from
    states = {**rng_states(rng), **(random_stream.state if random_stream is not None else {})}
    return {
        "meta": meta or {},
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "best_loss": state.best_loss,
        "best_epoch": state.best_epoch,
        "best_weights": state.best_weights,
        "bad_epochs": state.bad_epochs,
        "stopped_early": state.stopped_early,
        "history": state.history,
        "rng": states,
    }


def _resume(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    meta: dict[str, Any] | None,
    random_stream: RandomStream | None = None,
) -> _LoopState:
    saved = load_checkpoint(path)
    if saved["meta"] != (meta or {}):
        raise ConfigError(
            f"checkpoint {str(path)!r} belongs to a different model ({saved['meta']}); point "
            "training.checkpoint_dir elsewhere or set training.resume to false"
        )
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    # Torch's state goes back where the network draws from: its own stream when it has one; the
    # generator itself only for a network that draws and has none (setting it for another would
    # change the numbers of a model training beside it, ``randomness``).
    set_rng_states(rng, saved["rng"], torch_too=random_stream is None and draws_in_training(model))
    if random_stream is not None:
        random_stream.state.update((k, v) for k, v in saved["rng"].items() if k in random_stream.state)
    return _LoopState(
        epoch=saved["epoch"],
        step=saved["step"],
        best_loss=saved["best_loss"],
        best_epoch=saved["best_epoch"],
        best_weights=saved["best_weights"],
        bad_epochs=saved["bad_epochs"],
        stopped_early=saved["stopped_early"],
        history=saved["history"],
    )
