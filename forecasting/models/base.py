"""The one small contract every model family follows (scikit-learn / Darts style).

- ``__init__`` stores settings only; fitted attributes end in ``_``.
- ``fit(train, val=None) -> self`` on canonical frames (``series_id, t, y, covariates``),
  already scaled by the pipeline.
- ``predict(history, horizon) -> DataFrame(series_id, t, yhat)``; ``history`` may hold rows after
  the last observed ``y`` carrying future-known covariates for the horizon.
- ``predict_windows(batch) -> (N, H)`` scores many windows at once; evaluation uses it so that
  every family is scored on identical windows.
- ``save(dir)`` / ``load(dir)`` without pickle: JSON for settings, family files for state.

A family implements ``_fit``, ``_predict_windows`` and, if it has state, ``_save_state`` and
``_load_state``. Everything else (checks, windows, future-covariate alignment) lives here once.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from forecasting.data.calendar import calendar_features
from forecasting.data.padding import left_pad
from forecasting.data.schema import SERIES, TARGET, TIME
from forecasting.data.windows import Windows, to_arrays
from forecasting.errors import (
    ConfigError,
    FutureCovariateError,
    MissingColumnError,
    ModelLoadError,
    NotFittedError,
    SeriesTooShortError,
    format_rows,
)
from forecasting.models.registry import get_model_class, parse_settings
from forecasting.training.settings import TrainingConfig

if TYPE_CHECKING:  # the evaluation package imports this module
    from forecasting.evaluation.intervals import Calibration

FORMAT_VERSION = 1
CALIBRATION_FILE = "calibration.json"

# Called after every epoch with (epoch, metrics); tracking uses it without the loop importing mlflow.
EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class DataSpec:
    """What a model knows of its data: window sizes and covariate roles (saved with the model).

    ``calendar`` names calendar features (``forecasting.data.calendar``): future-known covariates
    computed from the timestamps, after the declared ``future`` ones in every window's ``x_past``
    and ``x_future``, at training and at prediction alike. The deep families feed them to their
    network; the others never read them (AR's exogenous regressors are the ``future`` columns).
    A model saved before calendar features existed loads with none, and with stride 1.
    """

    lookback: int
    horizon: int
    past: list[str] = field(default_factory=list)
    future: list[str] = field(default_factory=list)
    static: list[str] = field(default_factory=list)
    calendar: list[str] = field(default_factory=list)
    stride: int = 1  # step between training windows (``window.stride``)
    eval_stride: int = 1  # step between validation (early stopping) and test windows (``window.eval_stride``)
    pad_short: bool = False  # predict for a history shorter than the lookback by left padding it
    # Prediction intervals (``intervals``): central levels in percent and extra quantile levels.
    # A family with native quantiles (AR's analytic bands, a quantile head) produces these.
    levels: list[float] = field(default_factory=list)
    quantiles: list[float] = field(default_factory=list)

    @property
    def covariates(self) -> list[str]:
        return [*self.past, *self.future, *self.static]

    @property
    def taus(self) -> list[float]:
        """Every quantile level the intervals need (both bounds of each level, the quantiles)."""
        from forecasting.evaluation.intervals import quantile_levels

        return quantile_levels(self.levels, self.quantiles)


class Forecaster(ABC):
    """Base class of every model family. Subclasses set ``name`` and ``Settings``.

    Every attribute a caller may read is declared here with its default, so nobody needs
    ``getattr``: a family that has no training history, no epochs or no weights keeps the default.
    """

    # The registry name (model.json's "family"); a class registered under several names (rnn,
    # lstm, gru) sets it per instance, from the setting the name presets.
    name: str = ""
    Settings: ClassVar[type] = object
    # Can it forecast series it has not seen in training? (global models can; an ensemble can
    # when all its members can, so it sets this per instance)
    handles_unseen_series: bool = True
    uses_training_loop: ClassVar[bool] = False  # trained by ``forecasting.training`` (reads ``training``)
    # Does it read the calendar features (``spec.calendar``)? The networks do (and an ensemble,
    # whose windows feed its members); the naive, AR and per-series statistical families do not
    # and say so, and their windows skip computing and holding them (two float32 columns per
    # feature and row). A new family gets them unless it opts out.
    reads_calendar: ClassVar[bool] = True

    # Fitted attributes (scikit-learn style: set by fit/load, read-only defaults until then).
    fitted_: bool = False
    freq_: str | None = None  # pandas offset alias of the training data
    series_: Sequence[str] = ()  # training series, in order of first appearance
    history_: Sequence[dict[str, float]] = ()  # one record per epoch (training-loop families)
    best_epoch_: int | None = None  # 1-based epoch whose weights were kept (training-loop families)
    train_windows_: int = 0  # training windows the fit drew from (``spec.stride`` apart)
    weights_: Mapping[str, float] | None = None  # member name -> weight (an ensemble)
    # Conformal calibration (``forecasting.evaluation.intervals``): set by the pipeline from the
    # validation windows, saved with the model; with it ``predict`` adds the interval columns.
    calibration_: Calibration | None = None

    def __init__(
        self,
        settings: Any = None,
        *,
        spec: DataSpec,
        training: TrainingConfig | None = None,
    ):
        self.settings = settings if settings is not None else self.Settings()
        self.spec = spec
        self.training = training or TrainingConfig()

    # --- public API ------------------------------------------------------------------------
    def fit(
        self,
        train: pd.DataFrame,
        val: pd.DataFrame | None = None,
        callbacks: Sequence[EpochCallback] = (),
    ) -> Forecaster:
        self._check_columns(train, "training data")
        train_w = self.make_windows(train, stride=self.spec.stride)
        if len(train_w) == 0:
            raise SeriesTooShortError(
                f"no training window fits: every series needs at least lookback + horizon = "
                f"{self.spec.lookback + self.spec.horizon} rows"
            )
        self.train_windows_ = len(train_w)
        val_w = None
        if val is not None:
            self._check_columns(val, "validation data")
            val_w = self.make_windows(val, stride=self.spec.eval_stride)
        self.freq_ = _infer_freq(train)
        self.series_ = [str(s) for s in pd.unique(train[SERIES])]
        self._fit(train, train_w, val_w, list(callbacks))
        self.fitted_ = True
        return self

    def predict_windows(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Forecast a batch of windows (see ``Windows.batch``): returns (N, H) float64."""
        self._check_fitted()
        return np.asarray(self._predict_windows(batch), dtype=np.float64)

    def native_quantiles(self, batch: dict[str, np.ndarray]) -> np.ndarray | None:
        """The family's own quantile forecasts (N, H, Q) at ``spec.taus``, or None (it has none)."""
        self._check_fitted()
        if not self.spec.taus:
            return None
        out = self._predict_quantiles(batch, self.spec.taus)
        return None if out is None else np.asarray(out, dtype=np.float64)

    def predict_bands(
        self, batch: dict[str, np.ndarray], yhat: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Calibrated quantile forecasts (N, H, Q) at ``calibration_.taus``, or None without a
        calibration. ``yhat``: the batch's point forecasts when the caller has them."""
        cal = self.calibration_
        if cal is None:
            return None
        base = self.native_quantiles(batch) if cal.native else None
        if cal.native and base is None:
            raise ModelLoadError(
                f"model {self.name!r} was calibrated on its own quantiles but forecasts none (a state "
                "saved without them): its offsets would not fit its point forecast"
            )
        if base is None:
            base = self.predict_windows(batch) if yhat is None else yhat
        return cal.bands(base, cal.scale(batch["y"]))

    def predict(self, history: pd.DataFrame, horizon: int | None = None) -> pd.DataFrame:
        """Forecast the ``horizon`` steps after the last observed ``y`` of every series; with a
        calibration, the interval bounds and quantiles follow ``yhat`` (``Calibration.columns``)."""
        self._check_fitted()
        horizon = self.spec.horizon if horizon is None else int(horizon)
        if not 1 <= horizon <= self.spec.horizon:
            raise ValueError(f"horizon must be in 1..{self.spec.horizon} (trained for {self.spec.horizon})")
        self._check_columns(history, "history")
        batch, times, ids = self.prediction_batch(history)
        full = self.predict_windows(batch)
        out = {
            SERIES: np.repeat(ids, horizon),
            TIME: times[:, :horizon].reshape(-1),
            "yhat": full[:, :horizon].reshape(-1),
        }
        bands = self.predict_bands(batch, full)
        if bands is not None:
            cols = self.calibration_.columns_of(bands[:, :horizon])
            out |= {name: values.reshape(-1) for name, values in cols.items()}
        return pd.DataFrame(out)

    def save(self, path: str | Path) -> Path:
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "family": self.name,
            "settings": dataclasses.asdict(self.settings) if dataclasses.is_dataclass(self.settings) else {},
            "spec": dataclasses.asdict(self.spec),
            "training": self.training.model_dump(mode="json"),
            "freq": self.freq_,
            "series": self.series_,
        }
        (path / "model.json").write_text(json.dumps(meta, indent=2))
        if self.calibration_ is not None:
            (path / CALIBRATION_FILE).write_text(json.dumps(self.calibration_.to_dict(), indent=2))
        self._save_state(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Forecaster:
        """Rebuild any family from a saved folder (dispatches on the saved family name)."""
        path = Path(path)
        try:
            meta = json.loads((path / "model.json").read_text())
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"{path}: no readable model.json ({err})") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelLoadError(
                f"{path}: format version {meta.get('format_version')} is not {FORMAT_VERSION}"
            )
        klass = get_model_class(meta["family"])
        try:  # the family's preset applies, so a folder saved as "gru" loads as a GRU
            settings = parse_settings(meta["family"], meta["settings"], f"{path / 'model.json'} settings")
        except ConfigError as err:
            raise ModelLoadError(str(err)) from None
        model = klass(
            settings,
            spec=DataSpec(**meta["spec"]),
            training=TrainingConfig(**meta["training"]),
        )
        model.freq_ = meta["freq"]
        model.series_ = meta["series"]
        if (path / CALIBRATION_FILE).exists():
            from forecasting.evaluation.intervals import Calibration

            try:
                model.calibration_ = Calibration.from_dict(json.loads((path / CALIBRATION_FILE).read_text()))
                cal = model.calibration_
                if cal.offsets.shape != (model.spec.horizon, len(cal.taus)):
                    raise ValueError(f"offsets of shape {cal.offsets.shape} for horizon {model.spec.horizon}")
            except (KeyError, TypeError, ValueError) as err:
                raise ModelLoadError(
                    f"{path}: unreadable {CALIBRATION_FILE} ({type(err).__name__})"
                ) from None
        model._load_state(path)
        model.fitted_ = True
        return model

    # --- helpers shared by every family -------------------------------------------------------
    @property
    def window_calendar(self) -> list[str]:
        """The calendar features this model's windows carry: ``spec.calendar`` for a family that
        reads them, none for one that does not."""
        return list(self.spec.calendar) if self.reads_calendar else []

    def make_windows(self, frame: pd.DataFrame, stride: int = 1) -> Windows:
        arrays = to_arrays(frame, self.spec.past, self.spec.future, self.spec.static, self.window_calendar)
        return Windows(arrays, self.spec.lookback, self.spec.horizon, stride)

    def prediction_batch(self, history: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """The last full window of every series, with future covariates for the horizon.

        Returns (batch, target timestamps (S, H), series ids (S,)), series in order of first
        appearance. Without future covariates all series are gathered at once (one sort and one
        fancy index: ~100x faster than a loop over 10,000 series); with them, or when any series
        is too short or has a gap in its last window, the per-series path runs and names it.
        Calendar features (``spec.calendar``) are recomputed from the lookback's timestamps and the
        horizon's (the last observed one stepped by the training frequency), as training computed
        them from each window's rows.
        """
        fast = None if self.spec.future else self._prediction_batch_gathered(history)
        return fast if fast is not None else self._prediction_batch_per_series(history)

    def _prediction_batch_gathered(
        self, history: pd.DataFrame
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray] | None:
        """``prediction_batch`` without a Python loop over series; None where the per-series path
        must decide (it raises the precise error)."""
        L, H = self.spec.lookback, self.spec.horizon
        codes, uniques = pd.factorize(history[SERIES], sort=False)  # groupby(sort=False) order
        if len(uniques) == 0 or (codes < 0).any():
            return None
        order = np.argsort(codes, kind="stable")  # each series' rows together, in their own order
        starts = np.searchsorted(codes[order], np.arange(len(uniques)))
        y = history[TARGET].to_numpy(np.float64, na_value=np.nan)[order]
        observed_at = np.where(np.isnan(y), -1, np.arange(len(y)))
        last = np.maximum.reduceat(observed_at, starts)  # last observed row of each series
        if (last < starts + L - 1).any():  # no y, or fewer than L rows up to the last one
            return None
        rows = last[:, None] - (L - 1) + np.arange(L)  # (S, L) positions in sorted order
        ctx_y = y[rows]
        if np.isnan(ctx_y).any():
            return None
        source = order[rows]  # (S, L) row numbers in ``history``
        past = history[self.spec.past].to_numpy(np.float32)[source]  # (S, L, P)
        static = history[self.spec.static].to_numpy(np.float32)[order[last]]
        t_last = pd.DatetimeIndex(history[TIME].iloc[order[last]])  # keeps the column's zone
        offset = to_offset(self.freq_)
        times = np.stack([(t_last + k * offset).to_numpy() for k in range(1, H + 1)], axis=1)
        ids = np.asarray(list(uniques), dtype=object)
        x_future = np.zeros((len(ids), H, 0), np.float32)
        calendar = self.window_calendar
        if calendar:
            t_ctx = pd.DatetimeIndex(history[TIME]).take(source.reshape(-1))  # (S * L,)
            past = np.concatenate(
                [past, calendar_features(t_ctx, calendar).reshape(len(ids), L, -1)], axis=-1
            )  # (S, L, P + 2k)
            x_future = calendar_features(times, calendar)  # (S, H, 2k)
        batch = {
            "y": ctx_y.astype(np.float32),
            "x_past": past,
            "x_future": x_future,
            "static": static,
            "series": self.series_index(ids),
        }
        return batch, times, ids

    def _prediction_batch_per_series(
        self, history: pd.DataFrame
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        L, H = self.spec.lookback, self.spec.horizon
        offset = to_offset(self.freq_)
        calendar = self.window_calendar
        ys, xps, xfs, sts, times, ids = [], [], [], [], [], []
        for sid, part in history.groupby(SERIES, sort=False):
            observed = np.flatnonzero(part[TARGET].notna().to_numpy())
            if observed.size == 0:
                raise SeriesTooShortError(f"series {sid!r} has no observed y in the history")
            last = observed[-1]
            if last + 1 < L and self.spec.pad_short:  # first value repeated before the history
                part = left_pad(part, len(part) + L - 1 - last, self.freq_)[0]
                last = L - 1
            if last + 1 < L:
                raise SeriesTooShortError(
                    f"series {sid!r} has {last + 1} rows of history; the model needs lookback = {L}"
                )
            ctx = part.iloc[last + 1 - L : last + 1]
            if ctx[TARGET].isna().any():
                bad = ctx.loc[ctx[TARGET].isna(), TIME].tolist()
                raise SeriesTooShortError(
                    f"series {sid!r}: the last {L} rows have missing y at {format_rows(bad)}"
                )
            t_last = part[TIME].iloc[last]
            horizon_t = pd.date_range(t_last, periods=H + 1, freq=offset)[1:]
            xf = np.zeros((H, len(self.spec.future)), np.float32)
            if self.spec.future:
                fut = part.iloc[last + 1 :].set_index(TIME)
                fut = fut[~fut.index.duplicated()].reindex(horizon_t)[self.spec.future]
                missing = fut.index[fut.isna().any(axis=1).to_numpy()]
                if len(missing):
                    raise FutureCovariateError(
                        f"series {sid!r}: future covariate(s) {self.spec.future} must cover the "
                        f"{H} forecast steps; missing at {format_rows([str(m) for m in missing])}"
                    )
                xf = fut.to_numpy(np.float32)
            xp = ctx[self.spec.past + self.spec.future].to_numpy(np.float32)
            if calendar:
                xp = np.hstack([xp, calendar_features(ctx[TIME], calendar)])  # (L, Cp + Cf + 2k)
                xf = np.hstack([xf, calendar_features(horizon_t, calendar)])  # (H, Cf + 2k)
            ys.append(ctx[TARGET].to_numpy(np.float32))
            xps.append(xp)
            xfs.append(xf)
            sts.append(ctx[self.spec.static].iloc[-1].to_numpy(np.float32))
            times.append(horizon_t.to_numpy())
            ids.append(sid)
        batch = {
            "y": np.stack(ys),
            "x_past": np.stack(xps),
            "x_future": np.stack(xfs),
            "static": np.stack(sts),
            "series": self.series_index(ids),
        }
        return batch, np.stack(times), np.asarray(ids, dtype=object)

    def series_index(self, ids: Sequence[str]) -> np.ndarray:
        """Index of each id in the training series (-1 for unseen series)."""
        return series_positions(self.series_, ids)

    def _check_columns(self, frame: pd.DataFrame, what: str) -> None:
        need = [SERIES, TIME, TARGET, *self.spec.covariates]
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise MissingColumnError(f"{what} lacks column(s) {missing} that model {self.name!r} needs")

    def _check_fitted(self) -> None:
        if not self.fitted_:
            raise NotFittedError(
                f"model {self.name!r} is not fitted: call fit() (or load()) before predict()"
            )

    @property
    def n_params(self) -> int:
        return 0

    # --- what a family writes ---------------------------------------------------------------
    @abstractmethod
    def _fit(
        self,
        train: pd.DataFrame,
        train_windows: Windows,
        val_windows: Windows | None,
        callbacks: list[EpochCallback],
    ) -> None: ...

    @abstractmethod
    def _predict_windows(self, batch: dict[str, np.ndarray]) -> np.ndarray: ...

    def _predict_quantiles(self, batch: dict[str, np.ndarray], taus: list[float]) -> np.ndarray | None:
        """Native quantile forecasts (N, H, len(taus)) on the model's scale; None: none (the
        default; conformal bands then start from the point forecast)."""
        return None

    def _save_state(self, path: Path) -> None:  # noqa: B027 - stateless families write nothing
        pass

    def _load_state(self, path: Path) -> None:  # noqa: B027
        pass


def series_positions(known: Sequence[Any], ids: Sequence[Any]) -> np.ndarray:
    """Index of each id among ``known`` (compared as text), -1 for an id not among them: a
    model's own index of the series of windows numbered in another frame."""
    lookup = {str(s): i for i, s in enumerate(known)}
    return np.array([lookup.get(str(s), -1) for s in ids], dtype=np.int64)


def _infer_freq(frame: pd.DataFrame) -> str:
    first = frame[SERIES].iloc[0]
    t = pd.DatetimeIndex(frame.loc[frame[SERIES] == first, TIME].head(100))
    with warnings.catch_warnings():
        # pandas 3 warns that infer_freq will return an offset; to_offset below takes either.
        warnings.simplefilter("ignore", DeprecationWarning)
        inferred = pd.infer_freq(t) if len(t) >= 3 else None
    if inferred is None:
        return to_offset(pd.Series(t).diff().dropna().mode().iloc[0]).freqstr
    return to_offset(inferred).freqstr  # infer_freq returns a str today and an offset in pandas 4
