"""Defaults that read the data (``pipeline.defaults``) and short series that still get a forecast
(left padding, ``window.pad_short``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame

from forecasting.config import ModelSpec, config_from_dict
from forecasting.data.padding import left_pad
from forecasting.errors import SeriesTooShortError
from forecasting.pipeline import prepare
from forecasting.pipeline.defaults import EPOCH_WINDOWS, auto_lookback, model_defaults


def _csv(tmp_path, lengths: dict[str, int], freq: str = "h") -> str:
    rng = np.random.default_rng(0)
    parts = [
        make_frame(10 + np.sin(np.arange(n) * 2 * np.pi / 24) + 0.1 * rng.standard_normal(n), sid, freq=freq)
        for sid, n in lengths.items()
    ]
    path = tmp_path / "series.csv"
    pd.concat(parts, ignore_index=True).to_csv(path, index=False)
    return str(path)


def _config(path: str, **extra):
    raw = {"data": {"path": path, "time_column": "t", "target": "y", "id_column": "series_id"}, **extra}
    return config_from_dict(raw)


def test_auto_lookback_is_two_seasons_or_two_horizons_capped_by_the_data():
    assert auto_lookback(24, 96, np.array([8640])) == 192  # hourly, long series: two horizons
    assert auto_lookback(52, 13, np.array([300, 900, 2000])) == 104  # weekly: two seasons
    assert auto_lookback(7, 14, np.array([40, 60, 80])) == 28
    assert auto_lookback(1, 6, np.array([30])) == 12  # yearly: no season
    assert auto_lookback(24, 96, np.array([100, 120, 150])) == 60  # half the median training rows


def test_model_settings_follow_the_season_and_never_override_the_config():
    assert model_defaults(ModelSpec(name="seasonal_naive"), 52, 104) == {"season_length": 52}
    assert model_defaults(ModelSpec(name="seasonal_naive"), 52, 26) == {"season_length": 1}
    assert model_defaults(ModelSpec(name="lstm"), 24, 96) == {"segment_len": 24}
    assert model_defaults(ModelSpec(name="gru"), 52, 60) == {"segment_len": 7}  # 52 > 60 // 2
    assert model_defaults(ModelSpec(name="linear"), 24, 96) == {"moving_avg": 25}
    assert model_defaults(ModelSpec(name="linear"), 52, 40) == {"moving_avg": 39}
    assert model_defaults(ModelSpec(name="transformer"), 12, 12) == {"patch_len": 6, "stride": 3}
    assert model_defaults(ModelSpec(name="lstm", params={"segment_len": 12}), 24, 96) == {}
    assert model_defaults(ModelSpec(name="ar"), 24, 96) == {}
    # an ensemble weighs its members on the point metric selection ranks by
    ensemble = ModelSpec(name="ensemble")
    assert model_defaults(ensemble, 52, 104) == {"objective": "mse"}
    assert model_defaults(ensemble, 52, 104, "val_mase") == {"objective": "mase", "season_length": 52}
    weekly = model_defaults(ensemble, 52, 104, "val_mase", mase_lag=1)  # MASE's lag, not the season
    assert weekly == {"objective": "mase", "season_length": 1}
    assert model_defaults(ensemble, 24, 96, "val_mase_orig", mase_lag=24)["objective"] == "mase"
    assert model_defaults(ensemble, 24, 96, "val_wape") == {"objective": "mae"}
    assert model_defaults(ensemble, 24, 96, "val_msis") == {"objective": "mse"}
    chosen = ModelSpec(name="ensemble", params={"objective": "mae"})
    assert model_defaults(chosen, 52, 104, "val_mase") == {}


def test_prepare_resolves_every_open_setting_and_says_so(tmp_path):
    path = _csv(tmp_path, {"a": 600, "b": 500})
    cfg = _config(
        path,
        window={"horizon": 24},
        models=[{"name": "seasonal_naive"}, {"name": "lstm", "params": {"segment_len": 12}}],
    )
    assert cfg.window.lookback == "auto"
    prepared = prepare(cfg)
    assert prepared.cfg.window.lookback == prepared.spec.lookback == 48
    assert prepared.choices == {
        "season_length": 24,
        "window.lookback": 48,
        "window.eval_stride": 1,
        "models.seasonal_naive.season_length": 24,
        "training.max_train_windows": EPOCH_WINDOWS,
        "training.max_val_windows": EPOCH_WINDOWS,
    }
    assert prepared.cfg.models[1].params == {"segment_len": 12}  # the config's own choice stays
    given = _config(path, window={"lookback": 30, "horizon": 24}, training={"max_train_windows": 100})
    assert "window.lookback" not in prepare(given).choices
    assert prepare(given).cfg.training.max_train_windows == 100


@pytest.mark.parametrize(
    ("freq", "inferred", "season", "mase_lag"),
    [("D", "D", 7, 7), ("W-MON", "7D", 52, 1), ("h", "h", 24, 24), ("MS", "MS", 12, 1)],
)
def test_an_inferred_step_reads_as_the_data_it_is(tmp_path, freq, inferred, season, mase_lag):
    """Nothing declared: whole days read as days ("D", "7D"; pandas would say "24h", "168h"), and a daily or
    weekly file still gets its season (lookback, seasonal naive, segment length) and MASE's lag."""
    path = _csv(tmp_path, {"a": 400, "b": 300}, freq=freq)
    cfg = _config(
        path,
        split={"method": "counts"},
        window={"horizon": 4},
        models=[{"name": "seasonal_naive"}, {"name": "ensemble"}],
        tracking={"selection_metric": "val_mase"},
    )
    prepared = prepare(cfg)
    assert prepared.data.freq == inferred
    assert prepared.choices["season_length"] == season
    assert prepared.choices["models.seasonal_naive.season_length"] == season
    assert prepared.choices["models.ensemble.season_length"] == mase_lag
    assert prepared.spec.lookback == max(2 * season, 8)  # two seasons or two horizons (short data: capped)


def test_left_pad_repeats_the_first_row_before_a_short_series():
    frame = pd.concat([make_frame(np.arange(5.0), "short"), make_frame(np.arange(8.0), "long")])
    padded, rows = left_pad(frame.reset_index(drop=True), 8, "h", max_pad=4)
    assert rows.to_dict() == {"short": 3}
    short = padded[padded["series_id"] == "short"]
    assert short["y"].tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0]
    assert short["t"].diff().dropna().eq(pd.Timedelta(hours=1)).all()
    assert short["t"].iloc[3] == pd.Timestamp("2024-01-01")  # the first real row, unmoved
    assert padded["series_id"].tolist() == ["short"] * 8 + ["long"] * 8
    untouched, none = left_pad(frame.reset_index(drop=True), 13, "h", max_pad=4)  # 8, 5 > max_pad
    assert none.empty and len(untouched) == len(frame)


@pytest.mark.parametrize(
    ("freq", "first", "tz"),
    [
        ("ME", "2001-03-31", None),
        ("W-SUN", "2000-01-30", None),
        ("15min", "2020-03-29 03:00", "Europe/Berlin"),
    ],
)
def test_left_pad_steps_back_as_date_range_does(freq, first, tz):
    """The padded timestamps of several series at once (one shift per depth, no loop over series)
    are the steps ``pd.date_range`` gives: month ends, anchored weeks, a daylight-saving change."""
    start = pd.Timestamp(first, tz=tz)
    parts = [
        pd.DataFrame(
            {
                "series_id": sid,
                "t": pd.date_range(start, periods=n, freq=freq),
                "y": np.arange(float(n)),
            }
        )
        for sid, n in (("a", 2), ("b", 5), ("c", 9))
    ]
    padded, rows = left_pad(pd.concat(parts, ignore_index=True), 9, freq)
    assert rows.to_dict() == {"a": 7, "b": 4}
    for sid in ("a", "b"):
        t = padded.loc[padded["series_id"] == sid, "t"].reset_index(drop=True)
        expected = pd.date_range(end=start, periods=rows[sid] + 1, freq=freq)[:-1]
        assert list(t.iloc[: rows[sid]]) == list(expected)
        assert t.iloc[rows[sid]] == start


@pytest.mark.slow
def test_a_20_point_series_in_a_batch_of_long_ones_gets_a_forecast(tmp_path):
    """Counts split with H=4 and 3 validation horizons: a 20-row series has just its test and
    validation rows and one training target; it is padded (reported), trained on, scored and
    forecast with the others."""
    from forecasting.pipeline import batch_predict, run_pipeline

    path = _csv(tmp_path, {"a": 300, "b": 260, "c": 240, "tiny": 20})
    cfg = _config(
        path,
        split={"method": "counts"},
        window={"horizon": 4},
        models=[{"name": "naive"}, {"name": "seasonal_naive"}, {"name": "linear"}],
        training={"epochs": 1, "progress": False, "num_threads": 1},
        tracking={"experiment": "short-series", "registered_model": "short-series-model"},
        predict={"output": str(tmp_path / "forecast.csv")},
    )
    result = run_pipeline(cfg)
    assert result.prepared.padded.to_dict() == {"tiny": 48 + 4 + 16 - 20}
    assert all(r.status == "FINISHED" for r in result.results), result.leaderboard
    from mlflow import MlflowClient

    params = MlflowClient().get_run(result.parent_run_id).data.params
    assert params["defaults.padded_series"] == "1" and params["defaults.window.lookback"] == "48"
    out = pd.read_csv(batch_predict(cfg)["output"])
    assert out.groupby("series_id").size().to_dict() == {"a": 4, "b": 4, "c": 4, "tiny": 4}
    assert np.isfinite(out["yhat"]).all()
    # the raw 20 rows alone, shorter than the lookback: the served model pads them too
    raw = pd.read_csv(path)
    alone = batch_predict(cfg, input_path=_write(tmp_path, raw[raw["series_id"] == "tiny"]))
    assert alone["rows"] == 4


def _write(tmp_path, frame: pd.DataFrame) -> str:
    path = tmp_path / "tiny.csv"
    frame.to_csv(path, index=False)
    return str(path)


def test_too_short_to_score_is_still_a_named_error(tmp_path):
    """Fewer rows than validation + test need: padding would make up targets, so it refuses."""
    path = _csv(tmp_path, {"a": 300, "tiny": 10})
    cfg = _config(path, split={"method": "counts"}, window={"horizon": 4})
    with pytest.raises(SeriesTooShortError, match="'tiny'"):
        prepare(cfg)


def test_pad_short_false_refuses_a_short_series_instead(tmp_path):
    path = _csv(tmp_path, {"a": 300, "tiny": 20})
    padded = prepare(_config(path, split={"method": "counts"}, window={"horizon": 4}))
    assert padded.padded.to_dict() == {"tiny": 48}
    strict = _config(path, split={"method": "counts"}, window={"horizon": 4, "pad_short": False})
    with pytest.raises(SeriesTooShortError, match="'tiny'"):
        prepare(strict)


def test_validation_is_scored_per_fold_over_the_last_horizons(tmp_path):
    """Counts split, K = 3 validation horizons: the validation origins fall in 3 blocks of one
    horizon each, the most recent last; each model logs the MSE of every block beside val_mse."""
    from forecasting.pipeline import fit_and_score

    path = _csv(tmp_path, {"a": 200, "b": 150})
    cfg = _config(path, split={"method": "counts"}, window={"lookback": 24, "horizon": 4})
    prepared = prepare(cfg)
    windows = prepared.windows(prepared.val)
    folds = prepared.validation_folds(windows)
    per_series = [0, 0, 0, 0, 1, 1, 1, 1, 2]  # 3 x 4 validation rows: origins 0..8 after the border
    assert folds.tolist() == per_series * 2
    _, metrics, _ = fit_and_score(prepared, ModelSpec(name="naive"))
    fold_mse = [metrics[f"val_fold{k}_mse"] for k in range(3)]
    weights = np.bincount(folds)  # every window has 4 finite targets
    assert metrics["val_mse"] == pytest.approx(np.average(fold_mse, weights=weights))


def test_eval_stride_keeps_one_origin_per_fold_and_scores_fewer_windows(tmp_path):
    """``window.eval_stride`` = the horizon: in a counts split the validation windows are the 3
    non-overlapping horizons (one per fold), the test window the last horizon; the metrics are
    those of the same model on exactly those windows of the stride-1 run."""
    from forecasting.pipeline import fit_and_score

    path = _csv(tmp_path, {"a": 200, "b": 150})
    every = prepare(_config(path, split={"method": "counts"}, window={"lookback": 24, "horizon": 4}))
    strided = prepare(
        _config(path, split={"method": "counts"}, window={"lookback": 24, "horizon": 4, "eval_stride": 4})
    )
    windows = strided.windows(strided.val)
    assert len(every.windows(every.val)) == 18 and len(windows) == 6
    assert strided.validation_folds(windows).tolist() == [0, 1, 2] * 2
    assert len(strided.windows(strided.test)) == 2  # one test origin per series, as before
    _, all_metrics, _ = fit_and_score(every, ModelSpec(name="naive"))
    _, few, _ = fit_and_score(strided, ModelSpec(name="naive"))
    batch = windows.batch(np.arange(len(windows)))  # naive: the last input, repeated
    err = (batch["target"] - batch["y"][:, -1:]) ** 2
    for k in range(3):  # each fold's MSE is that of its one origin per series
        assert few[f"val_fold{k}_mse"] == pytest.approx(err[k::3].mean(), rel=1e-5)
    assert few["test_mse"] == pytest.approx(all_metrics["test_mse"])
    assert few["val_mse"] != pytest.approx(all_metrics["val_mse"])
    fractions = prepare(_config(path, window={"lookback": 24, "horizon": 4, "eval_stride": 3}))
    base = prepare(_config(path, window={"lookback": 24, "horizon": 4}))
    n, m = len(fractions.windows(fractions.val)), len(base.windows(base.val))
    assert n == sum((k - 1) // 3 + 1 for k in np.bincount(base.windows(base.val).series))
    assert m > 2.5 * n


def test_auto_eval_stride_steps_by_the_horizon_only_for_a_counts_split_of_many_series(tmp_path, monkeypatch):
    """``eval_stride: auto``: every origin, unless a counts split's validation periods hold more
    windows than ``EVAL_WINDOWS`` at every origin; then one origin per fold (the last few of each
    series), as ``eval_stride`` = the horizon gives them. A given stride is never changed."""
    from forecasting.config import SplitConfig
    from forecasting.errors import ConfigError
    from forecasting.pipeline import defaults

    counts, borders = SplitConfig(method="counts"), SplitConfig(method="fractions")
    assert defaults.auto_eval_stride(counts, 24, 1_000) == 1  # 1,000 x 49 origins: every origin
    assert defaults.auto_eval_stride(counts, 24, 2_000) == 24  # 98,000 windows: one per fold
    assert defaults.auto_eval_stride(borders, 24, 1_000_000) == 1  # the published protocols
    path = _csv(tmp_path, {"a": 200, "b": 150})
    window = {"lookback": 24, "horizon": 4}
    every = prepare(_config(path, split={"method": "counts"}, window=window))
    assert every.spec.eval_stride == 1 and every.choices["window.eval_stride"] == 1
    monkeypatch.setattr(defaults, "EVAL_WINDOWS", 17)  # 2 series x 9 origins: over it
    stepped = prepare(_config(path, split={"method": "counts"}, window=window))
    assert stepped.spec.eval_stride == 4 and stepped.choices["window.eval_stride"] == 4
    assert len(stepped.windows(stepped.val)) == 6  # 3 origins (one per fold) of each series
    given = prepare(_config(path, split={"method": "counts"}, window={**window, "eval_stride": 2}))
    assert given.spec.eval_stride == 2 and "window.eval_stride" not in given.choices
    with pytest.raises(ConfigError, match="eval_stride must be at least 1"):
        _config(path, window={**window, "eval_stride": 0})


def test_the_gate_scores_each_series_inside_its_own_validation_period(tmp_path):
    """Series of different lengths (a counts split): every gate origin of every series lies in
    that series' validation period, and forecasting from a lookback of history before each origin
    scores exactly what forecasting from all of it does."""
    from forecasting import serving
    from forecasting.pipeline import run_pipeline
    from forecasting.pipeline.select import gate_origins, gate_score, lookback_of

    path = _csv(tmp_path, {"a": 260, "b": 150, "c": 200})
    raw = {"split": {"method": "counts"}, "window": {"lookback": 24, "horizon": 4}}
    models = [{"name": "ar", "params": {"max_lag": 6}}, {"name": "linear"}]
    cfg = _config(path, models=models, training={"epochs": 1, "progress": False}, **raw)
    cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"experiment": "gate-len"})})
    prepared = prepare(cfg)
    origins = gate_origins(prepared)
    b = prepared.split.borders
    assert origins.shape[1] == 3
    assert ((origins >= b["train_end"].to_numpy()) & (origins + 4 <= b["val_end"].to_numpy())).all()
    assert (origins[:, 0] - b["train_end"].iloc[0] == origins[:, 1] - b["train_end"].iloc[1]).all()
    result = run_pipeline(cfg)
    for r in result.results:
        model = serving.load_pyfunc(r.model_uri)
        assert lookback_of(model) == 24
        full = gate_score(model.predict, prepared, origins)
        assert gate_score(model.predict, prepared, origins, 24) == pytest.approx(full, rel=1e-9)
    best = min((r for r in result.results if r.model_uri), key=lambda r: r.metrics["val_mse"])
    assert result.decision.model == best.name
    score = gate_score(serving.load_pyfunc(best.model_uri).predict, prepared, origins)
    assert result.decision.candidate_score == pytest.approx(score)


def test_a_pipeline_run_holds_series_ids_as_a_categorical_in_every_frame(tmp_path):
    """The canonical frame and the scaled segments keep a code per row, not a string: the same ids
    in the same order as ingest gave, in less memory; what reaches a user or a model signature
    (the input example) carries them as text again."""
    from forecasting.data.ingest import ingest
    from forecasting.data.schema import categorical_ids, string_ids
    from forecasting.pipeline.prepare import input_example

    lengths = {f"store-{k:03d}": 200 + k for k in range(30)}
    cfg = _config(_csv(tmp_path, lengths), window={"horizon": 12, "lookback": 24})
    text = ingest(cfg.data).frame
    prepared = prepare(cfg)
    for frame in (prepared.data.frame, prepared.train, prepared.val, prepared.test):
        assert isinstance(frame["series_id"].dtype, pd.CategoricalDtype)
        assert list(pd.unique(frame["series_id"])) == list(lengths)
    assert prepared.data.frame["series_id"].astype(str).tolist() == text["series_id"].tolist()
    assert list(prepared.split.borders.index) == list(lengths)
    ids_bytes = lambda f: f["series_id"].memory_usage(deep=True, index=False)  # noqa: E731
    assert ids_bytes(prepared.data.frame) * 2 < ids_bytes(text)
    example = input_example(prepared)
    assert not isinstance(example["series_id"].dtype, pd.CategoricalDtype)
    assert example["series_id"].iloc[0] == "store-000"
    # The two conversions are inverses and leave other columns alone.
    pd.testing.assert_frame_equal(string_ids(categorical_ids(text)), text)


def test_an_ensemble_selected_by_val_mase_on_weekly_data_is_weighed_on_val_mase_itself(tmp_path):
    """Weekly data: the model season is 52, but MASE is scaled at lag 1 (M4's convention). The
    ensemble's objective and its scale's lag are those of ``val_mase``, so its ``val_mase`` is at
    most its best member's, by construction."""
    from forecasting.pipeline.train import train_all, train_model

    path = _csv(tmp_path, {"a": 220, "b": 200, "c": 180}, freq="W-SUN")
    models = [{"name": n} for n in ("naive", "seasonal_naive", "ar", "ensemble")]
    cfg = _config(
        path,
        split={"method": "counts"},
        window={"horizon": 4},
        models=models,
        tracking={"selection_metric": "val_mase"},
    )
    prepared = prepare(cfg)
    assert prepared.choices["models.ensemble.objective"] == "mase"
    # the step is inferred from the timestamps (7 days, "7D"; pandas would say "168h"): weekly data,
    # whose model season is 52 and whose MASE lag is 1
    assert prepared.data.freq == "7D" and prepared.choices["season_length"] == 52
    assert prepared.choices["models.ensemble.season_length"] == 1  # MASE's lag at a weekly step
    assert prepared.choices["models.seasonal_naive.season_length"] == 52
    # data declared W-SUN (as bench/m4.py stamps M4) reads the same
    declared = prepare(cfg.model_copy(update={"data": cfg.data.model_copy(update={"freq": "W-SUN"})}))
    assert declared.data.freq == "W-SUN" and declared.choices == prepared.choices

    def run(jobs):
        return [train_model(j.prepared, j.spec, None, None, j.tags, j.members) for j in jobs]

    results = {r.name: r for r in train_all(prepared, None, run)}
    assert all(r.status == "FINISHED" for r in results.values()), results
    members = [r.metrics["val_mase"] for name, r in results.items() if name != "ensemble"]
    assert results["ensemble"].metrics["val_mase"] <= min(members) + 1e-12
