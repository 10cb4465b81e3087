"""Batched AR(p) least squares vs a per-series statsmodels loop, on many synthetic series.

Series of 200-1000 rows, each a stable AR(p) (p in 1..4, real roots inside the unit circle) around
its own level. Both paths select the order by the criterion up to ``--max-lag`` (statsmodels'
``ar_select_order``: every order on the common sample, then refit) and return the coefficients;
prints wall time, the speed-up, the largest coefficient difference and how often the orders agree.
Target: >= 50x at 10,000 series with coefficients equal to 1e-6.

    .venv/bin/python bench/ar_batched.py                  # 1,000 and 10,000 series (minutes)
    .venv/bin/python bench/ar_batched.py --quick          # 100 series (seconds; what CI runs)
    .venv/bin/python bench/ar_batched.py --sizes 500 --ic fixed --max-lag 3
    .venv/bin/python bench/ar_batched.py --out ar.json    # the rows also as JSON
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from forecasting.models.ar import fit_batched, fit_statsmodels

QUICK_SIZES = [100]  # --quick: seconds


def make_panel(n_series: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated series y (T,) and offsets (S + 1,)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(200, 1001, n_series)
    orders = rng.integers(1, 5, n_series)
    burn = 100
    ys = []
    for n, p in zip(lengths, orders, strict=True):
        phi = -np.poly(rng.uniform(-0.9, 0.9, p))[1:]
        e = rng.standard_normal(n + burn)
        y = np.zeros(n + burn)
        for t in range(p, n + burn):
            y[t] = 0.5 + phi @ y[t - p : t][::-1] + e[t]
        ys.append(y[burn:] + rng.normal(0, 3))
    return np.concatenate(ys), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def run(n_series: int, max_lag: int, ic: str, seed: int) -> dict[str, Any]:
    y, offsets = make_panel(n_series, seed)
    x = np.zeros((len(y), 0))
    lags = max_lag if ic == "fixed" else None
    started = time.perf_counter()
    batched = fit_batched(y, x, offsets, max_lag, ic, lags)
    t_batched = time.perf_counter() - started
    started = time.perf_counter()
    reference = fit_statsmodels(y, x, offsets, max_lag, ic, lags)
    t_loop = time.perf_counter() - started
    diff = np.abs(batched.coef - reference.coef).max()
    agree = np.mean(batched.order == reference.order)
    print(
        f"{n_series:>6} series ({len(y):,} rows)  statsmodels {t_loop:8.2f} s  batched {t_batched:6.3f} s  "
        f"ratio {t_loop / t_batched:7.1f}x  max |coef diff| {diff:.1e}  orders agree {agree:.2%}",
        flush=True,
    )
    return {
        "series": n_series,
        "rows": len(y),
        "statsmodels_s": t_loop,
        "batched_s": t_batched,
        "speedup": t_loop / t_batched,
        "max_coef_diff": float(diff),
        "orders_agree": float(agree),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="numbers of series")
    parser.add_argument("--quick", action="store_true", help="100 series only (seconds)")
    parser.add_argument("--max-lag", type=int, default=8)
    parser.add_argument("--ic", choices=["aic", "bic", "fixed"], default="bic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    print(f"AR order by {args.ic} up to {args.max_lag}, trend 'c'")
    rows = [run(n, args.max_lag, args.ic, args.seed) for n in (QUICK_SIZES if args.quick else args.sizes)]
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        settings = {"ic": args.ic, "max_lag": args.max_lag, "seed": args.seed, "quick": args.quick}
        args.out.write_text(json.dumps({**settings, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
