"""The ensemble family (``ensemble``): a weighted mean of other fitted models' forecasts.

Weights come from greedy ensemble selection (Caruana et al., 2004; what AutoGluon does): start
from nothing, add with replacement the member whose addition most lowers the validation error,
``rounds`` times, and keep the best prefix. Weights are counts / prefix length, so they are
non-negative and sum to one, and the ensemble's validation error is never above its best member's.
``weighting: equal`` takes the plain mean instead (e.g. of one model fitted with several seeds).

The error is the ``objective`` (on the model's scale, as the ``val_*`` metrics): ``mse``;
``mae``; or ``mase``, each absolute error divided by its series' in-sample seasonal-naive error
(``season_length``), so that every series weighs alike as in MASE. A pipeline weighs on the point
metric it selects by (``forecasting.pipeline.defaults``: ``val_mase`` -> ``mase``, ``val_mae``
and ``val_wape`` -> ``mae``, anything else ``mse``), as AutoGluon fits its ensemble to its
``eval_metric``: an ensemble weighed on MSE and ranked by MASE loses to members it should hold.

In a pipeline the ensemble is built from the models the same run has already trained, given to it
as fitted ``members`` (no member is trained twice; ``settings.members`` names runs, empty = every
other model that finished). Built alone, it trains its ``settings.members`` (registry names;
default linear, gru, transformer) on the same data first. Saved as one folder per member plus
the weights; no pickle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from forecasting.config import ModelSpec, TrainingConfig
from forecasting.errors import ConfigError, ModelLoadError
from forecasting.models.base import DataSpec, EpochCallback, Forecaster
from forecasting.models.registry import build_model, register

DEFAULT_MEMBERS = ("linear", "gru", "transformer")


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class EnsembleSettings:
    members: list[str] = Field(default_factory=list)  # pipeline: run names; alone: registry names
    rounds: int = Field(25, ge=1)  # greedy selection steps (weights: multiples of 1/r, r <= rounds)
    # greedy: weights chosen on validation as above; equal: the plain mean of every member (e.g.
    # one model fitted with several seeds), nothing chosen on validation.
    weighting: Literal["greedy", "equal"] = "greedy"
    # The validation error greedy weighting lowers (see the module's docstring).
    objective: Literal["mse", "mae", "mase"] = "mse"
    season_length: int = Field(1, ge=1)  # the seasonal-naive lag of ``mase``'s series scales


def greedy_weights(gram: np.ndarray, n: int, rounds: int) -> np.ndarray:
    """Greedy selection with replacement on the Gram matrix of the members' validation errors.

    With errors ``E = P - y`` (M members x n entries; forecasts minus targets), ``gram = E E^T``
    (M, M). Weights sum to one, so ``w P - y = w E`` and the MSE of the weighted mean is
    ``w G w / n`` exactly: a round costs O(M^2), not a pass over the data, and nothing is
    subtracted, so the level of the data costs no precision. Returns the weights (M,) of the best
    ensemble seen, summing to one.
    """
    m = len(gram)
    counts = np.zeros(m)
    best, best_counts = np.inf, None
    for r in range(1, rounds + 1):
        trial = (counts[None, :] + np.eye(m)) / r  # (M, M): row k adds member k once
        mse = np.einsum("ki,ij,kj->k", trial, gram, trial) / n
        k = int(np.argmin(mse))
        counts[k] += 1
        if best_counts is None or mse[k] < best - 1e-12 * abs(best):
            best, best_counts = float(mse[k]), counts.copy()
    return best_counts / best_counts.sum()


def greedy_weights_abs(errors: np.ndarray, rounds: int) -> np.ndarray:
    """Greedy selection with replacement on the mean absolute value of the weighted errors:
    ``errors`` (M members x n entries) are forecasts minus targets, each already divided by its
    entry's scale for MASE. A round costs O(M n). Weights (M,) of the best ensemble seen."""
    m, n = errors.shape
    counts, total = np.zeros(m), np.zeros(n)
    best, best_counts = np.inf, None
    for r in range(1, rounds + 1):
        loss = np.array([np.abs(total + errors[k]).sum() for k in range(m)]) / (r * n)
        k = int(np.argmin(loss))
        counts[k] += 1
        total += errors[k]
        if best_counts is None or loss[k] < best - 1e-12 * abs(best):
            best, best_counts = float(loss[k]), counts.copy()
    return best_counts / best_counts.sum()


@register
class Ensemble(Forecaster):
    """Weighted mean of member forecasts, weights chosen greedily on the validation windows (or equal).

    Its members are its settings, as a scikit-learn ``VotingRegressor``'s estimators are: names
    in ``settings.members`` (registry names, trained by ``fit``), or already fitted models given
    as ``members`` (a pipeline's own fits, weighed as they are and never trained again).
    """

    name = "ensemble"
    Settings = EnsembleSettings
    members_: Mapping[str, Forecaster] | None = None  # fitted: the members that got a weight

    def __init__(
        self,
        settings: EnsembleSettings | None = None,
        *,
        spec: DataSpec,
        training: TrainingConfig | None = None,
        members: Mapping[str, Forecaster] | None = None,
    ):
        super().__init__(settings, spec=spec, training=training)
        self.members = None if members is None else dict(members)

    def fit(
        self,
        train: pd.DataFrame,
        val: pd.DataFrame | None = None,
        callbacks: Sequence[EpochCallback] = (),
    ) -> Ensemble:
        """Train the members that are not fitted yet on ``train`` (each reports its epochs to
        ``callbacks`` in turn), then weigh them all on ``val`` (equal weights without it)."""
        members = self.members
        if members is None:
            names = self.settings.members or list(DEFAULT_MEMBERS)
            if "ensemble" in names:
                raise ConfigError("ensemble: an ensemble cannot be its own member")
            members = {
                n: build_model(ModelSpec(name=n), self.spec, self.training) for n in dict.fromkeys(names)
            }
        if not members:
            raise ConfigError("ensemble: no fitted member to combine")
        for model in members.values():
            if not model.fitted_:
                model.fit(train, val, callbacks)
        self.candidates_ = dict(members)  # every fitted member, before weighing
        return super().fit(train, val, callbacks)

    def _fit(self, train, train_windows, val_windows, callbacks) -> None:
        """Weigh the fitted members on the validation windows (same windows, same series)."""
        members = self.candidates_
        first = next(iter(members.values()))
        for name, model in members.items():
            if model.spec != self.spec:
                raise ConfigError(f"ensemble: member {name!r} was trained on other windows ({model.spec})")
            if model.series_ != first.series_:
                raise ConfigError(f"ensemble: member {name!r} was trained on other series")
        names, models = list(members), list(members.values())
        weights = np.full(len(models), 1.0 / len(models))
        if val_windows is not None:
            if len(val_windows) == 0:
                raise ConfigError("ensemble: the validation data holds no full window to weigh members on")
            weights = self._weigh(models, train, val_windows)
        chosen = np.flatnonzero(weights > 0)
        self.members_ = {names[i]: models[i] for i in chosen}
        self.weights_ = {names[i]: float(weights[i]) for i in chosen}
        self.handles_unseen_series = all(m.handles_unseen_series for m in self.members_.values())

    def _weigh(self, models: list[Forecaster], train: pd.DataFrame, val_windows) -> np.ndarray:
        """The members' weights on the validation windows: greedy on the ``objective`` (or equal),
        members with a non-finite validation error left out."""
        from forecasting.evaluation.metrics import iter_window_forecasts, window_mase_scales

        m, objective = len(models), self.settings.objective
        scales = None
        if objective == "mase":  # each window's series scale, as ``evaluate_windows`` scores MASE
            scales = window_mase_scales(val_windows, train, self.settings.season_length)
        gram, n = np.zeros((m, m)), 0
        # mae and mase: every scored entry's error per member, in one buffer filled batch by batch
        # (at most every window's H entries; trimmed to the scored ones, never copied whole)
        errors = np.empty((m, len(val_windows) * val_windows.horizon)) if objective != "mse" else None
        finite = np.ones(m, dtype=bool)
        for idx, target, forecasts in iter_window_forecasts(models, val_windows):
            seen = np.isfinite(target)  # unobserved targets are not scored
            if scales is not None:  # a window of a series with no scale (flat) is not scored
                per_window = scales[idx]
                seen &= np.isfinite(per_window)[:, None]
            y = target[seen].astype(np.float64)
            err = np.stack([f[seen] for f in forecasts]).astype(np.float64) - y  # (M, entries)
            if scales is not None:
                err = err / np.broadcast_to(per_window[:, None], target.shape)[seen]
            finite &= np.isfinite(err).all(axis=1)
            err = np.where(np.isfinite(err), err, 0.0)
            if errors is None:
                gram += err @ err.T
            else:
                errors[:, n : n + y.size] = err
            n += y.size
        if objective == "mse":
            finite &= np.isfinite(np.diag(gram))  # errors so large their squares overflow
        if not finite.any() or n == 0:
            raise ConfigError("ensemble: no member gives finite forecasts on the validation windows")
        keep = np.flatnonzero(finite)
        weights = np.zeros(m)
        if self.settings.weighting == "equal":
            weights[keep] = 1.0 / len(keep)
        elif objective == "mse":
            weights[keep] = greedy_weights(gram[np.ix_(keep, keep)], n, self.settings.rounds)
        else:
            scored = errors[:, :n] if len(keep) == m else errors[keep, :n]
            weights[keep] = greedy_weights_abs(scored, self.settings.rounds)
        return weights

    @classmethod
    def from_weights(
        cls,
        members: Mapping[str, Forecaster],
        weights: Mapping[str, float],
        settings: EnsembleSettings | None = None,
        training: TrainingConfig | None = None,
    ) -> Ensemble:
        """A fitted ensemble of fitted ``members`` with known ``weights`` (e.g. the weights
        chosen in selection, over the same models refit on more rows): nothing is weighed."""
        missing = sorted(set(weights) - set(members))
        if missing:
            raise ConfigError(f"ensemble: no fitted model for member(s) {missing}")
        chosen = {name: members[name] for name, w in weights.items() if w > 0}
        if not chosen:
            raise ConfigError("ensemble: no member has a positive weight")
        first = next(iter(chosen.values()))
        model = cls(settings, spec=first.spec, training=training, members=chosen)
        model.candidates_ = dict(chosen)
        model.members_ = dict(chosen)
        model.weights_ = {name: float(weights[name]) for name in chosen}
        model.freq_, model.series_ = first.freq_, list(first.series_)
        model.handles_unseen_series = all(m.handles_unseen_series for m in chosen.values())
        model.fitted_ = True
        return model

    def _predict_windows(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        out = None
        for name, model in self.members_.items():
            part = self.weights_[name] * model.predict_windows(batch)  # (N, H)
            out = part if out is None else out + part
        return out

    @property
    def n_params(self) -> int:
        return sum(m.n_params for m in (self.members_ or {}).values())

    def _save_state(self, path: Path) -> None:
        entries = []
        for i, (name, model) in enumerate(self.members_.items()):
            folder = f"members/{i}"
            model.save(path / folder)
            entries.append({"name": name, "weight": self.weights_[name], "path": folder})
        (path / "ensemble.json").write_text(json.dumps({"members": entries}, indent=2))

    def _load_state(self, path: Path) -> None:
        try:
            entries = json.loads((path / "ensemble.json").read_text())["members"]
            listed = [(str(e["name"]), float(e["weight"]), str(e["path"])) for e in entries]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ModelLoadError(f"{path}: no readable ensemble.json ({type(err).__name__}: {err})") from None
        self.members_ = {name: Forecaster.load(path / folder) for name, _, folder in listed}
        self.weights_ = {name: weight for name, weight, _ in listed}
        self.handles_unseen_series = all(m.handles_unseen_series for m in self.members_.values())
