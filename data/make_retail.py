"""Generate data/retail_long.csv: a synthetic many-series, long-format example.

40 stores x 60 days of hourly sales with a daily and weekly cycle, a per-store level, a store
size (static covariate), the temperature (past covariate) and a promotion flag that is planned
ahead (future covariate). Deterministic (seeded), so the file can be regenerated exactly:

    python data/make_retail.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def make(n_stores: int = 40, days: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = pd.date_range("2024-03-01", periods=days * 24, freq="h")
    hour = np.arange(len(t))
    parts = []
    for k in range(n_stores):
        size = float(rng.choice([1.0, 2.0, 3.0]))
        level = 20 * size + rng.normal(0, 3)
        temp = 12 + 8 * np.sin(2 * np.pi * (hour - 14) / 24) + rng.normal(0, 1.5, len(t))
        promo = (rng.random(len(t) // 24) < 0.15).repeat(24).astype(float)
        sales = (
            level
            + 6 * size * np.sin(2 * np.pi * (hour - 10) / 24)
            + 3 * np.sin(2 * np.pi * hour / (24 * 7))
            + 0.4 * temp
            + 8 * promo
            + rng.normal(0, 1.5, len(t))
        )
        parts.append(
            pd.DataFrame(
                {
                    "store": f"store-{k:03d}",
                    "timestamp": t.strftime("%Y-%m-%d %H:%M:%S"),
                    "sales": sales.round(3),
                    "temperature": temp.round(2),
                    "promotion": promo,
                    "store_size": size,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


if __name__ == "__main__":
    out = Path(__file__).with_name("retail_long.csv")
    make().to_csv(out, index=False)
    print(f"wrote {out}")
