"""Model families by name. Flows and the CLI build models only through here."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import ValidationError
from pydantic import TypeAdapter

from forecasting.config import ModelSpec, TrainingConfig
from forecasting.errors import ConfigError, UnknownModelError
from forecasting.models.base import DataSpec, Forecaster

_REGISTRY: dict[str, type[Forecaster]] = {}
# Modules whose import registers families (imported lazily: torch is heavy).
_FAMILY_MODULES = (
    "forecasting.models.baselines",
    "forecasting.models.ar",
    "forecasting.models.recurrent",
    "forecasting.models.tcn",
    "forecasting.models.transformer",
    "forecasting.models.linear",
)
_loaded = False


def register(cls: type[Forecaster]) -> type[Forecaster]:
    """Class decorator: make a family available by its ``name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def _load_families() -> None:
    global _loaded
    if _loaded:
        return
    for module in _FAMILY_MODULES:
        importlib.import_module(module)
    _loaded = True


def available_models() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[Forecaster]:
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


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
