"""The gathered (vectorised) last-window batch equals the per-series one, and defers to it for
every case the per-series path has to name (too short, gaps, no y)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting.config import ModelSpec, TrainingConfig
from forecasting.errors import SeriesTooShortError
from forecasting.models.base import DataSpec
from forecasting.models.registry import build_model


def _panel(rng, n_series: int, freq: str, tz: str | None, L: int) -> pd.DataFrame:
    parts = []
    for k in range(n_series):
        n = int(rng.integers(L + 8, 3 * L))  # room for the gaps below outside the last window
        t = pd.date_range("2024-03-20", periods=n, freq=freq, tz=tz)  # spans a DST change
        y = rng.standard_normal(n)
        if k % 3 == 1:
            y[-int(rng.integers(1, 4)) :] = np.nan  # trailing rows without y (future rows)
        if k % 4 == 2:
            y[: int(rng.integers(1, 5))] = np.nan  # leading gap outside the last window
        parts.append(
            pd.DataFrame(
                {"series_id": f"s{k:03d}", "t": t, "y": y, "p1": rng.standard_normal(n), "st": float(k)}
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    return frame.sample(frac=1.0, random_state=0).sort_values(["series_id", "t"], kind="stable")


def _fitted(frame: pd.DataFrame, L: int, H: int):
    spec = DataSpec(lookback=L, horizon=H, past=["p1"], static=["st"])
    model = build_model(ModelSpec(name="naive"), spec, TrainingConfig(epochs=1))
    train = frame.dropna(subset=["y"]).groupby("series_id").head(L + H + 5)
    return model.fit(train)


@pytest.mark.parametrize(("freq", "tz"), [("h", None), ("h", "Europe/Berlin"), ("D", None), ("MS", None)])
def test_gathered_equals_per_series(freq, tz):
    rng = np.random.default_rng(0)
    L, H = 8, 5
    frame = _panel(rng, 40, freq, tz, L)
    model = _fitted(frame, L, H)
    fast = model._prediction_batch_gathered(frame)
    assert fast is not None
    slow = model._prediction_batch_per_series(frame)
    (fb, ft, fi), (sb, st, si) = fast, slow
    assert list(fi) == list(si)
    assert ft.dtype == st.dtype and (ft == st).all()
    for key in sb:
        assert fb[key].dtype == sb[key].dtype and fb[key].shape == sb[key].shape, key
        np.testing.assert_array_equal(fb[key], sb[key], err_msg=key)
    # and predict() gives the same frame either way
    pd.testing.assert_frame_equal(model.predict(frame), _predict_with(model, frame, slow))


def _predict_with(model, frame, batch_times_ids):
    batch, times, ids = batch_times_ids
    yhat = model.predict_windows(batch)
    return pd.DataFrame(
        {"series_id": np.repeat(ids, model.spec.horizon), "t": times.reshape(-1), "yhat": yhat.reshape(-1)}
    )


@pytest.mark.parametrize("case", ["short", "gap", "no_y"])
def test_defers_to_the_per_series_error(case):
    rng = np.random.default_rng(1)
    L, H = 8, 5
    frame = _panel(rng, 5, "h", None, L)
    model = _fitted(frame, L, H)
    rows = frame.index[frame["series_id"] == "s003"]
    if case == "short":
        frame = frame.drop(rows[: len(rows) - (L - 1)])
    elif case == "gap":
        last = frame.loc[rows].dropna(subset=["y"]).index[-1]
        frame.loc[last - 2, "y"] = np.nan
    else:
        frame.loc[rows, "y"] = np.nan
    assert model._prediction_batch_gathered(frame) is None
    with pytest.raises(SeriesTooShortError, match="s003"):
        model.predict(frame)
