"""The layer rules of docs/architecture.md, checked on the source: who may import prefect, mlflow
and torch, no import cycles, and the canonical column names defined once.

Imports are read with ``ast`` from every module of ``forecasting/`` and ``flows/``; an import
inside a function counts like one at the top of the module (it runs as soon as the function
does), one under ``if TYPE_CHECKING:`` does not (it never runs).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("forecasting", "flows")

# Who may import what (module name prefixes); docs/architecture.md draws the same rules.
MLFLOW_ALLOWED = {"forecasting.tracking", "forecasting.serving", "forecasting.pyfunc_model"}
CORE = ("forecasting.models", "forecasting.data", "forecasting.evaluation", "forecasting.training")
CORE_FORBIDDEN = (
    "mlflow",
    "prefect",
    "prefect_dask",
    "flows",
    "forecasting.tracking",
    "forecasting.serving",
    "forecasting.pipeline",
    "forecasting.tuning",
    "forecasting.cli",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for body in node.body for n in ast.walk(body))
    return skipped


def imports_of(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _matches(module: str, prefixes: tuple[str, ...] | set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: imports_of(name, path) for name, path in modules.items()}


def test_only_flows_import_prefect(graph):
    offenders = {
        name: sorted(m for m in imports if _matches(m, ("prefect", "prefect_dask")))
        for name, imports in graph.items()
        if not _matches(name, ("flows",))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_tracking_and_serving_import_mlflow(graph):
    offenders = {
        name: sorted(m for m in imports if _matches(m, ("mlflow",)))
        for name, imports in graph.items()
        if name not in MLFLOW_ALLOWED
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_core_knows_no_orchestration_or_tracking(graph):
    offenders = {
        name: sorted(m for m in imports if _matches(m, CORE_FORBIDDEN))
        for name, imports in graph.items()
        if _matches(name, CORE)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_library_reaches_flows_only_from_the_cli(graph):
    offenders = {
        name: sorted(m for m in imports if _matches(m, ("flows",)))
        for name, imports in graph.items()
        if _matches(name, ("forecasting",)) and name != "forecasting.cli"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_cycles(graph):
    known = set(graph)

    def resolve(module: str) -> str | None:
        parts = module.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        return ".".join(parts) or None

    edges = {
        name: {r for m in imports if (r := resolve(m)) and r != name and not name.startswith(r + ".")}
        for name, imports in graph.items()
    }
    # A package's __init__ importing its own submodules is how packages re-export; the edge back
    # from a submodule to its package is then the same file order Python resolves, not a cycle.
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


PICKLING = ("pickle", "cloudpickle", "dill", "joblib", "concurrent.futures", "multiprocessing.pool")
SAVES = tuple(f"{np}.{f}" for np in ("np", "numpy") for f in ("save", "savez", "savez_compressed"))


def test_nothing_executes_data(graph):
    """No module pickles (no pickle module, no process pool that pickles its arguments), every
    ``torch.load`` passes ``weights_only=True``, every ``np.load`` and ``np.save``/``np.savez``
    ``allow_pickle=False``, and
    no Prefect task or flow persists its result (Prefect persists results as cloudpickles) or
    serialises anything by pickle: a failed run's exception, which Prefect writes whatever
    ``persist_result`` says, goes out as JSON (``result_serializer="json"``)."""
    offenders = {name: sorted(m for m in imports if _matches(m, PICKLING)) for name, imports in graph.items()}
    assert {k: v for k, v in offenders.items() if v} == {}
    unsafe = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            call = ast.unparse(node.func)
            kwargs = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if call == "torch.load" and kwargs.get("weights_only") != "True":
                unsafe.append((name, node.lineno, call))
            if call in ("np.load", "numpy.load") and kwargs.get("allow_pickle") != "False":
                unsafe.append((name, node.lineno, call))
            # the writing side too: with allow_pickle=False an object array is refused, not pickled
            if call in SAVES and kwargs.get("allow_pickle") != "False":
                unsafe.append((name, node.lineno, call))
            if call in ("task", "flow") and (
                kwargs.get("persist_result") != "False" or kwargs.get("result_serializer") != "'json'"
            ):
                unsafe.append((name, node.lineno, call))
    assert unsafe == []


def test_column_names_are_defined_once():
    names = {"SERIES", "TIME", "TARGET"}
    defined = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                elts = target.elts if isinstance(target, ast.Tuple) else [target]
                defined += [(e.id, name) for e in elts if isinstance(e, ast.Name) and e.id in names]
    assert sorted(defined) == [(n, "forecasting.data.schema") for n in sorted(names)]


def test_the_graph_reader_counts_function_imports_not_type_checking_ones(tmp_path):
    (tmp_path / "pkg").mkdir()
    module = tmp_path / "pkg" / "mod.py"
    module.write_text(
        textwrap.dedent(
            """
            from typing import TYPE_CHECKING
            from . import sibling
            if TYPE_CHECKING:
                import mlflow
            def f():
                from prefect import flow
            """
        )
    )
    found = imports_of("pkg.mod", module)
    assert {"prefect", "prefect.flow", "pkg", "pkg.sibling"} <= found
    assert "mlflow" not in found


TORCH_FREE = [
    "forecasting.config",
    "forecasting.data.ingest",
    "forecasting.data.scaling",
    "forecasting.data.schema",
    "forecasting.data.seasonality",
    "forecasting.data.splits",
    "forecasting.data.windows",
    "forecasting.evaluation",
    "forecasting.evaluation.intervals",
    "forecasting.faults",
    "forecasting.integrity",
    "forecasting.periodic",
    "forecasting.stages",
    "forecasting.models.ar",
    "forecasting.models.base",
    "forecasting.models.baselines",
    "forecasting.models.ets",
    "forecasting.models.registry",
    "forecasting.models.statistical",
    "forecasting.models.theta",
    "forecasting.pipeline",
    "forecasting.training.settings",
]


def test_naming_a_model_and_the_non_deep_families_do_not_import_torch() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {TORCH_FREE!r}: importlib.import_module(m)\n"
        "from forecasting.config import config_from_dict\n"
        "cfg = config_from_dict({'data': {'path': 'x.csv'}, 'models': [{'name': 'naive'}, {'name': 'ar'}]})\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.slow
def test_naive_and_ar_run_the_whole_pipeline_without_torch(tmp_path):
    """A pipeline of naive, seasonal naive and AR (ingest, fit, score, log, register, predict)
    never imports torch: only a torch model's first build does."""
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np, pandas as pd
        from forecasting.config import config_from_dict
        from forecasting.pipeline import batch_predict, run_pipeline

        n = 400
        t = pd.date_range("2024-01-01", periods=n, freq="h")
        y = 10 + np.sin(2 * np.pi * np.arange(n) / 24) + 0.1 * np.random.default_rng(0).standard_normal(n)
        pd.DataFrame({{"t": t, "y": y}}).to_csv(r"{tmp_path}/y.csv", index=False)
        cfg = config_from_dict({{
            "data": {{"path": r"{tmp_path}/y.csv", "time_column": "t", "target": "y"}},
            "split": {{"method": "fractions", "train_fraction": 0.6, "test_fraction": 0.2}},
            "window": {{"lookback": 48, "horizon": 12}},
            "models": [{{"name": "naive"}}, {{"name": "seasonal_naive"}}, {{"name": "ar"}}],
            "tracking": {{"experiment": "no-torch", "registered_model": "no-torch-model"}},
            "predict": {{"output": r"{tmp_path}/forecast.csv"}},
        }})
        result = run_pipeline(cfg)
        assert all(r.status == "FINISHED" for r in result.results), result.leaderboard
        assert batch_predict(cfg)["rows"] == 12
        print("torch loaded:", "torch" in sys.modules)
        """
    )
    env_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**_env(), "MLFLOW_TRACKING_URI": env_uri},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "torch loaded: False" in out.stdout


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
