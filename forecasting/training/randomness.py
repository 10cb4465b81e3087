"""Torch's random numbers when several models train at once in one process.

Torch draws weight initialisation and dropout masks from one global generator per process (and
device), shared by every thread. The training fan-out trains models in threads, so two models
seeding it, drawing from it and restoring it at the same time took each other's numbers: a model
trained beside another came out different from the same model trained alone, with the same seed.

``GLOBAL_RNG`` is held by whoever uses that generator, only while it uses it: a model while it
seeds it and builds its network (also a model being loaded: its network is built before its
weights replace the random ones), and a network that draws in training (``draws_in_training``:
dropout) during each training forward pass, with its own stream of the generator swapped in
(``RandomStream``). The numbers each model draws are then the ones it draws alone, so a seed
gives the same model at any ``max_workers`` (to floating-point rounding where the torch thread
count differs: it changes the order of sums), and a model waits at most for one forward pass or
one network build of another.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

GLOBAL_RNG = threading.RLock()


def draws_in_training(network: nn.Module) -> bool:
    """True when a training-mode forward pass of ``network`` draws from torch's generator: dropout
    with a non-zero rate (``nn.Dropout`` and its kinds, ``nn.MultiheadAttention``'s, stacked
    ``nn.RNN``/``nn.LSTM``/``nn.GRU`` layers')."""
    for module in network.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return True
        if isinstance(module, nn.MultiheadAttention) and module.dropout > 0:
            return True
        if isinstance(module, nn.RNNBase) and module.dropout > 0 and module.num_layers > 1:
            return True
    return False


class RandomStream:
    """A network's own run of torch's generator (CPU and the given CUDA devices), starting from
    the generator's state when it is made: ``drawing()`` swaps it in under ``GLOBAL_RNG``, and
    puts the generator back as it found it. Drawn in one thread, it gives the numbers the global
    generator would have given that network alone."""

    def __init__(self, devices: list[int]):
        self.devices = devices
        self.state = self._read()

    def _read(self) -> dict[str, object]:
        """The generator's state, keyed as a checkpoint's ``rng`` keys it (``rng_states``)."""
        state: dict[str, object] = {"torch": torch.get_rng_state()}
        if self.devices:
            state["cuda"] = [torch.cuda.get_rng_state(d) for d in self.devices]
        return state

    def _write(self, state: dict[str, object]) -> None:
        torch.set_rng_state(state["torch"])
        for device, cuda_state in zip(self.devices, state.get("cuda", []), strict=False):
            torch.cuda.set_rng_state(cuda_state, device)

    @contextmanager
    def drawing(self) -> Iterator[None]:
        with GLOBAL_RNG:
            outside = self._read()
            self._write(self.state)
            try:
                yield
            finally:
                self.state = self._read()
                self._write(outside)
