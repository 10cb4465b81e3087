"""Temporal convolutional network (``tcn``; Bai, Kolter and Koltun, 2018).

Residual blocks of two dilated causal convolutions; dilation doubles per block, and the number of
blocks is computed so that the receptive field covers the whole lookback. As in the recurrent
families the lookback is first cut into short segments (tokens), which shortens the sequence the
convolutions run over. The direct head reads the last position, the one whose receptive field
covers the whole lookback (``head="last"``, the textbook TCN), or every position (``"flatten"``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from torch import nn

from forecasting.errors import ConfigError
from forecasting.models.layers import (
    Dims,
    ForecastHead,
    Init,
    check_patch,
    init_weights,
    make_activation,
    make_norm,
    n_patches,
    steps_with_covariates,
    to_patches,
)
from forecasting.models.neural import ArchitectureSettings, NeuralForecaster
from forecasting.models.registry import register


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TCNSettings(ArchitectureSettings):
    """``hidden`` is the channel count; ``layers`` the residual blocks (None: just enough)."""

    hidden: int = Field(32, ge=1)
    layers: int | None = Field(None, ge=1)
    kernel_size: int = Field(3, ge=2)
    segment_len: int = Field(8, ge=1)  # lookback steps per token
    head: Literal["last", "flatten"] = "last"
    init: Init = "kaiming"


def receptive_field(kernel_size: int, levels: int) -> int:
    """Tokens seen by the last position: two convolutions per block, dilations 1, 2, 4, ..."""
    return 1 + 2 * (kernel_size - 1) * (2**levels - 1)


def levels_for(length: int, kernel_size: int) -> int:
    """The fewest blocks whose receptive field covers ``length`` tokens."""
    levels = 1
    while receptive_field(kernel_size, levels) < length:
        levels += 1
    return levels


class CausalConv(nn.Module):
    """Dilated convolution that only looks back: (B, T, C) -> (B, T, C_out)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int):
        super().__init__()
        self.pad = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x.transpose(1, 2), (self.pad, 0))  # (B, C, pad + T)
        return self.conv(x).transpose(1, 2)  # (B, T, C_out)


class TemporalBlock(nn.Module):
    def __init__(self, s: TCNSettings, dilation: int):
        super().__init__()
        self.conv1 = CausalConv(s.hidden, s.hidden, s.kernel_size, dilation)
        self.conv2 = CausalConv(s.hidden, s.hidden, s.kernel_size, dilation)
        self.norm1 = make_norm(s.norm, s.hidden)
        self.norm2 = make_norm(s.norm, s.hidden)
        self.act = make_activation(s.activation)
        self.dropout = nn.Dropout(s.dropout)
        self.residual = s.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.act(self.norm1(self.conv1(x))))  # (B, T, C)
        h = self.dropout(self.act(self.norm2(self.conv2(h))))  # (B, T, C)
        return self.act(x + h) if self.residual else h


class TCNNet(nn.Module):
    """Segments -> embedding -> dilated residual blocks -> every (or the last) position -> H values."""

    def __init__(self, s: TCNSettings, dims: Dims):
        super().__init__()
        check_patch("tcn", s.segment_len, s.segment_len, dims.lookback)
        self.segment_len = s.segment_len
        tokens = n_patches(dims.lookback, s.segment_len, s.segment_len)
        levels = s.layers if s.layers is not None else levels_for(tokens, s.kernel_size)
        seen = receptive_field(s.kernel_size, levels)
        if seen < tokens:
            raise ConfigError(
                f"tcn: {levels} blocks of kernel {s.kernel_size} see {seen} of the {tokens} lookback "
                f"segments; use layers >= {levels_for(tokens, s.kernel_size)} (or leave layers unset)"
            )
        self.receptive_field = seen * s.segment_len  # in steps
        self.embed = nn.Linear(s.segment_len * (1 + dims.n_past), s.hidden)
        self.blocks = nn.ModuleList(TemporalBlock(s, dilation=2**i) for i in range(levels))
        self.flatten = s.head == "flatten"
        init_weights(self, s.init, s.activation)
        # The linear read-out keeps torch's default (smaller) scale whatever the body's scheme.
        self.head = ForecastHead((tokens if self.flatten else 1) * s.hidden, dims, s.dropout)

    def forward(
        self, y: torch.Tensor, x_past: torch.Tensor, x_future: torch.Tensor, static: torch.Tensor
    ) -> torch.Tensor:
        x = steps_with_covariates(y, x_past)  # (B, L, 1 + C)
        h = self.embed(to_patches(x, self.segment_len, self.segment_len))  # (B, N, D)
        for block in self.blocks:
            h = block(h)  # (B, N, D)
        context = h.flatten(1) if self.flatten else h[:, -1]  # (B, N * D) or (B, D)
        return self.head(context, x_future, static)  # (B, H)


@register
class TCN(NeuralForecaster):
    """Dilated causal convolutions with residual blocks."""

    name = "tcn"
    Settings = TCNSettings
    Network = TCNNet
