"""A rich progress bar per epoch with the running train loss and, at the end, the val loss."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class EpochProgress:
    """Context manager; silent when ``enabled`` is False or stdout is not a terminal."""

    def __init__(self, enabled: bool, label: str = "train"):
        self.enabled = enabled and sys.stdout.isatty()
        self.label = label
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> EpochProgress:
        if self.enabled:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[losses]}"),
            )
            self._bar.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if self._bar is not None:
            self._task = self._bar.add_task(f"{self.label} epoch {epoch}/{epochs}", total=steps, losses="")

    def step(self, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, losses=f"loss {loss:.4f}")

    def end_epoch(self, train_loss: float, val_loss: float | None) -> None:
        if self._bar is not None:
            val = "" if val_loss is None else f"  val {val_loss:.4f}"
            self._bar.update(self._task, losses=f"train {train_loss:.4f}{val}")
