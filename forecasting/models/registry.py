"""Model families by name. Flows and the CLI build models only through here."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import TypeAdapter, ValidationError

from forecasting.config import ModelSpec, TrainingConfig
from forecasting.errors import ConfigError, UnknownModelError
from forecasting.models.base import DataSpec, Forecaster

_REGISTRY: dict[str, type[Forecaster]] = {}
# Where each family lives; a module is imported the first time one of its names is asked for.
_FAMILY_MODULES = {
    "naive": "forecasting.models.baselines",
    "seasonal_naive": "forecasting.models.baselines",
    "ar": "forecasting.models.ar",
    "rnn": "forecasting.models.recurrent",
    "lstm": "forecasting.models.recurrent",
    "gru": "forecasting.models.recurrent",
    "tcn": "forecasting.models.tcn",
    "transformer": "forecasting.models.transformer",
    "linear": "forecasting.models.linear",
    "ensemble": "forecasting.models.ensemble",
}


def register(cls: type[Forecaster]) -> type[Forecaster]:
    """Class decorator: make a family available by its ``name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def available_models() -> list[str]:
    return sorted(_FAMILY_MODULES)


def get_model_class(name: str) -> type[Forecaster]:
    if name not in _FAMILY_MODULES:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    if name not in _REGISTRY:
        importlib.import_module(_FAMILY_MODULES[name])
    return _REGISTRY[name]


def parse_settings(cls: type[Forecaster], params: dict[str, Any], where: str) -> Any:
    """Validate a family's params against its settings dataclass (unknown keys are errors)."""
    try:
        return TypeAdapter(cls.Settings).validate_python(params)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            if e["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
                problems.append(f"unknown key params.{loc}")
            else:
                problems.append(f"params.{loc}: {e['msg']}")
        raise ConfigError(f"{where} ({cls.name}): " + "; ".join(problems)) from None


def validate_model_spec(spec: ModelSpec, where: str = "models") -> None:
    parse_settings(get_model_class(spec.name), spec.params, where)


def build_model(spec: ModelSpec, data: DataSpec, training: TrainingConfig | None = None) -> Forecaster:
    """A fresh (unfitted) model from a config entry."""
    cls = get_model_class(spec.name)
    settings = parse_settings(cls, spec.params, f"model {spec.run_name!r}")
    return cls(settings, spec=data, training=training)
