"""ETS and Theta families: the chosen model fits the data's structure, window forecasts equal
statsmodels', save/load and parallel fitting change nothing, and neither family needs torch."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_frame
from statsmodels.tsa.exponential_smoothing.ets import ETSModel
from statsmodels.tsa.forecasting.theta import ThetaModel

from forecasting.data.scaling import fit_scaler
from forecasting.data.seasonality import mase_season, season_length_for
from forecasting.errors import ConfigError
from forecasting.evaluation import evaluate_windows
from forecasting.models.base import DataSpec, Forecaster
from forecasting.models.baselines import Naive
from forecasting.models.ets import (
    ERROR,
    ETS,
    SEASON,
    TREND,
    ETSSettings,
    error_maps,
    select_ets,
    state_space,
    window_operator,
)
from forecasting.models.registry import parse_settings
from forecasting.models.theta import Theta, ThetaSettings, fit_theta, theta_forecast

ROOT = Path(__file__).resolve().parents[1]
SPEC = DataSpec(lookback=48, horizon=12)


@pytest.mark.parametrize(
    ("freq", "m"),
    [("h", 24), ("2h", 12), ("30min", 48), ("D", 7), ("B", 5), ("W-SUN", 52), ("MS", 12), ("ME", 12),
     ("3MS", 4), ("QS-OCT", 4), ("QE-DEC", 4), ("YE", 1), ("5D", 1), ("7min", 1),
     # a fixed step by its length: pandas infers "24h" for daily and "168h" for weekly timestamps
     ("24h", 7), ("168h", 52), ("7D", 52), ("14D", 26), ("336h", 26), ("48h", 1), ("12h", 2)],
)  # fmt: skip
def test_season_length_for(freq: str, m: int) -> None:
    assert season_length_for(freq) == m


@pytest.mark.parametrize(
    ("freq", "lag"),
    [("h", 24), ("30min", 48), ("D", 7), ("24h", 7), ("168h", 1), ("W-SUN", 1), ("MS", 1), ("B", 1)],
)  # fmt: skip
def test_mase_season_is_a_day_for_sub_daily_a_week_for_daily_and_one_otherwise(freq: str, lag: int) -> None:
    assert mase_season(freq) == lag


def structured_panel(rng: np.random.Generator, n: int = 360) -> pd.DataFrame:
    """Three hourly series of known form: a level with a 12-step season, a local level (random
    walk plus noise), and a linear trend."""
    t = np.arange(n)
    season = 5 + 2.0 * np.sin(2 * np.pi * t / 12) + np.cumsum(0.03 * rng.standard_normal(n))
    level = np.cumsum(0.3 * rng.standard_normal(n)) + 0.3 * rng.standard_normal(n)
    trend = 0.05 * t + 0.3 * rng.standard_normal(n)
    parts = [
        make_frame(v, series_id=k) for k, v in {"season": season, "level": level, "trend": trend}.items()
    ]
    return pd.concat(parts, ignore_index=True)


def test_ets_chooses_the_structure_of_each_series_and_beats_naive(rng: np.random.Generator) -> None:
    frame = structured_panel(rng)
    pos = frame.groupby("series_id").cumcount()
    train, test = frame[pos < 240], frame[pos >= 240 - SPEC.lookback]
    scaler = fit_scaler(train, ["y"])
    train, test = scaler.transform(train), scaler.transform(test)
    model = ETS(ETSSettings(season_length=12), spec=SPEC).fit(train)
    chosen = dict(zip(model.series_, model.params_[:, [TREND, SEASON]].tolist(), strict=True))
    assert chosen["season"][1] == 1  # seasonal
    assert chosen["level"] == [0, 0]  # a local level: no trend, no season
    assert chosen["trend"][0] == 2 and chosen["trend"][1] == 0  # damped trend (the default forms)
    forms = ETS(ETSSettings(season_length=12, trends=("none",)), spec=SPEC).fit(train).params_[:, TREND]
    assert (forms == 0).all()  # `trends` limits the forms tried
    naive = Naive(spec=SPEC).fit(train)
    windows = model.make_windows(test)
    ets_score, _ = evaluate_windows(model, windows, scaler)
    naive_score, _ = evaluate_windows(naive, windows, scaler)
    assert ets_score["mse"] < 0.6 * naive_score["mse"]


def test_ets_chooses_multiplicative_error_only_for_a_positive_series(rng: np.random.Generator) -> None:
    """Noise proportional to the level: multiplicative error wins where it is allowed."""
    n = 200
    y = 5 * np.exp(np.cumsum(0.01 + 0.03 * rng.standard_normal(n))) * (1 + 0.05 * rng.standard_normal(n))
    assert select_ets(y, 1)[ERROR] == 1
    assert select_ets(y - y.mean(), 1)[ERROR] == 0  # not strictly positive: additive only


FORMS = [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]  # (trend, season) codes


@pytest.mark.parametrize(("trend", "season"), FORMS)
def test_window_forecast_equals_statsmodels(rng: np.random.Generator, trend: int, season: int) -> None:
    """Given the smoothing parameters, the window's least-squares initial state run through
    statsmodels' own recursions gives our forecast (to 1e-6), and no state statsmodels' optimiser
    finds fits the window better."""
    L, H, m = 60, 15, 6
    t = np.arange(L)
    y = 0.03 * t + np.sin(2 * np.pi * t / m) + 0.3 * rng.standard_normal(L)
    row = np.array([[0.3, 0.05 * (trend > 0), 0.1 * season, 0.9 if trend == 2 else 1.0, 0, trend, season, 0]])
    K = window_operator(row, m, L, H)[0]  # (H, L)

    E_y, E_0, _ = error_maps(row, m, L)
    theta = -np.linalg.pinv(E_0[0]) @ E_y[0] @ y
    x0 = state_space(row, m)[3] @ theta  # [level, trend, s_newest .. s_oldest]
    form = {
        "error": "add",
        "trend": "add" if trend else None,
        "damped_trend": trend == 2,
        "seasonal": "add" if season else None,
        "seasonal_periods": m if season else None,
    }
    known = ETSModel(
        y,
        **form,
        initialization_method="known",
        initial_level=x0[0],
        initial_trend=x0[1] if trend else None,
        initial_seasonal=x0[-m:][::-1] if season else None,  # statsmodels lists the oldest first
    )
    smoothing = {
        "smoothing_level": 0.3,
        "smoothing_trend": 0.05,
        "smoothing_seasonal": 0.1,
        "damping_trend": 0.9,
    }
    res = known.smooth([smoothing[name] for name in known.param_names])
    np.testing.assert_allclose(K @ y, res.forecast(H), rtol=0, atol=1e-6)

    estimated = ETSModel(y, **form)
    with warnings.catch_warnings(), estimated.fix_params({k: smoothing[k] for k in known.param_names}):
        warnings.simplefilter("ignore")
        optimised = estimated.fit(disp=False)
    ours = np.sum((E_y[0] @ y + E_0[0] @ theta) ** 2)
    assert ours <= optimised.sse * (1 + 1e-9)
    np.testing.assert_allclose(K @ y, optimised.forecast(H), rtol=0, atol=1e-3)


@pytest.mark.parametrize(
    ("L", "m", "level", "amplitude"),
    [(96, 24, 0.0, 1.0), (96, 24, 10.0, 1.0), (60, 7, 5.0, 1.0), (95, 12, 0.0, 1.0), (96, 24, 0.0, 0.0)],
)
def test_theta_window_forecast_equals_theta_model(
    rng: np.random.Generator, L: int, m: int, level: float, amplitude: float
) -> None:
    """Additive and multiplicative seasonal adjustment, and none (the 90% test rejects it)."""
    t = np.arange(L)
    y = level + 0.02 * t + amplitude * np.sin(2 * np.pi * t / m) + 0.3 * rng.standard_normal(L)
    row = fit_theta(y, m)
    assert row[1] == (amplitude > 0) and row[2] == (amplitude > 0 and level > 0)
    expected = ThetaModel(y, period=m).fit().forecast(30)
    np.testing.assert_allclose(theta_forecast(y[None], row[None], m, 30, 2.0)[0], expected, rtol=0, atol=1e-8)


def test_theta_fits_each_series_with_theta_model_and_unseen_series_on_their_window(
    sine_frame: pd.DataFrame,
) -> None:
    model = Theta(spec=SPEC).fit(sine_frame)
    assert model.season_length_ == 24
    for k, sid in enumerate(model.series_):
        y = sine_frame.loc[sine_frame["series_id"] == sid, "y"].to_numpy()
        assert model.params_[k, 0] == pytest.approx(ThetaModel(y, period=24).fit().params["alpha"], abs=1e-8)
    new = sine_frame[sine_frame["series_id"] == "s1"].assign(series_id="never-seen")
    window = new["y"].to_numpy()[-SPEC.lookback :]
    expected = ThetaModel(window, period=24).fit().forecast(SPEC.horizon)
    np.testing.assert_allclose(model.predict(new)["yhat"], expected, atol=1e-8)


@pytest.mark.parametrize(
    ("family", "settings"),
    [(ETS, ETSSettings(season_length=1)), (Theta, ThetaSettings())],
)
def test_save_load_round_trip_without_pickle(sine_frame, tmp_path, family, settings) -> None:
    model = family(settings, spec=SPEC).fit(sine_frame)
    model.save(tmp_path)
    with np.load(tmp_path / f"{model.name}.npz", allow_pickle=False) as state:
        assert set(state.files) == {"params", "season_length"}
    loaded = Forecaster.load(tmp_path)
    assert type(loaded) is family and loaded.settings == settings
    batch = model.make_windows(sine_frame).batch(np.arange(0, 500, 7))
    np.testing.assert_array_equal(loaded.predict_windows(batch), model.predict_windows(batch))
    assert loaded.n_params == model.n_params > 0


@pytest.mark.parametrize(
    ("family", "settings"),
    [(ETS, {"season_length": 1}), (Theta, {})],
)
def test_fitting_in_two_processes_gives_the_same_parameters(rng, family, settings) -> None:
    frame = pd.concat(
        [make_frame(np.cumsum(rng.standard_normal(120)), series_id=f"s{k}") for k in range(6)],
        ignore_index=True,
    )
    serial = family(family.Settings(**settings, n_jobs=1), spec=SPEC).fit(frame)
    parallel = family(family.Settings(**settings, n_jobs=2, parallel_above=0), spec=SPEC).fit(frame)
    assert (serial.n_workers_, parallel.n_workers_) == (1, 2)
    np.testing.assert_array_equal(parallel.params_, serial.params_)


def test_settings_are_checked(sine_frame: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match=r"unknown key params\.order"):
        parse_settings(ETS, {"order": 2}, "test")
    with pytest.raises(ConfigError, match="two seasons"):
        Theta(ThetaSettings(season_length=30), spec=SPEC).fit(sine_frame)
    # derived from the frequency, a season longer than half the lookback is dropped, not an error
    assert Theta(spec=DataSpec(lookback=40, horizon=12)).fit(sine_frame).season_length_ == 1


def test_neither_family_imports_torch() -> None:
    code = (
        "import sys, numpy as np, pandas as pd\n"
        "from forecasting.models.base import DataSpec\n"
        "from forecasting.models.ets import ETS, ETSSettings\n"
        "from forecasting.models.theta import Theta\n"
        "t = pd.date_range('2024-01-01', periods=200, freq='h')\n"
        "frame = pd.DataFrame({'series_id': 's', 't': t, 'y': np.sin(np.arange(200) / 4.0)})\n"
        "spec = DataSpec(lookback=48, horizon=12)\n"
        "ETS(ETSSettings(season_length=1), spec=spec).fit(frame).predict(frame)\n"
        "Theta(spec=spec).fit(frame).predict(frame)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False", out.stderr
