"""Sampling interval, time grid, gaps and missing values: checked, and repaired under policy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import DateOffset, Tick

from forecasting.config import DataConfig
from forecasting.data.repair import RepairReport, fill, run_lengths
from forecasting.errors import (
    ConfigError,
    FrequencyMismatchError,
    GapError,
    IrregularSamplingError,
    MissingValueError,
    SeriesTooShortError,
    format_rows,
)

SERIES, TIME, TARGET, _ROW = "series_id", "t", "y", "_row"


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
        return pd.Timedelta(self.offset) if isinstance(self.offset, Tick) else None


def _alias_of(delta: pd.Timedelta) -> DateOffset:
    return to_offset(delta)


def infer_step(canon: pd.DataFrame, declared: str | None) -> Step:
    """The series' common sampling interval; a declared one must agree with the data."""
    diffs = canon.groupby(SERIES, sort=False)[TIME].diff().dropna()
    diffs = diffs[diffs > pd.Timedelta(0)]
    if declared is not None:
        try:
            offset = to_offset(declared)
        except (ValueError, TypeError):
            raise ConfigError(f"data.freq {declared!r} is not a pandas frequency (e.g. h, 15min, D)") from None
        if isinstance(offset, Tick) and len(diffs):
            typical = diffs.mode().iloc[0]
            if typical != pd.Timedelta(offset):
                share = float((diffs == typical).mean())
                raise FrequencyMismatchError(
                    f"data.freq is {declared!r} ({pd.Timedelta(offset)}) but the data steps by "
                    f"{typical} in {share:.0%} of rows; fix data.freq or resample the data"
                )
        return Step(offset, declared=True)
    if diffs.empty:
        raise SeriesTooShortError("every series has a single timestamp; no sampling interval can be inferred")
    counts = diffs.value_counts()
    typical, share = counts.index[0], counts.iloc[0] / len(diffs)
    if share < 0.5:
        calendar = _calendar_offset(canon)
        if calendar is not None:
            return Step(calendar, declared=False)
        top = ", ".join(f"{d} ({c})" for d, c in counts.head(3).items())
        raise IrregularSamplingError(
            f"no regular sampling interval: the most common steps are {top}; resample the data to a "
            "regular grid or declare data.freq"
        )
    if typical >= pd.Timedelta(days=28):
        calendar = _calendar_offset(canon)
        if calendar is not None:
            return Step(calendar, declared=False)
    return Step(_alias_of(typical), declared=False)


def _calendar_offset(canon: pd.DataFrame) -> DateOffset | None:
    """Month/quarter/year-like data whose steps differ in days; None when not calendar-regular."""
    first = canon[SERIES].iloc[0]
    t = canon.loc[canon[SERIES] == first, TIME].head(60)
    if len(t) < 3:
        return None
    try:
        alias = pd.infer_freq(pd.DatetimeIndex(t))
    except (TypeError, ValueError):
        return None
    return to_offset(alias) if alias else None


def check_and_repair_grid(canon: pd.DataFrame, step: Step, cfg: DataConfig, report: RepairReport) -> pd.DataFrame:
    """Check every series sits on its grid without gaps or NaN; repair only under policy."""
    canon = _check_on_grid(canon, step)
    canon = _fill_gaps(canon, step, cfg, report)
    canon = _handle_missing_values(canon, cfg, report)
    return canon


def _grid_position(canon: pd.DataFrame, step: Step) -> np.ndarray | None:
    """Integer step number of each row from its series' first timestamp (fixed steps only)."""
    delta = step.delta
    if delta is None:
        return None
    t0 = canon.groupby(SERIES, sort=False)[TIME].transform("first")
    elapsed = (canon[TIME] - t0).to_numpy().astype("timedelta64[ns]").astype(np.int64)
    return elapsed / delta.value


def _check_on_grid(canon: pd.DataFrame, step: Step) -> pd.DataFrame:
    pos = _grid_position(canon, step)
    if pos is not None:
        off = np.abs(pos - np.round(pos)) > 1e-9
    else:
        off = np.zeros(len(canon), dtype=bool)
        for _, idx in canon.groupby(SERIES, sort=False).indices.items():
            t = canon[TIME].iloc[idx]
            grid = pd.date_range(t.iloc[0], t.iloc[-1], freq=step.offset)
            off[idx] = ~t.isin(grid).to_numpy()
    if off.any():
        sub = canon[off]
        sid = sub[SERIES].iloc[0]
        rows = [f"row {r} ({ts})" for r, ts in zip(sub[_ROW].head(5), sub[TIME].head(5), strict=True)]
        kind = f"the declared frequency {step.alias!r}" if step.declared else f"the {step.alias} sampling grid"
        raise IrregularSamplingError(
            f"series {sid!r}: timestamps off {kind}: {format_rows(rows + [''] * max(0, len(sub) - 5))}; "
            "resample the data to a regular grid"
        )
    return canon


def _fill_gaps(canon: pd.DataFrame, step: Step, cfg: DataConfig, report: RepairReport) -> pd.DataFrame:
    pos = _grid_position(canon, step)
    if pos is not None:
        jumps = np.diff(np.round(pos)).astype(np.int64)
        new_series = canon[SERIES].to_numpy()[1:] != canon[SERIES].to_numpy()[:-1]
        gap_after = np.flatnonzero((jumps > 1) & ~new_series)
        if gap_after.size == 0:
            return canon
        gap_series = set(canon[SERIES].iloc[gap_after])
    else:
        gap_series = set()
        for sid, idx in canon.groupby(SERIES, sort=False).indices.items():
            t = canon[TIME].iloc[idx]
            if len(pd.date_range(t.iloc[0], t.iloc[-1], freq=step.offset)) != len(t):
                gap_series.add(sid)
        if not gap_series:
            return canon
    policy = cfg.repair
    parts = []
    for sid, part in canon.groupby(SERIES, sort=False):
        if sid not in gap_series:
            parts.append(part)
            continue
        grid = pd.date_range(part[TIME].iloc[0], part[TIME].iloc[-1], freq=step.offset)
        full = part.set_index(TIME).reindex(grid)
        missing = full[SERIES].isna().to_numpy()
        starts, lengths = run_lengths(missing)
        too_long = lengths > policy.max_gap if policy.fill_gaps else np.ones_like(lengths, dtype=bool)
        if too_long.any():
            listed = [f"{grid[s]} ({n} step{'s' if n > 1 else ''} missing)" for s, n in zip(starts, lengths, strict=True)]
            hint = (f"longer than data.repair.max_gap={policy.max_gap}" if policy.fill_gaps
                    else "set data.repair.fill_gaps and max_gap to fill short gaps")
            raise GapError(
                f"series {sid!r}: {int(missing.sum())} missing timestamp(s) on the {step.alias} grid, "
                f"first at {format_rows(listed)}; {hint}"
            )
        full[SERIES] = sid
        value_cols = [c for c in full.columns if c not in (SERIES, _ROW)]
        for c in value_cols:
            full[c] = fill(full[c], policy.fill_gaps)
        full[_ROW] = full[_ROW].fillna(-1).astype(np.int64)
        report.add("filled_gap_steps", int(missing.sum()), f"series {sid!r} by {policy.fill_gaps}")
        parts.append(full.rename_axis(TIME).reset_index()[part.columns])
    return pd.concat(parts, ignore_index=True)


def _handle_missing_values(canon: pd.DataFrame, cfg: DataConfig, report: RepairReport) -> pd.DataFrame:
    policy = cfg.repair
    value_cols = [TARGET, *cfg.covariates]
    if not canon[value_cols].isna().to_numpy().any():
        return canon
    if policy.trim_nan:
        keep = np.ones(len(canon), dtype=bool)
        for _, idx in canon.groupby(SERIES, sort=False).indices.items():
            observed = np.flatnonzero(canon[TARGET].to_numpy()[idx] == canon[TARGET].to_numpy()[idx])
            if observed.size == 0:
                keep[idx] = False
                continue
            keep[idx[: observed[0]]] = False
            keep[idx[observed[-1] + 1 :]] = False
        report.add("trimmed_nan_rows", int((~keep).sum()), "leading/trailing rows without a target")
        canon = canon[keep].reset_index(drop=True)
    for col in value_cols:
        nan = canon[col].isna().to_numpy()
        if not nan.any():
            continue
        if policy.fill_gaps:
            filled = canon.groupby(SERIES, sort=False)[col].transform(lambda s: fill(s, policy.fill_gaps))
            runs_ok = all(
                (run_lengths(canon[col].isna().to_numpy()[idx])[1] <= policy.max_gap).all()
                for idx in canon.groupby(SERIES, sort=False).indices.values()
            )
            if runs_ok and not filled.isna().any():
                report.add("filled_missing_values", int(nan.sum()), f"column {col!r} by {policy.fill_gaps}")
                canon[col] = filled
                continue
        sub = canon[nan]
        rows = [f"row {r} ({ts})" for r, ts in zip(sub[_ROW].head(5), sub[TIME].head(5), strict=True)]
        role = "the target" if col == TARGET else f"covariate {col!r}"
        name = cfg.targets[0] if col == TARGET and not cfg.is_wide else (sub[SERIES].iloc[0] if col == TARGET else col)
        raise MissingValueError(
            f"column {name!r} ({role}) of series {sub[SERIES].iloc[0]!r} is empty (NaN) in "
            f"{int(nan.sum())} row(s): {format_rows(rows + [''] * max(0, int(nan.sum()) - 5))}; "
            "fill them, or set data.repair (trim_nan for leading/trailing, fill_gaps with max_gap)"
        )
    return canon
