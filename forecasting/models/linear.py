"""The linear family (``linear``): NLinear / DLinear (Zeng et al., 2023).

``nlinear``: one linear map from the (window-normalised) lookback to the horizon.
``dlinear``: the lookback split into a moving-average trend and the remainder, each with its own
linear map (one map over both, since a sum of linear maps is a linear map of the concatenation).
Past covariates over the lookback, static covariates and future covariates over the horizon enter
the same map. Strong at every lookback and trains in about a second.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from torch import nn

from forecasting.errors import ConfigError
from forecasting.models.layers import Dims, ForecastHead
from forecasting.models.neural import NeuralForecaster
from forecasting.models.registry import register


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class LinearSettings:
    kind: Literal["nlinear", "dlinear"] = "dlinear"
    moving_avg: int = Field(25, ge=1)  # dlinear: trend window in steps (odd keeps it centred)
    dropout: float = Field(0.0, ge=0, lt=1)
    instance_norm: bool = True


class MovingAverage(nn.Module):
    """Centred moving average with the ends repeated: (B, L) -> (B, L)."""

    def __init__(self, window: int):
        super().__init__()
        self.window = window

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        front, back = (self.window - 1) // 2, self.window // 2
        padded = torch.cat([y[:, :1].expand(-1, front), y, y[:, -1:].expand(-1, back)], dim=1)
        return padded.unfold(1, self.window, 1).mean(-1)  # (B, L)


class LinearNet(nn.Module):
    def __init__(self, s: LinearSettings, dims: Dims):
        super().__init__()
        if s.kind == "dlinear" and s.moving_avg > dims.lookback:
            raise ConfigError(f"linear: moving_avg {s.moving_avg} exceeds the lookback {dims.lookback}")
        self.trend = MovingAverage(s.moving_avg) if s.kind == "dlinear" else None
        parts = 2 if s.kind == "dlinear" else 1
        self.head = ForecastHead(parts * dims.lookback + dims.lookback * dims.n_past, dims, s.dropout)

    def forward(
        self, y: torch.Tensor, x_past: torch.Tensor, x_future: torch.Tensor, static: torch.Tensor
    ) -> torch.Tensor:
        if self.trend is not None:
            trend = self.trend(y)  # (B, L)
            y = torch.cat([y - trend, trend], dim=1)  # (B, 2L)
        context = torch.cat([y, x_past.flatten(1)], dim=1)  # (B, parts * L + L * C)
        return self.head(context, x_future, static)  # (B, H)


@register
class Linear(NeuralForecaster):
    """NLinear / DLinear: a linear map from the lookback to the horizon."""

    name = "linear"
    Settings = LinearSettings
    Network = LinearNet
