"""Typed configuration, validated once at the YAML boundary.

A config has one section per concern (data, split, window, models, training, tracking). Unknown
keys anywhere are an error (`ConfigError`) naming the key and where it sits, so a typo never
silently falls back to a default. The resolved config is logged with every run and saved with
every model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from forecasting.data.calendar import CALENDAR_FEATURES, unknown_calendar_features
from forecasting.errors import ConfigError

# The training section lives with the loop (the models import it without this module); it is
# re-exported here with the other sections.
from forecasting.training.settings import TrainingConfig

Role = Literal["past", "future", "static"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RepairPolicy(_Section):
    """Repairs applied to the input, each only when asked for. The default repairs nothing."""

    sort: bool = False
    drop_duplicates: bool = False  # exact duplicate rows only; conflicting duplicates always raise
    fill_gaps: Literal["ffill", "interpolate", "zero"] | None = None
    max_gap: int = Field(0, ge=0, description="longest run of missing steps that is filled")
    trim_nan: bool = False  # drop leading/trailing rows whose target is NaN

    @model_validator(mode="after")
    def _gap_needs_method(self) -> RepairPolicy:
        if self.max_gap > 0 and self.fill_gaps is None:
            raise ValueError("max_gap > 0 needs fill_gaps: ffill, interpolate or zero")
        return self


class DataConfig(_Section):
    """Where the table is and what each column means.

    Long format: ``id_column`` names the series and ``target`` is one column.
    Wide format: ``target`` is a list of columns, each one a series (ETT's seven columns).
    """

    path: Path
    format: Literal["auto", "csv", "parquet"] = "auto"
    time_column: str = "t"
    target: str | list[str] = "y"
    id_column: str | None = None
    covariates: dict[str, Role] = Field(default_factory=dict)
    freq: str | None = None  # pandas offset alias ("h", "15min", "D"); inferred when absent
    timezone: str | None = None  # IANA zone of naive local timestamps ("Europe/Berlin")
    repair: RepairPolicy = RepairPolicy()

    @property
    def targets(self) -> list[str]:
        return [self.target] if isinstance(self.target, str) else list(self.target)

    @property
    def is_wide(self) -> bool:
        return not isinstance(self.target, str)

    def covariates_with(self, role: Role) -> list[str]:
        return [c for c, r in self.covariates.items() if r == role]

    @model_validator(mode="after")
    def _check_roles(self) -> DataConfig:
        if self.is_wide and self.id_column is not None:
            raise ValueError("a list of targets (wide format) cannot be combined with id_column")
        if not self.targets:
            raise ValueError("target must name at least one column")
        clash = set(self.targets) & set(self.covariates)
        if clash:
            raise ValueError(f"columns {sorted(clash)} are declared both target and covariate")
        for col in (self.time_column, self.id_column):
            if col is not None and (col in self.targets or col in self.covariates):
                raise ValueError(f"column {col!r} has two roles")
        return self


class SplitConfig(_Section):
    """Train/val/test by time, per series.

    ``borders``: absolute end rows of train, val and test (the ETT protocol: 8640, 11520, 14400).
    ``fractions``: train and test fractions of each series, val is the rest (0.7 / 0.2).
    ``counts``: from the end of each series, the forecasting competitions' protocol: test is the
    last ``test_horizons`` x horizon rows, validation the ``val_horizons`` x horizon rows before,
    train the rest, so series of any length keep the same evaluation periods.
    Validation and test windows start ``lookback`` rows early so their first window has full
    history; their first *target* lies on the border.
    """

    method: Literal["borders", "fractions", "counts"] = "fractions"
    borders: tuple[int, int, int] | None = None
    train_fraction: float = Field(0.7, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    val_horizons: int = Field(3, ge=1, description="counts: validation rows in horizons")
    test_horizons: int = Field(1, ge=1, description="counts: test rows in horizons")

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.method == "borders":
            if self.borders is None:
                raise ValueError("method 'borders' needs borders: [train_end, val_end, test_end]")
            a, b, c = self.borders
            if not 0 < a < b < c:
                raise ValueError(f"borders must increase: got {list(self.borders)}")
        elif self.train_fraction + self.test_fraction >= 1:
            raise ValueError("train_fraction + test_fraction must leave room for validation")
        return self


class WindowConfig(_Section):
    """``lookback``: steps of history a model reads; ``auto`` (the default) reads the data
    (``forecasting.pipeline.defaults``). ``stride``: step between training windows;
    ``eval_stride``: between validation and test windows.
    ``pad_short``: a series too short for a window is padded at its start with its first value
    (by at most a lookback, so every scored target is a real row) instead of being refused, in a
    ``counts`` split and at prediction time."""

    lookback: int | Literal["auto"] = "auto"
    horizon: int = Field(96, ge=1)
    stride: int = Field(1, ge=1, description="step between training windows")
    # Step between the validation and test windows (early stopping's too), counted back from each
    # period's end: 1 scores every origin (the ETT protocol); a horizon gives the competitions'
    # non-overlapping origins, one per validation fold, and divides the cost of scoring by it.
    # ``auto`` (forecasting.pipeline.defaults.auto_eval_stride): 1, except a ``counts`` split of
    # so many series that every origin would exceed the scoring budget: the horizon there.
    eval_stride: int | Literal["auto"] = Field("auto", description="step between validation and test windows")
    pad_short: bool = True

    @field_validator("lookback", "eval_stride")
    @classmethod
    def _positive(cls, value: int | str, info: Any) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"{info.field_name} must be at least 1 (or 'auto'): got {value}")
        return value


class FeaturesConfig(_Section):
    """Features derived from the data, for the deep families (``forecasting.data.calendar``).

    ``calendar``: ``auto`` (the default) picks the calendar features the data's frequency
    resolves (the cycles within its season: hour_of_day for hourly data, day_of_week for daily);
    ``none`` turns them off; a list names
    them (minute_of_hour, hour_of_day, day_of_week, day_of_month, day_of_year, week_of_year,
    month_of_year). They are future-known covariates recomputed from the timestamps at
    prediction, so the resolved names are saved with every model and predicting needs no new input.
    """

    calendar: Literal["auto", "none"] | list[str] = "auto"

    @field_validator("calendar", mode="before")
    @classmethod
    def _known_names(cls, calendar: Any) -> Any:
        allowed = f"auto, none or a list of {list(CALENDAR_FEATURES)}"
        if isinstance(calendar, str) and calendar not in ("auto", "none"):
            raise ValueError(f"calendar {calendar!r} is not {allowed}")
        if isinstance(calendar, list | tuple):
            unknown = unknown_calendar_features([str(n) for n in calendar])
            if unknown:
                raise ValueError(f"unknown calendar feature(s) {unknown}; use {allowed}")
            if len(set(calendar)) != len(calendar):
                raise ValueError(f"calendar {list(calendar)} names a feature twice")
        return calendar


class ModelSpec(_Section):
    """One model to train: a registry name and that family's own settings."""

    name: str
    label: str | None = None  # run name; defaults to the registry name
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("label")
    @classmethod
    def _label_is_a_name(cls, label: str | None) -> str | None:
        # It names the MLflow run and keys the params that refer to it (an ensemble's weights).
        if label is not None and not re.fullmatch(r"[\w.\-]{1,100}", label):
            raise ValueError(
                f"label {label!r}: use 1-100 letters, digits, '_', '.' or '-' (it names the model's run)"
            )
        return label

    @property
    def run_name(self) -> str:
        return self.label or self.name


class SelectionConfig(_Section):
    """From "selected" to "deployed".

    ``refit``: after selection, the chosen model (an ensemble: each of its members, with the
    ensemble's weights kept) is trained again on every row up to the end of the data, for the
    number of epochs that selection found (its best epoch; no early stopping on rows it trains
    on), with a scaler fit on those rows. That refit is its own MLflow run, linked to the run
    that evaluated it, and is what gets registered and served. The champion gate still compares
    the evaluated models, on validation rows neither trained on.
    """

    refit: bool = True


def _distinct_between(values: list[float], top: float, name: str, what: str) -> list[float]:
    """``values`` sorted, each strictly between 0 and ``top`` and none twice."""
    bad = [v for v in values if not 0 < v < top]
    if bad:
        raise ValueError(f"{name} {bad} are not {what} strictly between 0 and {top:g}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} {values} name a value twice")
    return sorted(float(v) for v in values)


class IntervalsConfig(_Section):
    """Prediction intervals and quantiles (``forecasting.evaluation.intervals``).

    ``levels``: central interval levels in percent; every forecast gains ``yhat_lo_<level>`` and
    ``yhat_hi_<level>``. ``quantiles``: extra quantile columns ``q<tau>`` (e.g. 0.1 -> ``q0.1``).
    Both empty: point forecasts only. ``method``: ``conformal`` (the default) starts every family's
    bands from its point forecast; ``native`` starts them from the family's own quantiles where it
    has them (AR's analytic bands, a deep family trained with ``training.loss: quantile``). Either
    way the bands are calibrated by split conformal on the validation windows, rows the model did
    not train on. The default is conformal because a family's own bands carry its assumptions (AR's:
    Gaussian errors of the training period's variance) where residual bands scaled by the window
    follow the data's volatility (bench/BENCHMARKS.md section 10). ``scale``: what each residual is
    divided by, measured on its window's lookback, so that one table of offsets serves series of any
    level and a calm stretch as well as a stormy one: ``naive`` (the default) the mean absolute
    first difference (MASE's scale, on the input itself), ``seasonal`` the mean absolute seasonal
    difference, ``std`` the standard deviation, ``none`` nothing (each series' training scale only).
    """

    levels: list[float] = Field(default_factory=lambda: [80.0, 95.0])
    quantiles: list[float] = Field(default_factory=list)
    method: Literal["conformal", "native"] = "conformal"
    scale: Literal["naive", "seasonal", "std", "none"] = "naive"

    @field_validator("levels")
    @classmethod
    def _levels_in_range(cls, levels: list[float]) -> list[float]:
        return _distinct_between(levels, 100, "levels", "percentages")

    @field_validator("quantiles")
    @classmethod
    def _quantiles_in_range(cls, quantiles: list[float]) -> list[float]:
        return _distinct_between(quantiles, 1, "quantiles", "quantile levels")

    @property
    def enabled(self) -> bool:
        return bool(self.levels or self.quantiles)


class MonitoringConfig(_Section):
    """The operating loop after the champion (``forecasting.monitoring``): the forecast archive,
    accuracy against arriving actuals, and the rules that retrain.

    ``archive``: append every batch prediction to the archive (true). ``archive_uri``: a
    SQLAlchemy URL (``postgresql+psycopg2://...``); default a SQLite file beside the MLflow
    SQLite store (``mlruns/forecast_archive.db``). The rules, each judged per model version over
    the most recent ``window`` forecast origins that have actuals:

    - ``error_factor``: the rolling MAE above this multiple of the MAE the selection backtest
      expected (the evaluated model's ``val_mae_orig``) for ``patience`` origins in a row;
    - ``coverage_drop``: the rolling coverage of an interval level below nominal by more than this
      many percentage points for ``patience`` origins in a row;
    - ``drift``: the actuals of the window against every stretch of the same length before it,
      per series: the mean more than ``drift`` standard deviations of those stretches' means from
      their average, or the spread more than a factor ``1 + drift`` off their median spread.

    ``retrain``: what a firing rule does besides a log line, a Prefect event and a tag on the model
    version: ``pipeline`` (the default) runs the forecast pipeline on the config (its ``data.path``,
    the file that collects the arriving data), or the deployment ``retrain_deployment`` names
    (``flow-name/deployment-name``) when set; ``never`` only reports.
    One retrain per firing: a version is not retrained again within ``window`` origins of its
    last retrain (a champion whose retrain lost the gate and that fires again later is retrained
    again).
    """

    archive: bool = True
    archive_uri: str | None = None
    window: int = Field(7, ge=1)
    patience: int = Field(3, ge=1)
    error_factor: float | None = Field(1.5, gt=1)
    coverage_drop: float | None = Field(10.0, gt=0, lt=100)
    drift: float | None = Field(3.0, gt=0)
    retrain: Literal["pipeline", "never"] = "pipeline"
    retrain_deployment: str | None = None  # "flow-name/deployment-name"


class TrackingConfig(_Section):
    tracking_uri: str | None = None  # default: sqlite:///<project>/mlruns/mlflow.db
    experiment: str = "forecasting"
    registered_model: str = "forecaster"
    selection_metric: str = "val_mse"
    log_models: bool = True


class ScheduleSpec(_Section):
    """A cron-scheduled deployment served by `forecast serve` (and declared in prefect.yaml)."""

    flow: Literal["forecast_pipeline", "train", "batch_predict", "monitor"]
    cron: str
    name: str | None = None
    timezone: str = "UTC"


class OrchestrationConfig(_Section):
    """How the flows run: one machine by default, Dask when an address or local cluster is given."""

    max_workers: int | None = Field(None, ge=1)  # concurrent training tasks; default: one per core
    dask_address: str | None = None  # tcp://host:8786 of a running dask.distributed scheduler
    dask_local_workers: int | None = Field(None, ge=1)  # start a LocalCluster of this many processes
    # Series per validation task on Dask: with either of the two above, a table of more series is
    # validated in chunks of this many series on the workers (``ingest.ingest_in_chunks``).
    validate_chunk_series: int = Field(10_000, ge=1)
    # Windows per scoring task on Dask: a model trained on a worker (dask_address) forecasts a
    # validation or test pass of more windows than this in chunks on the cluster's workers.
    score_chunk_windows: int = Field(100_000, ge=1)
    schedules: list[ScheduleSpec] = Field(default_factory=list)


class PredictConfig(_Section):
    """Batch prediction defaults (``forecast predict`` options override them)."""

    model: str | None = None  # NAME, NAME@alias or NAME/version; default: registered_model@champion
    input: Path | None = None  # default: the training data
    output: Path = Path("outputs/forecast.csv")
    # Series per chunk: each chunk is validated, forecast and written (a Parquet row group) in turn,
    # and on Dask (orchestration.dask_address / dask_local_workers) is one task on a worker.
    chunk_series: int = Field(10_000, ge=1)


# --- hyper-parameter and architecture search -----------------------------------------------------
class Range(_Section):
    """A numeric search range ``{low, high}``, optionally on a log scale or in steps of ``step``.

    Integers stay integers: ``{low: 32, high: 128, step: 32}`` means 32, 64, 96 or 128. The grid
    sampler enumerates a range only when it has a ``step``; a list is enumerated as written.
    """

    low: int | float
    high: int | float
    step: int | float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("a range takes log or step, not both")
        return self

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high, self.step) if v is not None)

    def values(self) -> list[int | float]:
        """Every point of a stepped range, low first (the grid sampler's view of it)."""
        if self.step is None:
            raise ValueError("a range without step cannot be enumerated")
        n = int((self.high - self.low) / self.step + 1e-9) + 1
        points = [self.low + i * self.step for i in range(n)]
        return points if self.is_int else [round(float(v), 12) for v in points]


Choices = Annotated[list[Any], Field(min_length=1)]
FloatDim = Annotated[list[float], Field(min_length=1)] | Range
IntDim = Annotated[list[int], Field(min_length=1)] | Range


def _dim_bounds(dim: list[Any] | Range) -> tuple[float, float]:
    return (dim.low, dim.high) if isinstance(dim, Range) else (min(dim), max(dim))


class SpaceConfig(_Section):
    """Training and window dimensions: shared by every family, or one family's own override.

    ``lr`` is the base rate at ``training.base_batch_size``; each trial's peak rate is scaled
    linearly to its ``batch_size`` (``SearchConfig.scale_lr``). ``warmup_fraction`` is the warm-up
    length as a fraction of the training steps. A dimension left out keeps the config's value.
    """

    lr: FloatDim | None = None
    weight_decay: FloatDim | None = None
    batch_size: IntDim | None = None
    warmup_fraction: FloatDim | None = None
    lookback: IntDim | None = None

    # (name, smallest, largest (exclusive when a float), integer-valued)
    _BOUNDS: ClassVar[dict[str, tuple[float, float, bool]]] = {
        "lr": (0.0, float("inf"), False),
        "weight_decay": (0.0, float("inf"), False),
        "batch_size": (1, float("inf"), True),
        "warmup_fraction": (0.0, 1.0, False),
        "lookback": (1, float("inf"), True),
        "layers": (1, float("inf"), True),
        "hidden": (1, float("inf"), True),
        "dropout": (0.0, 1.0, False),
    }

    @model_validator(mode="after")
    def _check_bounds(self) -> SpaceConfig:
        for name, (lo, hi, integer) in self._BOUNDS.items():
            dim = getattr(self, name, None)
            if dim is None:
                continue
            if integer and isinstance(dim, Range) and not dim.is_int:
                raise ValueError(f"{name}: an integer dimension needs an integer range, got {dim}")
            low, high = _dim_bounds(dim)
            if name == "lr" and low <= 0:
                raise ValueError(f"lr must be > 0, got {low}")
            if low < lo or high > hi or (not integer and hi == 1.0 and high >= 1.0):
                raise ValueError(f"{name} must lie in [{lo}, {hi}), got {low}..{high}")
        return self

    def dimensions(self) -> dict[str, list[Any] | Range]:
        """The declared dimensions by name, in declaration order (unset ones left out)."""
        return {k: v for k, v in self if v is not None and k not in ("settings", "params")}


class FamilySpace(SpaceConfig):
    """One family's part of the search: its architecture dimensions and fixed settings.

    ``layers`` (depth), ``hidden`` (width), ``activation`` and ``dropout`` map onto the family's
    settings of those names; ``settings`` searches any other setting of the family (``kernel_size``,
    ``heads``, ``kind``); ``params`` fixes settings for every trial of the family. The training and
    window dimensions, when given here, replace the shared ones for this family.
    """

    layers: IntDim | None = None
    hidden: IntDim | None = None
    activation: Annotated[list[str], Field(min_length=1)] | None = None
    dropout: FloatDim | None = None
    settings: dict[str, Choices | Range] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_names(self) -> FamilySpace:
        named = {"layers", "hidden", "activation", "dropout"} & set(self.settings)
        if named:
            raise ValueError(f"settings {sorted(named)} have their own keys; declare them there")
        clash = set(self.params) & (set(self.settings) | set(self.dimensions()))
        if clash:
            raise ValueError(f"{sorted(clash)} are both fixed (params) and searched")
        return self


class SearchConfig(_Section):
    """Hyper-parameter and architecture search (``forecast tune``, ``forecasting/tuning/``).

    ``families`` names the model families to search among (the family is itself a categorical
    dimension when there are several); ``space`` holds the training/window dimensions they share.
    Budget: ``n_trials`` (the study's total across workers and resumes) and/or ``timeout_s`` (wall
    time of one ``tune`` call: no trial starts after it); the grid sampler's default budget is
    its whole grid.
    """

    sampler: Literal["grid", "random", "tpe"] = "tpe"
    pruner: Literal["hyperband", "successive_halving", "none"] = "hyperband"
    n_trials: int | None = Field(None, ge=1)
    timeout_s: float | None = Field(None, gt=0)
    seed: int = 0
    min_epochs: int = Field(1, ge=1)  # pruner: epochs a trial runs before it can be pruned
    reduction_factor: int = Field(3, ge=2)  # pruner: 1 in reduction_factor trials goes on per rung
    startup_trials: int = Field(10, ge=0)  # tpe: random trials before its model takes over
    scale_lr: bool = True  # each trial's lr scaled linearly to its batch size
    study_name: str | None = None  # default: <experiment>-<fingerprint of space, data, training>
    storage: str | None = None  # database URL; default: SQLite beside the MLflow store (mlruns/)
    n_workers: int | None = Field(None, ge=1)  # parallel workers; default: Dask's worker count or 1
    heartbeat_s: int = Field(30, ge=1)  # a trial silent for 4 heartbeats is failed and re-queued
    retrain_best: bool = True  # retrain the best trial and put it through the champion gate
    space: SpaceConfig = SpaceConfig()
    families: dict[str, FamilySpace] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> SearchConfig:
        if not self.families:
            return self  # no search declared: nothing to check until `forecast tune` runs
        if self.sampler != "grid" and self.n_trials is None and self.timeout_s is None:
            raise ValueError(f"sampler {self.sampler!r} needs a budget: n_trials and/or timeout_s")
        if self.sampler == "grid":
            spaces = {"space": self.space, **{f"families.{k}": v for k, v in self.families.items()}}
            for where, space in spaces.items():
                dims = {**space.dimensions(), **getattr(space, "settings", {})}
                for name, dim in dims.items():
                    if isinstance(dim, Range) and dim.step is None:
                        raise ValueError(
                            f"{where}.{name}: the grid sampler needs a list or a range with step"
                        )
        return self


class Config(_Section):
    data: DataConfig
    split: SplitConfig = SplitConfig()
    window: WindowConfig = WindowConfig()
    features: FeaturesConfig = FeaturesConfig()
    models: list[ModelSpec] = Field(default_factory=lambda: [ModelSpec(name="naive")])
    training: TrainingConfig = TrainingConfig()
    tracking: TrackingConfig = TrackingConfig()
    selection: SelectionConfig = SelectionConfig()
    intervals: IntervalsConfig = IntervalsConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    predict: PredictConfig = PredictConfig()
    search: SearchConfig = SearchConfig()

    @field_validator("models")
    @classmethod
    def _unique_labels(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        seen: set[str] = set()
        for m in models:
            if m.run_name in seen:
                raise ValueError(f"two models share the name {m.run_name!r}; give one a label")
            seen.add(m.run_name)
        return models

    @model_validator(mode="after")
    def _quantile_loss_needs_levels(self) -> Config:
        if self.training.loss == "quantile" and not self.intervals.enabled:
            raise ValueError(
                "training.loss is quantile but intervals.levels and intervals.quantiles are both "
                "empty: the quantile head has no level to learn"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _format_validation_error(err: ValidationError, source: str) -> str:
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<top>"
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown key {loc!r}")
        elif e["type"] == "missing":
            problems.append(f"missing key {loc!r}")
        else:
            problems.append(f"{loc}: {e['msg']}")
    return f"{source}: " + "; ".join(problems)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(raw: dict[str, Any], *, source: str = "config", base_dir: Path | None = None) -> Config:
    """Validate a raw mapping. Relative data paths resolve against ``base_dir``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None
    if base_dir is not None and not cfg.data.path.is_absolute():
        data = cfg.data.model_copy(update={"path": (base_dir / cfg.data.path).resolve()})
        cfg = cfg.model_copy(update={"data": data})
    if base_dir is not None and cfg.predict.input is not None and not cfg.predict.input.is_absolute():
        predict = cfg.predict.model_copy(update={"input": (base_dir / cfg.predict.input).resolve()})
        cfg = cfg.model_copy(update={"predict": predict})
    _check_model_params(cfg, source)
    return cfg


def _check_model_params(cfg: Config, source: str) -> None:
    # Imported here: each family's module is imported (torch with the deep ones) to check its params.
    from forecasting.models.registry import validate_model_spec

    for i, spec in enumerate(cfg.models):
        validate_model_spec(spec, where=f"{source}: models[{i}]")
    runs = [m.run_name for m in cfg.models if m.name != "ensemble"]
    for i, spec in enumerate(cfg.models):
        if spec.name == "ensemble" and not runs:
            raise ConfigError(f"{source}: models[{i}] (ensemble): the config has no other model to combine")
        members = spec.params.get("members", []) if spec.name == "ensemble" else []
        unknown = [m for m in members if m not in runs]
        if unknown:
            raise ConfigError(
                f"{source}: models[{i}] (ensemble): members {unknown} are not models of this config "
                f"(its models: {runs})"
            )


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config; ``overrides`` (nested mapping) win over the file.

    Relative ``data.path`` values are resolved against the config file's folder.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config {str(path)!r}: {err.strerror or err}") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if overrides:
        raw = _merge(raw, overrides)
    return config_from_dict(raw, source=str(path), base_dir=path.resolve().parent)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
