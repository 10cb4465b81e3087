"""The one torch training loop (``train``) and its pure learning-rate schedule."""

from forecasting.training.loop import TrainResult, autocast, evaluate, num_threads, resolve_device, train
from forecasting.training.schedule import lr_at, lr_schedule, scaled_lr

__all__ = [
    "TrainResult",
    "autocast",
    "evaluate",
    "lr_at",
    "lr_schedule",
    "num_threads",
    "resolve_device",
    "scaled_lr",
    "train",
]
