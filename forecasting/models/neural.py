"""The one torch ``Forecaster``: a family's network inside instance normalisation, trained by the
one loop in ``forecasting.training``.

A deep family is a settings dataclass and an ``nn.Module`` built as ``Network(settings, dims)``
whose ``forward(y, x_past, x_future, static)`` returns (B, H) on the window-normalised scale::

    @register
    class TCN(NeuralForecaster):
        name = "tcn"
        Settings = TCNSettings
        Network = TCNNet

Everything else (seeding, training, prediction in batches, save/load of the state_dict, the
parameter count) lives here once, and so does the quantile head: with ``training.loss: quantile``
every family's network also outputs quantiles at the interval levels (``DataSpec.taus``) and the
median, trained with the pinball loss; its point forecast is then the median.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from torch import nn

from forecasting.data.windows import Windows
from forecasting.errors import ConfigError, ModelLoadError
from forecasting.models.base import EpochCallback, Forecaster
from forecasting.models.layers import (
    Activation,
    Dims,
    Init,
    Norm,
    QuantileHead,
    denormalise_window,
    normalise_window,
)
from forecasting.training.loop import (
    EVAL_BATCH,
    autocast,
    inference_device,
    num_threads,
    to_tensors,
    train,
)
from forecasting.training.randomness import GLOBAL_RNG, RandomStream, draws_in_training

WEIGHTS_FILE = "weights.pt"
TRAINING_FILE = "training.json"


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ArchitectureSettings:
    """The knobs every layered deep family shares; a family adds its own and sets its defaults."""

    hidden: int = Field(64, ge=1)  # width: units, channels or model dimension
    layers: int = Field(2, ge=1)  # depth
    activation: Activation = "relu"
    init: Init = "default"  # linear/conv weights; recurrent families add recurrent_init
    norm: Norm = "none"
    residual: bool = True
    dropout: float = Field(0.0, ge=0, lt=1)
    instance_norm: bool = True  # normalise each input window, reverse it on the output


class WindowNetwork(nn.Module):
    """Instance normalisation around a family's core: batch of windows -> (B, H), or with a
    ``quantile_head`` -> (B, H, Q) at the head's ``taus``, the core's output being the median.

    The target and the past-only covariates are centred and scaled by each window's own
    statistics: a test period whose level or spread differs from training (ETTh2's loads do)
    then looks like the training data. Future-known covariates (calendar, planned promotions)
    keep their global scaling: they are often constant within a window, and planned values
    must mean the same in every window.
    """

    def __init__(
        self,
        core: nn.Module,
        instance_norm: bool = True,
        n_past_only: int = 0,
        quantile_head: QuantileHead | None = None,
    ):
        super().__init__()
        self.core = core
        self.instance_norm = instance_norm
        self.n_past_only = n_past_only
        self.quantile_head = quantile_head

    @property
    def taus(self) -> list[float]:
        """The quantile levels along the output's last axis; empty: the output is (B, H)."""
        return self.quantile_head.taus if self.quantile_head is not None else []

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        y = batch["y"]  # (B, L)
        x_past = batch["x_past"]  # (B, L, Cp + Cf): past-only covariates first
        if self.instance_norm:
            y, loc, scale = normalise_window(y)  # (B, L), (B, 1), (B, 1)
            if self.n_past_only:
                p = self.n_past_only
                past = x_past[..., :p]  # (B, L, Cp)
                x_loc = past.mean(dim=1, keepdim=True)  # (B, 1, Cp)
                x_scale = torch.sqrt(past.var(dim=1, keepdim=True, unbiased=False) + 1e-5)
                x_past = torch.cat([(past - x_loc) / x_scale, x_past[..., p:]], dim=-1)
        out = self.core(y, x_past, batch["x_future"], batch["static"]).float()  # (B, H)
        if self.quantile_head is not None:
            out = self.quantile_head(y, out).float()  # (B, H, Q): the median among them
        return denormalise_window(out, loc, scale) if self.instance_norm else out


class NeuralForecaster(Forecaster):
    """Global, direct multi-horizon torch model. Subclasses set ``name``, ``Settings``, ``Network``.

    ``Settings`` must have ``instance_norm`` (``ArchitectureSettings`` does).
    """

    uses_training_loop = True
    Network: ClassVar[type[nn.Module]]
    network_: WindowNetwork | None = None  # the trained network, in eval mode

    @property
    def dims(self) -> Dims:
        s = self.spec
        return Dims(
            lookback=s.lookback,
            horizon=s.horizon,
            n_past=len(s.past) + len(s.future) + 2 * len(s.calendar),  # calendar: a (sin, cos) pair each
            n_future=len(s.future) + 2 * len(s.calendar),
            n_static=len(s.static),
        )

    @property
    def head_taus(self) -> list[float]:
        """The quantile head's levels (the intervals' and the median), or empty: no head.

        They follow from the training settings and the spec, both saved with the model, so
        ``load`` rebuilds the head its weights belong to.
        """
        if self.training.loss != "quantile":
            return []
        if not self.spec.taus:
            raise ConfigError(
                f"{self.name}: training.loss is quantile but there is no quantile level to learn; "
                "set intervals.levels or intervals.quantiles, or choose another training.loss"
            )
        return sorted({*self.spec.taus, 0.5})

    def build_network(self) -> WindowNetwork:
        """A fresh network for this model's settings and data (uses torch's global RNG)."""
        core = self.Network(self.settings, self.dims)
        taus = self.head_taus
        # built after the core, so a network without a head draws the same weights as before
        head = QuantileHead(taus, self.dims) if taus else None
        n_past_only = len(self.spec.past)
        return WindowNetwork(core, self.settings.instance_norm, n_past_only, quantile_head=head)

    def _meta(self) -> dict[str, Any]:
        meta = {
            "family": self.name,
            "settings": dataclasses.asdict(self.settings),
            "spec": dataclasses.asdict(self.spec),
        }
        if self.training.loss == "quantile":  # a checkpoint without the head must not resume with it
            meta["quantile_head"] = self.head_taus
        return meta

    # --- contract ------------------------------------------------------------------------------
    def _fit(
        self,
        train_frame: pd.DataFrame,
        train_windows: Windows,
        val_windows: Windows | None,
        callbacks: list[EpochCallback],
    ) -> None:
        cfg = self.training
        cuda = list(range(torch.cuda.device_count()))
        # Seed a private copy of torch's one generator (the caller's random state is left as it
        # was), held against models training in other threads (``randomness``); a network that
        # draws in training goes on with its own stream of it.
        taus = self.head_taus  # a quantile loss without levels fails here, before any work
        with num_threads(cfg.num_threads):
            with GLOBAL_RNG, torch.random.fork_rng(devices=cuda):
                torch.manual_seed(cfg.seed)
                network = self.build_network()
                stream = RandomStream(cuda) if draws_in_training(network) else None
            result = train(
                network,
                train_windows,
                val_windows,
                cfg,
                callbacks,
                name=self.name,
                meta=self._meta(),
                random_stream=stream,
                taus=taus,
            )
        self.network_ = network.eval()
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch

    @torch.no_grad()
    def _forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """The network's output for every window, in batches: (N, H), or (N, H, Q) with a head."""
        network = self.network_.eval()
        device = next(network.parameters()).device
        n = len(batch["y"])
        out = []
        with num_threads(self.training.num_threads):
            for i in range(0, n, EVAL_BATCH):
                part = to_tensors({k: v[i : i + EVAL_BATCH] for k, v in batch.items()}, device)
                with autocast(device, self.training.amp):
                    out.append(network(part).float().cpu().numpy())  # (b, H) or (b, H, Q)
        if out:
            return np.concatenate(out)
        n_quantiles = [len(network.taus)] if network.taus else []
        return np.zeros((0, self.spec.horizon, *n_quantiles), np.float32)

    def _predict_windows(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        out = self._forward(batch)
        taus = self.network_.taus
        return out[..., taus.index(0.5)] if taus else out  # (N, H): the median with a head

    def _predict_quantiles(self, batch: dict[str, np.ndarray], taus: list[float]) -> np.ndarray | None:
        """The head's quantiles at ``taus`` (levels it was trained for): (N, H, len(taus)) float64."""
        have = self.network_.taus
        if not have:
            return None
        missing = [t for t in taus if round(float(t), 10) not in have]
        if missing:
            raise ValueError(f"{self.name}: the quantile head has no level {missing}; it has {have}")
        idx = [have.index(round(float(t), 10)) for t in taus]
        return self._forward(batch)[..., idx].astype(np.float64)  # (N, H, len(taus))

    def _save_state(self, path: Path) -> None:
        torch.save(self.network_.state_dict(), path / WEIGHTS_FILE)
        (path / TRAINING_FILE).write_text(
            json.dumps({"history": self.history_, "best_epoch": self.best_epoch_}, indent=2)
        )

    def _network_aside(self) -> nn.Module:
        """A network built without touching anyone's random numbers: its initial weights are drawn
        from a private copy of torch's generator, held against a model training in another thread
        (``randomness``; loading a model for MLflow runs beside the other models' training)."""
        with GLOBAL_RNG, torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
            return self.build_network()

    def _load_state(self, path: Path) -> None:
        try:
            state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as err:
            raise ModelLoadError(f"{path}: cannot read {WEIGHTS_FILE} ({err})") from None
        network = self._network_aside()  # its random initial weights are replaced right away
        try:
            network.load_state_dict(state)
        except RuntimeError as err:
            raise ModelLoadError(f"{path}: weights do not fit the saved settings ({err})") from None
        self.network_ = network.to(inference_device(self.training.device)).eval()
        meta = json.loads((path / TRAINING_FILE).read_text()) if (path / TRAINING_FILE).exists() else {}
        self.history_ = meta.get("history", [])
        self.best_epoch_ = meta.get("best_epoch", 0)

    @property
    def n_params(self) -> int:
        """Trainable parameters (known before fitting too: the sizes come from the spec)."""
        network = self.network_ if self.network_ is not None else self._network_aside()
        return sum(p.numel() for p in network.parameters() if p.requires_grad)
