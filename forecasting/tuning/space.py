"""The search space: the dimensions a config declares, its grid, what a trial samples, the config
of one point, and the checks that reject a search before anything runs.

Pure: config in, dimensions/points/configs out; no study, storage or MLflow.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

import optuna

from forecasting.config import Config, ModelSpec, Range, SearchConfig, TrainingConfig, WindowConfig
from forecasting.errors import ConfigError, ForecastingError

TRAINING_DIMS = ("lr", "weight_decay", "batch_size", "warmup_fraction")
ARCH_DIMS = ("layers", "hidden", "activation", "dropout")
INTEGER_DIMS = ("batch_size", "lookback", "layers", "hidden")


@dataclass(frozen=True)
class Dimension:
    """One searched value: its name in the study and the setting it sets."""

    param: str  # name in the study: "lr" (shared) or "lstm.hidden" (one family's)
    key: str  # the setting: "lr", "hidden"
    where: Literal["training", "window", "model"]
    values: list[Any] | Range

    def grid(self) -> list[Any]:
        return list(self.values) if isinstance(self.values, list) else self.values.values()

    def suggest(self, trial: optuna.Trial) -> Any:
        v = self.values
        if isinstance(v, list):
            return trial.suggest_categorical(self.param, v)
        if self.key in INTEGER_DIMS or v.is_int:
            return trial.suggest_int(self.param, int(v.low), int(v.high), step=int(v.step or 1), log=v.log)
        return trial.suggest_float(self.param, v.low, v.high, step=v.step, log=v.log)


def _uses_training_loop(family: str) -> bool:
    from forecasting.models.registry import get_model_class

    return get_model_class(family).uses_training_loop


def family_dimensions(search: SearchConfig, family: str) -> list[Dimension]:
    """The dimensions of one family: training and window ones (its own or the shared ones), then
    its architecture. Families without the training loop (naive, ar) skip the training ones."""
    own, shared = search.families[family], search.space.dimensions()
    mine = own.dimensions()
    keys = (*TRAINING_DIMS, "lookback") if _uses_training_loop(family) else ("lookback",)
    dims = []
    for key in keys:
        where = "window" if key == "lookback" else "training"
        if key in mine:
            dims.append(Dimension(f"{family}.{key}", key, where, mine[key]))
        elif key in shared:
            dims.append(Dimension(key, key, where, shared[key]))
    arch = {k: mine[k] for k in ARCH_DIMS if k in mine} | dict(own.settings)
    dims += [Dimension(f"{family}.{key}", key, "model", values) for key, values in arch.items()]
    return dims


def grid_points(search: SearchConfig) -> list[dict[str, Any]]:
    """Every point of the declared grid, family by family in declaration order."""
    points = []
    for family in search.families:
        dims = family_dimensions(search, family)
        for combo in itertools.product(*(d.grid() for d in dims)):
            point = {"family": family} if len(search.families) > 1 else {}
            point.update({d.param: v for d, v in zip(dims, combo, strict=True)})
            points.append(point)
    return points


def suggest_params(trial: optuna.Trial, search: SearchConfig) -> dict[str, Any]:
    """Ask the trial for every dimension of its family (the family first, when there are several)."""
    families = list(search.families)
    family = trial.suggest_categorical("family", families) if len(families) > 1 else families[0]
    params = {"family": family} if len(families) > 1 else {}
    for dim in family_dimensions(search, family):
        params[dim.param] = dim.suggest(trial)
    return params


def trial_config(cfg: Config, params: dict[str, Any], label: str | None = None) -> tuple[Config, ModelSpec]:
    """The config and model of one point of the space: the base config with the point applied.

    Checkpoints are off (every trial would write the family's one checkpoint file).
    """
    search = cfg.search
    family = params.get("family", next(iter(search.families)))
    dims = family_dimensions(search, family)
    picked = {d.where: {} for d in dims}
    for d in dims:
        if d.param in params:
            picked[d.where][d.key] = params[d.param]
    training = TrainingConfig.model_validate(
        {
            **cfg.training.model_dump(),
            **picked.get("training", {}),
            "scale_lr": search.scale_lr,
            "checkpoint_dir": None,
            "resume": False,
        }
    )
    window = WindowConfig.model_validate({**cfg.window.model_dump(), **picked.get("window", {})})
    spec = ModelSpec(
        name=family, label=label, params={**search.families[family].params, **picked.get("model", {})}
    )
    return cfg.model_copy(update={"training": training, "window": window, "models": [spec]}), spec


def check_search(cfg: Config) -> None:
    """Reject a search that cannot run, before any study or run is created (``ConfigError``)."""
    from forecasting.models.registry import get_model_class, parse_settings

    search = cfg.search
    if not search.families:
        raise ConfigError("search.families is empty: declare at least one model family to search")
    if search.pruner != "none" and search.min_epochs > cfg.training.epochs:
        raise ConfigError(
            f"search.min_epochs ({search.min_epochs}) exceeds training.epochs ({cfg.training.epochs})"
        )
    for family, space in search.families.items():
        where = f"search.families.{family}"
        if family == "ensemble":
            raise ConfigError(
                f"{where}: an ensemble is weighed on a run's fitted models, not searched; search its "
                "members' families and add `- name: ensemble` to the models of the run that uses them"
            )
        try:
            get_model_class(family)
        except ForecastingError as err:
            raise ConfigError(f"{where}: {err}") from None
        parse_settings(family, dict(space.params), where)
        for dim in family_dimensions(search, family):
            if dim.where != "model":
                continue
            ends = dim.values if isinstance(dim.values, list) else [dim.values.low, dim.values.high]
            for value in ends:
                parse_settings(family, {**space.params, dim.key: value}, where)
