"""Checkpoints: one torch file per model, written atomically, read back without pickle.

A checkpoint holds everything a resumed run needs to continue exactly where it stopped: the
weights, the optimiser, the step and epoch counters, early-stopping state (best weights, best
loss, epochs without improvement), the history so far, the random states, and the model's own
description (``meta``: family, settings, data spec) so that it can be rebuilt from the file alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forecasting.errors import ModelLoadError

CHECKPOINT_SUFFIX = ".pt"


def checkpoint_path(checkpoint_dir: Path | None, name: str) -> Path | None:
    """Where the model called ``name`` checkpoints (``None``: no checkpoints)."""
    return None if checkpoint_dir is None else Path(checkpoint_dir) / f"{name}{CHECKPOINT_SUFFIX}"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: a reader sees the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (tensors and plain Python values only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a damaged file
        raise ModelLoadError(f"checkpoint {str(path)!r} cannot be read: {err}") from None


def rng_states(rng: np.random.Generator) -> dict[str, Any]:
    """The random states a run consumes: numpy's (shuffling) and torch's (dropout, init)."""
    states: dict[str, Any] = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(rng: np.random.Generator, states: dict[str, Any], torch_too: bool = True) -> None:
    rng.bit_generator.state = states["numpy"]
    if not torch_too:
        return
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
