"""The repair report and the gap/NaN filling used by the repair policy."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


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


def run_lengths(missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of True in a boolean vector."""
    if missing.size == 0 or not missing.any():
        return np.empty(0, dtype=int), np.empty(0, dtype=int)
    padded = np.concatenate([[False], missing, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[::2], edges[1::2]
    return starts, ends - starts


def fill(values: pd.Series, method: str) -> pd.Series:
    """Fill interior NaN by ``ffill``, linear ``interpolate`` or ``zero``; observed values stay."""
    if method == "ffill":
        return values.ffill()
    if method == "interpolate":
        return values.interpolate(method="linear", limit_area="inside")
    return values.fillna(0.0)
