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
    assert "| **ours: champion**" in (run / "results.md").read_text()
