"""The learning rate as a pure function of the optimiser step (nanoGPT style).

Linear warm-up from ``peak_lr / warmup_steps`` to ``peak_lr``, then a decay to
``min_lr_ratio * peak_lr`` at the last step: cosine, step-wise (times ``gamma`` every
``step_every`` steps, never below the floor) or constant. The peak itself is the base learning
rate scaled linearly with the batch size (Goyal et al., 2017).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from forecasting.config import TrainingConfig

Schedule = Literal["cosine", "step", "constant"]


def scaled_lr(base_lr: float, batch_size: int, base_batch_size: int, scale: bool = True) -> float:
    """``base_lr * batch_size / base_batch_size`` when ``scale``, else ``base_lr``."""
    return base_lr * batch_size / base_batch_size if scale else base_lr


def lr_at(
    step: int,
    *,
    peak_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: Schedule = "cosine",
    min_lr_ratio: float = 0.0,
    step_every: int = 1,
    gamma: float = 0.1,
) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of ``total_steps``."""
    min_lr = peak_lr * min_lr_ratio
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak_lr
    if schedule == "step":
        drops = (step - warmup_steps) // max(1, step_every)
        return max(min_lr, peak_lr * gamma**drops)
    # Cosine from the peak at the first step after warm-up to the floor at the last step.
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak_lr - min_lr)


def lr_schedule(cfg: TrainingConfig, total_steps: int) -> Callable[[int], float]:
    """The schedule a training config asks for, as a function of the step."""
    peak = scaled_lr(cfg.lr, cfg.batch_size, cfg.base_batch_size, cfg.scale_lr)
    warmup = round(cfg.warmup_fraction * total_steps)
    step_every = max(1, round(cfg.step_every_fraction * total_steps))

    def lr(step: int) -> float:
        return lr_at(
            step,
            peak_lr=peak,
            total_steps=total_steps,
            warmup_steps=warmup,
            schedule=cfg.schedule,
            min_lr_ratio=cfg.min_lr_ratio,
            step_every=step_every,
            gamma=cfg.step_gamma,
        )

    return lr
