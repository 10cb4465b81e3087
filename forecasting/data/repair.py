"""The repair report and the gap/NaN filling used by the repair policy.

The filling works on the flat, series-contiguous arrays of the canonical frame (``codes`` gives
the series of each row), so that it costs a few vectorised passes whatever the number of series.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

LISTED = 5  # offending items a message or note names


def listing(items: Iterable[str], total: int, limit: int = LISTED) -> str:
    """The first ``limit`` of ``total`` offending items and how many more there are."""
    shown = ", ".join(list(items)[:limit])
    return f"{shown} (+{total - limit} more)" if total > limit else shown


# The order in which ``prepare_frame`` repairs: a report merged from chunks of series lists its
# notes in it, as one pass over the whole table does.
STAGES = (
    "dropped_duplicate_rows",
    "sorted_rows",
    "trimmed_nan_rows",
    "filled_gap_steps",
    "filled_missing_values",
)


@dataclass
class _Entry:
    what: str
    note: str
    n: int = 0
    series: int | None = None
    rows: list[str] | None = None
    position: int = 0


class RepairReport:
    """Counts of every repair applied, with a short note each (logged to MLflow later).

    A note may name the first rows it concerns (``rows``: ``{rows}`` in the note) and the number
    of series (``series``: ``{series}``; ``{n}`` is the count); such notes are kept in parts, so
    that the reports of chunks of series (validated apart, ``merge``) add up to the report of the
    whole table, word for word.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}

    def add(
        self,
        what: str,
        n: int,
        note: str = "",
        *,
        rows: list[str] | None = None,
        series: int | None = None,
        position: int = 0,
    ) -> None:
        """``position``: where this note goes among notes of the same kind (a column's index)."""
        if n <= 0:
            return
        entry = self._entries.setdefault((what, note), _Entry(what, note, position=position))
        entry.n += int(n)
        if series is not None:
            entry.series = (entry.series or 0) + int(series)
        if rows is not None:
            entry.rows = [*(entry.rows or []), *rows][:LISTED]

    def _ordered(self) -> list[_Entry]:
        rank = {what: i for i, what in enumerate(STAGES)}
        return sorted(self._entries.values(), key=lambda e: (rank.get(e.what, len(STAGES)), e.position))

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self._ordered():
            out[e.what] = out.get(e.what, 0) + e.n
        return out

    @property
    def notes(self) -> list[str]:
        out = []
        for e in self._ordered():
            if not e.note:
                continue
            text = e.note
            if e.rows is not None or e.series is not None:
                text = text.replace("{n}", str(e.n)).replace("{series}", str(e.series or 0))
                text = text.replace("{rows}", listing(e.rows or [], e.n))
            out.append(f"{e.what}: {e.n} ({text})")
        return out

    @property
    def total(self) -> int:
        return sum(e.n for e in self._entries.values())

    def merge(self, other: RepairReport) -> None:
        """Add ``other``'s repairs (a later chunk of series) to these."""
        for e in other._ordered():
            self.add(e.what, e.n, e.note, rows=e.rows, series=e.series, position=e.position)

    def to_parts(self) -> list[dict[str, object]]:
        """Plain values (to cross a process boundary); ``from_parts`` reads them back."""
        return [dict(vars(e)) for e in self._ordered()]

    @classmethod
    def from_parts(cls, parts: list[dict[str, object]]) -> RepairReport:
        report = cls()
        for part in parts:
            entry = _Entry(**part)  # type: ignore[arg-type]
            report._entries[(entry.what, entry.note)] = entry
        return report

    def to_dict(self) -> dict[str, object]:
        return {"counts": self.counts, "notes": self.notes, "total": self.total}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RepairReport) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable: compared by content, not hashable


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
