"""Per-epoch progress: reported to the stage listener when one is installed (``forecasting.stages``:
the CLI's live display, which shows every model training in parallel on a line of its own), else
a rich bar per epoch with the running train loss and, at the end, the val loss."""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from forecasting import stages


class EpochProgress:
    """Context manager; silent when ``enabled`` is False. With a stage listener installed it
    reports each epoch (k of E, its seconds, its losses) there and draws nothing; without one it
    draws a bar on a terminal only (bars of models training in other threads would interleave)."""

    def __init__(self, enabled: bool, label: str = "train"):
        self.enabled = enabled
        self.label = label
        self._report = False
        self._bar: Progress | None = None
        self._task = None
        self._epoch, self._epochs, self._t0 = 0, 0, 0.0

    def __enter__(self) -> EpochProgress:
        self._report = self.enabled and stages.active()
        if self.enabled and not self._report and sys.stdout.isatty():
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
        self._epoch, self._epochs, self._t0 = epoch, epochs, time.perf_counter()
        if self._report:
            stages.epoch_started(epoch, epochs, self.label)
        if self._bar is not None:
            self._task = self._bar.add_task(f"{self.label} epoch {epoch}/{epochs}", total=steps, losses="")

    def step(self, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, losses=f"loss {loss:.4f}")

    def end_epoch(self, train_loss: float, val_loss: float | None) -> None:
        if self._report:
            seconds = time.perf_counter() - self._t0
            stages.epoch_finished(self._epoch, self._epochs, seconds, train_loss, val_loss, self.label)
        if self._bar is not None:
            val = "" if val_loss is None else f"  val {val_loss:.4f}"
            self._bar.update(self._task, losses=f"train {train_loss:.4f}{val}")
