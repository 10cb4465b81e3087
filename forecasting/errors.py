"""The named errors a user of the pipeline can see.

Every error a user can cause with bad input or a bad config is an ``InputValidationError``
subclass: the CLI prints it as one line ``error: <ErrorName>: <message>`` and exits with
status 2. Messages say what was wrong, where (file, column, series, first offending rows or
timestamps) and, where it helps, what to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class ForecastingError(Exception):
    """Base class of every error raised on purpose by this package."""


class InputValidationError(ForecastingError):
    """Bad input data or configuration. The CLI exits with status 2."""


# --- configuration ---------------------------------------------------------------------------
class ConfigError(InputValidationError):
    """The configuration file is unreadable, has unknown keys or wrong values."""


# --- files and columns -----------------------------------------------------------------------
class UnreadableFileError(InputValidationError):
    """The data file is missing, of an unknown format, or cannot be parsed."""


class EmptyDataError(InputValidationError):
    """The data file holds no data rows."""


class MissingColumnError(InputValidationError):
    """A column named in the config is not in the data."""


class CovariateNotFoundError(MissingColumnError):
    """A covariate declared in the config is not in the data."""


class DuplicateColumnError(InputValidationError):
    """The same column name appears more than once in the header."""


class OutputPathError(InputValidationError):
    """The output path cannot be written: a folder, under a file, in a read-only folder."""


# --- timestamps --------------------------------------------------------------------------------
class TimestampParseError(InputValidationError):
    """Timestamps that cannot be parsed, or that mix several formats."""


class MixedTimezoneError(InputValidationError):
    """Timestamps mix time zones (or naive and zone-aware values)."""


class DSTTransitionError(InputValidationError):
    """Naive local times that are ambiguous or do not exist across a DST change."""


class UnsortedTimestampsError(InputValidationError):
    """Rows are not in time order within a series (repair policy `sort` fixes it)."""


class DuplicateTimestampError(InputValidationError):
    """The same timestamp appears more than once in one series."""


class MixedSeriesError(InputValidationError):
    """Several series appear to be mixed in one table without an id column."""


class IrregularSamplingError(InputValidationError):
    """The sampling interval is not regular, or timestamps are off the series' grid."""


class FrequencyMismatchError(InputValidationError):
    """The declared frequency does not match the data."""


class GapError(InputValidationError):
    """Missing timestamps inside a series (repair policy `fill_gaps` fills short ones)."""


# --- values ----------------------------------------------------------------------------------
class NonNumericValueError(InputValidationError):
    """Text or other non-numeric values in a numeric column."""


class NonFiniteValueError(InputValidationError):
    """+inf or -inf in a numeric column."""


class ValueOutOfRangeError(InputValidationError):
    """A value of magnitude above 1e30 (``ingest.MAX_ABS_VALUE``): float32 and the scaler overflow."""


class MissingValueError(InputValidationError):
    """NaN (empty cells) in the target or a covariate."""


class ConstantSeriesError(InputValidationError):
    """A series whose target never changes (zero variance on the training split)."""


class SeriesTooShortError(InputValidationError):
    """A series too short for the lookback, horizon and the validation/test splits."""


class StaticCovariateError(InputValidationError):
    """A covariate declared static whose value changes within a series."""


class FutureCovariateError(InputValidationError):
    """Future-known covariates do not cover the whole forecast horizon."""


class UnknownSeriesError(InputValidationError):
    """A series the model has no state for (and the model cannot forecast unseen series)."""


# --- models and training -----------------------------------------------------------------------
class NotFittedError(ForecastingError):
    """A model was asked to predict (or save) before it was fitted."""


class UnknownModelError(InputValidationError):
    """A model name that is not in the registry."""


class TrainingDivergedError(ForecastingError):
    """The loss or a gradient became non-finite; training stopped at once."""


class NonFiniteForecastError(ForecastingError):
    """A model produced NaN or infinite forecasts; nothing was written or returned."""


class ModelLoadError(ForecastingError):
    """A saved model directory is incomplete or was written by an incompatible version."""


class ModelIntegrityError(ModelLoadError):
    """A logged model's files differ from the hashes recorded when it was logged (changed,
    missing or extra files), or no hash was recorded; nothing of it was loaded."""


class TrackingError(ForecastingError):
    """The tracking store or the model registry refused an operation."""


class ArchiveError(ForecastingError):
    """The forecast archive's database cannot be opened, read or written (the message names its
    URL without the password), or a batch handed to it lacks what a row needs."""


def format_rows(rows: Iterable[Any], limit: int = 5) -> str:
    """Render the first `limit` offending rows/timestamps and how many more there are."""
    rows = list(rows)
    shown = ", ".join(str(r) for r in rows[:limit])
    more = len(rows) - limit
    return f"{shown} (+{more} more)" if more > 0 else shown


def where(series: str | None = None, column: str | None = None) -> str:
    """A short 'where' prefix: `column 'OT' of series 'a'`."""
    parts: list[str] = []
    if column is not None:
        parts.append(f"column {column!r}")
    if series is not None:
        parts.append(f"series {series!r}")
    return " of ".join(parts) if parts else "the data"


def names(values: Sequence[str]) -> str:
    return ", ".join(repr(v) for v in values)


class TrackingUnavailableError(TrackingError):
    """The tracking server or database did not answer (one short probe, not MLflow's retries)."""


class NoChampionError(InputValidationError):
    """Batch prediction asked for a registered model's alias (``champion`` by default) that no
    version holds yet, or for a registered model that does not exist yet."""


class NoPipelineRunError(InputValidationError):
    """No pipeline run where a command looked: no such experiment, an experiment without one, or
    a run id that is not a pipeline run."""
