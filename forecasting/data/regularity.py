"""Sampling interval, time grid, gaps and missing values: checked, and repaired under policy.

Everything here works on the canonical frame while it is being built: rows sorted by series then
time, each series contiguous, one row per (series, t), ``t`` in microseconds (naive, or UTC), and
the ``ROW`` column holding each row's data-row number in the input (-1 for inserted rows). The
work is vectorised over all series at once, so many short series cost no more than one long one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import DateOffset

from forecasting.config import DataConfig
from forecasting.data.repair import RepairReport, fill_missing, listing, run_length_at
from forecasting.data.schema import ROW, SERIES, TARGET, TIME
from forecasting.data.seasonality import fixed_step
from forecasting.errors import (
    ConfigError,
    FrequencyMismatchError,
    GapError,
    IrregularSamplingError,
    MissingValueError,
    SeriesTooShortError,
)


def series_codes(canon: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Series code of each row (0, 1, ... in frame order) and the first row of each series."""
    codes, _ = pd.factorize(canon[SERIES], sort=False)
    codes = codes.astype(np.int64)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.zeros(0, np.int64)
    return codes, starts


def time_us(t: pd.Series) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch (UTC wall time for zone-aware input)."""
    if getattr(t.dt, "tz", None) is not None:
        t = t.dt.tz_convert(None)
    return t.to_numpy(dtype="datetime64[us]").view(np.int64)


def stamp(us: int | np.integer) -> str:
    """A timestamp in microseconds as text: ``2016-07-01 10:00:00``."""
    return str(pd.Timestamp(int(us), unit="us"))


@dataclass(frozen=True)
class Step:
    """The sampling interval: a pandas offset; ``delta`` is set when it is a fixed length."""

    offset: DateOffset
    declared: bool

    @property
    def alias(self) -> str:
        return self.offset.freqstr

    @property
    def delta(self) -> pd.Timedelta | None:
        """The fixed length of a step (Tick offsets, and whole days on naive or UTC clocks):
        ``seasonality.fixed_step``, the length the season is read from too."""
        return fixed_step(self.offset)

    @property
    def delta_us(self) -> int | None:
        delta = self.delta
        return None if delta is None else int(delta / pd.Timedelta(microseconds=1))


def _declared_step(declared: str) -> Step:
    try:
        offset = to_offset(declared)
    except (ValueError, TypeError):
        raise ConfigError(f"data.freq {declared!r} is not a pandas frequency (e.g. h, 15min, D)") from None
    step = Step(offset, declared=True)
    try:
        delta = step.delta
    except (OverflowError, ValueError):
        raise ConfigError(f"data.freq {declared!r} is too long a step") from None
    if offset.n <= 0 or (delta is not None and delta <= pd.Timedelta(0)):
        raise ConfigError(f"data.freq {declared!r} must be a positive step")
    if delta is not None and delta % pd.Timedelta(microseconds=1) != pd.Timedelta(0):
        raise ConfigError(f"data.freq {declared!r} is finer than the microsecond timestamps support")
    return step


def infer_step(
    canon: pd.DataFrame, declared: str | None, time_column: str = TIME, facts: dict[str, Any] | None = None
) -> Step:
    """The series' common sampling interval; a declared one must agree with the data.

    ``facts``: filled with what decides it, for a table validated in chunks of series
    (``ingest.ingest_in_chunks``): the steps between consecutive rows as (values, counts), the
    calendar offset of the first series (or None) and the number of series; ``step_of_table``
    decides the whole table's interval from the chunks' facts."""
    codes, _ = series_codes(canon)
    tu = time_us(canon[TIME])
    same = codes[1:] == codes[:-1]
    diffs = np.diff(tu)[same]  # (n_steps,) microseconds; > 0 since rows are sorted and unique
    first_row = np.flatnonzero(same)  # row before each step
    values, counts = np.unique(diffs, return_counts=True)
    if facts is not None:
        calendar = _calendar_offset(canon) if len(canon) else None
        facts.update(
            step_values=values.tolist(),
            step_counts=counts.tolist(),
            calendar=calendar.freqstr if calendar is not None else None,
            series=len(np.unique(codes)),
        )
    if declared is not None:
        step = _declared_step(declared)
        delta_us = step.delta_us
        if delta_us is not None and diffs.size:
            typical = int(values[np.argmax(counts)])
            if typical != delta_us:
                i = first_row[np.flatnonzero(diffs != delta_us)[0]]
                rows = canon[ROW].to_numpy()
                raise FrequencyMismatchError(
                    f"data.freq is {declared!r} ({step.delta}) but column {time_column!r} steps by "
                    f"{pd.Timedelta(typical, unit='us')} in {counts.max() / diffs.size:.0%} of "
                    f"consecutive rows (e.g. series {canon[SERIES].iloc[i]!r}, rows {rows[i]} -> "
                    f"{rows[i + 1]}: {stamp(tu[i])} -> {stamp(tu[i + 1])}); fix data.freq or "
                    "resample the data"
                )
        return step
    return _inferred_step(values, counts, lambda: _calendar_offset(canon), len(np.unique(codes)), time_column)


def step_of_table(chunks: Sequence[dict[str, Any]], declared: str | None, time_column: str = TIME) -> Step:
    """The interval ``infer_step`` finds for a whole table from the ``facts`` of its chunks of
    series, in the table's order (the first chunk holds its first series): the same counts of
    steps, the same first series. Raises what ``infer_step`` raises, without rows to name (the
    caller validates the whole table then, for the message)."""
    values = np.concatenate([np.asarray(c["step_values"], dtype=np.int64) for c in chunks])
    counts = np.concatenate([np.asarray(c["step_counts"], dtype=np.int64) for c in chunks])
    values, where = np.unique(values, return_inverse=True)
    counts = np.bincount(where, weights=counts, minlength=len(values)).astype(np.int64)
    if declared is not None:
        step = _declared_step(declared)
        if step.delta_us is not None and counts.size and int(values[np.argmax(counts)]) != step.delta_us:
            raise FrequencyMismatchError(f"data.freq is {declared!r} but the data steps otherwise")
        return step
    first = chunks[0]["calendar"]
    calendar = to_offset(first) if first is not None else None
    series = sum(int(c["series"]) for c in chunks)
    return _inferred_step(values, counts, lambda: calendar, series, time_column)


_DAY_US = 86_400 * 10**6


def _inferred_step(
    values: np.ndarray,
    counts: np.ndarray,
    calendar_of_first: Callable[[], DateOffset | None],
    n_series: int,
    time_column: str,
) -> Step:
    """The interval from the steps between consecutive rows (distinct ``values`` in microseconds,
    sorted, and their ``counts``) and, where steps differ in length, the first series' calendar
    offset (month-like data)."""
    total = int(counts.sum())
    if total == 0:
        raise SeriesTooShortError(
            "every series has a single timestamp; no sampling interval can be inferred "
            "(declare data.freq or provide longer series)"
        )
    order = np.argsort(-counts, kind="stable")
    typical, share = int(values[order[0]]), counts[order[0]] / total
    long_step = typical >= pd.Timedelta(days=28) / pd.Timedelta(microseconds=1)
    if share < 1 or long_step:
        # Steps of several lengths: months, business days... or a fixed step with gaps.
        calendar = calendar_of_first()
        if calendar is not None and (share < 0.5 or long_step or Step(calendar, False).delta is None):
            return Step(calendar, declared=False)
    if share < 0.5:
        top = ", ".join(f"{pd.Timedelta(int(values[k]), unit='us')} ({counts[k]}x)" for k in order[:3])
        raise IrregularSamplingError(
            f"column {time_column!r}: no regular sampling interval: the most common steps are {top} "
            f"in {total} steps over {n_series} series; resample the data to a regular "
            "grid or declare data.freq"
        )
    try:
        # Whole days read as days ("D", "7D"), as a user would declare them; pandas would name the
        # length in hours ("24h", "168h").
        days, rest = divmod(typical, _DAY_US)
        offset = to_offset(f"{days}D") if days and not rest else to_offset(pd.Timedelta(typical, unit="us"))
    except (OverflowError, ValueError):
        raise IrregularSamplingError(
            f"column {time_column!r}: the sampling interval {pd.Timedelta(typical, unit='us')} is "
            "too long to be a frequency; declare data.freq"
        ) from None
    return Step(offset, declared=False)


def _calendar_offset(canon: pd.DataFrame) -> DateOffset | None:
    """Month/quarter/year-like data whose steps differ in length; None when not calendar-regular.

    Judged on the first series: pandas' own inference where it has no gaps, else month-based
    steps anchored on month starts or ends (gaps are then reported against that grid).
    """
    first = canon[SERIES].iloc[0]
    t = canon.loc[canon[SERIES] == first, TIME].head(200)
    if getattr(t.dt, "tz", None) is not None:
        t = t.dt.tz_convert(None)
    if len(t) < 3:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas 3 warns that infer_freq will return an offset
            alias = pd.infer_freq(pd.DatetimeIndex(t))
        offset = to_offset(alias) if alias else (_month_offset(t) or _business_day_offset(t))
    except (TypeError, ValueError, OverflowError):
        return None
    return offset if offset is not None and offset.n > 0 else None


def _business_day_offset(t: pd.Series) -> DateOffset | None:
    """Daily data on weekdays only, skipping weekends (``B``), possibly with gaps."""
    steps = np.diff(t.to_numpy().astype("datetime64[us]")) / np.timedelta64(1, "D")
    if not (t.dt.day_of_week < 5).all() or not (steps == 1).any() or not (steps == 3).any():
        return None
    return to_offset("B") if (steps == np.round(steps)).all() else None


_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]


def _month_offset(t: pd.Series) -> DateOffset | None:
    """``MS``/``ME``, quarters or years (k months apart, anchored like the first timestamp)."""
    months = np.diff((t.dt.year * 12 + t.dt.month).to_numpy())
    if months.size == 0 or (months <= 0).any():
        return None
    values, counts = np.unique(months, return_counts=True)
    k = int(values[np.argmax(counts)])
    m0 = int(t.iloc[0].month)
    if t.dt.is_month_start.all():
        alias = {1: "MS", 3: f"QS-{_MONTHS[(m0 - 1) % 3]}", 12: f"YS-{_MONTHS[m0 - 1]}"}.get(k, f"{k}MS")
    elif t.dt.is_month_end.all():
        alias = {1: "ME", 3: f"QE-{_MONTHS[(m0 - 1) % 3 + 9]}", 12: f"YE-{_MONTHS[m0 - 1]}"}.get(k, f"{k}ME")
    else:
        return None
    return to_offset(alias)


# --- the grid -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Grid:
    """Each row's step number from its series' first timestamp, and the grid's timestamps."""

    pos: np.ndarray  # (N,) int64
    off: np.ndarray  # (N,) bool: the row is not on its series' grid
    times: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (series codes, steps) -> int64 us


def _grid(tu: np.ndarray, codes: np.ndarray, starts: np.ndarray, step: Step, time_column: str) -> _Grid:
    delta = step.delta_us
    t0 = tu[starts]  # (S,) first timestamp of each series
    if delta is not None:
        elapsed = tu - t0[codes]
        return _Grid(elapsed // delta, elapsed % delta != 0, lambda c, p: t0[c] + p * delta)
    # Calendar offsets (month starts, business days...): one grid per distinct series start.
    ends = np.r_[starts[1:], len(tu)] - 1
    group_of, firsts = pd.factorize(t0, sort=False)  # (S,) series -> start group
    last_by_group = pd.Series(tu[ends]).groupby(group_of).max().to_numpy()
    grids = []
    for first, last in zip(firsts, last_by_group, strict=True):
        try:
            index = pd.date_range(
                pd.Timestamp(int(first), unit="us"),
                pd.Timestamp(int(last), unit="us"),
                freq=step.offset,
                unit="us",
            )
        except (ValueError, OverflowError):
            raise IrregularSamplingError(
                f"column {time_column!r}: cannot lay a {step.alias} grid from {stamp(first)} to {stamp(last)}"
            ) from None
        grids.append(index.asi8)
    grid_start = np.r_[0, np.cumsum([len(g) for g in grids])].astype(np.int64)
    flat = np.concatenate(grids) if grids else np.zeros(0, np.int64)
    row_group = group_of[codes]
    by_group = np.argsort(row_group, kind="stable")
    bounds = np.searchsorted(row_group[by_group], np.arange(len(grids) + 1))
    local = np.zeros(len(tu), dtype=np.int64)
    for g, grid in enumerate(grids):
        rows = by_group[bounds[g] : bounds[g + 1]]
        local[rows] = np.searchsorted(grid, tu[rows])
    size = np.diff(grid_start)[row_group]
    at = grid_start[row_group] + np.minimum(local, np.maximum(size - 1, 0))
    off = (local >= size) | (flat[at] != tu) if flat.size else np.ones(len(tu), dtype=bool)
    return _Grid(local, off, lambda c, p: flat[grid_start[group_of[c]] + p])


def check_and_repair_grid(
    canon: pd.DataFrame, step: Step, cfg: DataConfig, report: RepairReport
) -> pd.DataFrame:
    """Check every series sits on its grid without gaps or NaN; repair only under policy."""
    codes, starts = series_codes(canon)
    tu = time_us(canon[TIME])
    grid = _grid(tu, codes, starts, step, cfg.time_column)
    _check_on_grid(canon, tu, grid, step, cfg)
    canon, codes, inserted = _insert_missing_steps(canon, codes, starts, tu, grid, step, cfg, report)
    return _fill_missing_values(canon, codes, inserted, cfg, report)


def _check_on_grid(canon: pd.DataFrame, tu: np.ndarray, grid: _Grid, step: Step, cfg: DataConfig) -> None:
    if not grid.off.any():
        return
    bad = np.flatnonzero(grid.off)
    sid = canon[SERIES].iloc[bad[0]]
    rows = canon[ROW].to_numpy()
    listed = [f"row {rows[i]} ({stamp(tu[i])})" for i in bad[:5]]
    where = f"column {cfg.time_column!r} of series {sid!r}"
    if step.declared and bad.size > len(canon) / 2:
        raise FrequencyMismatchError(
            f"data.freq is {step.alias!r} but {bad.size} of {len(canon)} timestamps are not on that "
            f"grid, e.g. {where}: {listing(listed, bad.size)}; fix data.freq or resample the data"
        )
    kind = f"the declared frequency {step.alias!r}" if step.declared else f"the {step.alias} sampling grid"
    raise IrregularSamplingError(
        f"{where}: timestamps off {kind} (counted from the series' first timestamp): "
        f"{listing(listed, bad.size)}; resample the data to a regular grid"
    )


def _insert_missing_steps(
    canon: pd.DataFrame,
    codes: np.ndarray,
    starts: np.ndarray,
    tu: np.ndarray,
    grid: _Grid,
    step: Step,
    cfg: DataConfig,
    report: RepairReport,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Insert rows (values NaN, ``ROW`` -1) at missing grid steps when the policy allows."""
    pos = grid.pos
    same = codes[1:] == codes[:-1]
    missing = np.where(same, np.diff(pos) - 1, 0)  # (N-1,) steps missing after row i
    gaps = np.flatnonzero(missing > 0)
    if gaps.size == 0:
        return canon, codes, np.zeros(len(canon), dtype=bool)
    policy = cfg.repair
    too_long = missing[gaps] > policy.max_gap if policy.fill_gaps else np.ones(gaps.size, dtype=bool)
    if too_long.any():
        first = gaps[np.argmax(too_long)]
        sid = canon[SERIES].iloc[first]
        in_series = gaps[codes[gaps] == codes[first]]
        rows = canon[ROW].to_numpy()
        listed = [
            f"{stamp(grid.times(codes[i : i + 1], pos[i : i + 1] + 1)[0])} "
            f"({missing[i]} step{'s' if missing[i] > 1 else ''} missing after row {rows[i]})"
            for i in in_series[:5]
        ]
        hint = (
            f"gaps longer than data.repair.max_gap={policy.max_gap} are not filled"
            if policy.fill_gaps
            else "set data.repair.fill_gaps and max_gap to fill short gaps"
        )
        others = len(np.unique(codes[gaps])) - 1
        raise GapError(
            f"column {cfg.time_column!r} of series {sid!r}: {int(missing[in_series].sum())} missing "
            f"timestamp(s) on the {step.alias} grid, first at {listing(listed, in_series.size)}"
            f"{f' (and gaps in {others} more series)' if others else ''}; {hint}"
        )
    ends = np.r_[starts[1:], len(canon)] - 1
    n_full = pos[ends] + 1  # (S,) rows of each series once complete
    new_start = np.r_[0, np.cumsum(n_full)].astype(np.int64)
    total = int(new_start[-1])
    new_codes = np.repeat(np.arange(len(starts), dtype=np.int64), n_full)
    new_pos = np.arange(total, dtype=np.int64) - new_start[new_codes]
    dest = new_start[codes] + pos  # (N,) where each observed row lands
    inserted = np.ones(total, dtype=bool)
    inserted[dest] = False

    t = pd.Series(grid.times(new_codes, new_pos).view("datetime64[us]"))
    if getattr(canon[TIME].dt, "tz", None) is not None:
        t = t.dt.tz_localize("UTC")
    ids = canon[SERIES].to_numpy()[starts][new_codes]
    data: dict[str, object] = {SERIES: pd.array(ids, dtype=canon[SERIES].dtype), TIME: t}
    for col in canon.columns:
        if col in (SERIES, TIME):
            continue
        fill_value = -1 if col == ROW else np.nan
        values = np.full(total, fill_value, dtype=np.int64 if col == ROW else np.float64)
        values[dest] = canon[col].to_numpy()
        data[col] = values
    full = pd.DataFrame(data, columns=canon.columns)
    n_series = len(np.unique(codes[gaps]))
    report.add(
        "filled_gap_steps",
        int(inserted.sum()),
        f"{{n}} missing timestamp(s) in {{series}} series inserted, values by {policy.fill_gaps}",
        series=n_series,
    )
    return full, new_codes, inserted


def trim_missing_ends(canon: pd.DataFrame, cfg: DataConfig, report: RepairReport) -> pd.DataFrame:
    """Drop leading and trailing rows whose target is NaN (policy ``trim_nan``), per series."""
    if not cfg.repair.trim_nan or len(canon) == 0:
        return canon
    codes, starts = series_codes(canon)
    observed = ~np.isnan(canon[TARGET].to_numpy(dtype=np.float64))
    seen = np.cumsum(observed)  # (N,) observed rows up to and including each row, over all series
    before_series = (seen - observed)[starts]  # (S,) observed rows before each series
    ends = np.r_[starts[1:], len(canon)]
    per_series = seen[ends - 1] - before_series  # (S,) observed rows in each series
    upto = seen - before_series[codes]  # (N,) observed rows of the series up to this row
    keep = (upto > 0) & (upto - observed < per_series[codes])
    empty = np.flatnonzero(per_series == 0)
    if empty.size:
        ids = canon[SERIES].to_numpy()[starts[empty]]
        raise MissingValueError(
            f"column {_target_name(cfg, ids[0])!r} (the target) of series "
            f"{listing([repr(s) for s in ids], empty.size)} is empty (NaN) in every row; drop "
            "the series"
        )
    dropped = int((~keep).sum())
    if dropped:
        report.add("trimmed_nan_rows", dropped, "leading/trailing rows without a target")
        canon = canon[keep].reset_index(drop=True)
    return canon


def _target_name(cfg: DataConfig, series_id: object) -> str:
    return str(series_id) if cfg.is_wide else cfg.targets[0]


def _fill_missing_values(
    canon: pd.DataFrame, codes: np.ndarray, inserted: np.ndarray, cfg: DataConfig, report: RepairReport
) -> pd.DataFrame:
    """Fill NaN (inserted rows included) in runs of at most ``max_gap`` rows; name what is left."""
    policy = cfg.repair
    value_cols = [TARGET, *cfg.covariates]
    static = set(cfg.covariates_with("static"))
    for position, col in enumerate(value_cols):
        values = canon[col].to_numpy(dtype=np.float64)
        nan = np.isnan(values)
        if not nan.any():
            continue
        filled = np.zeros(len(values), dtype=bool)
        if col in static and inserted.any():
            # A static covariate holds one value per series: inserted rows copy it.
            copied, done = fill_missing(values, codes, "ffill", max_gap=len(values))
            done &= inserted
            values = np.where(done, copied, values)
            filled |= done
        if policy.fill_gaps:
            values, done = fill_missing(values, codes, policy.fill_gaps, policy.max_gap)
            filled |= done
        nan = np.isnan(values)
        if nan.any():
            _raise_missing(canon, col, nan, cfg)
        n_observed = int((filled & ~inserted).sum())
        if n_observed:
            report.add(
                "filled_missing_values",
                n_observed,
                f"column {col!r} by {policy.fill_gaps}",
                position=position,
            )
        canon[col] = values
    return canon


def _raise_missing(canon: pd.DataFrame, col: str, nan: np.ndarray, cfg: DataConfig) -> None:
    bad = np.flatnonzero(nan)
    sid = canon[SERIES].iloc[bad[0]]
    in_series = bad[canon[SERIES].to_numpy()[bad] == sid]
    rows = canon[ROW].to_numpy()
    tu = time_us(canon[TIME])
    listed = [
        f"row {rows[i]} (t={stamp(tu[i])})" if rows[i] >= 0 else f"missing timestamp {stamp(tu[i])}"
        for i in in_series[:5]
    ]
    name = _target_name(cfg, sid) if col == TARGET else col
    role = "the target" if col == TARGET else f"{cfg.covariates[col]} covariate"
    policy = cfg.repair
    if policy.fill_gaps:
        longest = int(run_length_at(nan, series_codes(canon)[0]).max())
        hint = (
            f"runs longer than data.repair.max_gap={policy.max_gap} (here up to {longest}) or without an "
            f"observed value to {policy.fill_gaps} from are not filled"
            + ("; data.repair.trim_nan drops leading/trailing rows" if col == TARGET else "")
        )
    else:
        hint = "fill them, or set data.repair (trim_nan for leading/trailing, fill_gaps with max_gap)"
    others = len(pd.unique(canon[SERIES].to_numpy()[bad])) - 1
    raise MissingValueError(
        f"column {name!r} ({role}) of series {sid!r} is empty (NaN) in {in_series.size} row(s): "
        f"{listing(listed, in_series.size)}{f' (and in {others} more series)' if others else ''}; {hint}"
    )
