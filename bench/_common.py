"""Shared pieces of the benchmark scripts: ETT configs, published figures, machine facts, CSV rows.

Nothing here is timed. The ETT files are read where they lie (``ETT_DIR``, default
``../shared/data/ett`` beside the repository, falling back to ``data/`` for ETTh1) and never copied.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import resource
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
ETT_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
# The ETT borders of every published loader (Informer ... Time-Series-Library): 12/4/4 30-day months.
BORDERS = {"h": (8640, 11520, 14400), "15min": (34560, 46080, 57600)}
FREQ = {"ETTh1": "h", "ETTh2": "h", "ETTm1": "15min", "ETTm2": "15min"}
SEASON = {"h": 24, "15min": 96}  # one day in steps


def ett_dir() -> Path:
    """Where the four ETT files are: $ETT_DIR, ../shared/data/ett, ./shared/data/ett, or data/."""
    candidates = [os.environ.get("ETT_DIR"), ROOT.parent / "shared/data/ett", ROOT / "shared/data/ett"]
    for c in candidates:
        if c and (Path(c) / "ETTh1.csv").exists():
            return Path(c)
    return ROOT / "data"  # only ETTh1 is bundled


def ett_path(dataset: str) -> Path:
    path = ett_dir() / f"{dataset}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; point ETT_DIR at the folder holding {dataset}.csv")
    return path


def ett_protocol(dataset: str, features: str) -> dict[str, Any]:
    """The ``data`` and ``split`` sections of the ETT protocol: the file, OT (``S``) or the seven
    columns (``M``), the frequency and the published borders."""
    freq = FREQ[dataset]
    return {
        "data": {
            "path": str(ett_path(dataset)),
            "time_column": "date",
            "target": "OT" if features == "S" else list(ETT_COLUMNS),
            "freq": freq,
        },
        "split": {"method": "borders", "borders": list(BORDERS[freq])},
    }


def ett_config(
    dataset: str,
    features: str,
    lookback: int,
    horizon: int,
    training: dict[str, Any] | None = None,
    models: list[dict[str, Any]] | None = None,
    calendar: str | list[str] = "auto",
) -> Any:
    """The standard ETT protocol as a pipeline ``Config``.

    ``features="S"``: OT alone. ``"M"``: the seven columns as seven series (wide format), one
    global channel-independent model. Split at the published borders; the pipeline fits the
    scaler (mean, population std per series) on the training rows only. ``calendar`` is the
    config's ``features.calendar`` (``auto``, the pipeline's default; ``none``: the protocol as the
    published models ran it, with no calendar features).
    """
    from forecasting.config import config_from_dict

    raw = {
        **ett_protocol(dataset, features),
        "window": {"lookback": lookback, "horizon": horizon, "stride": 1},
        "training": {"progress": False, **(training or {})},
        "features": {"calendar": calendar},
    }
    if models:
        raw["models"] = models
    return config_from_dict(raw, source=f"{dataset}-{features}")


# --- published figures (MSE, MAE on the z-normalised scale) ----------------------------------------
# From /work/shared/benchmarks.md; (model, lookback, mse, mae, source). Lookback None: not stated.
_LTSF_S = "LTSF-Linear univariate table (benchmarks.md 3.5)"
_PATCH_S = "PatchTST paper Table 8 (benchmarks.md 3.5)"
_LTSF_M = "LTSF-Linear Table 2 (benchmarks.md 3.1)"
_PATCH_M = "PatchTST paper Table 3 (benchmarks.md 3.2)"
_ITR_M = "iTransformer appendix, L=96 re-runs (benchmarks.md 3.3)"
PUBLISHED: dict[tuple[str, str, int], list[tuple[str, int | None, float, float, str]]] = {
    ("ETTh1", "S", 96): [
        ("NLinear", 336, 0.053, 0.177, _LTSF_S),
        ("DLinear", 336, 0.056, 0.180, _LTSF_S),
        ("PatchTST/42", 336, 0.055, 0.179, _PATCH_S),
        ("PatchTST/64", 512, 0.059, 0.189, _PATCH_S),
        ("FEDformer-f", 96, 0.079, 0.215, _LTSF_S),
        ("ARIMA", None, 0.058, 0.184, "LTSF-Benchmark.md (order not stated)"),
    ],
    ("ETTh1", "S", 336): [
        ("PatchTST/64", 512, 0.076, 0.220, _PATCH_S),
        ("NLinear", 336, 0.081, 0.226, _LTSF_S),
        ("PatchTST/42", 336, 0.081, 0.225, _PATCH_S),
        ("DLinear", 336, 0.098, 0.244, _LTSF_S),
        ("FEDformer-f", 96, 0.119, 0.270, _LTSF_S),
    ],
    ("ETTh2", "S", 96): [
        ("FEDformer-f", 96, 0.128, 0.271, _LTSF_S),
        ("NLinear", 336, 0.129, 0.278, _LTSF_S),
        ("PatchTST/42", 336, 0.129, 0.282, _PATCH_S),
        ("DLinear", 336, 0.131, 0.279, _LTSF_S),
        ("PatchTST/64", 512, 0.131, 0.284, _PATCH_S),
    ],
    ("ETTh2", "S", 336): [
        ("PatchTST/64", 512, 0.171, 0.336, _PATCH_S),
        ("PatchTST/42", 336, 0.185, 0.351, _PATCH_S),
        ("NLinear", 336, 0.194, 0.355, _LTSF_S),
        ("DLinear", 336, 0.209, 0.367, _LTSF_S),
        ("FEDformer-f", 96, 0.231, 0.378, _LTSF_S),
    ],
    ("ETTh1", "M", 96): [
        ("PatchTST/64", 512, 0.370, 0.400, _PATCH_M),
        ("NLinear", 336, 0.374, 0.394, _LTSF_M),
        ("PatchTST/42", 336, 0.375, 0.399, _PATCH_M),
        ("DLinear", 336, 0.375, 0.399, _LTSF_M),
        ("FEDformer", 96, 0.376, 0.419, _LTSF_M),
        ("TimesNet", 96, 0.384, 0.402, _ITR_M),
        ("PatchTST", 96, 0.414, 0.419, _ITR_M),
    ],
    ("ETTh1", "M", 336): [
        ("PatchTST/64", 512, 0.422, 0.440, _PATCH_M),
        ("NLinear", 336, 0.429, 0.427, _LTSF_M),
        ("PatchTST/42", 336, 0.431, 0.436, _PATCH_M),
        ("DLinear", 336, 0.439, 0.443, _LTSF_M),
        ("FEDformer", 96, 0.459, 0.465, _LTSF_M),
        ("PatchTST", 96, 0.501, 0.466, _ITR_M),
    ],
    ("ETTh2", "M", 96): [
        ("PatchTST/64", 512, 0.274, 0.337, _PATCH_M),
        ("PatchTST/42", 336, 0.274, 0.336, _PATCH_M),
        ("NLinear", 336, 0.277, 0.338, _LTSF_M),
        ("DLinear", 336, 0.289, 0.353, _LTSF_M),
        ("RLinear", 96, 0.288, 0.338, _ITR_M),
        ("PatchTST", 96, 0.302, 0.348, _ITR_M),
    ],
    ("ETTh2", "M", 336): [
        ("PatchTST/64", 512, 0.329, 0.384, _PATCH_M),
        ("PatchTST/42", 336, 0.331, 0.380, _PATCH_M),
        ("NLinear", 336, 0.357, 0.400, _LTSF_M),
        ("DLinear", 336, 0.448, 0.465, _LTSF_M),
        ("RLinear", 96, 0.415, 0.426, _ITR_M),
        ("PatchTST", 96, 0.426, 0.433, _ITR_M),
    ],
    ("ETTm1", "M", 96): [
        ("PatchTST/42", 336, 0.290, 0.342, _PATCH_M),
        ("PatchTST/64", 512, 0.293, 0.346, _PATCH_M),
        ("DLinear", 336, 0.299, 0.343, _LTSF_M),
        ("NLinear", 336, 0.306, 0.348, _LTSF_M),
        ("PatchTST", 96, 0.329, 0.367, _ITR_M),
    ],
    ("ETTm1", "S", 96): [
        ("NLinear", 336, 0.026, 0.122, _LTSF_S),
        ("PatchTST/64", 512, 0.026, 0.123, _PATCH_S),
        ("PatchTST/42", 336, 0.026, 0.121, _PATCH_S),
    ],
}


# How the published figures' test loaders batched the test set: ``DataLoader(batch_size=B,
# drop_last=True)`` over the time origins (benchmarks.md 2.3 caveat 2), so the last
# ``n_origins % B`` origins of the test set were never scored. B from each source's scripts:
# PatchTST ``scripts/PatchTST/{,univariate/}etth{1,2}.sh`` (--batch_size 128; data_factory's test
# flag has drop_last=True). Those scripts are PatchTST/42's (seq_len=336); the repository has none
# for PatchTST/64 (L=512), whose batch is assumed to be the same 128. LTSF-Linear
# ``scripts/EXP-LongForecasting/*/etth*.sh`` (--batch_size 32, drop_last until 6fe4c28) and FEDformer
# (default batch 32). Not listed, so every origin counts: ARIMA (no loader) and the iTransformer
# appendix re-runs (TimesNet, RLinear, PatchTST at L=96), whose test loader uses batch size 1.
PUBLISHED_TEST_BATCH: dict[str, int] = {
    "PatchTST/64": 128,
    "PatchTST/42": 128,
    "NLinear": 32,
    "DLinear": 32,
    "FEDformer": 32,
    "FEDformer-f": 32,
}


def published_origins(n_origins: int, model: str) -> int:
    """How many of the first ``n_origins`` test origins (per series) ``model``'s loader scored."""
    batch = PUBLISHED_TEST_BATCH.get(model)
    return n_origins if batch is None else (n_origins // batch) * batch


def best_published(
    dataset: str, features: str, horizon: int
) -> tuple[str, int | None, float, float, str] | None:
    rows = PUBLISHED.get((dataset, features, horizon))
    return min(rows, key=lambda r: r[2]) if rows else None


def published_label(row: tuple[str, int | None, float, float, str] | None) -> str:
    if row is None:
        return "n/a"
    model, lookback, mse, mae, source = row
    return f"{mse:.3f}/{mae:.3f} {model} (L={lookback if lookback else '?'}; {source})"


# --- machine facts ----------------------------------------------------------------------------------
def quiet_env(prefect_home: Path, **extra: str) -> dict[str, str]:
    """This environment for a measured child process: its own Prefect home, no telemetry, no
    progress bars, matplotlib off-screen, MLflow's warnings only; ``extra`` on top."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        MLFLOW_LOGGING_LEVEL="WARNING",
        DO_NOT_TRACK="1",
        MPLBACKEND="Agg",
    )
    env.update(extra)
    return env


def load_average() -> str:
    """``uptime``'s 1/5/15-minute load averages, e.g. ``0.52 0.61 0.70``."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def load1() -> float:
    return os.getloadavg()[0]


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load": load_average(),
        "commit": _git_commit(),
    }
    return info


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB).

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this program's own memory.
    ``getrusage``'s ``ru_maxrss`` is not used there: it survives ``exec``, so a child started from
    a large parent reports the parent's size at the fork.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# --- results ----------------------------------------------------------------------------------------
def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one result row to a CSV (header on first write); dicts/lists are stored as JSON.

    A row with columns the file does not have yet (a bench that records something new) rewrites
    the file once with the wider header (new columns last); the earlier rows get those columns
    empty. One writer per file: a bench process appends to its own ``--out``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {k: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v for k, v in row.items()}
    new = not path.exists() or path.stat().st_size == 0
    if new:
        header = list(flat)
    else:
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), [])
        missing = [k for k in flat if k not in header]
        if missing:
            rows = read_rows(path)
            header = header + missing
            tmp = path.with_suffix(path.suffix + ".tmp")
            with tmp.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows)
            tmp.replace(path)  # atomic: a crash leaves the old file or the new one, never half
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        if new:
            writer.writeheader()
        writer.writerow(flat)


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def fmt(x: Any, digits: int = 4) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f"{v:.{digits}f}" if v == v else "n/a"
