"""The recurrent family (``rnn``, ``lstm``, ``gru``): one class, the cell is a setting.

The lookback is cut into segments (SegRNN, Lin et al. 2023): with 24-step segments a 96-step
recurrence becomes 4 steps, which is both faster and more accurate than stepping through every
hour. Each segment (with its past covariates) is embedded and a stack of recurrent layers runs
over the segments. Two read-outs:

- ``decoder: head`` (default): the last hidden state feeds the direct multi-horizon head, so all
  H values come from one ``hidden``-wide vector.
- ``decoder: segments``: SegRNN's parallel multi-step forecasting. The horizon is cut into
  segments too; each gets a learnt position embedding, which runs one step through the same
  recurrent stack from the encoder's final states (all segments at once, as a batch), and a
  shared linear map turns each output into that segment's values. Long horizons then no longer
  squeeze through one vector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

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

if TYPE_CHECKING:
    from forecasting.models.base import DataSpec
    from forecasting.training.settings import TrainingConfig

Cell = Literal["rnn", "lstm", "gru"]
_CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RecurrentSettings(ArchitectureSettings):
    """``activation`` shapes the segment embedding; the cells keep their own tanh/sigmoid gates."""

    cell: Cell = "lstm"  # preset by the registry name: rnn, lstm or gru
    segment_len: int = Field(24, ge=1)  # lookback (and, decoding by segments, horizon) steps per step
    decoder: Literal["head", "segments"] = "head"
    recurrent_init: RecurrentInit = "orthogonal"  # hidden-to-hidden weights
    init: Init = "xavier"


class RecurrentNet(nn.Module):
    """Segments of the lookback -> stacked recurrent layers -> H values.

    ``decoder="head"`` reads the last hidden state with a linear head; ``"segments"`` (SegRNN)
    runs one more step of the same cells per output segment, all in parallel, each from the
    encoder's final states and a learnt position embedding, and maps each to ``segment_len`` values.
    """

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
        self.horizon = dims.horizon
        self.n_out = -(-dims.horizon // s.segment_len) if s.decoder == "segments" else 0
        if self.n_out:
            self.position = nn.Parameter(torch.zeros(self.n_out, s.hidden))  # one per output segment
            nn.init.normal_(self.position, std=s.hidden**-0.5)
            # Their own norms: a batch norm's running statistics must not mix encoder and decoder states.
            self.decoder_norms = nn.ModuleList(make_norm(s.norm, s.hidden) for _ in range(s.layers))
        init_weights(self, s.init, s.activation, recurrent=s.recurrent_init)
        # The linear read-outs keep torch's default (smaller) scale whatever the body's scheme.
        if self.n_out:
            self.segment_out = nn.Linear(s.hidden, s.segment_len)
            # Covariates of the horizon (and statics) still enter through the direct head's maps.
            covariates = dims.n_future or dims.n_static
            self.head = ForecastHead(0, dims, s.dropout) if covariates else None
        else:
            self.head = ForecastHead(s.hidden, dims, s.dropout)

    def forward(
        self, y: torch.Tensor, x_past: torch.Tensor, x_future: torch.Tensor, static: torch.Tensor
    ) -> torch.Tensor:
        x = steps_with_covariates(y, x_past)  # (B, L, 1 + C)
        x = to_patches(x, self.segment_len, self.segment_len)  # (B, N, seg * (1 + C))
        h = self.embed(x)  # (B, N, D)
        states = []
        for cell, norm in zip(self.cells, self.norms, strict=True):
            out, state = cell(h)  # (B, N, D); state (1, B, D), a pair of them for an LSTM
            states.append(state)
            out = self.dropout(out)
            h = norm(h + out if self.residual else out)
        if not self.n_out:
            return self.head(h[:, -1], x_future, static)  # (B, H)
        return self._decode_segments(states, x_future, static)

    def _decode_segments(self, states: list, x_future: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        """One recurrent step per output segment, all segments in parallel: (B, H)."""
        B, M = x_future.shape[0], self.n_out
        d = self.position.new_zeros(B, M, self.position.shape[1]) + self.position  # (B, M, D)
        d = d.reshape(B * M, 1, -1)  # each output segment is its own length-1 sequence
        for cell, norm, state in zip(self.cells, self.decoder_norms, states, strict=True):
            start = (
                tuple(s.repeat_interleave(M, dim=1) for s in state)
                if isinstance(state, tuple)
                else state.repeat_interleave(M, dim=1)
            )  # (1, B * M, D): each segment starts from its window's encoder state
            out, _ = cell(d, start)  # (B * M, 1, D)
            out = self.dropout(out)
            d = norm(d + out if self.residual else out)
        out = self.segment_out(d[:, 0]).reshape(B, M * self.segment_len)[:, : self.horizon]  # (B, H)
        if self.head is not None:
            out = out + self.head(out.new_zeros(B, 0), x_future, static)
        return out


@register
class Recurrent(NeuralForecaster):
    """Elman RNN, LSTM or GRU (``settings.cell``) over segments of the lookback.

    Registered as ``rnn``, ``lstm`` and ``gru``, each name presetting the cell; the model's
    ``name`` is that registry name, so a saved folder records the name it was built under.
    """

    Settings = RecurrentSettings
    Network = RecurrentNet

    def __init__(
        self,
        settings: RecurrentSettings | None = None,
        *,
        spec: DataSpec,
        training: TrainingConfig | None = None,
    ):
        super().__init__(settings, spec=spec, training=training)
        self.name = self.settings.cell
