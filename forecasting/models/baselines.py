"""Reference forecasts every model must beat: the last value, and the last season repeated."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from forecasting.data.windows import Windows
from forecasting.errors import ConfigError
from forecasting.models.base import EpochCallback, Forecaster
from forecasting.models.registry import register


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class NaiveSettings:
    pass


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class SeasonalNaiveSettings:
    season_length: int = Field(24, ge=1)  # steps per season (24 for hourly data with a daily cycle)


@register
class Naive(Forecaster):
    """Repeat the last observed value over the horizon."""

    name = "naive"
    Settings = NaiveSettings
    reads_calendar = False  # only y

    def _fit(
        self,
        train: pd.DataFrame,
        train_windows: Windows,
        val_windows: Windows | None,
        callbacks: list[EpochCallback],
    ) -> None:
        pass

    def _predict_windows(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        y = batch["y"]  # (N, L)
        return np.repeat(y[:, -1:], self.spec.horizon, axis=1)  # (N, H)


@register
class SeasonalNaive(Forecaster):
    """Repeat the last ``season_length`` observed values over the horizon."""

    name = "seasonal_naive"
    Settings = SeasonalNaiveSettings
    reads_calendar = False  # only y

    def _fit(
        self,
        train: pd.DataFrame,
        train_windows: Windows,
        val_windows: Windows | None,
        callbacks: list[EpochCallback],
    ) -> None:
        if self.settings.season_length > self.spec.lookback:
            raise ConfigError(
                f"seasonal_naive: season_length {self.settings.season_length} exceeds lookback "
                f"{self.spec.lookback}"
            )

    def _predict_windows(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        m = self.settings.season_length
        season = batch["y"][:, -m:]  # (N, m)
        reps = -(-self.spec.horizon // m)
        return np.tile(season, (1, reps))[:, : self.spec.horizon]  # (N, H)
