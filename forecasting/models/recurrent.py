"""Recurrent families (``rnn``, ``lstm``, ``gru``): one network, the cell is a setting.

The lookback is cut into segments (SegRNN, Lin et al. 2023): with 24-step segments a 96-step
recurrence becomes 4 steps, which is both faster and more accurate than stepping through every
hour. Each segment (with its past covariates) is embedded, a stack of recurrent layers runs over
the segments, and the last hidden state feeds the direct multi-horizon head.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from torch import nn

from forecasting.models.layers import (
    Dims,
    ForecastHead,
    Init,
    RecurrentInit,
    check_patch,
    init_weights,
    make_activation,
    make_norm,
    steps_with_covariates,
    to_patches,
)
from forecasting.models.neural import ArchitectureSettings, NeuralForecaster
from forecasting.models.registry import register

Cell = Literal["rnn", "lstm", "gru"]
_CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RecurrentSettings(ArchitectureSettings):
    """``activation`` shapes the segment embedding; the cells keep their own tanh/sigmoid gates."""

    cell: Cell = "lstm"
    segment_len: int = Field(24, ge=1)  # lookback steps per recurrent step
    recurrent_init: RecurrentInit = "orthogonal"  # hidden-to-hidden weights
    init: Init = "xavier"


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RNNSettings(RecurrentSettings):
    cell: Literal["rnn"] = "rnn"


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class LSTMSettings(RecurrentSettings):
    cell: Literal["lstm"] = "lstm"


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class GRUSettings(RecurrentSettings):
    cell: Literal["gru"] = "gru"


class RecurrentNet(nn.Module):
    """Segments of the lookback -> stacked recurrent layers -> last hidden state -> H values."""

    def __init__(self, s: RecurrentSettings, dims: Dims):
        super().__init__()
        check_patch(s.cell, s.segment_len, s.segment_len, dims.lookback)
        self.segment_len = s.segment_len
        self.residual = s.residual
        c_in = 1 + dims.n_past
        self.embed = nn.Sequential(nn.Linear(s.segment_len * c_in, s.hidden), make_activation(s.activation))
        self.cells = nn.ModuleList(
            _CELLS[s.cell](s.hidden, s.hidden, batch_first=True) for _ in range(s.layers)
        )
        self.norms = nn.ModuleList(make_norm(s.norm, s.hidden) for _ in range(s.layers))
        self.dropout = nn.Dropout(s.dropout)
        init_weights(self, s.init, s.activation, recurrent=s.recurrent_init)
        # The linear read-out keeps torch's default (smaller) scale whatever the body's scheme.
        self.head = ForecastHead(s.hidden, dims, s.dropout)

    def forward(
        self, y: torch.Tensor, x_past: torch.Tensor, x_future: torch.Tensor, static: torch.Tensor
    ) -> torch.Tensor:
        x = steps_with_covariates(y, x_past)  # (B, L, 1 + C)
        x = to_patches(x, self.segment_len, self.segment_len)  # (B, N, seg * (1 + C))
        h = self.embed(x)  # (B, N, D)
        for cell, norm in zip(self.cells, self.norms, strict=True):
            out, _ = cell(h)  # (B, N, D)
            out = self.dropout(out)
            h = norm(h + out if self.residual else out)
        return self.head(h[:, -1], x_future, static)  # (B, H)


class _Recurrent(NeuralForecaster):
    Network = RecurrentNet


@register
class RNN(_Recurrent):
    """Elman RNN over segments of the lookback."""

    name = "rnn"
    Settings = RNNSettings


@register
class LSTM(_Recurrent):
    """LSTM over segments of the lookback."""

    name = "lstm"
    Settings = LSTMSettings


@register
class GRU(_Recurrent):
    """GRU over segments of the lookback."""

    name = "gru"
    Settings = GRUSettings
