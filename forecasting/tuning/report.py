"""The summary of a study on its parent run: the trials table, parameter importance, the
optimisation history plot, and the best parameters as tags.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from forecasting.config import Config, SearchConfig
from forecasting.tuning.space import family_dimensions


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, epochs trained, worker, MLflow run, parameters."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value if t.state == TrialState.COMPLETE else np.nan,
                "last_val_loss": t.intermediate_values[t.last_step] if t.last_step is not None else np.nan,
                "epochs": int(t.user_attrs.get("epochs", 0)),
                "worker": t.user_attrs.get("worker"),
                "retry_of": t.user_attrs.get("retry_of"),
                "seconds": t.duration.total_seconds() if t.duration else np.nan,
                "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
                **{f"param.{k}": v for k, v in t.params.items()},
                "error": t.user_attrs.get("error", ""),
            }
        )
    return pd.DataFrame(rows)


def param_importances(study: optuna.Study, search: SearchConfig) -> pd.DataFrame:
    """Importance of each parameter for the objective (Optuna's default evaluator).

    Scope ``all`` covers the parameters every completed trial has (the family and the shared
    dimensions); with several families, each family's own parameters get a scope of their own.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return pd.DataFrame(columns=["scope", "param", "importance", "trials"])
    scopes = {"all": sorted(set.intersection(*(set(t.params) for t in complete)))}
    if len(search.families) > 1:
        for family in search.families:
            scopes[family] = [d.param for d in family_dimensions(search, family)]
    rows = []
    for scope, params in scopes.items():
        members = [t for t in complete if set(params) <= set(t.params)]
        varied = [p for p in params if len({repr(t.params[p]) for t in members}) > 1]
        if len(members) < 2 or not varied:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = optuna.importance.get_param_importances(study, params=varied)
        except (RuntimeError, ValueError, ZeroDivisionError):
            continue  # too few distinct trials for this scope
        rows += [
            {"scope": scope, "param": p, "importance": v, "trials": len(members)} for p, v in found.items()
        ]
    return pd.DataFrame(rows, columns=["scope", "param", "importance", "trials"])


def history_figure(study: optuna.Study, metric: str) -> Any:
    """Objective per trial (pruned ones at their last validation loss) and the best so far."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), layout="tight")
    ax = fig.subplots()
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    done = [(t.number, t.value) for t in trials if t.state == TrialState.COMPLETE]
    pruned = [
        (t.number, t.intermediate_values[t.last_step])
        for t in trials
        if t.state == TrialState.PRUNED and t.last_step is not None
    ]
    if done:
        x, y = zip(*done, strict=True)
        ax.scatter(x, y, s=18, label="complete", color="tab:blue", zorder=3)
        best = np.minimum.accumulate(np.asarray(y))
        ax.step(x, best, where="post", color="tab:red", label="best so far")
    if pruned:
        x, y = zip(*pruned, strict=True)
        ax.scatter(x, y, s=18, marker="x", color="tab:gray", label="pruned (last val_loss)")
    values = [v for _, v in done + pruned if v is not None and math.isfinite(v) and v > 0]
    if values and max(values) / min(values) > 20:
        ax.set_yscale("log")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"optimisation history of {study.study_name}")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def summarise(study: optuna.Study, parent: Any, cfg: Config) -> dict[str, Any]:
    """Best parameters, counts, the trials table, the history plot and parameter importance.

    The parent run is reopened when a study resumes, and MLflow params cannot change, so the best
    parameters are tags (``best.<name>``) and ``best_params.json``.
    """
    frame = trials_frame(study)
    counts = {
        s: int((frame["state"] == s).sum()) if len(frame) else 0 for s in ("COMPLETE", "PRUNED", "FAIL")
    }
    total_epochs = int(frame["epochs"].sum()) if len(frame) else 0
    summary: dict[str, Any] = {
        "n_complete": counts["COMPLETE"],
        "n_pruned": counts["PRUNED"],
        "n_failed": counts["FAIL"],
        "total_epochs": total_epochs,
        "best_trial": None,
        "best_value": None,
        "best_params": {},
    }
    if counts["COMPLETE"]:
        best = study.best_trial
        summary.update(best_trial=best.number, best_value=best.value, best_params=dict(best.params))
        parent.set_tags({"best_trial": best.number, **{f"best.{k}": v for k, v in best.params.items()}})
        parent.log_dict(
            {"trial": best.number, "value": best.value, "params": best.params}, "best_params.json"
        )
    step = sum(counts.values())
    parent.log_metrics(
        {k: v for k, v in summary.items() if k.startswith("n_") or k in ("total_epochs", "best_value")},
        step=step,
    )
    if len(frame):
        parent.log_frame(frame, "trials.csv")
        parent.log_figure(
            history_figure(study, cfg.tracking.selection_metric), "plots/optimization_history.png"
        )
    importance = param_importances(study, cfg.search)
    parent.log_frame(importance, "param_importance.csv")
    parent.log_text(
        importance.to_string(index=False) if len(importance) else "(too few trials)", "param_importance.txt"
    )
    summary["importance"] = importance.to_dict(orient="records")
    return summary
