"""The repair report and the gap/NaN filling used by the repair policy.

The filling works on the flat, series-contiguous arrays of the canonical frame (``codes`` gives
the series of each row), so that it costs a few vectorised passes whatever the number of series.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RepairReport:
    """Counts of every repair applied, with a short note each (logged to MLflow later)."""

    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, n: int, note: str = "") -> None:
        if n <= 0:
            return
        self.counts[what] = self.counts.get(what, 0) + int(n)
        if note:
            self.notes.append(f"{what}: {n} ({note})")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, object]:
        return {"counts": dict(self.counts), "notes": list(self.notes), "total": self.total}


def run_length_at(missing: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """For each True of ``missing``, the length of its run within its series (0 elsewhere).

    Runs never cross a series boundary: ``codes`` (one series code per row, series contiguous)
    breaks them.
    """
    n = missing.size
    out = np.zeros(n, dtype=np.int64)
    if n == 0 or not missing.any():
        return out
    new_series = np.ones(n, dtype=bool)
    new_series[1:] = codes[1:] != codes[:-1]
    prev_missing = np.zeros(n, dtype=bool)
    prev_missing[1:] = missing[:-1]
    starts = missing & (new_series | ~prev_missing)
    run_id = np.cumsum(starts) - 1  # (n,) id of the current run at each missing row
    lengths = np.bincount(run_id[missing])
    out[missing] = lengths[run_id[missing]]
    return out


def _nearest_observed(observed: np.ndarray, codes: np.ndarray, backward: bool) -> np.ndarray:
    """Index of the previous (or next) observed row in the same series, -1 where there is none."""
    n = observed.size
    idx = np.arange(n)
    if backward:
        cand = np.where(observed, idx, -1)
        near = np.maximum.accumulate(cand) if n else cand
    else:
        cand = np.where(observed, idx, n)
        near = np.minimum.accumulate(cand[::-1])[::-1] if n else cand
        near = np.where(near == n, -1, near)
    same = (near >= 0) & (codes[np.clip(near, 0, None)] == codes)
    return np.where(same, near, -1)


def fill_missing(
    values: np.ndarray, codes: np.ndarray, method: str, max_gap: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fill runs of NaN no longer than ``max_gap`` rows within each series.

    ``ffill`` repeats the last observed value, ``interpolate`` draws a straight line between the
    observed values on both sides (interior runs only; rows are equally spaced on the grid) and
    ``zero`` writes 0. Observed values never change. Returns the filled copy (NaN where a run is
    too long or has no neighbour to fill from) and the mask of the rows that were filled.
    """
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    fillable = missing & (run_length_at(missing, codes) <= max_gap)
    out = values.copy()
    if not fillable.any():
        return out, np.zeros_like(missing)
    observed = ~missing
    if method == "zero":
        out[fillable] = 0.0
    elif method == "ffill":
        prev = _nearest_observed(observed, codes, backward=True)
        ok = fillable & (prev >= 0)
        out[ok] = values[prev[ok]]
    elif method == "interpolate":
        prev = _nearest_observed(observed, codes, backward=True)
        nxt = _nearest_observed(observed, codes, backward=False)
        ok = fillable & (prev >= 0) & (nxt >= 0)
        i, p, q = np.flatnonzero(ok), prev[ok], nxt[ok]
        w = (i - p) / (q - p)
        out[ok] = values[p] * (1 - w) + values[q] * w  # never overflows between finite values
    else:
        raise ValueError(f"unknown fill method {method!r}")
    filled = missing & ~np.isnan(out)
    return out, filled
