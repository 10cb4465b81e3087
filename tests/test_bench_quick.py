"""Every bench script runs in its ``--quick`` form (tiny sizes), so a change that breaks a benchmark
fails the suite. Each runs as its own process with the project's interpreter, writes only under
the test's ``tmp_path`` (its output, ``TMPDIR``, ``HOME``, the MLflow and Prefect stores, the
working directory) and never into ``bench/results/``. What is checked is that the script ran and
wrote the rows it should, with finite numbers; no figure's value and no timing is asserted.

``bench/m4.py --quick`` runs in ``test_bench_m4.py``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))

import accuracy  # noqa: E402
import ar_batched  # noqa: E402
import deep_etth1  # noqa: E402
import demo_timing  # noqa: E402
import intervals  # noqa: E402
import orchestration  # noqa: E402
import speed  # noqa: E402

pytestmark = pytest.mark.slow


def results_snapshot() -> dict[str, int]:
    return {str(p.relative_to(RESULTS)): p.stat().st_mtime_ns for p in RESULTS.rglob("*") if p.is_file()}


def run_bench(
    tmp_path: Path, command: list[str], timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in ``tmp_path`` with every store, cache and temp folder under it; fail with
    the end of its output unless it exits 0, or if it touched ``bench/results/``."""
    sandbox = {
        "TMPDIR": tmp_path / "tmp",
        "HOME": tmp_path / "home",
        "XDG_CACHE_HOME": tmp_path / "home" / ".cache",
        "PREFECT_HOME": tmp_path / "prefect",
        "MPLCONFIGDIR": tmp_path / "matplotlib",
    }
    for folder in sandbox.values():
        folder.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        **{k: str(v) for k, v in sandbox.items()},
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",  # as conftest.py: one torch thread where a script sets none
        "ETT_DIR": str(ROOT / "data"),  # the bundled ETTh1 only: the same data on every machine
        **env,
    }
    before = results_snapshot()
    out = subprocess.run(command, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + "\n" + out.stderr[-3000:]
    assert results_snapshot() == before, "the quick run changed bench/results/"
    return out


def python(script: str, *args: str | Path) -> list[str]:
    return [sys.executable, str(BENCH / script), *map(str, args)]


def finite(*values: Any) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_accuracy(tmp_path):
    out = tmp_path / "accuracy.csv"
    run_bench(tmp_path, python("accuracy.py", "--quick", "--max-steps", "3", "--epochs", "1", "--out", out))
    rows = read_csv(out)
    assert [r["family"] for r in rows] == accuracy.FAMILIES
    assert all(r["dataset"] == "ETTh1" and r["features"] == "S" and not r["error"] for r in rows)
    assert all(finite(float(r["val_mse"]), float(r["test_mse"]), float(r["test_mae"])) for r in rows)
    assert "| ETTh1 | S | 336 | 96 |" in out.with_suffix(".md").read_text()
    assert {r["calendar"] for r in rows} == {"none"}  # the published protocol's, recorded per row
    # one setting per file: a run with the other calendar setting is refused before any fit
    again = subprocess.run(
        python("accuracy.py", "--quick", "--calendar", "auto", "--out", out), capture_output=True, text=True
    )
    assert again.returncode == 2 and "holds rows run with calendar ['none']" in again.stderr
    assert len(read_csv(out)) == len(rows)


def test_ett_config_calendar_reaches_the_prepared_windows():
    """``accuracy.py --calendar none`` runs the protocol as the published models ran it."""
    from _common import ett_config

    from forecasting.pipeline import prepare

    assert prepare(ett_config("ETTh1", "S", 96, 24)).spec.calendar == ["hour_of_day"]
    assert prepare(ett_config("ETTh1", "S", 96, 24, calendar="none")).spec.calendar == []


def test_ar_batched(tmp_path):
    out = tmp_path / "ar.json"
    printed = run_bench(tmp_path, python("ar_batched.py", "--quick", "--out", out)).stdout
    (row,) = json.loads(out.read_text())["rows"]
    assert [row["series"]] == ar_batched.QUICK_SIZES and f"{row['series']:>6} series" in printed
    assert finite(row["statsmodels_s"], row["batched_s"], row["max_coef_diff"], row["orders_agree"])


def test_deep_etth1(tmp_path):
    out = tmp_path / "deep.json"
    printed = run_bench(tmp_path, python("deep_etth1.py", "--quick", "--out", out)).stdout
    result = json.loads(out.read_text())
    assert result["max_steps"] == 3
    assert [(r["model"], r["lookback"]) for r in result["rows"]] == [(m, 96) for m in deep_etth1.FAMILIES]
    assert all(finite(r["mse"], r["mae"]) and r["windows"] > 0 for r in result["rows"])
    assert printed.count("| 96 |") == len(deep_etth1.FAMILIES)


def test_demo_timing(tmp_path):
    """A small demo (``QUICK_DEMO``): the instrumented phases, the compute-only run, and
    ``forecast run`` on it, whole."""
    out = tmp_path / "demo_timing.json"
    printed = run_bench(tmp_path, python("demo_timing.py", "--quick", "--out", out), timeout=400).stdout
    result = json.loads(out.read_text())
    cold = result["demo_cold"]
    assert cold["returncode"] == 0, cold["tail"]
    assert "demo_warm" not in result
    phases = result["phases"]
    assert all(finite(v) for v in phases["phases"].values())
    families = [m["name"] for m in demo_timing.QUICK_DEMO["models"]]
    assert {k: v["status"] for k, v in phases["families"].items()} == dict.fromkeys(families, "FINISHED")
    assert phases["prediction_rows"] > 0 and "-> champion" in phases["champion"]
    assert result["compute_only"]["forecast_rows"] > 0 and finite(result["compute_only"]["champion_val_mse"])
    assert "### Demo breakdown" in printed and "| naive |" in printed


def test_intervals(tmp_path):
    out = tmp_path / "intervals.csv"
    printed = run_bench(tmp_path, python("intervals.py", "--quick", "--overhead", "--out", out)).stdout
    rows = read_csv(out)
    assert [r["model"] for r in rows] == intervals.QUICK_FAMILIES
    assert all(r["cell"] == intervals.QUICK_CELLS[0] and r["status"] == "FINISHED" for r in rows)
    assert sum(r["champion"] == "True" for r in rows) == 1
    for r in rows:
        coverages = [float(r[f"{split}_coverage_{lv}"]) for split in ("val", "test") for lv in (80, 95)]
        assert all(0 <= c <= 1 for c in coverages)
        assert finite(float(r["test_msis"]), float(r["test_wql"]), float(r["test_mse"]))
    assert "Targets (test coverage" in printed and "demo pipeline, no intervals:" in printed
    assert "ratio " in printed


def test_orchestration(tmp_path):
    """``bench/orchestration.py --quick``: the pipeline flow on Prefect's ephemeral API and the same
    work without Prefect at N = 1 and 2 models, the lines fitted over N, the first runs of the
    process, and MLflow's logging of one model run."""
    out = tmp_path / "orchestration.csv"
    printed = run_bench(tmp_path, python("orchestration.py", "--quick", "--out", out)).stdout
    rows = read_csv(out)
    assert {"api", "what", "n_models", "seconds", "samples", "load1_median", "commit", "cpu", "date"} <= set(
        rows[0]
    )
    assert {r["api"] for r in rows} == {"ephemeral", orchestration.NO_PREFECT}  # MLflow's: no Prefect
    measured = {(r["what"], r["n_models"]) for r in rows}
    for n in orchestration.QUICK["models"]:
        for what in ("flow run", "plain run", "orchestration (flow - plain)"):
            assert (what, str(n)) in measured
    whats = {r["what"] for r in rows}
    for kind in ("flow", "plain", "orchestration"):
        assert {f"fixed cost ({kind})", f"per model ({kind})"} <= whats
    assert {"first flow run in the process", "local API start (beside the imports)"} <= whats
    logging = {r["what"] for r in rows if r["api"] == orchestration.NO_PREFECT}
    assert {"mlflow log: model run, logging only", "mlflow log: pyfunc model"} <= logging
    assert all(finite(float(r["seconds"])) for r in rows)
    assert "### Orchestration cost" in printed and "| ephemeral | flow run | 1 |" in printed


def test_speed(tmp_path):
    out = tmp_path / "speed.json"
    run_bench(tmp_path, python("speed.py", "--quick", "--out", out))
    result = json.loads(out.read_text())
    assert list(result) == ["train", "tta", "ar", "predict", "memory"]
    assert all(section["quick"] for section in result.values())
    deep = [f for f in speed.QUICK_FAMILIES if f in speed.DEEP]
    assert deep, "--quick must run one network through every section"
    train = result["train"]["rows"]
    assert {(r["family"], r["impl"]) for r in train} == {
        (f, impl)
        for f in deep
        for impl in ["plain PyTorch", "ours (recipe)"] + ["ours (same net)"] * (f in speed.SAME_PARAMS)
    }
    assert all("error" not in r and finite(r["windows_per_s"], r["peak_rss_mb"]) for r in train)
    tta = result["tta"]["rows"]
    assert [r["family"] for r in tta] == deep and all(finite(r["test_mse"]) for r in tta)
    (ar,) = result["ar"]["rows"]
    assert ar["series"] == speed.QUICK_SERIES and finite(ar["speedup"], ar["max_coef_diff"])
    predict = result["predict"]["rows"]
    assert [r["family"] for r in predict] == speed.QUICK_FAMILIES
    assert all(finite(r["predict_s"], r["bundle_s"]) for r in predict)
    memory = result["memory"]["rows"]
    assert result["memory"]["dataset"] == "ETTh1" and memory
    assert all("error" not in r and isinstance(r["windows_are_views"], bool) for r in memory)
    assert all(finite(r["peak_rss_mb"], r["test_mse"]) for r in memory)


def test_tune_vs_grid(tmp_path):
    out = tmp_path / "tune.json"
    run_bench(tmp_path, python("tune_vs_grid.py", "--quick", "--out", out))
    result = json.loads(out.read_text())
    searches = result["searches"]
    assert list(searches) == ["grid", "tpe+hyperband (min_epochs 1)", "tpe+hyperband (min_epochs 2)"]
    assert all(s["trials"] == result["points"] for s in searches.values())
    assert searches["grid"]["n_complete"] == result["points"]
    assert all(finite(s["best_value"], s["total_epochs"]) for s in searches.values())


def test_gpu_dry_run(tmp_path):
    """``bench/gpu.sh --dry-run``: the GPU script's steps on CPU at toy sizes. The script never
    fails on a step (a time limit must keep what ran), so each step's output is checked."""
    out = tmp_path / "gpu"
    run_bench(tmp_path, ["bash", str(BENCH / "gpu.sh"), "--dry-run"], OUT=str(out), PY=sys.executable)
    log = (out / "gpu.log").read_text()
    assert "ended with status" not in log, (out / "steps.log").read_text()[-3000:]
    assert "skip ETTm1: not found" in log  # ETT_DIR holds ETTh1 only
    rows = read_csv(out / "accuracy.csv")
    assert [(r["dataset"], r["features"], r["family"]) for r in rows] == [
        ("ETTh1", "M", "naive"),
        ("ETTh1", "M", "linear"),
    ]
    assert all(not r["error"] and finite(float(r["test_mse"])) for r in rows)
    assert "| ETTh1 | M | 336 | 96 |" in (out / "accuracy.md").read_text()
    train = json.loads((out / "speed.json").read_text())["train"]["rows"]
    assert [(r["family"], r["impl"]) for r in train] == [
        ("linear", "plain PyTorch"),
        ("linear", "ours (recipe)"),
    ]
    assert all("error" not in r and finite(r["windows_per_s"]) for r in train)
    assert json.loads((out / "machine.json").read_text())["ett_dir"] == str(ROOT / "data")


def test_peers(tmp_path):
    """``bench/peers.py --quick``: ours on the peers' protocol (and the peers too where the peer
    environment exists; CI does not build it: the suite does not depend on the peers)."""
    out = tmp_path / "peers.json"
    done = run_bench(tmp_path, python("peers.py", "--quick", "--out", out), timeout=400)
    result = json.loads(out.read_text())
    ours = [r for r in result["rows"] if r["side"] == "ours"]
    assert ours and all(finite(r["test_mse"], r["test_mae"], r["fit_s"]) for r in ours)
    assert result["protocol"]["n_test"] > 0
    if not (ROOT / ".venv-peers" / "bin" / "python").exists():
        assert "peers skipped" in done.stdout
        assert not [r for r in result["rows"] if r["side"] == "peer"]
