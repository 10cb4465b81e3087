"""Calendar features: cyclic encodings of where each timestamp sits in the hour, day, week and year.

They are known for any future timestamp, so the deep families take them as future-known
covariates: over the horizon and, like every future-known covariate, over the lookback too. They
are derived from the timestamps alone, so a saved model recomputes them at prediction time from
the history's timestamps and the frequency (the user supplies nothing new), and they are the same
pure function of time in every split and every series (no fitting, no scaling, nothing to leak).

Each feature is a position ``p`` in ``[0, 1)`` along its cycle, encoded as the pair
``sin(2 pi p), cos(2 pi p)`` in ``[-1, 1]``, so the end of a cycle sits next to its start
(23:00 next to 00:00, December next to January):

==================  ============================================================================
``minute_of_hour``  minute / 60
``hour_of_day``     hour / 24 (06:00 -> sin 1, cos 0)
``day_of_week``     weekday / 7, Monday = 0
``day_of_month``    (day - 1) / days in that month
``day_of_year``     (day of year - 1) / days in that year
``week_of_year``    (ISO week - 1) / 52 (week 53 lands on week 1, its neighbour)
``month_of_year``   (month - 1) / 12
==================  ============================================================================

Each position counts whole units (an hourly step at 06:30 is hour 6): the finer units carry the
rest. Timestamps are read on their own wall clock: naive ones as they are, zone-aware ones in their
zone (ingest stores zone-aware data in UTC, so its features are UTC's).

``auto_calendar(freq)`` places each step within the data's season, the cycle the frequency
implies (the day for sub-daily steps, the week for daily ones, the year for weekly, monthly and
quarterly ones): one feature per natural cycle finer than or equal to that season and coarser
than the step (spanning at least two steps). Longer cycles are left out: a feature whose cycle
outlasts the season changes little within a training window and was seen in too few cycles to
be learnt, so a network fits noise with it. ``day_of_month`` and ``day_of_year`` are never chosen
automatically; name them (or any list) to use them.

============  ==============================================
``15min``     minute_of_hour, hour_of_day
``h``         hour_of_day
``D``, ``B``  day_of_week
``W``         week_of_year
``MS``, ``QS`` month_of_year
``YS``        none (no cycle between the step and a season)
============  ==============================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

# name -> position along the cycle in [0, 1), vectorised over a DatetimeIndex
_POSITIONS: dict[str, Callable[[pd.DatetimeIndex], np.ndarray]] = {
    "minute_of_hour": lambda t: t.minute.to_numpy() / 60.0,
    "hour_of_day": lambda t: t.hour.to_numpy() / 24.0,
    "day_of_week": lambda t: t.day_of_week.to_numpy() / 7.0,
    "day_of_month": lambda t: (t.day.to_numpy() - 1) / t.days_in_month.to_numpy(),
    "day_of_year": lambda t: (t.day_of_year.to_numpy() - 1) / np.where(t.is_leap_year, 366.0, 365.0),
    "week_of_year": lambda t: (t.isocalendar().week.to_numpy(dtype=np.int64) - 1) / 52.0,
    "month_of_year": lambda t: (t.month.to_numpy() - 1) / 12.0,
}
CALENDAR_FEATURES: tuple[str, ...] = tuple(_POSITIONS)

_HOUR, _DAY, _WEEK = pd.Timedelta(hours=1), pd.Timedelta(days=1), pd.Timedelta(days=7)
_YEAR = pd.Timedelta(days=365.25)
# The cycles shorter than a year, each with the feature that places a step in it.
_SUB_YEARLY = ((_HOUR, "minute_of_hour"), (_DAY, "hour_of_day"), (_WEEK, "day_of_week"))


def unknown_calendar_features(names: Sequence[str]) -> list[str]:
    """The names in ``names`` that are not calendar features (empty when all are)."""
    return [n for n in names if n not in _POSITIONS]


def calendar_features(t: np.ndarray | pd.DatetimeIndex | pd.Series, names: Sequence[str]) -> np.ndarray:
    """Cyclic encodings of timestamps ``t`` of any shape ``(...)`` -> float32 ``(..., 2 * len(names))``.

    Columns come in ``names`` order, a ``(sin, cos)`` pair per feature. Raises ``ValueError`` for
    a name outside ``CALENDAR_FEATURES``.
    """
    unknown = unknown_calendar_features(names)
    if unknown:
        raise ValueError(f"unknown calendar feature(s) {unknown}; choose from {list(CALENDAR_FEATURES)}")
    shape = np.shape(t)
    index = t if isinstance(t, pd.DatetimeIndex) else pd.DatetimeIndex(np.ravel(t) if len(shape) != 1 else t)
    out = np.empty((len(index), 2 * len(names)), dtype=np.float32)  # (T, 2k)
    for i, name in enumerate(names):
        angle = 2 * np.pi * np.asarray(_POSITIONS[name](index), dtype=np.float64)  # (T,)
        out[:, 2 * i] = np.sin(angle)
        out[:, 2 * i + 1] = np.cos(angle)
    return out.reshape(*shape, 2 * len(names))


def step_length(freq: str) -> pd.Timedelta:
    """The mean length of one step of ``freq`` (a month is ~30.4 days, a business day ~1.4)."""
    offset = to_offset(freq)
    span = pd.date_range("2001-01-01", periods=13, freq=offset)  # 12 steps from a Monday
    return (span[-1] - span[0]) / 12


def auto_calendar(freq: str | None) -> list[str]:
    """The calendar features for data sampled every ``freq`` (see the module docstring).

    None (an unknown frequency) gives none.
    """
    if freq is None:
        return []
    step = step_length(freq)
    season = _DAY if step < _DAY else _WEEK if step < _WEEK else _YEAR if step < _YEAR else None
    if season is None:
        return []
    names = [name for cycle, name in _SUB_YEARLY if 2 * step <= cycle <= season]
    if season == _YEAR and 2 * step <= _YEAR:
        names.append("week_of_year" if step < 4 * _WEEK else "month_of_year")
    return names


def resolve_calendar(setting: str | Sequence[str], freq: str | None) -> list[str]:
    """The features a ``features.calendar`` setting means for data sampled every ``freq``:
    ``"auto"`` -> ``auto_calendar(freq)``, ``"none"`` -> ``[]``, a list -> itself."""
    if setting == "auto":
        return auto_calendar(freq)
    if setting == "none":
        return []
    return list(setting)
