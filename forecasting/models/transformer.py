"""Transformer encoder (``transformer``), patched like PatchTST (Nie et al., 2023) by default.

The lookback (with its past covariates) is cut into overlapping patches of ``patch_len`` steps
every ``stride`` steps; each patch becomes a token with a sinusoidal (or learned) position. With
``patching`` off every step is a token. The encoder's tokens are flattened into the direct
multi-horizon head. PatchTST's own details are options: learned positions, end padding, BatchNorm,
residual attention (each layer's attention scores carry the previous layer's) and separate
attention/head dropout.

Every window holds one series, so the model is channel-independent by construction: the series of
a many-series (or wide, multi-column) table share the weights and never attend to each other.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from torch import nn

from forecasting.errors import ConfigError
from forecasting.models.layers import (
    Activation,
    Dims,
    ForecastHead,
    Init,
    LearnedPosition,
    Norm,
    PositionalEncoding,
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
class TransformerSettings(ArchitectureSettings):
    """``hidden`` is the model dimension; ``layers`` the encoder blocks.

    The defaults are PatchTST's for ETTh1 (a narrow model with wide feed-forward layers and strong
    dropout): the flattened head grows with the number of patches, and a wider model overfits at
    long lookbacks.
    """

    hidden: int = Field(16, ge=1)
    heads: int = Field(4, ge=1)
    ff_mult: int = Field(8, ge=1)  # feed-forward width = ff_mult * hidden
    patching: bool = True
    patch_len: int = Field(16, ge=1)
    stride: int = Field(8, ge=1)
    activation: Activation = "gelu"
    init: Init = "xavier"
    norm: Norm = "layer"
    dropout: float = Field(0.3, ge=0, lt=1)
    # PatchTST's details, off by default (the defaults are what the benchmarks were first run with).
    position: Literal["sinusoidal", "learned"] = "sinusoidal"
    pad_end: bool = False  # repeat the last step ``stride`` times at the end: one patch more
    residual_attention: bool = False  # add the previous layer's pre-softmax scores (RealFormer)
    attention_dropout: float | None = Field(None, ge=0, lt=1)  # None: ``dropout``
    # On the head's input, as the head's other dropout was (PatchTST drops the head's output;
    # its ETTh scripts set it to 0, where the two are the same). None: ``dropout``.
    head_dropout: float | None = Field(None, ge=0, lt=1)


class ResidualAttention(nn.Module):
    """Multi-head self-attention that adds the previous layer's scores to its own before softmax.

    PatchTST's ``res_attention`` (He et al., 2020, RealFormer). h (B, N, D), prev (B, heads, N, N)
    or None -> (out (B, N, D), scores (B, heads, N, N)), the scores for the next layer. Its
    projections are ``nn.Linear``, so the model's ``init`` scheme covers them (with the default
    ``xavier`` they start as ``nn.MultiheadAttention``'s do).
    """

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, prev: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        B, N, D = h.shape
        qkv = self.qkv(h).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, D/heads)
        scores = q @ k.transpose(-2, -1) / math.sqrt(D // self.heads)  # (B, heads, N, N)
        if prev is not None:
            scores = scores + prev
        weights = self.dropout(scores.softmax(dim=-1))  # (B, heads, N, N)
        return self.out((weights @ v).transpose(1, 2).reshape(B, N, D)), scores


class EncoderBlock(nn.Module):
    """Self-attention then feed-forward, each with an (optional) residual and a norm after it."""

    def __init__(self, s: TransformerSettings):
        super().__init__()
        attn_dropout = s.dropout if s.attention_dropout is None else s.attention_dropout
        self.attn: nn.Module
        if s.residual_attention:
            self.attn = ResidualAttention(s.hidden, s.heads, attn_dropout)
        else:
            self.attn = nn.MultiheadAttention(s.hidden, s.heads, dropout=attn_dropout, batch_first=True)
        self.ff = nn.Sequential(
            nn.Linear(s.hidden, s.ff_mult * s.hidden),
            make_activation(s.activation),
            nn.Dropout(s.dropout),
            nn.Linear(s.ff_mult * s.hidden, s.hidden),
        )
        self.norm1 = make_norm(s.norm, s.hidden)
        self.norm2 = make_norm(s.norm, s.hidden)
        self.dropout = nn.Dropout(s.dropout)
        self.residual = s.residual

    def forward(
        self, h: torch.Tensor, prev: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, N, D) tokens and the previous layer's scores -> (B, N, D) and this layer's scores."""
        if isinstance(self.attn, ResidualAttention):
            a, scores = self.attn(h, prev)
        else:
            (a, _), scores = self.attn(h, h, h, need_weights=False), None
        h = self.norm1(h + self.dropout(a) if self.residual else self.dropout(a))  # (B, N, D)
        f = self.ff(h)  # (B, N, D)
        return self.norm2(h + self.dropout(f) if self.residual else self.dropout(f)), scores


class TransformerNet(nn.Module):
    """Patches -> embedding + positions -> encoder blocks -> flatten -> H values."""

    def __init__(self, s: TransformerSettings, dims: Dims):
        super().__init__()
        if s.hidden % s.heads:
            raise ConfigError(f"transformer: hidden {s.hidden} must be a multiple of heads {s.heads}")
        self.patch_len, self.stride = (s.patch_len, s.stride) if s.patching else (1, 1)
        check_patch("transformer", self.patch_len, self.stride, dims.lookback)
        self.pad_end = s.pad_end
        tokens = n_patches(dims.lookback + (self.stride if s.pad_end else 0), self.patch_len, self.stride)
        self.embed = nn.Linear(self.patch_len * (1 + dims.n_past), s.hidden)
        self.position: nn.Module = (
            LearnedPosition(s.hidden, tokens)
            if s.position == "learned"
            else PositionalEncoding(s.hidden, tokens)
        )
        self.dropout = nn.Dropout(s.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(s) for _ in range(s.layers))
        init_weights(self, s.init, s.activation)
        # The linear read-out keeps torch's default (smaller) scale whatever the body's scheme.
        head_dropout = s.dropout if s.head_dropout is None else s.head_dropout
        self.head = ForecastHead(tokens * s.hidden, dims, head_dropout)

    def forward(
        self, y: torch.Tensor, x_past: torch.Tensor, x_future: torch.Tensor, static: torch.Tensor
    ) -> torch.Tensor:
        x = steps_with_covariates(y, x_past)  # (B, L, 1 + C)
        tokens = to_patches(x, self.patch_len, self.stride, self.pad_end)  # (B, N, patch_len * (1 + C))
        h = self.dropout(self.position(self.embed(tokens)))  # (B, N, D)
        scores = None  # (B, heads, N, N) with residual attention
        for block in self.blocks:
            h, scores = block(h, scores)  # (B, N, D)
        return self.head(h.flatten(1), x_future, static)  # (B, H)


@register
class Transformer(NeuralForecaster):
    """Encoder-only Transformer over patches of the lookback."""

    name = "transformer"
    Settings = TransformerSettings
    Network = TransformerNet
