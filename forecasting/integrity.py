"""Model integrity: the hashes of a logged model's files, recorded when it is logged (in the
tracking store, ``serving.log_pyfunc``) and checked before anything of it is loaded.

Plain files and hashes only (no MLflow here): a *manifest* is ``{relative path: sha256}`` of every
file of a model folder, its *digest* the sha256 of its canonical JSON. ``serving`` records and
checks them against the tracking store; the pyfunc's loader (``forecasting.pyfunc_model``) checks
the bundle against the digest in the ``MLmodel`` metadata, the only record ``mlflow models
serve`` reaches.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from forecasting.errors import ModelIntegrityError, format_rows

LOADER_MODULE = "forecasting.pyfunc_model"  # the pyfunc's loader, from the installed package
BUNDLE_SHA256 = "bundle_sha256"  # MLmodel metadata: digest of the bundle's manifest
BUNDLE_FILES = "bundle_files"  # MLmodel metadata: the bundle's manifest


def digest_tag(name: str) -> str:
    """The run tag holding the digest of model ``name``'s manifest (``model_sha256``)."""
    return f"{name}_sha256"


def manifest_tag(name: str) -> str:
    """The run tag holding model ``name``'s manifest as JSON (``model_manifest``)."""
    return f"{name}_manifest"


def file_manifest(root: Path) -> dict[str, str]:
    """``{path relative to root (POSIX): sha256 hex}`` of every file under ``root``.

    A link or anything else that is neither a file nor a folder is refused
    (``ModelIntegrityError``): a model is plain files.
    """
    root = Path(root)
    manifest = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise ModelIntegrityError(f"{str(root)!r}: {rel!r} is not a regular file or folder")
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            manifest[rel] = digest.hexdigest()
    return manifest


def manifest_digest(manifest: dict[str, str]) -> str:
    """sha256 hex of the manifest's canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_manifest(
    actual: dict[str, str],
    digest: str,
    recorded: dict[str, str] | None,
    what: str,
    record: str,
    prefix: str = "",
) -> None:
    """Raise ``ModelIntegrityError`` unless ``actual`` hashes to ``digest``.

    The digest decides; ``recorded`` (full or shortened hashes, if kept) only names the files that
    differ. ``record`` says where the digest was recorded, ``prefix`` is put before file names.
    """
    if manifest_digest(actual) == digest:
        return
    named = "the record does not say which files"
    if recorded:
        changed = [p for p in recorded if p in actual and not actual[p].startswith(recorded[p])]
        diff = {
            "changed": changed,
            "missing": [p for p in recorded if p not in actual],
            "extra": [p for p in actual if p not in recorded],
        }
        parts = [f"{k} {format_rows(prefix + p for p in v)}" for k, v in diff.items() if v]
        named = "; ".join(parts) or named
    raise ModelIntegrityError(
        f"{what} differs from the hashes recorded when it was logged ({record}): {named}. Nothing "
        "of it was loaded. Its files were altered after logging: find out who wrote to the "
        "artifact store, and log the model again (forecast run)"
    )


def read_mlmodel(model_dir: Path, what: str) -> dict[str, Any]:
    """The ``MLmodel`` file of a model folder as a mapping."""
    try:
        mlmodel = yaml.safe_load((Path(model_dir) / "MLmodel").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        mlmodel = None
    if not isinstance(mlmodel, dict):
        raise ModelIntegrityError(f"{what}: no readable MLmodel file in {str(model_dir)!r}")
    return mlmodel


def check_model_dir(model_dir: Path, what: str) -> Path:
    """A model folder as ``log_pyfunc`` writes it, or ``ModelIntegrityError``; the bundle's path.

    The ``MLmodel`` must name this package's loader and no code (``code``, ``python_model``), its
    data must be a folder of the model, and the bundle must match the metadata's digest.
    """
    model_dir = Path(model_dir)
    mlmodel = read_mlmodel(model_dir, what)
    flavor = (mlmodel.get("flavors") or {}).get("python_function") or {}
    data = flavor.get("data")
    problems = []
    if flavor.get("loader_module") != LOADER_MODULE:
        problems.append(f"its MLmodel names another loader than {LOADER_MODULE!r}")
    problems += [f"its MLmodel sets {key!r} (code)" for key in ("code", "python_model") if flavor.get(key)]
    if not isinstance(data, str) or Path(data).is_absolute() or ".." in Path(data).parts:
        problems.append("its MLmodel's data is not a folder of the model")
    if problems:
        raise ModelIntegrityError(f"{what} is not a data-only forecasting pyfunc: {'; '.join(problems)}")
    check_bundle(model_dir / data, mlmodel.get("metadata"), what, prefix=f"{Path(data).as_posix()}/")
    return model_dir / data


def check_bundle(bundle_dir: Path, metadata: Any, what: str, prefix: str = "") -> None:
    """The bundle's files against the digest in the ``MLmodel`` metadata (``ModelIntegrityError``).

    The metadata sits in the artifact store beside the bundle: this catches corruption and partial
    edits; the tracking store's record (``load_pyfunc``) is the check that counts.
    """
    metadata = metadata if isinstance(metadata, dict) else {}
    digest = metadata.get(BUNDLE_SHA256)
    if not isinstance(digest, str):
        raise ModelIntegrityError(
            f"{what}: its MLmodel records no bundle hash (metadata {BUNDLE_SHA256!r}): it was not "
            "logged by this version's log_pyfunc. Nothing of it was loaded; log the model again"
        )
    recorded = metadata.get(BUNDLE_FILES)
    recorded = recorded if isinstance(recorded, dict) else None
    check_manifest(file_manifest(bundle_dir), digest, recorded, what, "MLmodel metadata", prefix)
