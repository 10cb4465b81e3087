"""The training section of the config: the one torch loop's settings.

It lives below ``forecasting.config`` (which re-exports it) so that the models and the loop can
import it without importing the whole config, and without torch: nothing here needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainingConfig(BaseModel):
    """The one torch training loop's settings (shared by every deep family)."""

    model_config = ConfigDict(extra="forbid", frozen=True)  # as every section of ``Config``

    # ``quantile``: the mean pinball loss over the interval levels (``intervals``) and the median;
    # every deep family then gets a quantile head and its point forecast is the median.
    loss: Literal["mse", "mae", "huber", "quantile"] = "mse"
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0, description="base learning rate at base_batch_size")
    base_batch_size: int = Field(32, ge=1)
    batch_size: int = Field(128, ge=1)
    scale_lr: bool = True  # lr = base_lr * batch_size / base_batch_size
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    epochs: int = Field(10, ge=1)
    max_steps: int | None = Field(None, ge=1)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.01, ge=0, le=1)
    step_every_fraction: float = Field(0.33, gt=0, le=1)  # step decay: fraction of steps per drop
    step_gamma: float = Field(0.1, gt=0, le=1)
    patience: int | None = Field(3, ge=1)
    clip_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 0
    num_threads: int | None = Field(None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    amp: bool = False  # bf16 autocast on CUDA
    max_train_windows: int | None = Field(None, ge=1)  # subsample windows per epoch
    # Early stopping's validation loss on at most this many windows: one seeded sample, the same
    # every epoch (so epochs compare), drawn across every series when there are more.
    max_val_windows: int | None = Field(None, ge=1)
    progress: bool = True
    # Checkpoint after every epoch into this folder (one file per family); with ``resume`` a run
    # continues from the checkpoint it finds there (and starts afresh when there is none).
    checkpoint_dir: Path | None = None
    resume: bool = False
    # The pipeline checkpoints every network after each epoch so that a rerun after a crash
    # (kill -9) resumes it: under ``checkpoint_dir`` when given, else beside the tracking store,
    # one folder per run key, removed when the pipeline run finishes. False: no checkpoints.
    checkpoints: bool = True

    @model_validator(mode="after")
    def _checkpoints_agree(self) -> TrainingConfig:
        if self.checkpoint_dir is not None and not self.checkpoints:
            raise ValueError("training.checkpoint_dir is set but training.checkpoints is false; drop one")
        return self
