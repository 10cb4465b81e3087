"""The README's REST example, run as written: the demo config's champion served by
``mlflow models serve`` answers ``docs/rest-example.json`` with 96 forecasts that name the
registered version that made them."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from servers import free_port, models_serve
from test_serving import VENV_BIN, post, subprocess_env

from forecasting.config import load_config
from forecasting.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.server]


def readme_rest_block() -> tuple[list[str], list[str]]:
    """The README's two commands: ``mlflow models serve ...`` and ``curl ...``, as argument lists."""
    text = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "mlflow models serve" in b]
    serve, curl = [line for line in block.splitlines() if line.strip()]
    serve = serve.split("PATH=.venv/bin:$PATH ", 1)[1].rstrip(" &")
    return shlex.split(serve), shlex.split(curl)


def test_the_readme_rest_example_answers_with_the_champion(tmp_path, mlflow_globals):
    serve, curl = readme_rest_block()
    model_uri = serve[serve.index("-m") + 1]
    payload_file = ROOT / curl[curl.index("-d") + 1].lstrip("@")
    assert model_uri == "models:/etth1-ot@champion"

    # The demo config's champion (one quick family; the served path is the same for every one).
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(
        ROOT / "configs" / "demo.yaml",
        {"models": [{"name": "naive"}], "tracking": {"tracking_uri": store}},
    )
    decision = run_pipeline(cfg).decision
    assert decision.alias == "champion"

    port = free_port()
    serve[serve.index("-p") + 1] = str(port)
    argv = [str(VENV_BIN / serve[0]), *serve[1:]]
    with models_serve(argv, port, subprocess_env({"uri": store}), tmp_path / "serve.log", cwd=ROOT) as base:
        status, body = post(f"{base}/invocations", json.loads(payload_file.read_text()))
    assert status == 200, body
    got = pd.DataFrame(body["predictions"])
    assert len(got) == 96 and got["yhat"].notna().all()
    bounds = ["yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]  # intervals.levels' default
    identity = ["model_name", "model_version", "run_id"]
    assert list(got.columns) == ["series_id", "t", "yhat", *bounds, *identity]
    nested = got[["yhat_lo_95", "yhat_lo_80", "yhat_hi_80", "yhat_hi_95"]].to_numpy(float)
    assert (np.diff(nested, axis=1) >= 0).all()  # the 95 % band holds the 80 % one
    assert set(got["model_name"]) == {"etth1-ot"} and set(got["model_version"]) == {decision.version}
    last = pd.Timestamp(json.loads(payload_file.read_text())["dataframe_split"]["data"][-1][1])
    assert pd.Timestamp(got["t"].iloc[0]) == last + pd.Timedelta(hours=1)
