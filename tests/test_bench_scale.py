"""bench/scale.py's generator: seeded, varied, and the panel shape the scaling benchmark claims."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import scale


def test_generator_is_seeded_and_varied(tmp_path):
    a, b, c = (tmp_path / f"{k}.parquet" for k in "abc")
    made = scale.generate(2500, a, length=300, seed=3)
    scale.generate(2500, b, length=300, seed=3)
    scale.generate(2500, c, length=300, seed=4)
    fa, fb, fc = (pd.read_parquet(p) for p in (a, b, c))
    pd.testing.assert_frame_equal(fa, fb)
    assert not fa["y"].equals(fc["y"])
    assert made["rows"] == len(fa) and isinstance(fa["series_id"].dtype, pd.CategoricalDtype)
    lengths = fa.groupby("series_id", observed=True).size()
    assert len(lengths) == 2500 and lengths.max() == 300
    short = lengths.between(*scale.SHORT)
    assert 0.02 < short.mean() < 0.15  # the share of short series (5 % asked)
    assert (lengths >= scale.SHORT[0]).all()
    # every series ends at the same hour, in hourly steps with no gap
    ends = fa.groupby("series_id", observed=True)["timestamp"].max()
    assert ends.nunique() == 1
    steps = fa.groupby("series_id", observed=True)["timestamp"].diff().dropna()
    assert (steps == pd.Timedelta(hours=1)).all()
    # intermittent series: mostly zeros; levels over orders of magnitude; nothing negative
    zeros = fa.assign(z=fa["y"] == 0).groupby("series_id", observed=True)["z"].mean()
    assert 0.05 < (zeros > 0.4).mean() < 0.2
    level = fa.groupby("series_id", observed=True)["y"].mean()
    assert level.quantile(0.95) / max(level.quantile(0.05), 1e-9) > 100
    assert (fa["y"] >= 0).all() and np.isfinite(fa["y"]).all()


def test_generator_chunks_do_not_change_the_shape(tmp_path, monkeypatch):
    monkeypatch.setattr(scale, "CHUNK", 70)
    path = tmp_path / "chunked.parquet"
    scale.generate(200, path, length=150, seed=0)
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 3  # 70 + 70 + 60 series
    frame = pd.read_parquet(path)
    assert frame["series_id"].nunique() == 200
    assert frame["series_id"].astype(str).str.fullmatch(r"s\d{7}").all()


@pytest.mark.slow
def test_quick_scale_run_measures_every_stage(tmp_path):
    """``--quick``: 200 series through validate, run and predict; figures recorded, not judged."""
    import json

    from test_bench_quick import python, run_bench

    out = tmp_path / "scale.json"
    command = python(
        "scale.py", "--quick", "--out", out, "--work", tmp_path / "w", "--plot", tmp_path / "scale.png"
    )
    run_bench(tmp_path, command, timeout=400)
    rows = json.loads(out.read_text())["rows"]
    assert [r["stage"] for r in rows] == ["validate", "run", "predict"]
    assert all(r["returncode"] == 0 and r["n_series"] == 200 and r["wall_s"] > 0 for r in rows)
    assert all(r["peak_rss_mb"] > 0 and r["commit"] for r in rows)
    assert rows[1]["mlflow_runs"] == 5  # the pipeline run, 3 models and the refit: not one per series
    stores = next((tmp_path / "w").glob("n200-*"))
    forecast = pd.read_parquet(stores / "forecast.parquet")
    assert forecast["series_id"].nunique() == 200  # every series forecast, the short ones too
    assert (tmp_path / "scale.png").stat().st_size > 0
    # --stores: that run's champion forecasts again (a fresh folder would have none to load)
    (stores / "forecast.parquet").unlink()
    again = python(
        "scale.py",
        "--quick",
        "--stages",
        "predict",
        "--stores",
        stores,
        "--out",
        out,
        "--work",
        tmp_path / "w",
    )
    run_bench(tmp_path, again, timeout=400)
    assert [(r["stage"], r["returncode"]) for r in json.loads(out.read_text())["rows"]] == [("predict", 0)]
    pd.testing.assert_frame_equal(pd.read_parquet(stores / "forecast.parquet"), forecast)


def test_variant_config_sets_the_families_and_the_dask_cluster(tmp_path):
    import yaml

    path = scale.variant_config(tmp_path, scale.CONFIG, ["naive", "ar"], 2)
    cfg = yaml.safe_load(path.read_text())
    assert [m["name"] for m in cfg["models"]] == ["naive", "ar"]
    assert cfg["orchestration"]["dask_local_workers"] == 2
    assert cfg["orchestration"]["validate_chunk_series"] == cfg["predict"]["chunk_series"] == 2500
    assert Path(cfg["data"]["path"]).is_absolute()
    same = yaml.safe_load(scale.variant_config(tmp_path, scale.CONFIG, None, None).read_text())
    assert "orchestration" not in same and len(same["models"]) == 7


def test_plot_from_draws_the_finished_rows_of_several_result_files(tmp_path):
    """``--plot-from``: one figure from runs made at different times (1k and 10k in one, 100k in
    another); a failed stage is left out; nothing is run."""
    import json
    import subprocess

    def rows(n: int, failed: str | None = None) -> list[dict]:
        return [
            {"n_series": n, "rows": 500 * n, "stage": s, "wall_s": n / 100, "peak_rss_mb": n / 10,
             "returncode": 1 if s == failed else 0}
            for s in scale.STAGES
        ]  # fmt: skip

    small, large = tmp_path / "small.json", tmp_path / "large.json"
    small.write_text(json.dumps({"rows": rows(1000) + rows(10_000)}))
    large.write_text(json.dumps({"rows": rows(100_000, failed="predict")}))
    png = tmp_path / "scale.png"
    done = subprocess.run(
        [sys.executable, scale.__file__, "--plot-from", str(small), str(large), "--plot", str(png)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "(8 rows from 2 files)" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "outputs").exists()


def test_quick_log_cost_measures_a_model_runs_logging(tmp_path):
    """``bench/log_cost.py --quick``: one measured model run at 50 series, with a profile."""
    import json

    from test_bench_quick import python, run_bench

    out = tmp_path / "log_cost.json"
    command = python("log_cost.py", "--quick", "--profile", "5", "--out", out, "--work", tmp_path / "w")
    printed = run_bench(tmp_path, command, timeout=300).stdout
    (row,) = json.loads(out.read_text())["rows"]
    assert row["series"] == 50 and row["family"] == "naive" and len(row["log_seconds"]) == 1
    assert all(math.isfinite(row[k]) for k in ("log_seconds_median", "run_seconds_median"))  # recorded
    assert row["rows"] > 50 * 120  # every series kept its rows (none shorter than the split needs)
    assert "cumulative" in printed  # the profile was printed
