"""The accuracy bench's report: the headline family is chosen on validation, and only rows run
under today's variant declaration count (issue 26: variant hygiene, no test-chosen headline)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import accuracy  # noqa: E402
from _common import append_row  # noqa: E402


def _row(family: str, variant: str, val: float, test: float, declared: str | None) -> dict:
    row = {
        "dataset": "ETTh1",
        "features": "S",
        "lookback": 96,
        "horizon": 96,
        "family": family,
        "variant": variant,
        "device": "cpu",
        "val_mse": val,
        "test_mse": test,
        "test_mae": test,
        "params": "{}",
        "training": "{}",
        "error": "",
        "fit_s": 1.0,
        "epochs": 1,
        "best_epoch": 1,
        "load_after": "0 0 0",
        "test_mse_pub": "",
        "pub_origins": "",
    }
    if declared is not None:
        row["declared"] = declared
    return row


def test_declaration_changes_with_any_variant(monkeypatch):
    before, m_before = accuracy.declaration("S"), accuracy.declaration("M")
    assert before == accuracy.declaration("S") and len(before) == 12
    changed = {**accuracy.VARIANTS["S"], "tcn": [*accuracy.VARIANTS["S"]["tcn"], ("seg8-new", {}, {})]}
    monkeypatch.setitem(accuracy.VARIANTS, "S", changed)
    assert accuracy.declaration("S") != before
    assert accuracy.declaration("M") == m_before  # a variant of S re-runs no M cell
    monkeypatch.undo()
    assert accuracy.declaration("S") == before


def test_current_keeps_todays_rows_and_drops_stale_or_undeclared():
    now = accuracy.declaration("S")
    rows = [
        _row("linear", "nlinear", 0.1, 0.2, None),  # legacy, re-run below: replaced
        _row("linear", "nlinear", 0.1, 0.3, now),
        _row("gru", "seg24", 0.2, 0.1, "0123456789ab"),  # another declaration: stale
        _row("tcn", "no-such-variant", 0.05, 0.05, None),  # legacy of a dropped variant
        _row("tcn", "seg8", 0.3, 0.4, None),  # legacy, still declared: kept
    ]
    kept, left_out = accuracy.current([{k: str(v) for k, v in r.items()} for r in rows])
    assert sorted((r["family"], r["variant"], r["test_mse"]) for r in kept) == [
        ("linear", "nlinear", "0.3"),
        ("tcn", "seg8", "0.4"),
    ]
    assert left_out == 2  # the stale gru row and the dropped tcn variant (the replaced row is not counted)


def test_headline_is_the_validation_choice_not_the_best_on_test(tmp_path):
    now = accuracy.declaration("S")
    csv = tmp_path / "accuracy.csv"
    # linear wins on validation, gru on test: the headline must be linear's test MSE.
    append_row(csv, _row("naive", "naive", 0.9, 0.9, now))
    append_row(csv, _row("linear", "nlinear", 0.10, 0.060, now))
    append_row(csv, _row("gru", "seg24", 0.12, 0.050, now))
    text = accuracy.report(csv)
    line = next(x for x in text.splitlines() if x.startswith("| ETTh1 | S | 96 | 96 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    header = next(x for x in text.splitlines() if x.startswith("| data |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    assert cells[names.index("ours, family chosen on validation")] == "**0.0600** (linear)"
    info = next(n for n in names if n.startswith("best on test (information only"))
    assert cells[names.index(info)] == "0.0500 (gru)"
