"""Model families by name. Flows and the CLI build models only through here.

A name stands for a class and the settings the name fixes: ``rnn``, ``lstm`` and ``gru`` are
one class, ``Recurrent``, each name presetting its ``cell``. A family's module is imported the
first time one of its names is asked for, so naming a family does not import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from forecasting.errors import ConfigError, UnknownModelError

if TYPE_CHECKING:
    from forecasting.config import ModelSpec
    from forecasting.models.base import DataSpec, Forecaster
    from forecasting.training.settings import TrainingConfig

F = TypeVar("F", bound=type)


@dataclass(frozen=True)
class Family:
    """Where a name's class lives (``module:Class``) and the settings the name fixes."""

    target: str
    preset: Mapping[str, Any] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]


_RECURRENT = "forecasting.models.recurrent:Recurrent"
FAMILIES: dict[str, Family] = {
    "naive": Family("forecasting.models.baselines:Naive"),
    "seasonal_naive": Family("forecasting.models.baselines:SeasonalNaive"),
    "ar": Family("forecasting.models.ar:AR"),
    "ets": Family("forecasting.models.ets:ETS"),
    "theta": Family("forecasting.models.theta:Theta"),
    "rnn": Family(_RECURRENT, {"cell": "rnn"}),
    "lstm": Family(_RECURRENT, {"cell": "lstm"}),
    "gru": Family(_RECURRENT, {"cell": "gru"}),
    "tcn": Family("forecasting.models.tcn:TCN"),
    "transformer": Family("forecasting.models.transformer:Transformer"),
    "linear": Family("forecasting.models.linear:Linear"),
    "ensemble": Family("forecasting.models.ensemble:Ensemble"),
}


def register(cls: F) -> F:
    """Class decorator: mark a family class, and check that a name of ``FAMILIES`` points at it."""
    target = f"{cls.__module__}:{cls.__qualname__}"
    if not any(f.target == target for f in FAMILIES.values()):
        raise TypeError(f"{target} is not in forecasting.models.registry.FAMILIES; add its name there")
    return cls


def available_models() -> list[str]:
    return sorted(FAMILIES)


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    return FAMILIES[name]


def get_model_class(name: str) -> type[Forecaster]:
    """The class behind a registry name (its module is imported now if it was not yet)."""
    module, _, cls = _family(name).target.partition(":")
    return getattr(importlib.import_module(module), cls)


def parse_settings(family: str | type[Forecaster], params: Mapping[str, Any], where: str) -> Any:
    """Validate a family's params against its settings dataclass (unknown keys are errors).

    ``family`` is a registry name, whose preset is merged in (a param that contradicts it is an
    error naming both), or a class, whose settings are taken as given.
    """
    if isinstance(family, str):
        cls, name, preset = get_model_class(family), family, _family(family).preset
    else:
        cls, name, preset = family, family.name or family.__name__, {}
    clash = {k: v for k, v in params.items() if k in preset and v != preset[k]}
    if clash:
        key, value = next(iter(clash.items()))
        raise ConfigError(
            f"{where} ({name}): params.{key} = {value!r} contradicts model {name!r}, which means "
            f"{key} = {preset[key]!r}; drop params.{key} or name the model you mean"
        )
    try:
        return TypeAdapter(cls.Settings).validate_python({**preset, **params})
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            if e["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
                problems.append(f"unknown key params.{loc}")
            else:
                problems.append(f"params.{loc}: {e['msg']}")
        raise ConfigError(f"{where} ({name}): " + "; ".join(problems)) from None


def validate_model_spec(spec: ModelSpec, where: str = "models") -> None:
    parse_settings(spec.name, spec.params, where)


def build_model(
    spec: ModelSpec,
    data: DataSpec,
    training: TrainingConfig | None = None,
    members: Mapping[str, Forecaster] | None = None,
) -> Forecaster:
    """A fresh (unfitted) model from a config entry. ``members``: an ensemble's already fitted
    members (a setting of the ensemble alone; None for every family, the ensemble included,
    builds it to train its own)."""
    settings = parse_settings(spec.name, spec.params, f"model {spec.run_name!r}")
    cls = get_model_class(spec.name)
    if members is None:
        return cls(settings, spec=data, training=training)
    return cls(settings, spec=data, training=training, members=members)
