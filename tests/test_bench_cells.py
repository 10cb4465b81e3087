"""bench/cells.py: the 32 ETT cells through `forecast run`, the champion as each cell's headline.

The report reads only what the pipeline chose (the champion flag of the rows, set from the model
version the alias points at); "best family on test" is information. ``--quick`` runs one tiny cell
through the CLI end to end."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import cells  # noqa: E402


def _rows(folder: str, champion: str, tests: dict[str, float]) -> list[dict[str, str]]:
    return [
        {
            "dataset": "ETTh1",
            "features": "S",
            "horizon": "96",
            "quick": "False",
            "folder": folder,
            "model": family,
            "family": family,
            "role": "model",
            "status": "FINISHED",
            "champion": str(family == champion),
            "lookback": "192",
            "test_mse": str(mse),
            "test_mae": "0.2",
            "run_wall_s": "60",
        }
        for family, mse in tests.items()
    ]


def test_every_cell_has_a_published_figure_and_a_config():
    assert len(cells.BEST_PUBLISHED) == 32
    for dataset, features, horizon in cells.BEST_PUBLISHED:
        config = cells.cell_config((dataset, features, horizon))
        assert config["window"] == {"horizon": horizon}  # lookback and the rest from the defaults
        assert config["split"]["method"] == "borders"
        assert [m["name"] for m in config["models"]] == cells.FAMILIES
        assert all(set(m) == {"name"} for m in config["models"])  # nothing set by hand
        assert (config["data"]["target"] == "OT") == (features == "S")
    gpu = cells.cell_config(("ETTm1", "M", 720), device="cuda")
    assert gpu["training"] == {"device": "cuda", "amp": True}


def test_the_headline_is_the_champion_and_missing_cells_say_not_run():
    # The champion (chosen on validation) is linear; gru is better on test: the headline stays linear.
    old = _rows("outputs/cells/ETTh1-S-96-20261201-000000", "gru", {"gru": 0.040, "linear": 0.041})
    new = _rows("outputs/cells/ETTh1-S-96-20261207-000000", "linear", {"linear": 0.0560, "gru": 0.0500})
    text = cells.report(old + new, {("ETTh1", "S", 96): "PatchTST 0.0560"})
    line = next(x for x in text.splitlines() if x.startswith("| S | 96 |"))
    assert "| linear | 0.0560 / 0.2000 |" in line  # the latest run's champion, not the older one
    assert "+5.7 %" in line  # 0.0560 against NLinear's 0.053
    assert "gru 0.0500" in line and "PatchTST 0.0560" in line
    assert "| 1 of 2 |" in line  # two deep families; gru within 5 % of 0.053, linear not
    assert text.startswith("Cells run: 1 of 32. Champion at or below the best published MSE: 0 of 1.")
    assert text.count("| not run |") == 31


def test_peer_figures_come_from_the_peers_summary(tmp_path):
    import json

    path = tmp_path / "peers.json"
    summary = [
        {"peer": "PatchTST", "peer_mse": 0.056},
        {"peer": "DLinear", "peer_mse": 0.0679},
        {"peer": "RNN"},
    ]
    path.write_text(json.dumps({"protocol": {"lookback": 96, "horizon": 96}, "summary": summary}))
    assert cells.peer_figures(path) == {("ETTh1", "S", 96): "PatchTST 0.0560, DLinear 0.0679 (L=96)"}
    assert cells.peer_figures(tmp_path / "absent.json") == {}


def test_parse_cell_names_what_is_wrong():
    assert cells.parse_cell("ETTm2:M:720") == ("ETTm2", "M", 720)
    for bad in ("ETTh1:S", "ETTx:S:96", "ETTh1:X:96", "ETTh1:S:h"):
        with pytest.raises(Exception, match="cell"):
            cells.parse_cell(bad)


@pytest.mark.slow
def test_quick_cell_runs_the_cli_and_records_the_champion(tmp_path):
    from test_bench_quick import python, run_bench

    out = tmp_path / "cells.csv"
    run_bench(tmp_path, python("cells.py", "--quick", "--out", out, "--work", tmp_path / "w"), timeout=400)
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    models = [r for r in rows if r["role"] == "model"]
    assert {r["family"] for r in models} == {"naive", "ar", "linear"}
    assert sum(r["champion"] == "True" for r in models) == 1
    assert all(math.isfinite(float(r["val_mse"])) and math.isfinite(float(r["test_mse"])) for r in models)
    (refit,) = [r for r in rows if r["role"] == "refit"]
    champion = next(r for r in models if r["champion"] == "True")
    assert refit["family"] == champion["family"]
    assert min(models, key=lambda r: float(r["val_mse"]))["family"] == champion["family"]
    assert all(r["commit"] and r["machine"] for r in rows)
