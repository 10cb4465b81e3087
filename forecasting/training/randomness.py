"""Torch's random numbers when several models train at once in one process.

Torch draws weight initialisation and dropout masks from one global generator per process (and
device), shared by every thread. The training fan-out trains models in threads, so two models
seeding it, drawing from it and restoring it at the same time take each other's numbers: a model
trained beside another came out different from the same model trained alone, with the same seed.

``GLOBAL_RNG`` is held by whoever uses that generator: a model while it seeds it and builds its
network (also a model being loaded: its network is built before its weights replace the random
ones), and, when its network draws in training too (``draws_in_training``: dropout), for the
whole of its training. Models whose training draws nothing (no dropout: the recurrent, TCN and
linear defaults) release it once built and train beside any other. While a model with dropout
trains, the models already training go on, but one that starts meanwhile (or is loaded to be
logged) waits for it to finish. The numbers each model draws are then the ones it draws alone,
so a seed gives the same model at any ``max_workers`` (to floating-point rounding where the
torch thread count differs: it changes the order of sums).
"""

from __future__ import annotations

import threading

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
