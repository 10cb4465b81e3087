"""Blocks shared by the deep families: factories for activations, norms and initialisation,
instance normalisation, patching, positional encoding, the forecast head and the quantile head.

Every tensor that moves between blocks is channel-last: (B, T, D).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from forecasting.errors import ConfigError

Activation = Literal["sigmoid", "tanh", "relu", "silu", "swish", "gelu"]
Init = Literal["default", "xavier", "kaiming", "orthogonal"]
RecurrentInit = Literal["default", "orthogonal", "xavier"]
Norm = Literal["layer", "batch", "none"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,  # Swish with beta = 1 is SiLU
    "gelu": nn.GELU,
}


@dataclass(frozen=True)
class Dims:
    """Sizes a network is built for, all known from the model's ``DataSpec``."""

    lookback: int  # L
    horizon: int  # H
    n_past: int  # Cp + Cf: covariates observed over the lookback (future-known ones included)
    n_future: int  # Cf: covariates known over the horizon
    n_static: int  # Cs: per-series constants


def make_activation(name: Activation) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}") from None


class BatchNormLast(nn.BatchNorm1d):
    """BatchNorm over the last dimension of (B, D) or (B, T, D) tensors."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            return super().forward(x.transpose(1, 2)).transpose(1, 2)
        return super().forward(x)


def make_norm(kind: Norm, dim: int) -> nn.Module:
    """A normalisation layer over the last dimension (``none`` is the identity)."""
    if kind == "layer":
        return nn.LayerNorm(dim)
    if kind == "batch":
        return BatchNormLast(dim)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm {kind!r}; choose layer, batch or none")


def _gain_name(activation: Activation) -> str:
    # Kaiming's gain for the smooth ReLU-likes is close to ReLU's.
    return activation if activation in ("sigmoid", "tanh", "relu") else "relu"


def init_weights(
    module: nn.Module, scheme: Init, activation: Activation = "relu", recurrent: RecurrentInit = "orthogonal"
) -> None:
    """Norm-preserving initialisation of every weight matrix in ``module``, in place.

    ``scheme`` applies to linear and convolution weights; ``recurrent`` to the hidden-to-hidden
    weights of RNN/LSTM/GRU cells (orthogonal keeps the recurrence's gain near 1). Biases start at
    zero whenever a scheme is applied. ``default`` leaves torch's own initialisation.
    """
    for sub in module.modules():
        if isinstance(sub, nn.Linear | nn.Conv1d) and scheme != "default":
            _init_matrix(sub.weight, scheme, activation)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.RNNBase):
            for name, p in sub.named_parameters():
                if name.startswith("weight_hh") and recurrent != "default":
                    # Gate matrices are stacked (4D x D for an LSTM): one block per gate.
                    _init_matrix(p, recurrent, activation, blocks=p.shape[0] // p.shape[1])
                elif name.startswith("weight_ih") and scheme != "default":
                    _init_matrix(p, scheme, activation)
                elif name.startswith("bias") and scheme != "default":
                    nn.init.zeros_(p)


@torch.no_grad()
def _init_matrix(w: torch.Tensor, scheme: str, activation: Activation, blocks: int = 1) -> None:
    for block in w.chunk(blocks, dim=0):
        if scheme == "xavier":
            nn.init.xavier_uniform_(block)
        elif scheme == "kaiming":
            nn.init.kaiming_uniform_(block, nonlinearity=_gain_name(activation))
        elif scheme == "orthogonal":
            nn.init.orthogonal_(block)
        else:
            raise ConfigError(f"unknown initialisation {scheme!r}")


# --- instance normalisation ---------------------------------------------------------------------
def normalise_window(y: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre and scale each window by its own lookback statistics.

    y: (B, L) -> (y_norm (B, L), loc (B, 1), scale (B, 1)).
    """
    loc = y.mean(dim=1, keepdim=True)  # (B, 1)
    scale = torch.sqrt(y.var(dim=1, keepdim=True, unbiased=False) + eps)  # (B, 1)
    return (y - loc) / scale, loc, scale


def denormalise_window(yhat: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Undo ``normalise_window`` on a forecast: (B, H) -> (B, H), or quantiles (B, H, Q) -> (B, H, Q)."""
    if yhat.dim() == 3:
        loc, scale = loc.unsqueeze(-1), scale.unsqueeze(-1)  # (B, 1, 1)
    return yhat * scale + loc


# --- tokens --------------------------------------------------------------------------------------
def n_patches(length: int, patch_len: int, stride: int) -> int:
    """How many patches ``to_patches`` cuts from ``length`` steps."""
    return math.ceil(max(0, length - patch_len) / stride) + 1


def to_patches(x: torch.Tensor, patch_len: int, stride: int, pad_end: bool = False) -> torch.Tensor:
    """Cut a sequence into (possibly overlapping) patches whose last one ends on the last step.

    x: (B, L, C) -> (B, N, patch_len * C), N = ``n_patches(L, patch_len, stride)``. When the patches
    do not tile L exactly, the first step is repeated in front (the oldest values matter least).
    ``pad_end`` first repeats the last step ``stride`` times at the end (PatchTST's
    ``padding_patch='end'``): one patch more, N = ``n_patches(L + stride, ...)``, whose newest
    steps are the latest value held.
    """
    if pad_end:
        x = torch.cat([x, x[:, -1:].expand(-1, stride, -1)], dim=1)  # (B, L + stride, C)
    B, L, C = x.shape
    n = n_patches(L, patch_len, stride)
    pad = (n - 1) * stride + patch_len - L
    if pad > 0:
        x = torch.cat([x[:, :1].expand(B, pad, C), x], dim=1)  # (B, L + pad, C)
    patches = x.unfold(1, patch_len, stride)  # (B, N, C, patch_len)
    return patches.transpose(2, 3).reshape(B, n, patch_len * C)


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal positions (Vaswani et al., 2017) added to (B, N, D) tokens."""

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        pos = torch.arange(max_len).unsqueeze(1)  # (N, 1)
        freq = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))  # (D/2,)
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq[: d_model // 2])
        self.register_buffer("pe", pe, persistent=False)  # rebuilt, not saved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[: x.shape[1]]  # (B, N, D)


class LearnedPosition(nn.Module):
    """Learned positions (PatchTST's default), one D-vector per token, added to (B, N, D) tokens.

    Initialised uniform in +-0.02 as PatchTST does, so the tokens start close to their content.
    """

    def __init__(self, d_model: int, n_tokens: int):
        super().__init__()
        self.pe = nn.Parameter(torch.empty(n_tokens, d_model).uniform_(-0.02, 0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[: x.shape[1]]  # (B, N, D)


# --- output --------------------------------------------------------------------------------------
class ForecastHead(nn.Module):
    """Direct multi-horizon output: all H steps at once from one context vector.

    The static covariates and the horizon's future-known covariates (flattened, so a step can use
    its neighbours' values) join the context in one linear map. A second map, shared by every
    step, adds each step's own future covariates: the common same-time effect (load follows
    temperature) is then learnt once rather than H times. context (B, D), x_future (B, H, Cf),
    static (B, Cs) -> (B, H).
    """

    def __init__(self, d_context: int, dims: Dims, dropout: float = 0.0):
        super().__init__()
        d_in = d_context + dims.n_static + dims.horizon * dims.n_future
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(d_in, dims.horizon)
        self.per_step = nn.Linear(dims.n_future, 1, bias=False) if dims.n_future else None

    def forward(self, context: torch.Tensor, x_future: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        z = torch.cat([context, static, x_future.flatten(1)], dim=-1)  # (B, D + Cs + H*Cf)
        out = self.proj(self.dropout(z))  # (B, H)
        if self.per_step is not None:
            out = out + self.per_step(x_future).squeeze(-1)  # (B, H)
        return out


class QuantileHead(nn.Module):
    """Quantiles around a core's point forecast, monotone by construction.

    The core's output is the median; a small MLP maps the lookback and that median to
    non-negative gaps (softplus), cumulated outward from the median, so no two quantiles cross
    whatever the weights. ``taus`` (sorted, 0.5 among them) are the levels along the output's
    last axis. The gaps start as those of a normal distribution with half the window's spread
    (on the window-normalised scale, a sensible width before any training).
    y (B, L), median (B, H) -> (B, H, Q).
    """

    def __init__(self, taus: list[float], dims: Dims, hidden: int = 32):
        super().__init__()
        if 0.5 not in taus or list(taus) != sorted(set(taus)):
            raise ValueError(f"taus must be sorted, distinct and hold 0.5; got {taus}")
        self.taus = list(taus)
        self.horizon = dims.horizon
        self.n_below = self.taus.index(0.5)  # levels under the median
        n_gaps = len(self.taus) - 1
        self.mlp = nn.Sequential(
            nn.Linear(dims.lookback + dims.horizon, hidden),
            nn.ReLU(),
            nn.Linear(hidden, dims.horizon * n_gaps),
        )
        with torch.no_grad():
            z = [0.5 * NormalDist().inv_cdf(t) for t in self.taus]  # (Q,)
            gaps = torch.tensor([b - a for a, b in itertools.pairwise(z)])  # (Q - 1,)
            inverse_softplus = gaps + torch.log(-torch.expm1(-gaps))
            self.mlp[-1].bias.copy_(inverse_softplus.repeat(dims.horizon))  # (H * (Q - 1),)

    def forward(self, y: torch.Tensor, median: torch.Tensor) -> torch.Tensor:
        B, H = median.shape
        gaps = F.softplus(self.mlp(torch.cat([y, median], dim=-1)))  # (B, H * (Q - 1))
        gaps = gaps.reshape(B, H, -1)  # (B, H, Q - 1), in order of tau
        below = gaps[..., : self.n_below].flip(-1).cumsum(-1).flip(-1)  # (B, H, Qb): distance under
        above = gaps[..., self.n_below :].cumsum(-1)  # (B, H, Qa): distance over
        m = median.unsqueeze(-1)  # (B, H, 1)
        return torch.cat([m - below, m, m + above], dim=-1)  # (B, H, Q)


def steps_with_covariates(y: torch.Tensor, x_past: torch.Tensor) -> torch.Tensor:
    """The lookback as a sequence of per-step features: y (B, L), x_past (B, L, C) -> (B, L, 1 + C)."""
    return torch.cat([y.unsqueeze(-1), x_past], dim=-1)


def check_patch(name: str, patch_len: int, stride: int, lookback: int) -> None:
    """Named error for a patch/segment that does not fit the lookback."""
    if patch_len > lookback:
        raise ConfigError(f"{name}: patch/segment length {patch_len} exceeds the lookback {lookback}")
    if stride < 1 or stride > patch_len:
        raise ConfigError(f"{name}: stride {stride} must be in 1..patch length {patch_len}")
