"""The one torch training loop and what it needs, one concern per module.

- ``settings``: ``TrainingConfig``, the loop's settings (no torch: the config and every model import it).
- ``schedule``: the learning rate as a pure function of the step (``lr_at``, ``lr_schedule``).
- ``loop``: ``train`` and ``evaluate`` (torch), batches to tensors, devices, threads, autocast.
- ``checkpoint``, ``randomness``, ``progress``: resumable runs, seeded streams, the progress bar.

Nothing is imported here, so that ``forecasting.training.settings`` comes without torch.
"""
