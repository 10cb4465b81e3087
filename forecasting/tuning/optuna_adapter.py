"""The one place that relies on Optuna beyond its public API.

A worker claims a *particular* queued trial, a budget slot below its limit (``trial_queue.TrialQueue``),
by moving it to RUNNING with the public ``RDBStorage.set_trial_state_values`` on the storage it
opened itself. ``Study.ask`` cannot do this: it pops whichever trial is queued first, and creates a
fresh, unbudgeted trial when another worker took the last queued one meanwhile. What Optuna then
offers no public way to do is hand back a ``Trial`` for that trial id: its constructor is
documented but "direct use ... is not recommended".

Relied on, and pinned by ``tests/test_tuning.py::test_optuna_adapter_binds_a_claimed_trial``
(an Optuna upgrade that changes it fails that test):

- ``optuna.Trial(study, trial_id)`` binds to the existing RUNNING trial: same ``number``, the
  parameters fixed when it was queued come back from ``suggest_*``, new parameters, ``report`` and
  user attributes are written to it, and ``study.tell(trial, ...)`` finishes that very trial;
- the study's storage has already read the trial (``study.get_trials`` before the claim), which
  Optuna's RDB cache needs before ``suggest_*`` can write a parameter.
"""

from __future__ import annotations

import optuna


def bind_trial(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """The ``Trial`` of a trial this process moved from WAITING to RUNNING itself."""
    return optuna.Trial(study, trial_id)
