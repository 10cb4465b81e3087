"""The accuracy bench's scoring: every window, and the windows a published test loader scored.

Published ETT figures come from test loaders with ``drop_last=True``, which never scored the last
``n_origins % batch`` origins; ``bench/accuracy.py`` records the MSE over both sets of windows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.data.windows import Windows, to_arrays

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from _common import append_row, published_origins, read_rows  # noqa: E402
from accuracy import declaration, origin_rank, score_windows  # noqa: E402


class LastValue:
    """Forecasts the last lookback value; enough to have known errors per window."""

    def __init__(self, series_ids):
        self.series_ = list(series_ids)

    def predict_windows(self, batch):
        return np.repeat(batch["y"][:, -1:].astype(np.float64), batch["target"].shape[1], axis=1)


def two_series(lengths=(9, 12)) -> Windows:
    rng = np.random.default_rng(0)
    parts = [
        pd.DataFrame(
            {
                "series_id": name,
                "t": pd.date_range("2024-01-01", periods=n, freq="h"),
                "y": rng.normal(size=n).cumsum(),
            }
        )
        for name, n in zip(("a", "b"), lengths, strict=True)
    ]
    return Windows(to_arrays(pd.concat(parts, ignore_index=True)), lookback=3, horizon=2)


def test_published_origins_drop_the_last_partial_batch():
    # ETTh test sets: 2880 - H + 1 origins per series.
    assert published_origins(2545, "PatchTST/64") == 2432  # H=336, batch 128: 113 origins unscored
    assert published_origins(2785, "PatchTST/42") == 2688  # H=96: 97 unscored
    assert published_origins(2785, "NLinear") == 2784  # batch 32: 1 unscored
    assert published_origins(2785, "ARIMA") == 2785  # no loader: every origin


def test_origin_rank_counts_within_each_series():
    w = two_series()
    # 9 - 5 + 1 = 5 windows of "a", then 12 - 5 + 1 = 8 of "b".
    assert origin_rank(w).tolist() == [*range(5), *range(8)]


@pytest.mark.parametrize("batch_size", [3, 4096])
def test_score_windows_over_every_window_and_the_first_origins(batch_size):
    w = two_series()
    model = LastValue(w.arrays.series_ids)
    batch = w.batch(np.arange(len(w)))
    err = model.predict_windows(batch) - batch["target"]  # (13, 2)
    kept = np.r_[0:4, 5:9]  # the first 4 origins of each series

    scores = score_windows(model, w, batch_size=batch_size, keep_origins=4)

    assert scores["mse"] == pytest.approx(np.mean(err**2))
    assert scores["mae"] == pytest.approx(np.mean(np.abs(err)))
    assert scores["mse_pub"] == pytest.approx(np.mean(err[kept] ** 2))
    assert scores["mae_pub"] == pytest.approx(np.mean(np.abs(err[kept])))
    assert scores["mse_pub"] != pytest.approx(scores["mse"])
    assert "mse_pub" not in score_windows(model, w, batch_size=batch_size)


def test_append_row_widens_an_older_results_file(tmp_path):
    path = tmp_path / "accuracy.csv"
    append_row(path, {"family": "naive", "test_mse": 1.0})
    append_row(
        path, {"family": "linear", "test_mse": 0.5, "test_mse_pub": 0.4, "params": {"kind": "nlinear"}}
    )

    rows = read_rows(path)
    assert [r["family"] for r in rows] == ["naive", "linear"]
    assert rows[0]["test_mse_pub"] == "" and rows[1]["test_mse_pub"] == "0.4"
    assert rows[1]["params"] == '{"kind": "nlinear"}'
    assert not list(tmp_path.glob("*.tmp"))


def _row(lookback, family, variant, val, test, pub=""):
    return {
        "dataset": "ETTh1",
        "features": "S",
        "lookback": str(lookback),
        "horizon": "336",
        "device": "cpu",
        "family": family,
        "variant": variant,
        "val_mse": str(val),
        "test_mse": str(test),
        "test_mse_pub": str(pub),
        "error": "",
        "declared": declaration("S"),  # run under today's variant declaration (see bench/accuracy.py)
    }


def _cells(lines, prefix):
    start = next(i for i, line in enumerate(lines) if line.startswith("| data | feat | H | lookbacks run"))
    names = [c.strip() for c in lines[start].strip("|").split("|")]
    row = next(line for line in lines[start:] if line.startswith(prefix))
    return dict(zip(names, [c.strip() for c in row.strip("|").split("|")], strict=True))


def test_any_lookback_keeps_validations_variant_and_takes_each_familys_best_lookback():
    from accuracy import any_lookback, selected

    rows = [
        # L=336: validation picks "a" (test 0.090) over "b" (test 0.070, never used)
        _row(336, "tcn", "a", 0.10, 0.090, 0.088),
        _row(336, "tcn", "b", 0.20, 0.070, 0.069),
        _row(512, "tcn", "a", 0.12, 0.080, 0.079),
        _row(336, "gru", "a", 0.10, 0.085, 0.0755),
        _row(512, "gru", "a", 0.09, 0.095, 0.094),
    ]
    lines = any_lookback(selected(rows))
    got = _cells(lines, "| ETTh1 | S | 336")
    assert got["lookbacks run"] == "336, 512"
    assert got["tcn"] == "0.0800 [512]"  # 0.070 was not validation's choice at L=336
    assert got["gru"] == "0.0850 [336]"
    # the headline: family and lookback with the lowest validation MSE (gru at L=512, 0.09)
    assert got["ours, family and lookback chosen on validation"] == "**0.0950** (gru, L=512)"
    assert got["best on test (information only)"] == "0.0800 (tcn, L=512)"
    assert got["best on test, on the published loader's windows"] == "0.0755 (gru, L=336)"
    notes = "\n".join(lines)
    assert (
        "ours at any lookback, chosen on validation, 0.0950 (gru, L=512, +25.0%; best on test 0.0800); "
        "on the loader's windows 0.0940 (+23.7%) against 0.076" in notes
    )


def test_any_lookback_orders_lookbacks_as_numbers_and_notes_family_gaps_on_both_window_sets():
    from accuracy import any_lookback, selected

    rows = [
        # published best for ETTh1 S H=336 is 0.076: rnn is +18.4 % on every window and +10.5 % on
        # the loader's windows (both noted); lstm is +15.8 % on every window only, 0.0760 there
        _row(96, "rnn", "a", 0.1, 0.090, 0.084),
        _row(336, "rnn", "a", 0.1, 0.095, 0.086),
        _row(96, "lstm", "a", 0.1, 0.088, 0.0760),
        _row(336, "lstm", "a", 0.1, 0.089, 0.080),
        _row(336, "gru", "a", 0.1, 0.0800, 0.0790),
    ]
    lines = any_lookback(selected(rows))
    got = _cells(lines, "| ETTh1 | S | 336")
    assert got["lookbacks run"] == "96, 336"  # not "336, 96" (string order)
    assert got["rnn"] == "0.0900 [96]"
    # a tie on validation keeps the first row seen (rnn at L=96)
    assert got["ours, family and lookback chosen on validation"] == "**0.0900** (rnn, L=96)"
    assert got["best on test (information only)"] == "0.0800 (gru, L=336)"
    assert got["best on test, on the published loader's windows"] == "0.0760 (lstm, L=96)"
    notes = "\n".join(lines)
    assert (
        "ours at any lookback, chosen on validation, 0.0900 (rnn, L=96, +18.4%; best on test 0.0800); "
        "on the loader's windows 0.0840 (+10.5%) against 0.076" in notes
    )
    assert (
        "- ETTh1 S H=336 rnn: 0.0900 at its best lookback (L=96) is +18.4%; "
        "on the loader's windows 0.0840 (L=96, +10.5%)" in notes
    )
    assert "- ETTh1 S H=336 lstm: 0.0880 at its best lookback (L=96) is +15.8%" in notes
    assert "H=336 gru:" not in notes  # +5.3 % and +3.9 %: within 10 %


def test_any_lookback_cell_reached_on_every_window_has_no_cell_note():
    from accuracy import any_lookback, selected

    rows = [_row(96, "gru", "a", 0.1, 0.0764, 0.0763), _row(336, "gru", "a", 0.1, 0.0770, 0.0770)]
    notes = "\n".join(any_lookback(selected(rows)))
    # 0.0764 and 0.0763 round to the published 0.076 (published figures have three decimals)
    assert "ours at any lookback" not in notes


def test_report_includes_the_any_lookback_table(tmp_path):
    from accuracy import report

    path = tmp_path / "accuracy.csv"
    for r in [_row(96, "gru", "a", 0.1, 0.0764, 0.0760), _row(336, "gru", "a", 0.1, 0.0770, 0.0770)]:
        extra = {"params": "{}", "training": "{}", "fit_s": "1.0", "epochs": "3", "best_epoch": "1"}
        append_row(path, {**r, **extra, "test_mae": "0.2", "pub_origins": "2432", "load_after": "0.1"})
    text = report(path)
    assert "Each family at its best lookback" in text
    assert _cells(text.splitlines(), "| ETTh1 | S | 336")["gru"] == "0.0764 [96]"


def test_any_lookback_skips_cells_run_at_one_lookback():
    from accuracy import any_lookback, selected

    assert any_lookback(selected([_row(336, "tcn", "a", 0.1, 0.09)])) == []


def test_seeds_average_the_validation_chosen_variant(tmp_path, monkeypatch):
    """``--seeds 3``: the chosen variant again with seeds 1 and 2, recorded as '<label>-x3'; with
    ``--chosen-from`` only that variant runs. The mean forecast's MSE is at most the members' mean
    MSE (convexity), and seed 0 is the variant's own row."""
    import json

    import accuracy

    import forecasting.pipeline
    from forecasting.models.ensemble import Ensemble

    averages, ensembles = [], []  # what the bench scored through the pipeline's scorer
    real = forecasting.pipeline.fit_and_score

    def spy(prepared, spec, callbacks=None, members=None):
        result = real(prepared, spec, callbacks=callbacks, members=members)
        if spec.name == "ensemble":
            (averages if spec.run_name.endswith("-x3") else ensembles).append(result[0])
        return result

    monkeypatch.setattr(forecasting.pipeline, "fit_and_score", spy)
    out = tmp_path / "seeds.csv"
    common = ["--datasets", "ETTh1", "--features", "S", "--lookbacks", "48", "--horizons", "24"]
    common += ["--models", "linear", "--max-steps", "3", "--seeds", "3", "--out", str(out)]
    with_ensembles = [*common, "--models", "linear", "ensemble"]  # the later --models wins
    monkeypatch.setattr(sys, "argv", ["accuracy.py", *with_ensembles])
    accuracy.main()
    # the cell's ensembles weigh the one-seed variants, never a seed average
    assert len(ensembles) == 2 and all(
        not isinstance(m, Ensemble) for e in ensembles for m in e.members_.values()
    )
    rows = [r for r in read_rows(out) if r["family"] == "linear"]
    singles = [r for r in rows if not r["variant"].endswith("-x3")]
    assert [r["variant"] for r in singles] == [v[0] for v in accuracy.VARIANTS["S"]["linear"]]
    chosen = min(singles, key=lambda r: float(r["val_mse"]))
    (avg,) = [r for r in rows if r["variant"].endswith("-x3")]
    assert avg["variant"] == f"{chosen['variant']}-x3" and avg["family"] == "linear"
    params = json.loads(avg["params"])
    assert json.loads(avg["training"]) == json.loads(chosen["training"])  # the members' settings
    assert params["seeds"] == [0, 1, 2] and len(params["member_test_mse"]) == 2
    member_val = [float(chosen["val_mse"]), *params["member_val_mse"]]
    member_test = [float(chosen["test_mse"]), *params["member_test_mse"]]
    assert len({round(t, 5) for t in member_test}) == 3  # the seeds differ
    (model,) = averages  # equal weights over the three seeds of the chosen variant
    assert sorted(m.training.seed for m in model.members_.values()) == [0, 1, 2]
    assert list(model.weights_.values()) == pytest.approx([1 / 3] * 3)
    assert {m.settings.kind for m in model.members_.values()} == {params["kind"]}
    assert float(avg["val_mse"]) <= np.mean(member_val) + 1e-5
    assert float(avg["test_mse"]) <= np.mean(member_test) + 1e-5

    again = tmp_path / "again.csv"
    argv = [a if a != str(out) else str(again) for a in common]
    monkeypatch.setattr(sys, "argv", ["accuracy.py", *argv, "--chosen-from", str(out)])
    accuracy.main()
    rerun = {r["variant"]: r for r in read_rows(again)}
    assert set(rerun) == {avg["variant"], chosen["variant"]}
    assert float(rerun[chosen["variant"]]["test_mse"]) == pytest.approx(float(chosen["test_mse"]), rel=1e-6)
    assert float(rerun[avg["variant"]]["test_mse"]) == pytest.approx(float(avg["test_mse"]), rel=1e-6)


def test_a_nan_mse_is_never_chosen_and_sorts_last():
    from accuracy import any_lookback, selected

    rows = [
        _row(336, "tcn", "diverged", "nan", "nan"),  # first seen: a NaN must not stick
        _row(336, "tcn", "a", 0.10, 0.090),
        _row(512, "tcn", "a", 0.12, 0.080),
        _row(336, "gru", "a", 0.10, "nan"),  # chosen on validation, its test forecasts not finite
        _row(512, "gru", "a", 0.09, 0.095),
    ]
    sel = selected(rows)
    assert sel[("ETTh1", "S", "336", "336", "cpu", "tcn")]["variant"] == "a"
    got = _cells(any_lookback(sel), "| ETTh1 | S | 336")
    assert got["gru"] == "0.0950 [512]" and got["tcn"] == "0.0800 [512]"
    assert got["ours, family and lookback chosen on validation"] == "**0.0950** (gru, L=512)"
    assert got["best on test (information only)"] == "0.0800 (tcn, L=512)"


def test_report_survives_a_family_whose_only_test_mse_is_nan(tmp_path):
    from accuracy import report

    path = tmp_path / "accuracy.csv"
    extra = {"params": "{}", "training": "{}", "fit_s": "1.0", "epochs": "3", "best_epoch": "1"}
    for r in [_row(336, "gru", "a", 0.10, "nan"), _row(336, "tcn", "a", 0.10, 0.090)]:
        append_row(path, {**r, **extra, "test_mae": "0.2", "pub_origins": "", "load_after": "0.1"})
    text = report(path)
    assert "0.0900 (tcn)" in text  # the best of ours skips the NaN


def test_report_keeps_seed_averages_out_of_the_main_tables_and_compares_them(tmp_path):
    import json

    from accuracy import report

    def row(variant, val, test, params):
        r = _row(336, "tcn", variant, val, test)
        extra = {"params": json.dumps(params), "training": "{}", "fit_s": "1.0", "epochs": "3"}
        return {**r, **extra, "best_epoch": "1", "test_mae": "0.2", "pub_origins": "", "load_after": "0.1"}

    rows = [
        row("a", 0.10, 0.090, {}),
        row("b", 0.11, 0.070, {}),
        # the average of "a": lower validation MSE, so chosen when it is one more variant
        row("a-x5", 0.09, 0.081, {"seeds": [0, 1, 2, 3, 4], "member_test_mse": [0.085, 0.095, 0.088, 0.092]}),
    ]
    csv_path = tmp_path / "accuracy.csv"
    for r in rows:
        append_row(csv_path, r)
    text = report(csv_path)
    main_table = text.split("Seed averages")[0]
    assert "0.0900 / 0.200" in main_table and "0.0810" not in main_table  # one seed: "a" is chosen
    line = next(x for x in text.splitlines() if x.startswith("| ETTh1 | S | 336 | 336 | tcn | a |"))
    assert "| 0.0900 | 0.0850-0.0950 | 0.0810 (-10.0%) | 0.0900 / 0.1000 | average |" in line
    assert "1 averages: lower test MSE than the one-seed row in 1, median change -10.0%" in text
    best = next(x for x in text.splitlines() if x.startswith("| ETTh1 | S | 336 | 336 | 0.0900"))
    assert "| 0.0900 (tcn a, +18.4%) | 0.0810 (tcn a-x5, +6.6%) |" in best


def test_every_speed_recipe_is_a_model_spec_the_config_accepts():
    """``bench/speed.py --only tta`` crashed at its transformer row once ``ModelSpec`` began to
    check labels (``patch16/16``); nothing ran the bench, so nothing noticed. Each recipe must be
    a spec the config accepts, named by its label."""
    from speed import TTA_RECIPES

    from forecasting.config import ModelSpec

    for family, label, params, *_ in TTA_RECIPES:
        assert ModelSpec(name=family, label=label, params=params).run_name == label
