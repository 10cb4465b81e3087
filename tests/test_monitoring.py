"""Monitoring: archived forecasts against arriving actuals, the rules, the one retrain a firing
rule starts, and the replay (``forecasting.monitoring``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame

from forecasting.config import ConfigError, config_from_dict
from forecasting.monitoring import monitor as mon
from forecasting.monitoring.replay import parse_policy


# --- figures and rules on hand-made frames ---------------------------------------------------------
def _joined(errors_by_origin: list[list[float]], covered: list[list[bool]] | None = None) -> pd.DataFrame:
    rows = []
    start = pd.Timestamp("2024-01-01")
    for k, errors in enumerate(errors_by_origin):
        origin = start + pd.Timedelta(days=k)
        for h, e in enumerate(errors, 1):
            inside = covered[k][h - 1] if covered else True
            rows.append(
                {
                    "series_id": "s0",
                    "origin": origin,
                    "t": origin + pd.Timedelta(hours=h),
                    "step": h,
                    "yhat": 10.0,
                    "y": 10.0 + e,
                    "error": e,
                    "scale": 2.0,
                    "yhat_lo_80": 9.0 if inside else 20.0,
                    "yhat_hi_80": 30.0,
                }
            )
    return pd.DataFrame(rows)


def test_per_origin_figures_and_their_rolling_window():
    joined = _joined([[1, -1], [2, 2], [3, -3]], covered=[[True, True], [True, False], [False, False]])
    origins = mon.per_origin(joined, ["80"], window=2)
    assert origins["mae"].tolist() == [1.0, 2.0, 3.0]
    assert origins["mse"].tolist() == [1.0, 4.0, 9.0]
    assert origins["mase"].tolist() == [0.5, 1.0, 1.5]
    assert origins["rolling_mae"].tolist() == [1.0, 1.5, 2.5]  # pooled over the last two origins
    assert origins["coverage_80"].tolist() == [1.0, 0.5, 0.0]
    assert origins["rolling_coverage_80"].tolist() == [1.0, 0.75, 0.25]
    assert origins["origins_in_window"].tolist() == [1, 2, 2]


def test_the_error_rule_needs_patience_origins_over_a_full_window():
    calm = mon.per_origin(_joined([[1, 1]] * 6), [], window=3)
    assert mon.error_rule(calm, expected_mae=1.0, factor=1.5, patience=2, window=3) is None
    bad = mon.per_origin(_joined([[1, 1]] * 3 + [[5, 5]] * 3), [], window=2)
    why = mon.error_rule(bad, expected_mae=1.0, factor=1.5, patience=2, window=2)
    assert why is not None and "above 1.5 x" in why
    assert mon.error_rule(bad, expected_mae=1.0, factor=1.5, patience=4, window=2) is None  # 3 bad in a row
    assert (
        mon.error_rule(bad, expected_mae=None, factor=1.5, patience=2, window=2) is None
    )  # nothing expected
    assert mon.error_rule(bad, expected_mae=1.0, factor=None, patience=2, window=2) is None  # rule off
    # One bad origin is not a full window of seven, whatever the patience.
    first = mon.per_origin(_joined([[5, 5]]), [], window=7)
    assert mon.error_rule(first, expected_mae=1.0, factor=1.5, patience=1, window=7) is None


def test_the_coverage_rule():
    good = mon.per_origin(_joined([[1, 1]] * 4), ["80"], window=2)
    assert mon.coverage_rule(good, "80", drop=10, patience=2, window=2) is None
    bad = mon.per_origin(_joined([[1, 1]] * 4, covered=[[False, False]] * 4), ["80"], window=2)
    assert "under 0.700" in mon.coverage_rule(bad, "80", drop=10, patience=2, window=2)


def test_the_drift_rule_compares_a_stretch_with_stretches_of_the_same_length():
    """A month of hourly history with a daily cycle: a normal day does not fire, though its spread
    is far below the month's; a day five units higher fires on its level, a day with six times
    the spread on its spread."""
    rng = np.random.default_rng(0)
    hours = np.arange(24 * 31)
    y = 10 + 3 * np.sin(2 * np.pi * hours / 24) + 0.3 * rng.standard_normal(len(hours))
    frame = pd.DataFrame({"series_id": "a", "t": pd.date_range("2024", periods=len(hours), freq="h"), "y": y})
    past, day = frame.iloc[:-24], frame.iloc[-24:]
    assert mon.drift_rule(day, past, drift=3.0) is None
    assert "level" in mon.drift_rule(day.assign(y=day["y"] + 5), past, drift=3.0)
    wild = day.assign(y=day["y"].mean() + 6 * (day["y"] - day["y"].mean()))
    assert "spread" in mon.drift_rule(wild, past, drift=3.0)
    assert mon.drift_rule(day.assign(y=day["y"] + 5), past, drift=None) is None
    assert mon.drift_rule(day, past.iloc[:30], drift=3.0) is None  # too little history to judge


def test_replay_policies_are_checked():
    assert parse_policy("rule") == ("rule", None)
    assert parse_policy("every:7d") == ("every", pd.Timedelta(days=7))
    with pytest.raises(ConfigError, match="replay policy"):
        parse_policy("weekly")


def test_monitoring_keys_are_validated(tmp_path):
    raw = {"data": {"path": "x.csv"}, "monitoring": {"window": 0}}
    with pytest.raises(ConfigError, match=r"monitoring\.window"):
        config_from_dict(raw)
    raw["monitoring"] = {"error_factor": 0.9}
    with pytest.raises(ConfigError, match=r"monitoring\.error_factor"):
        config_from_dict(raw)


# --- the loop, through MLflow and the archive -----------------------------------------------------
def _series(n: int, shift_from: int | None = None, shift: float = 0.0) -> pd.DataFrame:
    """An hourly AR(1) around a daily cycle; from ``shift_from`` on, ``shift`` higher."""
    rng = np.random.default_rng(3)
    e = np.zeros(n)
    for t in range(1, n):
        e[t] = 0.6 * e[t - 1] + 0.3 * rng.standard_normal()
    y = 10 + np.sin(2 * np.pi * np.arange(n) / 24) + e
    if shift_from is not None:
        y[shift_from:] += shift
    return make_frame(y)


def _loop_config(tmp_path, monitoring=None):
    path = tmp_path / "observed.csv"
    raw = {
        "data": {"path": str(path), "time_column": "t", "target": "y", "id_column": "series_id"},
        "split": {"method": "fractions", "train_fraction": 0.6, "test_fraction": 0.2},
        "window": {"lookback": 48, "horizon": 24},
        "models": [{"name": "seasonal_naive", "params": {"season_length": 24}}, {"name": "ar"}],
        "training": {"progress": False},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "registered_model": "loop"},
        "monitoring": {"window": 2, "patience": 2, "drift": None, **(monitoring or {})},
    }
    return config_from_dict(raw), path


def _operate(tmp_path, full: pd.DataFrame, monitoring=None, days: int = 5, flow=None) -> tuple[list, list]:
    """Train on the first 600 hours, then each day: predict, let the day's actuals arrive, monitor
    (``flow``: the monitor flow, whose retrain is its own, instead of the library with a stand-in)."""
    from forecasting.pipeline import batch_predict, run_pipeline

    cfg, path = _loop_config(tmp_path, monitoring)
    full.iloc[:600].to_csv(path, index=False)
    run_pipeline(cfg)
    retrains, reports = [], []

    def retrain(c, firing):
        retrains.append(firing)
        return "retrain-id"

    for day in range(days):
        upto = 600 + 24 * day
        full.iloc[:upto].to_csv(path, index=False)
        batch_predict(cfg, input_path=path, output_path=tmp_path / "forecast.csv")
        full.iloc[: upto + 24].to_csv(path, index=False)
        if flow is not None:
            reports.append(flow(config=cfg, actuals_path=str(path)))
        else:
            reports.append(mon.monitor(cfg, path, retrain=retrain))
    return retrains, reports


@pytest.mark.slow
def test_retrain_deployment_starts_a_run_of_that_deployment(tmp_path, prefect_harness, mlflow_globals):
    """``monitoring.retrain_deployment``: the firing rule's retrain is a flow run of the named
    deployment (left for its worker), not a pipeline in this process."""
    from prefect.client.orchestration import get_client

    from flows.monitoring import monitor
    from flows.pipeline import forecast_pipeline

    deployment_id = forecast_pipeline.to_deployment(name="retrain-test").apply()
    shifted = _series(800, shift_from=624, shift=5.0)
    mcfg = {"retrain_deployment": "forecast_pipeline/retrain-test", "coverage_drop": None}
    _, reports = _operate(tmp_path, shifted, mcfg, days=4, flow=monitor)
    started = [r["retrain"] for r in reports if r["retrain"]]
    assert len(started) == 1
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(started[0])
    assert run.deployment_id == deployment_id
    from mlflow import MlflowClient

    versions = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_model_versions("name = 'loop'")
    assert len(versions) == 1  # no pipeline ran here: the deployment's worker would run it


@pytest.mark.slow
def test_stationary_data_fires_nothing(tmp_path, mlflow_globals):
    retrains, reports = _operate(tmp_path, _series(800))
    assert retrains == [] and all(not r.firings for r in reports)
    last = reports[-1]
    (version,) = last.versions
    figures = last.versions[version]
    assert figures["origins"] == 5 and figures["rolling_mae"] < 1.5 * figures["expected_mae"]
    # One monitoring run for the version, reopened by each call, with one metric point per origin.
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    history = client.get_metric_history(last.run_ids[version], "mae")
    assert len(history) == 5 and [m.step for m in history] == [0, 1, 2, 3, 4]
    artifacts = {a.path for a in client.list_artifacts(last.run_ids[version], "monitoring")}
    assert {"monitoring/per_series.parquet", "monitoring/per_step.parquet"} <= artifacts


@pytest.mark.slow
def test_a_level_shift_fires_the_error_rule_and_one_retrain(tmp_path, mlflow_globals):
    retrains, reports = _operate(tmp_path, _series(800, shift_from=624, shift=5.0), days=4)
    fired = [r for r in reports if r.firings]
    assert fired, [r.versions for r in reports]
    assert {f.rule for r in fired for f in r.firings} >= {"error"}
    assert len(retrains) == 1  # once per firing: not again within a window of origins
    assert fired[0].retrain == "retrain-id"
    assert all("retrained already" in r.retrain_skipped for r in fired[1:])
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    version = client.get_model_version_by_alias("loop", "champion")
    assert "monitoring.fired.error" in version.tags and "monitoring.retrained" in version.tags


@pytest.mark.slow
@pytest.mark.parametrize(
    ("rules", "fired"),
    [
        ({"error_factor": None}, set()),  # the error rule off, and nothing else on
        ({"error_factor": None, "drift": 1.0}, {"drift"}),  # the level moved 5 / ~0.8 training stds
        ({"error_factor": None, "coverage_drop": 10}, {"coverage_80", "coverage_95"}),
    ],
    ids=["error-off", "drift", "coverage"],
)
def test_each_rule_key_turns_its_rule_on_and_off(tmp_path, mlflow_globals, rules, fired):
    shifted = _series(800, shift_from=624, shift=5.0)
    _, reports = _operate(tmp_path, shifted, {"retrain": "never", "coverage_drop": None, **rules}, days=4)
    assert {f.rule for r in reports for f in r.firings} == fired


@pytest.mark.slow
def test_retrain_never_reports_without_retraining(tmp_path, mlflow_globals):
    retrains, reports = _operate(
        tmp_path, _series(800, shift_from=624, shift=5.0), {"retrain": "never"}, days=4
    )
    assert retrains == [] and any(r.firings for r in reports)
    assert all(r.retrain_skipped == "monitoring.retrain is never" for r in reports if r.firings)


@pytest.mark.slow
def test_replay_runs_the_real_flows_under_each_policy(tmp_path, prefect_harness, mlflow_globals):
    """Five replayed days of hourly data with a level shift on day two: never retrains, a fixed
    schedule every two days retrains twice, the error rule once (two origins in a row over the
    expectation, on day three); each policy's store is its own."""
    from flows.monitoring import replay

    cfg, path = _loop_config(tmp_path, {"window": 3})  # fires on day four: one retrain by day five
    _series(800, shift_from=624, shift=5.0).iloc[:720].to_csv(path, index=False)
    start, end = "2024-01-26 00:00", "2024-01-31 00:00"  # rows 600 .. 720
    reports = {}
    for policy in ("never", "every:2d", "rule"):
        reports[policy] = replay(
            config=cfg, start=start, end=end, out=str(tmp_path / "replay"), policy=policy
        )
    for report in reports.values():
        assert report["predictions"] == 5 and report["monitors"] == 5
        assert report["scores"]["forecasts"] > 0 and "coverage_80" in report["scores"]
        assert 1 <= report["scores"]["versions_served"] <= 1 + report["retrains"]
    assert reports["never"]["retrains"] == 0
    assert reports["every:2d"]["retrains"] == 2
    assert reports["rule"]["retrains"] == 1
    assert (tmp_path / "replay" / "rule" / "archive.db").exists()
    assert (tmp_path / "replay" / "every-2d" / "mlflow.db").exists()
