"""The season length a data frequency implies: steps per natural cycle (a pure function).

The cycle is the one forecasting practice uses for that sampling (the M4 competition's
``frequency``): a day for sub-daily data (24 for hourly, 48 for half-hourly), a week for daily data
(7; 5 for business days), a year for weekly (52), monthly (12) and quarterly (4) data, none for
yearly data. A multiple of the unit divides the cycle when it can (``2h`` -> 12, ``3MS`` -> 4) and
gives 1 (no seasonality) when it cannot (``5D``).

A fixed step is read by its length, whatever its spelling: ``24h`` is daily data (7) as ``D`` is,
and ``168h`` and ``7D`` are weekly data (52) as ``W-SUN`` is (pandas names a length of time in
hours; ingest names an inferred step of whole days in days, ``regularity._inferred_step``).
"""

from __future__ import annotations

import pandas as pd
from pandas.tseries.frequencies import to_offset

_DAY_NS = 86_400 * 10**9
_DAY = pd.Timedelta(days=1)
_WEEKS_PER_YEAR = 52

# Steps of one unit per cycle, by the offset's rule code without its anchor or begin/end letter.
_UNIT_CYCLE = {
    "D": 7,
    "B": 5,
    "C": 5,
    "W": 52,
    "M": 12,
    "BM": 12,
    "CBM": 12,
    "SM": 24,
    "Q": 4,
    "BQ": 4,
    "Y": 1,
    "BY": 1,
}


def season_length_for(freq: str) -> int:
    """Steps per seasonal cycle for a pandas frequency alias (``"h"`` -> 24, ``"D"`` -> 7, ...).

    Returns 1 where the frequency has no customary cycle (yearly data, irregular multiples).
    Raises ``ValueError`` for a string pandas does not read as a frequency.
    """
    offset = to_offset(freq)
    step = fixed_step(offset)
    if step is not None and step < _DAY:  # sub-daily: steps per day
        steps, rest = divmod(_DAY_NS, step.value)
        return int(steps) if rest == 0 and steps > 1 else 1
    if step is not None:  # whole days: steps per week, or weeks per year
        days, rest = divmod(step, _DAY)
        if rest or days < 1:
            return 1
        if 7 % days == 0 and days < 7:
            return 7 // days
        weeks, rest = divmod(int(days), 7)
        steps, left = divmod(_WEEKS_PER_YEAR, weeks) if not rest else (1, 1)
        return steps if left == 0 and steps > 1 else 1
    code = offset.rule_code.split("-")[0]  # "MS", "QE", "W", "B", "SMS"
    unit = code if code in _UNIT_CYCLE else code[:-1] if code[-1:] in ("S", "E") else code
    cycle = _UNIT_CYCLE.get(unit, 1)
    steps, rest = divmod(cycle, max(offset.n, 1))
    return steps if rest == 0 and steps > 1 else 1


def mase_season(freq: str) -> int:
    """The seasonal lag MASE's scale is measured at (``val_mase``, ``test_mase``, and the
    ensemble's ``mase`` objective): a day for sub-daily data, a week for daily data, 1 otherwise
    (M4's convention: weekly, monthly and yearly series are scaled by the naive error, m = 1).
    Not the model season of ``season_length_for`` (52 for weekly data)."""
    step = fixed_step(to_offset(freq))
    if step is None:
        return 1
    if step < _DAY and _DAY % step == pd.Timedelta(0):
        return int(_DAY / step)
    return 7 if step == _DAY else 1


def fixed_step(offset: pd.DateOffset) -> pd.Timedelta | None:
    """The length of a fixed-length step: a ``Tick`` (``h``, ``24h``, ``168h``), whole days (``D``:
    calendar-aware in pandas 3, 24 hours on the naive and UTC clocks the data is on) or whole
    weeks not anchored to a weekday; None for calendar steps (weeks on a weekday, months, ...)."""
    if isinstance(offset, pd.offsets.Tick):
        return pd.Timedelta(offset)
    if isinstance(offset, pd.offsets.Day):
        return pd.Timedelta(days=offset.n)
    if isinstance(offset, pd.offsets.Week) and offset.weekday is None:
        return pd.Timedelta(weeks=offset.n)
    return None
