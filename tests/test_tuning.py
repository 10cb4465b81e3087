"""Hyper-parameter and architecture search: the grid is enumerated exactly, hopeless trials are
pruned, an interrupted study resumes, and workers share one study (threads on PostgreSQL, two
Dask worker processes on SQLite through the CLI and the Prefect flow)."""

from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState
from servers import postgres_database
from test_pipeline import make_config, synthetic_csv

from forecasting import tuning
from forecasting.config import config_from_dict
from forecasting.errors import ConfigError
from forecasting.tuning import optuna_adapter

EPOCHS = 3


def search_config(tmp_path, experiment: str, search: dict, epochs: int = EPOCHS, **extra):
    training = {"epochs": epochs, "batch_size": 64, "progress": False, "patience": None, "num_threads": 1}
    return make_config(tmp_path, experiment, [{"name": "naive"}], training=training, search=search, **extra)


def load(cfg) -> optuna.Study:
    return optuna.load_study(study_name=tuning.study_name(cfg), storage=tuning.storage_url(cfg))


def trial_runs(client: MlflowClient, parent_run_id: str) -> dict[int, object]:
    """The trial runs under a tuning parent, by trial number (the last one wins)."""
    exp = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs(
        [exp], f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.role = 'trial'", max_results=500
    )
    return {int(r.data.tags["trial_number"]): r for r in runs}


def test_config_rejects_a_search_that_cannot_run(tmp_path):
    with pytest.raises(ConfigError, match="needs a budget"):
        search_config(tmp_path, "bad", {"sampler": "tpe", "families": {"linear": {}}})
    with pytest.raises(ConfigError, match="grid sampler needs a list or a range with step"):
        search_config(
            tmp_path,
            "bad",
            {"sampler": "grid", "space": {"lr": {"low": 1e-3, "high": 1e-2}}, "families": {"linear": {}}},
        )
    cfg = search_config(tmp_path, "bad", {"sampler": "grid", "families": {"linear": {"layers": [1, 2]}}})
    with pytest.raises(ConfigError, match=r"search.families.linear.*unknown key params.layers"):
        tuning.check_search(cfg)
    cfg = search_config(tmp_path, "bad", {"sampler": "grid", "families": {"ensemble": {}}})
    with pytest.raises(ConfigError, match=r"search.families.ensemble: an ensemble is weighed on a run's"):
        tuning.check_search(cfg)


def test_cli_tune_without_a_search_space_is_a_config_error(tmp_path, capsys):
    from forecasting.cli import main

    data = tmp_path / "sales.csv"
    synthetic_csv(data)
    path = tmp_path / "no-search.yaml"
    path.write_text(
        yaml.safe_dump(
            {"data": {"path": str(data), "time_column": "ts", "target": "sales", "id_column": "store"}}
        )
    )
    assert main(["tune", str(path)]) == 2
    assert "error: ConfigError: search.families is empty" in capsys.readouterr().err


def test_grid_enumerates_exactly_the_declared_grid(tmp_path):
    search = {
        "sampler": "grid",
        "pruner": "none",
        "space": {"lr": [0.001, 0.01]},
        "families": {
            "linear": {"settings": {"kind": ["nlinear", "dlinear"]}},
            "naive": {},  # no training loop: the shared lr does not multiply it
        },
    }
    cfg = search_config(tmp_path, "tune-grid", search)
    expected = [
        {"family": "linear", "lr": lr, "linear.kind": kind}
        for lr in (0.001, 0.01)
        for kind in ("nlinear", "dlinear")
    ] + [{"family": "naive"}]
    assert tuning.grid_points(cfg.search) == expected

    result = tuning.tune(cfg)

    trials = load(cfg).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * len(expected)
    assert sorted(map(repr, (t.params for t in trials))) == sorted(map(repr, expected))
    assert result.summary["best_value"] == min(t.value for t in trials)

    # One parent run; every trial a nested run with its parameters, curves, metric and state.
    client = MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["role"] == "tuning"
    best = min(trials, key=lambda t: t.value)
    assert parent.data.tags["best_trial"] == str(best.number)
    assert {k: v for k, v in parent.data.tags.items() if k.startswith("best.")} == {
        f"best.{k}": str(v) for k, v in best.params.items()
    }
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"best_params.json", "trials.csv", "param_importance.csv", "grid.json", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(result.parent_run_id, "plots")}
    assert "plots/optimization_history.png" in plots
    runs = trial_runs(client, result.parent_run_id)
    assert sorted(runs) == [t.number for t in trials]
    for t in trials:
        run = runs[t.number]
        assert run.info.status == "FINISHED" and run.data.tags["trial_state"] == "complete"
        assert run.data.metrics["val_mse"] == pytest.approx(t.value)
        if t.params["family"] == "linear":
            assert run.data.params["trial.lr"] == str(t.params["lr"])
            curve = client.get_metric_history(run.info.run_id, "val_loss")
            assert [m.step for m in curve] == list(range(1, EPOCHS + 1))

    # The best configuration went through train_model + select_champion.
    assert result.retrained.status == "FINISHED"
    assert result.retrained.metrics["val_mse"] == pytest.approx(best.value, rel=1e-4)
    champion = client.get_model_version_by_alias(cfg.tracking.registered_model, "champion")
    assert champion.run_id == result.retrained.run_id
    retrained = client.get_run(result.retrained.run_id)
    assert retrained.data.tags["mlflow.parentRunId"] == result.parent_run_id
    assert retrained.data.tags["best_trial"] == str(best.number)


def test_hopeless_trial_is_pruned_before_its_last_epoch(tmp_path):
    epochs = 4
    search = {
        "sampler": "grid",
        "pruner": "successive_halving",
        "min_epochs": 1,
        "reduction_factor": 2,
        "retrain_best": False,
        # Grid order is declaration order: two sensible rates, then one that cannot learn.
        "families": {"linear": {"lr": [0.01, 0.005, 1e-9]}},
    }
    cfg = search_config(tmp_path, "tune-prune", search, epochs=epochs)
    result = tuning.tune(cfg)

    trials = {t.params["linear.lr"]: t for t in load(cfg).get_trials()}
    assert trials[0.01].state == TrialState.COMPLETE
    hopeless = trials[1e-9]
    assert hopeless.state == TrialState.PRUNED
    assert hopeless.last_step < epochs and hopeless.user_attrs["epochs"] < epochs

    run = trial_runs(MlflowClient(), result.parent_run_id)[hopeless.number]
    assert run.info.status == "FINISHED"  # pruned is not a failure
    assert run.data.tags["trial_state"] == "pruned"
    assert len(MlflowClient().get_metric_history(run.info.run_id, "val_loss")) == hopeless.last_step
    assert result.summary["n_pruned"] >= 1 and result.summary["total_epochs"] < 3 * epochs


def test_interrupted_study_resumes_without_repeating_finished_trials(tmp_path):
    search = {
        "sampler": "random",
        "pruner": "none",
        "n_trials": 4,
        "seed": 3,
        "retrain_best": False,
        "families": {"linear": {"lr": {"low": 0.001, "high": 0.03, "log": True}}},
    }
    cfg = search_config(tmp_path, "tune-resume", search, epochs=2)
    started = []

    def interrupt_third_trial(epoch: int, metrics: dict) -> None:
        if epoch == 1:
            started.append(1)
            if len(started) == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tuning.tune(cfg, callbacks=[interrupt_third_trial])

    study = load(cfg)
    first = {t.number: t for t in study.get_trials()}
    assert [t.state for t in first.values()].count(TrialState.COMPLETE) == 2
    killed = next(t for t in first.values() if t.state == TrialState.FAIL)
    client = MlflowClient()
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    assert client.get_run(parent_id).info.status == "KILLED"
    killed_run = trial_runs(client, parent_id)[killed.number]
    assert killed_run.info.status == "KILLED" and killed_run.data.tags["trial_state"] == "interrupted"

    result = tuning.tune(cfg)  # resume

    assert result.parent_run_id == parent_id
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert len(result.reports[0].trials) == 2  # only what was left
    trials = load(cfg).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs[tuning.SLOT] for t in complete) == [0, 1, 2, 3]
    for number, before in first.items():  # finished trials were not touched
        if before.state == TrialState.COMPLETE:
            assert trials[number].value == before.value and trials[number].params == before.params
    retry = next(t for t in complete if t.user_attrs.get("retry_of") == killed.number)
    assert retry.params == killed.params  # the interrupted trial ran again as it was
    assert len(trial_runs(client, parent_id)) == 5  # 2 + 1 killed + 2, none repeated


def new_queue(tmp_path, name: str = "queue") -> tuning.TrialQueue:
    """A study on its own SQLite storage, with nothing queued."""
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    storage = tuning.make_storage(url, heartbeat_s=30)
    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True)
    return tuning.TrialQueue.of(study, storage)


def test_optuna_adapter_binds_a_claimed_trial(tmp_path):
    """Pins what ``forecasting/tuning/optuna_adapter.py`` relies on: ``optuna.Trial(study, id)`` of a
    trial moved to RUNNING through the storage is that trial, end to end."""
    queue = new_queue(tmp_path)
    study, storage = queue.study, queue.storage
    study.enqueue_trial({"x": 2.0}, user_attrs={tuning.SLOT: 0})
    (waiting,) = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    trial_id = queue.trial_id(waiting)
    assert storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)

    trial = optuna_adapter.bind_trial(study, trial_id)

    assert trial.number == waiting.number
    assert trial.suggest_float("x", 0.0, 5.0) == 2.0  # the value fixed when it was queued
    n = trial.suggest_int("n", 1, 3)  # a parameter of its own, written through the study's storage
    trial.report(0.5, step=1)
    trial.set_user_attr("worker", 7)
    study.tell(trial, 1.25)
    (done,) = study.get_trials()
    assert (done.number, done.state, done.value) == (waiting.number, TrialState.COMPLETE, 1.25)
    assert done.params == {"x": 2.0, "n": n} and done.intermediate_values == {1: 0.5}
    assert done.user_attrs == {tuning.SLOT: 0, "worker": 7}


def test_a_queued_trial_is_claimed_once_and_only_within_the_budget(tmp_path):
    first, other = new_queue(tmp_path), new_queue(tmp_path)  # two workers, two storages, one study
    for slot in (0, 1):
        first.study.enqueue_trial({}, user_attrs={tuning.SLOT: slot})
    first.study.enqueue_trial({})  # no slot: re-queued from a search with a wall-time budget only

    assert first.next_trial(1).number == 0
    assert other.next_trial(1) is None  # slot 0 is taken, slot 1 is beyond the limit
    assert other.next_trial(2).number == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Study.ask's heartbeat warning stays inside the queue
        assert first.next_trial(None).number == 2  # no trial budget: any queued trial first
        assert other.next_trial(None).number == 3  # then a new one
    states = [t.state for t in first.study.get_trials()]
    assert states == [TrialState.RUNNING] * 4


def test_trial_of_a_dead_worker_runs_again(tmp_path):
    from forecasting.tracking import Tracker

    search = {
        "sampler": "grid",
        "pruner": "none",
        "heartbeat_s": 1,  # stale after 4 s without a heartbeat
        "retrain_best": False,
        "families": {"linear": {"lr": [0.001, 0.01]}},
    }
    cfg = search_config(tmp_path, "tune-stale", search, epochs=1)
    # A worker claims a trial, starts its run, then dies (kill -9): no heartbeat after the first.
    study = tuning.open_study(cfg)
    queue = tuning.open_queue(cfg, study.study_name, tuning.storage_url(cfg), cfg.search.seed)
    dead = queue.claim(None)
    dead.suggest_categorical("linear.lr", [0.001, 0.01])
    queue.storage.record_heartbeat(queue.trial_id(dead))
    orphan = Tracker(cfg.tracking).start("orphan")
    dead.set_user_attr("mlflow_run_id", orphan.run_id)

    tuning.tune(cfg)

    trials = load(cfg).get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["linear.lr"] for t in complete) == [0.001, 0.01]
    assert any(t.user_attrs.get("retry_of") == dead.number for t in complete)
    assert MlflowClient().get_run(orphan.run_id).info.status == "KILLED"


@pytest.mark.server
def test_workers_share_one_study_on_postgresql(tmp_path):
    barrier = threading.Barrier(2, timeout=120)

    def meet_once(seen: list) -> object:
        def callback(epoch: int, metrics: dict) -> None:
            if not seen:
                seen.append(1)
                barrier.wait()  # both workers are inside a trial of the same study at once

        return callback

    def two_threads(jobs):
        with ThreadPoolExecutor(len(jobs)) as pool:
            return list(pool.map(lambda job: tuning.run_worker(job, [meet_once([])]), jobs))

    with postgres_database() as url:
        search = {
            "sampler": "grid",
            "pruner": "none",
            "storage": url,
            "n_workers": 2,
            "retrain_best": False,
            "families": {
                "linear": {"lr": [0.001, 0.003, 0.01], "settings": {"kind": ["nlinear", "dlinear"]}}
            },
        }
        cfg = search_config(tmp_path, "tune-pg", search, epochs=2)
        result = tuning.tune(cfg, run_workers=two_threads)
        trials = load(cfg).get_trials()

    assert len(result.reports) == 2 and all(r.trials for r in result.reports)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert sorted(map(repr, (t.params for t in trials))) == sorted(map(repr, tuning.grid_points(cfg.search)))
    by_worker = sorted(n for r in result.reports for n in r.trials)
    assert by_worker == [t.number for t in trials]  # each trial run by exactly one worker
    assert sorted(trial_runs(MlflowClient(), result.parent_run_id)) == by_worker


@pytest.mark.slow
def test_two_dask_worker_processes_complete_the_budget_between_them(prefect_harness, tmp_path):
    pytest.importorskip("prefect_dask")
    from forecasting.cli import main

    data = tmp_path / "sales.csv"
    synthetic_csv(data)
    raw = {
        "data": {"path": str(data), "time_column": "ts", "target": "sales", "id_column": "store"},
        "split": {"method": "fractions", "train_fraction": 0.6, "test_fraction": 0.2},
        "window": {"lookback": 48, "horizon": 12},
        "training": {"epochs": 2, "batch_size": 64, "progress": False, "patience": None},
        "tracking": {"experiment": "tune-dask", "registered_model": "tune-dask-model"},
        "orchestration": {"dask_local_workers": 2},
        "search": {
            "sampler": "grid",
            "pruner": "none",
            "storage": f"sqlite:///{tmp_path / 'study.db'}",
            "families": {
                "linear": {"lr": [0.001, 0.003, 0.01, 0.03], "settings": {"kind": ["nlinear", "dlinear"]}}
            },
        },
    }
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(raw))

    assert main(["--quiet", "tune", str(path), "--no-retrain"]) == 0

    cfg = config_from_dict(raw)
    study = load(cfg)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    assert sorted(map(repr, (t.params for t in trials))) == sorted(map(repr, tuning.grid_points(cfg.search)))
    client = MlflowClient()
    runs = trial_runs(client, study.user_attrs["mlflow_parent_run_id"])
    assert sorted(runs) == [t.number for t in trials]
    # Two Dask worker processes (neither of them this one) worked on the study.
    workers = {k: v for k, v in study.user_attrs.items() if k.startswith("worker.")}
    pids = {int(k.rsplit(".", 1)[1]) for k in workers}
    assert len(pids) == 2 and os.getpid() not in pids
    assert sorted(v["index"] for v in workers.values()) == [0, 1]
    assert {t.user_attrs["pid"] for t in trials} <= pids
    assert {r.data.tags["worker_pid"] for r in runs.values()} <= {str(p) for p in pids}
