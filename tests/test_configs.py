"""Every example config in configs/ validates against its data, and the flow tasks' pure logic
runs without orchestration through `.fn()`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forecasting.cli import main
from forecasting.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def _m4_weekly_parquet(tmp_path: Path) -> Path:
    """configs/m4_weekly.yaml's data: M4 Weekly converted by bench/m4.py (the source is wide)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import m4

    m4.verify_files()
    return m4.write_long(m4.read_wide(m4.M4_DIR / "Weekly-train.csv"), tmp_path / "weekly.parquet")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_example_config_validates(path, capsys, tmp_path):
    args = ["validate", str(path), "--json"]
    if path.stem == "m4_weekly":  # its data is written by the bench script, from ../shared/data/m4
        args += ["--data", str(_m4_weekly_parquet(tmp_path))]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert '"series"' in out
    if path.stem == "m4_weekly":
        summary = json.loads(out)
        assert summary["series"] == 359 and summary["defaults"]["window.lookback"] == 104
        assert summary["padded_series"]  # the 80-week series, padded to a window


def test_example_configs_are_all_present():
    assert {p.stem for p in CONFIGS} >= {"demo", "etth1_univariate", "etth1_covariates", "retail_long"}


def test_flow_tasks_as_plain_functions(tmp_path):
    import flows.pipeline as fp

    cfg = load_config(
        CONFIGS[[p.stem for p in CONFIGS].index("retail_long")], {"models": [{"name": "naive"}]}
    )
    prepared = fp.ingest_task.fn(cfg)
    assert prepared.data.summary()["series"] == 40
    assert prepared.spec.future == ["promotion"] and prepared.spec.static == ["store_size"]
    result = fp.train_task.fn(fp.lib.TrainJob(prepared, cfg.models[0]), 1)
    assert result.status == "FINISHED" and result.metrics["test_mse"] > 0
