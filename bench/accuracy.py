"""Accuracy on the standard ETT protocol, every family, with the published figures beside ours.

Protocol (benchmarks.md section 2): the published borders (ETTh 8640/11520/14400, ETTm
34560/46080/57600), z-normalisation per column fitted on the training rows only, every test window
at stride 1 (2880 - H + 1 per series on ETTh), MSE/MAE on the normalised scale. ``S``: OT alone;
``M``: the seven columns as seven series (wide format) and one global channel-independent model,
so MSE/MAE average over windows x steps x the 7 channels like the published tables.

The published figures were scored by test loaders that dropped their last partial batch
(``drop_last=True``), so each row also records ``test_mse_pub``/``test_mae_pub``: the same over
the first ``pub_origins`` origins of each series, the windows the cell's best published figure was
scored on (``PUBLISHED_TEST_BATCH`` in ``_common.py``). ``test_mse`` (every window) stays the headline.

Each family runs with the settings listed in ``VARIANTS`` (recorded in the CSV row). When a family
has several variants the table keeps the one with the lowest *validation* MSE, and the headline
family of a cell is the one with the lowest validation MSE too: test figures never choose ("best
on test" is a column for information). The pipeline's own champion per cell, as ``forecast run``
registers it, is ``bench/cells.py``'s table; this grid is the option that studies variants and
never changes that headline.

Variant hygiene: variants are declared in ``VARIANTS`` before a grid runs. Every row records the
fingerprint of the declaration of its features (``declaration``); a row counts (resume, tables)
only under today's fingerprint, so adding, dropping or changing a variant re-runs every cell of
those features (the ensemble and the validation choice see every variant). Rows from before
fingerprints were recorded count (resume and tables alike) while their variant is still declared.
The commit that adds a variant says on which data and rows it was chosen.

Rows are appended to ``bench/results/accuracy.csv`` as they finish; a rerun skips rows already
there (``--fresh`` starts over), so a long run can be stopped and resumed. The ensemble
rows are the exception: their members must be fitted in the same invocation, so a cell that was
resumed gets none (rerun it into a new ``--out``).

``--seeds K`` also fits each deep family's validation-chosen variant with K-1 more seeds and records
the mean of the K forecasts (``<label>-xK``). The main tables stay one seed per variant, as the
published ones are; a section at the end compares each average with its one-seed row.

    .venv/bin/python bench/accuracy.py --quick              # ETTh1 S, L=336, H=96, first variants
    .venv/bin/python bench/accuracy.py                      # ETTh1/ETTh2 x S/M x H 96/336, L=336
    .venv/bin/python bench/accuracy.py --datasets ETTh1 --features M --horizons 96 --models lstm
    .venv/bin/python bench/accuracy.py --report             # print the tables from the CSV only
    .venv/bin/python bench/accuracy.py --datasets ETTh1 ETTm1 --features M --horizons 96 \
        --device cuda --amp --out $OUT/accuracy_gpu.csv     # what bench/gpu.sh runs
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    FREQ,
    PUBLISHED,
    RESULTS,
    SEASON,
    append_row,
    best_published,
    ett_config,
    fmt,
    load_average,
    machine,
    published_label,
    published_origins,
    read_rows,
)

FAMILIES = ["naive", "seasonal_naive", "ar", "linear", "rnn", "lstm", "gru", "tcn", "transformer", "ensemble"]
DEEP = ["linear", "rnn", "lstm", "gru", "tcn", "transformer"]
TRAINED = ["ar", *DEEP]

# The training loop's settings shared by every deep family in this bench (TrainingConfig keys).
BASE_TRAINING: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 128,
    "base_batch_size": 32,
    "lr": 1e-3,  # scaled linearly to the batch: peak 4e-3 at 128
    "warmup_fraction": 0.1,
    "schedule": "cosine",
    "patience": 3,
    "seed": 0,
}
# Multivariate: 7 series give 7x the windows; each epoch draws this many at random.
M_TRAIN_WINDOWS = 16384

# Per features ("S"/"M") and family: variants (label, params, training overrides). The first
# variant is the family's default in this bench; with --quick only the first runs.
_LR4 = {"lr": 2.5e-4}  # a quarter of the base lr: peak 1e-3 at batch 128
_Variant = tuple[str, dict[str, Any], dict[str, Any]]
_ALL = {**_LR4, "max_train_windows": None}  # M: every training window in every epoch (no subsampling)
_SEGMENTS = {"decoder": "segments"}  # SegRNN's parallel segment decoder instead of the head
_PATCHTST = {
    "layers": 3,
    "norm": "batch",
    "position": "learned",
    "pad_end": True,
    "residual_attention": True,
    "attention_dropout": 0.0,
    "head_dropout": 0.0,
}
_RECURRENT: list[_Variant] = [
    ("seg24", {}, {}),
    ("seg24-lr4", {}, _LR4),
    ("seg24-lr4-d2", {"dropout": 0.2}, _LR4),
    ("seg24-dec", _SEGMENTS, {}),
    ("seg24-dec-lr4", _SEGMENTS, _LR4),
]
_SHARED: dict[str, list[_Variant]] = {
    "naive": [("naive", {}, {})],
    "seasonal_naive": [("day", {"season_length": 24}, {})],
    "ar": [("aic48", {"max_lag": 48, "ic": "aic"}, {})],
    "tcn": [("seg8", {}, {}), ("seg8-lr4", {}, _LR4), ("seg8-flat-lr4", {"head": "flatten"}, _LR4)],
    "transformer": [
        ("patch16", {}, {}),
        ("patch16-lr4", {}, _LR4),
        # PatchTST normalises with BatchNorm over the tokens (its ``norm='BatchNorm'``), not LayerNorm.
        ("patch16-bn", {"norm": "batch"}, {}),
        ("patch16-bn-lr4", {"norm": "batch"}, _LR4),
        # PatchTST/64's network for ETTh as a whole: 3 layers, BatchNorm, learned positions, end
        # padding, residual attention, no dropout on the attention weights or the head.
        ("patch16-ptst", _PATCHTST, {}),
        ("patch16-ptst-lr4", _PATCHTST, _LR4),
        # PatchTST's own ETTh recipe as far as 2 cores allow: 3 layers, peak lr 1e-4, a longer run.
        ("patch16-l3-lr40-e30", {"layers": 3}, {"lr": 2.5e-5, "epochs": 30, "patience": 10}),
    ],
    # Weighed greedily on validation (members added at run time) from the models fitted before it
    # in the same invocation: each family's variant chosen on validation (as the table chooses),
    # or (`-lib`, Caruana's "library") every variant of every family.
    "ensemble": [("greedy25", {"rounds": 25}, {}), ("greedy25-lib", {"rounds": 25}, {})],
}
_LINEAR: list[_Variant] = [
    ("nlinear", {"kind": "nlinear"}, {}),
    ("dlinear", {"kind": "dlinear"}, {}),
    ("nlinear-lr4", {"kind": "nlinear"}, _LR4),
]
VARIANTS: dict[str, dict[str, list[_Variant]]] = {
    "S": {
        **_SHARED,
        "linear": [*_LINEAR, ("dlinear-lr4", {"kind": "dlinear"}, _LR4)],
        **{family: _RECURRENT for family in ("rnn", "lstm", "gru")},
    },
    "M": {
        **_SHARED,
        "linear": [*_LINEAR, ("nlinear-lr4-all", {"kind": "nlinear"}, _ALL)],
        "transformer": [*_SHARED["transformer"], ("patch16-lr4-all", {}, _ALL)],
        **{
            family: [*_RECURRENT, ("seg24-lr4-d2-all", {"dropout": 0.2}, _ALL)]
            for family in ("rnn", "lstm", "gru")
        },
    },
}


def variants_for(features: str, family: str, freq: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    for label, params, training in VARIANTS[features][family]:
        if family == "seasonal_naive":
            params = {"season_length": SEASON[freq]}
            label = f"day{SEASON[freq]}"
        out.append((label, params, training))
    return out


def declaration(features: str) -> str:
    """A fingerprint of every variant declared for ``features`` and the shared training settings.

    Recorded on each row. A row counts as done (resume) and in the tables only under the current
    declaration of its cell's features: adding, dropping or changing any variant re-runs every cell
    it could affect (the ensemble and the validation choice see every variant), never just the new one.
    """
    declared = {"variants": VARIANTS[features], "training": BASE_TRAINING, "m_windows": M_TRAIN_WINDOWS}
    return hashlib.sha256(json.dumps(declared, sort_keys=True, default=str).encode()).hexdigest()[:12]


def current(rows: list[dict[str, str]]) -> tuple[list[dict[str, str]], int]:
    """The rows run under today's declaration, and how many were left out as stale.

    Rows from before declarations were recorded (no ``declared`` column) are kept while their
    variant is still declared and no row of today's declaration replaces them; the report says how
    many there are."""
    now = [r for r in rows if r.get("declared") and r["declared"] == declaration(r["features"])]
    redone = {key_of(r) for r in now}
    legacy = [r for r in rows if not r.get("declared") and key_of(r) not in redone and is_declared(r)]
    stale = [r for r in rows if r.get("declared") and r["declared"] != declaration(r["features"])]
    dropped = [r for r in rows if not r.get("declared") and not is_declared(r)]
    return legacy + now, len(stale) + len(dropped)


def is_declared(row: dict[str, str]) -> bool:
    """Whether the row's variant (a seed average: the variant it averages) is declared today."""
    label = row["variant"].rsplit("-x", 1)[0] if is_seed_average(row) else row["variant"]
    features, family = row["features"], row["family"]
    if features not in VARIANTS or family not in VARIANTS[features]:
        return False
    return label in {v[0] for v in variants_for(features, family, FREQ.get(row["dataset"], "h"))}


def is_seed_average(row: dict[str, str]) -> bool:
    """A row of ``--seeds``: one variant fitted with several seeds, forecasts averaged."""
    try:
        return "seeds" in json.loads(row.get("params") or "{}")
    except ValueError:
        return False


def calendar_of(row: dict[str, str]) -> str:
    """The row's ``--calendar`` (rows from before the option ran with none)."""
    return row.get("calendar") or "none"


def key_of(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(
        str(row[k]) for k in ("dataset", "features", "lookback", "horizon", "family", "variant", "device")
    )


def origin_rank(windows: Any) -> Any:
    """Each window's position among its series' windows (0 = the earliest origin): (N,) int."""
    import numpy as np

    series = windows.series  # non-decreasing: windows are series-major, in time order
    first = np.searchsorted(series, series, side="left")
    return np.arange(len(series)) - first


def scores_of(y: Any, yhat: Any, windows: Any, keep_origins: int | None = None) -> dict[str, float]:
    """MSE and MAE of (N, H) targets and forecasts of ``windows``, over every window x step.

    With ``keep_origins``, also ``mse_pub``/``mae_pub``: the same over the first ``keep_origins``
    origins of each series only (the windows a published test loader with ``drop_last`` scored).
    """
    from forecasting.evaluation.metrics import mae, mse

    out = {"mse": mse(y, yhat), "mae": mae(y, yhat)}
    if keep_origins is not None:
        kept = origin_rank(windows) < keep_origins  # (N,)
        out |= {"mse_pub": mse(y[kept], yhat[kept]), "mae_pub": mae(y[kept], yhat[kept])}
    return out


def score_windows(
    model: Any, windows: Any, batch_size: int = 4096, keep_origins: int | None = None
) -> dict[str, float]:
    """``scores_of`` the model's forecasts of every window, as ``evaluate_windows`` scores them.

    The same forecasts as the pipeline's ``evaluate_windows`` without building its long frame of
    predictions (7.7 million rows on ETTm1 M), which dominates scoring time on a GPU.
    """
    from forecasting.evaluation.metrics import predict_all_windows

    y, yhat = predict_all_windows(model, windows, batch_size)
    return scores_of(y, yhat, windows, keep_origins)


def published_window_scores(frame: Any, windows: Any, keep_origins: int) -> dict[str, float]:
    """``test_mse_pub``/``test_mae_pub`` from ``fit_and_score``'s test prediction frame (no new pass).

    The frame has one row per window and step, window-major (``evaluate_windows``).
    """
    shape = (len(windows), windows.horizon)
    y, yhat = frame["y"].to_numpy().reshape(shape), frame["yhat"].to_numpy().reshape(shape)
    scores = scores_of(y, yhat, windows, keep_origins)
    return {"test_mse_pub": scores["mse_pub"], "test_mae_pub": scores["mae_pub"]}


def fit_and_score_lean(
    prepared: Any,
    cfg: Any,
    spec: Any,
    members: dict[str, Any] | None = None,
    keep_origins: int | None = None,
) -> tuple[Any, dict[str, float]]:
    """``pipeline.fit_and_score`` reduced to what the table needs (same fit, same windows)."""
    from forecasting.models.registry import build_model

    model = build_model(spec, prepared.spec, cfg.training, members=members)
    start = time.perf_counter()
    model.fit(prepared.train, prepared.val)
    fit_seconds = time.perf_counter() - start
    val = score_windows(model, prepared.windows(prepared.val))
    start = time.perf_counter()
    test = score_windows(model, prepared.windows(prepared.test), keep_origins=keep_origins)
    metrics = {f"val_{k}": v for k, v in val.items()} | {f"test_{k}": v for k, v in test.items()}
    metrics.update(
        fit_seconds=fit_seconds, predict_seconds=time.perf_counter() - start, n_params=float(model.n_params)
    )
    return model, metrics


def run_cell(
    dataset: str,
    features: str,
    lookback: int,
    horizon: int,
    families: list[str],
    args: argparse.Namespace,
    done: set[tuple[str, ...]],
) -> None:
    from forecasting.config import ModelSpec
    from forecasting.pipeline import fit_and_score, prepare

    training = {**BASE_TRAINING, "num_threads": args.threads, "device": args.device, "amp": args.amp}
    if features == "M" and args.m_train_windows:
        training["max_train_windows"] = args.m_train_windows
    if args.epochs:
        training["epochs"] = args.epochs
    if args.max_steps:
        training["max_steps"] = args.max_steps
    t0 = time.perf_counter()
    base_cfg = ett_config(dataset, features, lookback, horizon, training, calendar=args.calendar)
    prepared = prepare(base_cfg)
    prep_s = time.perf_counter() - t0
    test_windows = prepared.windows(prepared.test)
    n_test = len(test_windows)
    # The published figure's test loader dropped its last partial batch: score those windows too.
    pub = best_published(dataset, features, horizon)
    # ETT: every series has the same test origins (the seven columns share their timestamps).
    per_series = int(origin_rank(test_windows).max()) + 1 if n_test else 0
    keep = published_origins(per_series, pub[0]) if pub else None
    print(
        f"\n## {dataset} {features} L={lookback} H={horizon}: {prepared.train['series_id'].nunique()} "
        f"series, {n_test} test windows (prepared in {prep_s:.1f} s; load {load_average()})",
        flush=True,
    )
    chosen: dict[str, tuple[float, Any]] = {}  # family -> (val MSE, model) of its best variant so far
    picks: dict[str, tuple[str, dict[str, Any], dict[str, Any], float]] = {}  # family -> that variant
    library: dict[str, Any] = {}  # "family/variant" -> model: every fitted variant
    resumed = False  # a row of this cell was already in --out (its model is not in memory)
    partly_resumed: set[str] = set()  # families with such a row

    def record(
        family: str,
        label: str,
        params: dict[str, Any],
        cfg: Any,
        model: Any,
        metrics: dict[str, float],
        error: str,
        load_before: str,
        trained: bool | None = None,
    ) -> None:
        """Append a fit's row to --out.

        ``trained``: record ``cfg``'s training settings (default: when the model has a training
        loop; a seed average has none of its own but its members were trained with them)."""
        row_key = {
            "dataset": dataset,
            "features": features,
            "lookback": lookback,
            "horizon": horizon,
            "family": family,
            "variant": label,
            "device": args.device,
        }
        history = list(model.history_)
        row = {
            **row_key,
            "test_mse": metrics.get("test_mse", float("nan")),
            "test_mae": metrics.get("test_mae", float("nan")),
            "val_mse": metrics.get("val_mse", float("nan")),
            # over the origins the best published figure's loader scored (drop_last)
            "test_mse_pub": metrics.get("test_mse_pub", float("nan")),
            "test_mae_pub": metrics.get("test_mae_pub", float("nan")),
            "pub_origins": keep if keep is not None else "",
            "val_mae": metrics.get("val_mae", float("nan")),
            "fit_s": round(metrics.get("fit_seconds", float("nan")), 2),
            "score_s": round(metrics.get("predict_seconds", float("nan")), 2),
            "epochs": len(history),
            "best_epoch": model.best_epoch_ if history and model.best_epoch_ is not None else "",
            "n_params": int(metrics.get("n_params", 0)),
            "test_windows": n_test,
            "params": params,
            "training": (
                {k: v for k, v in cfg.training.model_dump(mode="json").items() if k in _LOGGED}
                if (model is not None and model.uses_training_loop if trained is None else trained)
                else {}
            ),
            "threads": args.threads,
            "load_before": load_before,
            "load_after": load_average(),
            "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "error": error,
            "declared": declaration(features),
            "calendar": args.calendar,
        }
        append_row(args.out, row)
        done.add(key_of(row_key))
        print(
            f"{family:>14} {label:<12} test MSE {fmt(row['test_mse'])} MAE {fmt(row['test_mae'])}  "
            f"val MSE {fmt(row['val_mse'])}  fit {row['fit_s']:>7} s  epochs {row['epochs']} "
            f"(best {row['best_epoch']})  load {row['load_after']}" + (f"  {error}" if error else ""),
            flush=True,
        )

    def score(cfg: Any, spec: Any, members: dict[str, Any] | None) -> tuple[Any, dict[str, float]]:
        if args.scorer == "pipeline":
            model, metrics, test_pred = fit_and_score(
                dataclasses.replace(prepared, cfg=cfg), spec, members=members
            )
            if keep is not None:
                metrics |= published_window_scores(test_pred, test_windows, keep)
            return model, metrics
        return fit_and_score_lean(prepared, cfg, spec, members, keep)

    def seed_average(family: str) -> None:
        """The family's validation-chosen variant fitted with ``args.seeds`` seeds, forecasts averaged.

        Seed ``BASE_TRAINING['seed']`` is the model already fitted; the others differ only in the
        seed (initialisation, window order, dropout). Equal weights: nothing more is fitted on
        validation. The report shows it beside its one-seed row (``seed_averages``)."""
        label, params, overrides, fit_s = picks[family]
        avg_label = f"{label}-x{args.seeds}"
        load_before = load_average()
        seeds = [BASE_TRAINING["seed"] + i for i in range(args.seeds)]
        members = {f"{family}/{label}/seed{seeds[0]}": chosen[family][1]}
        member_scores: list[tuple[float, float]] = []
        total_fit = fit_s
        cfg = base_cfg.model_copy(update={"training": base_cfg.training.model_copy(update=overrides)})
        try:
            for seed in seeds[1:]:
                seeded = cfg.model_copy(update={"training": cfg.training.model_copy(update={"seed": seed})})
                model, metrics = fit_and_score_lean(
                    prepared, seeded, ModelSpec(name=family, label=label, params=params)
                )
                members[f"{family}/{label}/seed{seed}"] = model
                member_scores.append((metrics["val_mse"], metrics["test_mse"]))
                total_fit += metrics["fit_seconds"]
                print(
                    f"{'':>14} {label:<12} seed {seed}: test MSE {fmt(metrics['test_mse'])}  "
                    f"val MSE {fmt(metrics['val_mse'])}  fit {metrics['fit_seconds']:.1f} s",
                    flush=True,
                )
            spec = ModelSpec(name="ensemble", label=avg_label, params={"weighting": "equal"})
            model, metrics = score(cfg, spec, members)
            metrics["fit_seconds"] = total_fit
            error = ""
        except Exception as err:  # an error row for the average; the next family goes on
            model, metrics, error = None, {}, f"{type(err).__name__}: {err}"
        info = {
            **params,
            "seeds": seeds,
            # the added seeds' own scores (the first seed's are its variant's row)
            "member_val_mse": [round(v, 5) for v, _ in member_scores],
            "member_test_mse": [round(t, 5) for _, t in member_scores],
        }
        # Recorded under the family, not kept for the ensembles; ``cfg`` holds seed 0's settings and
        # ``params.seeds`` lists them all.
        record(
            family,
            avg_label,
            info,
            cfg,
            model,
            metrics,
            error,
            load_before,
            trained=model is not None,
        )

    key = {
        "dataset": dataset,
        "features": features,
        "lookback": lookback,
        "horizon": horizon,
        "device": args.device,
    }
    for family in families:
        variants = variants_for(features, family, FREQ[dataset])
        if args.quick or args.first_variant:
            variants = variants[:1]
        variants = [v for v in variants if v[0] not in args.skip_variants]
        if args.chosen_from is not None and family in DEEP:
            # Only the variant that the rows of --chosen-from choose on validation.
            pick = args.chosen_from.get((dataset, features, str(lookback), str(horizon), args.device, family))
            variants = [v for v in variants if pick is not None and v[0] == pick["variant"]]
            if not variants:
                print(f"{family:>14} (--chosen-from has no choice for this cell among the variants run)")
        for label, params, overrides in variants:
            if key_of({**key, "family": family, "variant": label}) in done:
                print(f"{family:>14} {label:<12} (in {args.out.name}; skipped)", flush=True)
                resumed = True
                partly_resumed.add(family)
                continue
            if family == "ensemble" and resumed:
                # Its members must be this invocation's models; some were fitted by an earlier one.
                print(f"{family:>14} {label:<12} not run: members fitted earlier; rerun into a new --out")
                continue
            cfg = base_cfg.model_copy(update={"training": base_cfg.training.model_copy(update=overrides)})
            spec = ModelSpec(name=family, label=label, params=params)
            members = None
            if family == "ensemble":
                # greedy25: each family's validation choice; -lib: every variant fitted in this
                # invocation (one seed each: not the seed averages)
                members = library if label.endswith("-lib") else {f: m for f, (_, m) in chosen.items()}
            load_before = load_average()
            try:
                model, metrics = score(cfg, spec, members)
                error = ""
            except Exception as err:  # record the failure and go on with the next family
                model, metrics, error = None, {}, f"{type(err).__name__}: {err}"
            if model is not None and family != "ensemble":
                # The ensembles' members and the seed averages' base: one seed per variant.
                library[f"{family}/{label}"] = model
                val = _finite_or_inf(metrics.get("val_mse"))
                if family not in chosen or val < chosen[family][0]:
                    chosen[family] = (val, model)
                    picks[family] = (label, params, overrides, metrics.get("fit_seconds", float("nan")))
            if members is not None and model is not None:
                weights = {k: round(w, 4) for k, w in model.weights_.items()}
                params = {**params, "members": sorted(members), "weights": weights}
            record(family, label, params, cfg, model, metrics, error, load_before)
        if args.seeds > 1 and family in DEEP:
            avg_key = (
                key_of({**key, "family": family, "variant": f"{picks[family][0]}-x{args.seeds}"})
                if family in picks
                else None
            )
            if avg_key is not None and avg_key in done:
                print(f"{family:>14} {avg_key[5]:<12} (in {args.out.name}; skipped)", flush=True)
                resumed = True
            elif family in partly_resumed or family not in picks:
                # Its choice must come from every variant fitted here (an earlier run fitted some).
                print(f"{family:>14} no seed average: not every variant was fitted in this invocation")
            else:
                seed_average(family)


_LOGGED = (
    "epochs",
    "batch_size",
    "lr",
    "base_batch_size",
    "scale_lr",
    "optimizer",
    "weight_decay",
    "warmup_fraction",
    "schedule",
    "patience",
    "max_train_windows",
    "max_steps",
    "clip_grad_norm",
    "seed",
    "device",
    "amp",
    "loss",
)


# --- the report -----------------------------------------------------------------------------------
def selected(rows: list[dict[str, str]], by: str = "val_mse") -> dict[tuple[str, ...], dict[str, str]]:
    """Per (dataset, features, L, H, device, family): the variant with the lowest ``by`` (validation MSE)."""
    best: dict[tuple[str, ...], dict[str, str]] = {}
    for r in rows:
        if r.get("error") or not _number(r.get(by)):
            continue  # a NaN would stick as the first row seen (every comparison with it is False)
        k = (r["dataset"], r["features"], r["lookback"], r["horizon"], r["device"], r["family"])
        if k not in best or float(r[by]) < float(best[k][by]):
            best[k] = r
    return best


def report(path: Path) -> str:
    every, stale = current(read_rows(path))
    if not every:
        return f"(no rows in {path} under the current variant declaration; {stale} others)"
    unrecorded = sum(not r.get("declared") for r in every)
    # The main tables are one seed per variant, as the published tables are; the seed averages
    # (--seeds) get their own section at the end.
    rows = [r for r in every if not is_seed_average(r)]
    sel = selected(rows)
    cells = sorted(
        {k[:5] for k in sel},
        key=lambda c: (c[4], c[1], c[0], int(c[3]), -int(c[2])),
    )
    lines = []
    head = (
        "| data | feat | L | H | "
        + " | ".join(FAMILIES)
        + " | ours, family chosen on validation | best on test (information only: chosen on test rows) "
        + "| best on test, on the published loader's windows "
        + "| best published (MSE/MAE, model, L, source) | best published at this L |"
    )
    lines += [head, "|" + "---|" * (len(FAMILIES) + 9)]
    notes = []
    for cell in cells:
        dataset, features, lookback, horizon, device = cell
        pub = best_published(dataset, features, int(horizon))
        out = [dataset, features + ("" if device == "cpu" else f" ({device})"), lookback, horizon]
        ours = {f: sel.get((*cell, f)) for f in FAMILIES}
        naive = float(ours["naive"]["test_mse"]) if ours.get("naive") else None
        for f in FAMILIES:
            r = ours[f]
            out.append(f"{float(r['test_mse']):.4f} / {float(r['test_mae']):.3f}" if r else "")
        scored = {f: _test_mse(r) for f, r in ours.items() if r}
        best_f = min(scored, key=scored.get) if scored else None
        pick = validation_pick(ours)
        out.append(f"**{scored[pick]:.4f}** ({pick})" if pick in scored else "")
        out.append(f"{scored[best_f]:.4f} ({best_f})" if best_f else "")
        like = {f: float(r["test_mse_pub"]) for f, r in ours.items() if r and _number(r.get("test_mse_pub"))}
        best_like = min(like, key=like.get) if like else None
        out.append(
            f"{like[best_like]:.4f} ({best_like}; first {ours[best_like]['pub_origins']} origins)"
            if best_like
            else "n/a"
        )
        out.append(published_label(pub))
        same = [r for r in PUBLISHED.get((dataset, features, int(horizon)), []) if r[1] == int(lookback)]
        out.append(published_label(min(same, key=lambda r: r[2])) if same else "n/a")
        lines.append("| " + " | ".join(str(x) for x in out) + " |")
        if pub is None:
            continue
        target = pub[2]
        for f in DEEP:
            if f not in scored:
                continue
            gap = scored[f] / target - 1
            beats = naive is None or scored[f] < naive
            if gap > 0.10 or not beats or (f in like and like[f] / target - 1 > 0.10):
                notes.append(
                    f"- {dataset} {features} L={lookback} H={horizon} {f}: {scored[f]:.4f} is "
                    f"{gap:+.1%} vs the best published {target:.3f}"
                    + (
                        f" ({like[f]:.4f}, {like[f] / target - 1:+.1%}, on its loader's windows)"
                        if f in like
                        else ""
                    )
                    + ("" if beats else f"; does NOT beat naive ({naive:.4f})")
                )
        short_like = pick in like and round(like[pick], 3) > target
        if pick in scored and (round(scored[pick], 3) > target or short_like):  # published: 3 decimals
            notes.append(
                f"- {dataset} {features} L={lookback} H={horizon}: ours, chosen on validation ({pick} "
                f"{scored[pick]:.4f}) is {scored[pick] / target - 1:+.1%} against the best published "
                f"{target:.3f}"
                + (
                    f"; on the windows its loader scored: {like[pick]:.4f} ({like[pick] / target - 1:+.1%})"
                    if pick in like
                    else ""
                )
            )
    lines.append("")
    lines.append(
        "Cells: test MSE / MAE (normalised scale). Variant per family chosen by validation MSE; the "
        'headline family too (lowest validation MSE, as the pipeline selects). "Best on test" chose '
        "its family on the test rows and is shown for information only; `bench/cells.py` gives the "
        "pipeline's own champion per cell. Calendar features (`--calendar`): "
        + ", ".join(sorted({calendar_of(r) for r in every}))
        + "."
    )
    lines.append(
        "Loader's windows: the published test loaders dropped their last partial batch "
        "(`drop_last=True`; batch 128 in PatchTST's ETTh scripts, 32 in LTSF-Linear's and FEDformer's; "
        "see `PUBLISHED_TEST_BATCH`), "
        "so they scored only the first origins of each series; the same MSE over those origins "
        "(`test_mse_pub` in the CSV)."
    )
    if notes:
        lines.append("")
        lines.append("Shortfalls (deep family > 10% above the best published, or not beating naive):")
        lines += notes
    lines += any_lookback(sel)
    oracle = selected(rows, by="test_mse")
    shown = [k for k in sel if k in oracle]  # a family whose every test MSE is NaN has no oracle
    if any(oracle[k]["variant"] != sel[k]["variant"] for k in shown):
        lines.append("")
        lines.append(
            "For information only, the variant with the lowest *test* MSE where it differs from the one "
            "validation chose (choosing on test is not the protocol):"
        )
        lines.append("")
        lines.append(
            "| data | feat | L | H | family | chosen on val: variant, test MSE "
            "| best on test: variant, test MSE |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for k in sorted(shown, key=lambda k: (k[4], k[1], k[0], int(k[3]), k[5])):
            a, b = sel[k], oracle[k]
            if a["variant"] != b["variant"]:
                lines.append(
                    f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[5]} | "
                    f"{a['variant']}, {float(a['test_mse']):.4f} | "
                    f"{b['variant']}, {float(b['test_mse']):.4f} |"
                )
    if stale or unrecorded:
        lines += [
            "",
            f"Rows left out: {stale} run under another variant declaration, or of a variant no longer "
            f"declared. {unrecorded} rows shown predate recorded declarations.",
        ]
    lines += seed_averages(every)
    fits = [r for r in sel.values() if r["family"] in TRAINED]
    lines.append("")
    lines.append(
        "| data | feat | L | H | family | variant | params | training (main keys) | fit s | epochs (best) "
        "| load |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(
        fits, key=lambda r: (r["device"], r["features"], r["dataset"], int(r["horizon"]), r["family"])
    ):
        training = json.loads(r["training"] or "{}")
        shown = {
            k: v
            for k, v in training.items()
            if k
            in ("max_train_windows", "epochs", "batch_size", "patience", "lr", "max_steps", "amp", "device")
            and v is not None
        }
        lines.append(
            f"| {r['dataset']} | {r['features']} | {r['lookback']} | {r['horizon']} | {r['family']} | "
            f"{r['variant']} | `{r['params']}` | `{json.dumps(shown, sort_keys=True)}` | {r['fit_s']} | "
            f"{r['epochs']} ({r['best_epoch']}) | {r['load_after']} |"
        )
    return "\n".join(lines)


def validation_pick(ours: dict[str, dict[str, str] | None]) -> str | None:
    """The family the pipeline would select in a cell: the lowest validation MSE (never test)."""
    val = {f: float(r["val_mse"]) for f, r in ours.items() if r and _number(r.get("val_mse"))}
    return min(val, key=val.get) if val else None


def any_lookback(sel: dict[tuple[str, ...], dict[str, str]]) -> list[str]:
    """Per (dataset, features, H, device): each family at the lookback where its chosen variant scored best.

    The counterpart of "best published at any lookback" (PatchTST/64 at L=512 against /42 at
    L=336, the L=96 re-runs...): the lookback is picked on test here, as it is there; the variant
    within each lookback is still the one validation chose. Only for cells run at two or more
    lookbacks.
    """
    groups: dict[tuple[str, ...], dict[str, list[dict[str, str]]]] = {}
    for (dataset, features, _lookback, horizon, device, family), r in sel.items():
        groups.setdefault((dataset, features, horizon, device), {}).setdefault(family, []).append(r)
    cells = sorted(
        (c for c, fams in groups.items() if len({r["lookback"] for rs in fams.values() for r in rs}) > 1),
        key=lambda c: (c[3], c[1], c[0], int(c[2])),
    )
    if not cells:
        return []
    lines = [
        "",
        "Each family at its best lookback (test MSE [L]; the variant within each lookback chosen on "
        'validation, the lookback on test, as "best published at any lookback" is):',
        "",
        "| data | feat | H | lookbacks run | "
        + " | ".join(f for f in FAMILIES if f not in ("naive", "seasonal_naive"))
        + " | ours, family and lookback chosen on validation | best on test (information only) "
        + "| best on test, on the published loader's windows | best published (any L) |",
        "|" + "---|" * (len(FAMILIES) + 6),
    ]
    notes = []
    for cell in cells:
        dataset, features, horizon, device = cell
        fams = groups[cell]
        best = {f: min(rs, key=_test_mse) for f, rs in fams.items()}
        pub = best_published(dataset, features, int(horizon))
        looks = sorted({r["lookback"] for rs in fams.values() for r in rs}, key=int)
        out = [dataset, features + ("" if device == "cpu" else f" ({device})"), horizon, ", ".join(looks)]
        for f in FAMILIES:
            if f in ("naive", "seasonal_naive"):
                continue
            r = best.get(f)
            out.append(f"{float(r['test_mse']):.4f} [{r['lookback']}]" if r else "")
        b = min(best.values(), key=_test_mse)
        valid = [r for rs in fams.values() for r in rs if _number(r.get("val_mse"))]
        v = min(valid, key=lambda r: float(r["val_mse"])) if valid else None
        out.append(f"**{float(v['test_mse']):.4f}** ({v['family']}, L={v['lookback']})" if v else "")
        out.append(f"{float(b['test_mse']):.4f} ({b['family']}, L={b['lookback']})")
        like = [r for rs in fams.values() for r in rs if _number(r.get("test_mse_pub"))]
        bl = min(like, key=lambda r: float(r["test_mse_pub"])) if like else None
        out.append(f"{float(bl['test_mse_pub']):.4f} ({bl['family']}, L={bl['lookback']})" if bl else "n/a")
        out.append(published_label(pub))
        lines.append("| " + " | ".join(out) + " |")
        if pub is None:
            continue
        target = pub[2]
        short = v is not None and round(float(v["test_mse"]), 3) > target
        vl = float(v["test_mse_pub"]) if v is not None and _number(v.get("test_mse_pub")) else None
        short_like = vl is not None and round(vl, 3) > target
        if v is not None and (short or short_like):
            notes.append(
                f"- {dataset} {features} H={horizon}: ours at any lookback, chosen on validation, "
                f"{float(v['test_mse']):.4f} ({v['family']}, L={v['lookback']}, "
                f"{float(v['test_mse']) / target - 1:+.1%}; best on test {float(b['test_mse']):.4f})"
                + (f"; on the loader's windows {vl:.4f} ({vl / target - 1:+.1%})" if vl is not None else "")
                + f" against {target:.3f}"
            )
        for f in DEEP:
            if f not in best:
                continue
            gap = float(best[f]["test_mse"]) / target - 1
            pubs = [r for r in fams[f] if _number(r.get("test_mse_pub"))]
            p = min(pubs, key=lambda r: float(r["test_mse_pub"])) if pubs else None
            gap_like = float(p["test_mse_pub"]) / target - 1 if p else None
            if gap > 0.10 or (gap_like is not None and gap_like > 0.10):
                notes.append(
                    f"- {dataset} {features} H={horizon} {f}: {float(best[f]['test_mse']):.4f} at its best "
                    f"lookback (L={best[f]['lookback']}) is {gap:+.1%}"
                    + (
                        f"; on the loader's windows {float(p['test_mse_pub']):.4f} (L={p['lookback']}, "
                        f"{gap_like:+.1%})"
                        if p
                        else ""
                    )
                )
    if notes:
        lines += ["", "Short at any lookback:", *notes]
    return lines


def seed_averages(rows: list[dict[str, str]]) -> list[str]:
    """The ``--seeds`` rows beside the one-seed variant they average, and what they change.

    "validation chooses": with the averages among the variants (the choice ``selected`` makes
    over every row); "best ours" is then the family with the lowest test MSE, as in the main table.
    """
    averages = [r for r in rows if is_seed_average(r) and not r.get("error")]
    if not averages:
        return []
    singles = [r for r in rows if not is_seed_average(r)]
    one, both = selected(singles), selected(rows)
    by_label = {(*key_of(r)[:4], r["family"], r["variant"]): r for r in singles}
    lines = [
        "",
        "Seed averages (`--seeds K`): the variant validation chose, fitted again with seeds 1..K-1, "
        "forecasts averaged with equal weights (variant `<label>-xK`). Test MSE of the one-seed row "
        "(the main table's), of the other seeds alone, and of the average; then whether validation "
        "picks the average when it is one more variant:",
        "",
        "| data | feat | L | H | family | variant | one seed | other seeds | average (change) "
        "| val: average / one seed | validation picks |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    picked = better = 0
    changes = []
    for r in sorted(
        averages,
        key=lambda r: (
            r["features"],
            r["dataset"],
            -int(r["lookback"]),
            int(r["horizon"]),
            FAMILIES.index(r["family"]),
        ),
    ):
        label = r["variant"].rsplit("-x", 1)[0]
        base = by_label.get((r["dataset"], r["features"], r["lookback"], r["horizon"], r["family"], label))
        if base is None:
            continue
        others = json.loads(r["params"]).get("member_test_mse", [])
        t1, tk = _test_mse(base), _test_mse(r)
        k = (r["dataset"], r["features"], r["lookback"], r["horizon"], r["device"], r["family"])
        chosen = both[k]["variant"] == r["variant"]
        picked += chosen
        better += tk < t1
        changes.append(tk / t1 - 1)
        span = f"{min(others):.4f}-{max(others):.4f}" if others else ""
        cell = " | ".join(r[c] for c in ("dataset", "features", "lookback", "horizon", "family"))
        val = f"{float(r['val_mse']):.4f} / {float(base['val_mse']):.4f}"
        lines.append(
            f"| {cell} | {label} | {t1:.4f} | {span} | {tk:.4f} ({tk / t1 - 1:+.1%}) "
            f"| {val} | {'average' if chosen else 'one seed'} |"
        )
    if not changes:
        return []
    median = statistics.median(changes)
    lines += [
        "",
        f"{len(changes)} averages: lower test MSE than the one-seed row in {better}, median change "
        f"{median:+.1%}; validation picks the average in {picked}.",
        "",
        "Best of ours per cell, one seed per variant vs with the averages among the variants "
        "(cells with averages only):",
        "",
        "| data | feat | L | H | one seed | with averages | best published |",
        "|---|---|---|---|---|---|---|",
    ]
    cells = sorted(
        {(*key_of(r)[:4], r["device"]) for r in averages}, key=lambda c: (c[1], c[0], -int(c[2]), int(c[3]))
    )
    for c in cells:
        pub = best_published(c[0], c[1], int(c[3]))

        shown = []
        for sel in (one, both):
            b = min((r for k, r in sel.items() if k[:5] == c), key=_test_mse)
            gap = f", {_test_mse(b) / pub[2] - 1:+.1%}" if pub else ""
            shown.append(f"{_test_mse(b):.4f} ({b['family']} {b['variant']}{gap})")
        lines.append(
            f"| {c[0]} | {c[1]} | {c[2]} | {c[3]} | {shown[0]} | {shown[1]} | {published_label(pub)} |"
        )
    return lines


def _finite_or_inf(x: Any) -> float:
    """A validation MSE to compare: NaN (a diverged fit) or missing compares as +inf."""
    return float(x) if _number(x) else float("inf")


def _test_mse(row: dict[str, str]) -> float:
    """Sort key: a NaN test MSE (a model whose test forecasts were not finite) sorts last."""
    return float(row["test_mse"]) if _number(row.get("test_mse")) else float("inf")


def _number(x: Any) -> bool:
    """A CSV cell that holds a finite number (rows from before a column existed hold '')."""
    try:
        return float(x) == float(x)
    except (TypeError, ValueError):
        return False


def write_report(path: Path) -> str:
    """The report, also saved beside the CSV (``accuracy.csv`` -> ``accuracy.md``)."""
    text = report(path)
    if path.exists():
        path.with_suffix(".md").write_text(
            f"<!-- generated by bench/accuracy.py --report from {path.name}; do not edit -->\n\n{text}\n"
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="ETTh1 S L=336 H=96, first variant per family")
    parser.add_argument(
        "--first-variant", action="store_true", help="only the first (default) variant of each family"
    )
    parser.add_argument(
        "--skip-variants", nargs="+", default=[], metavar="LABEL", help="leave out these variants (slow ones)"
    )
    parser.add_argument("--datasets", nargs="+", default=["ETTh1", "ETTh2"])
    parser.add_argument("--features", nargs="+", default=["S", "M"], choices=["S", "M"])
    parser.add_argument("--horizons", nargs="+", type=int, default=[96, 336])
    parser.add_argument("--lookbacks", nargs="+", type=int, default=[336])
    parser.add_argument("--models", nargs="+", default=FAMILIES, choices=FAMILIES)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: robust on a shared machine)"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument(
        "--m-train-windows", type=int, default=M_TRAIN_WINDOWS, help="M: windows per epoch (0: all)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs of every deep family")
    parser.add_argument("--max-steps", type=int, default=None, help="cap optimiser steps (smoke runs)")
    parser.add_argument(
        "--scorer",
        choices=["pipeline", "lean"],
        default="pipeline",
        help="pipeline: forecasting.pipeline.fit_and_score (all metrics, prediction frame); lean: the "
        "same fit and windows, MSE/MAE only (much faster on ETTm1 M)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="K > 1: also fit each deep family's validation-chosen variant with K seeds and record "
        "the mean of their forecasts as variant '<label>-xK' (a deep ensemble of one variant; "
        "reported in its own section, beside the one-seed tables)",
    )
    parser.add_argument(
        "--chosen-from",
        type=Path,
        default=None,
        metavar="CSV",
        help="deep families run only the variant that this CSV's rows choose on validation (with "
        "--seeds: seed-average a cell without refitting its other variants)",
    )
    parser.add_argument(
        "--calendar",
        default="none",
        choices=["auto", "none"],
        help="features.calendar of every fit: none (the protocol as the published models and every "
        "row of bench/results/accuracy.csv ran it) or auto (the pipeline's default since 2026-12-06: "
        "hour of day for ETTh); an --out holds one setting (a run with the other is refused)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "accuracy.csv")
    parser.add_argument("--fresh", action="store_true", help="ignore (and move aside) rows already in --out")
    parser.add_argument("--report", action="store_true", help="only print the tables from --out")
    args = parser.parse_args()
    kept = args.out.exists() and not args.fresh
    settings = {calendar_of(r) for r in read_rows(args.out)} if kept else set()
    if not args.report and settings - {args.calendar}:
        parser.error(
            f"{args.out} holds rows run with calendar {sorted(settings)}; give --calendar {args.calendar} "
            "its own --out (a table mixes no two settings)"
        )
    if args.report:
        print(write_report(args.out))
        return
    if args.quick:
        args.datasets, args.features, args.horizons, args.lookbacks = ["ETTh1"], ["S"], [96], [336]
    if args.fresh and args.out.exists():
        args.out.rename(args.out.with_suffix(f".{time.strftime('%Y%m%d%H%M%S')}.csv"))
    import torch

    torch.set_num_threads(args.threads)
    print(json.dumps(machine()))
    if args.chosen_from is not None:
        # Among the single variants: a seed average is not a variant one can refit on its own.
        args.chosen_from = selected([r for r in read_rows(args.chosen_from) if not is_seed_average(r)])
    done = {key_of(r) for r in current(read_rows(args.out))[0] if not r.get("error")}
    for features in args.features:
        for dataset in args.datasets:
            for lookback in args.lookbacks:
                for horizon in args.horizons:
                    run_cell(dataset, features, lookback, horizon, args.models, args, done)
    print()
    print(write_report(args.out))


if __name__ == "__main__":
    main()
