"""Every example config in configs/ validates against its data, and the flow tasks' pure logic
runs without orchestration through `.fn()`."""

from __future__ import annotations

from pathlib import Path

import pytest

from forecasting.cli import main
from forecasting.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_example_config_validates(path, capsys):
    assert main(["validate", str(path), "--json"]) == 0
    assert '"series"' in capsys.readouterr().out


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
