"""The M4 Weekly bench (``bench/m4.py``) on the real files: its scorer reproduces the
competition's Naive figures, the long format holds every series whole, a modified copy is refused,
and ``--quick`` runs the CLI end to end into a scored table."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import m4  # noqa: E402

pytestmark = pytest.mark.skipif(
    not all((m4.M4_DIR / name).exists() for name in m4.SHA256), reason=f"M4 Weekly files not in {m4.M4_DIR}"
)


@pytest.fixture(scope="module")
def weekly() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    m4.verify_files()
    return m4.read_wide(m4.M4_DIR / "Weekly-train.csv"), m4.read_wide(m4.M4_DIR / "Weekly-test.csv")


def test_naive_reproduces_the_published_figures(weekly):
    train, test = weekly
    ids = list(train)
    history = [train[s] for s in ids]
    got = m4.score(np.stack([test[s] for s in ids]), m4.naive_forecast(history), history)
    assert round(got["smape"], 3) == 9.161
    assert round(got["mase"], 3) == 2.777
    assert got["owa"] == pytest.approx(1.0, abs=1e-4)


def test_long_format_holds_every_series_whole(weekly, tmp_path):
    train, _ = weekly
    frame = pd.read_parquet(m4.write_long(train, tmp_path / "weekly.parquet"))
    lengths = frame.groupby("series_id", sort=False).size()
    assert len(lengths) == 359 and list(lengths.index) == [f"W{i}" for i in range(1, 360)]
    assert lengths.min() == 80 and lengths.max() == 2597
    assert (lengths.to_numpy() == [len(train[s]) for s in lengths.index]).all()
    first = frame[frame["series_id"] == "W1"]
    np.testing.assert_array_equal(first["y"].to_numpy(), train["W1"])
    steps = frame.groupby("series_id")["t"].diff().dropna().unique()
    assert list(steps) == [pd.Timedelta(weeks=1)]
    assert (frame.groupby("series_id")["t"].first() == pd.Timestamp(m4.START)).all()


def test_a_modified_copy_is_refused(tmp_path):
    for name in m4.SHA256:
        shutil.copy(m4.M4_DIR / name, tmp_path / name)
    with open(tmp_path / "Weekly-test.csv", "a") as fh:
        fh.write("\n")
    with pytest.raises(m4.ChecksumError, match=r"Weekly-test\.csv"):
        m4.verify_files(tmp_path)


def test_forecast_matrix_orders_steps_and_series():
    t = pd.date_range("2000-01-02", periods=m4.HORIZON, freq="W-SUN")
    frame = pd.DataFrame(
        {"series_id": ["b"] * 13 + ["a"] * 13, "t": list(t[::-1]) + list(t), "yhat": np.arange(26.0)}
    )
    out = m4.forecast_matrix(frame, ["a", "b"])
    np.testing.assert_array_equal(out[0], np.arange(13.0, 26.0))
    np.testing.assert_array_equal(out[1], np.arange(12.0, -1.0, -1.0))
    with pytest.raises(ValueError, match="missing"):
        m4.forecast_matrix(frame, ["a", "b", "c"])


def interval_example() -> tuple[np.ndarray, dict, list[np.ndarray]]:
    """Two series, 3 steps, scales 1 and 2 (mean |diff| of [0, 1, 2] and [0, 2, 0]).

    95 %: series a is inside, inside, then 1 below (score 2, 2, 1 + 40 * 1); series b inside with
    width 2 (2 / 2 = 1 each): MSIS = (2 + 2 + 41 + 1 + 1 + 1) / 6 = 8, coverage 5/6. 80 %: a's
    last two steps are outside, b inside: coverage 4/6. Pinball sums at tau 0.025, 0.1, 0.9, 0.975:
    1.1, 1.55, 0.45, 0.175, so wQL = 2 * 3.275 / 30 / 4 (sum |y| = 30).
    """
    y = np.array([[10.0, 10.0, 10.0], [0.0, 0.0, 0.0]])
    bounds = {
        95.0: (
            np.array([[9.0, 9.0, 11.0], [-1.0, -1.0, -1.0]]),
            np.array([[11.0, 11.0, 12.0], [1.0, 1.0, 1.0]]),
        ),
        80.0: (np.array([[9.5, 10.5, 11.0], [-0.5] * 3]), np.array([[10.5, 11.0, 11.5], [0.5] * 3])),
    }
    return y, bounds, [np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 0.0])]


def test_interval_scores_of_a_hand_made_example():
    y, bounds, history = interval_example()
    got = m4.score_intervals(y, bounds, history)
    assert got["msis"] == pytest.approx(8.0)
    assert got["coverage_95"] == pytest.approx(5 / 6)
    assert got["acd"] == pytest.approx(0.95 - 5 / 6)
    assert got["coverage_80"] == pytest.approx(4 / 6)
    assert got["wql"] == pytest.approx(2 * 3.275 / 30 / 4)


def test_a_forecast_without_bounds_scores_none():
    y, bounds, history = interval_example()
    assert m4.score_intervals(y, {}, history) == dict.fromkeys(m4.INTERVAL_FIELDS)
    only_95 = m4.score_intervals(y, {95.0: bounds[95.0]}, history)
    assert only_95["msis"] == pytest.approx(8.0) and only_95["coverage_80"] is None and only_95["wql"] is None


def test_bounds_are_read_from_a_forecast_frame():
    t = pd.date_range("2000-01-02", periods=m4.HORIZON, freq="W-SUN")
    y = np.arange(1.0, 14.0)
    frame = pd.DataFrame({"series_id": "a", "t": t, "yhat": y})
    history = [np.arange(20.0)]
    plain = m4.score_forecast(y[None], frame, ["a"], history)
    assert plain["mase"] == 0.0 and all(plain[k] is None for k in m4.INTERVAL_FIELDS)
    wide = frame.assign(
        yhat_lo_80_orig=y - 1,
        yhat_hi_80_orig=y + 1,
        yhat_lo_95_orig=y - 2,
        yhat_hi_95_orig=y + 2,
        yhat_orig=y,
    )
    got = m4.score_forecast(y[None], wide, ["a"], history, suffix="_orig")
    assert got["coverage_80"] == got["coverage_95"] == 1.0
    assert got["msis"] == pytest.approx(4.0)  # width 4, scale 1, nothing outside
    assert m4.bound_matrices(wide, ["a"]) == {}  # no unsuffixed bounds


def test_interval_verdicts_say_what_is_missed_and_by_how_much():
    fam = {"msis": 20.0, "acd": 0.05, "coverage_95": 0.90, "coverage_80": 0.81, "wql": 0.1}
    result = {
        "official": {"champion": {"msis": 16.0, "acd": 0.005, "coverage_95": 0.955, "coverage_80": 0.79}},
        "internal": {"Naive, recomputed (the reference)": dict.fromkeys(m4.INTERVAL_FIELDS), "ar": fam},
        "runs": {"ar": {"family": "ar"}},
    }
    got = m4.interval_targets(result)
    assert got["champion_msis"]["met"] and got["champion_coverage"]["met"]
    internal = got["family_coverage_internal"]
    assert not internal["met"] and internal["detail"] == "ar 95 %: 0.900 (-5.0 points, 3.0 beyond ±2)"
    result["official"]["champion"] = {"msis": 18.0, "acd": 0.02, "coverage_95": None, "coverage_80": 0.8}
    got = m4.interval_targets(result)
    assert not got["champion_msis"]["met"]
    assert (
        got["champion_msis"]["detail"]
        == "MSIS 18.000 vs 16.2: +1.800 (+11.1 %); ACD 0.020 vs 0.01: +0.010 (+100.0 %)"
    )
    assert got["champion_coverage"]["detail"] == "95 %: no bounds"


@pytest.mark.slow
def test_quick_run_scores_the_champion(tmp_path):
    """``--quick``: 20 series through ``forecast run`` and ``forecast predict``, scored (~50 s)."""
    out = subprocess.run(
        [sys.executable, str(BENCH / "m4.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (run,) = tmp_path.glob("run-*-quick")
    result = json.loads((run / "results.json").read_text())
    assert result["series"] == m4.QUICK_SERIES
    champion = result["official"]["champion"]
    assert math.isfinite(champion["owa"]) and champion["series"] == m4.QUICK_SERIES
    check = result["official"]["Naive, scorer check (all 359 series)"]
    assert (round(check["smape"], 3), round(check["mase"], 3)) == (9.161, 2.777)
    families = {r["family"] for r in result["runs"].values()}
    assert families == {"naive", "seasonal_naive", "ar", "linear"}
    assert all(math.isfinite(result["internal"][name]["owa"]) for name in result["runs"])
    assert all(math.isfinite(result["internal"][name]["msis"]) for name in result["runs"])
    assert math.isfinite(champion["msis"]) and 0 <= champion["coverage_95"] <= 1
    assert set(result["interval_targets"]) >= {
        "champion_msis",
        "champion_coverage",
        "family_coverage_internal",
    }
    text = (run / "results.md").read_text()
    assert (
        "| **ours: champion**" in text
        and "| best Weekly entry (id 36) (published) | 16.200 | 0.012 |" in text
    )
