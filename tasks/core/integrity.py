"""The model's content hash: one sha256 over the files that decide what a load runs and returns
(MLmodel, the pyfunc code file, the booster and spec files, the shipped code), named in a sorted
manifest of relative paths. Recorded when the model is logged and registered, written into the
bento, and checked before any load runs the model's code."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tasks.core.errors import ModelIntegrityError

HASHED_FOLDERS = ("artifacts", "code")  # every file below them, plus MLmodel and the top-level code file
SKIPPED = ("__pycache__",)  # Python writes bytecode beside the shipped code when it imports it


def model_manifest(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of the model's hashed files in `folder` (an MLflow model folder)."""
    folder = Path(folder)
    files = [folder / "MLmodel", *folder.glob("*.py")]
    for name in HASHED_FOLDERS:
        files += [p for p in (folder / name).rglob("*") if p.is_file() and not set(SKIPPED) & set(p.parts)]
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(files)
        if p.is_file()
    }


def manifest_digest(manifest: dict[str, str]) -> str:
    """The model's content hash: sha256 over the sorted manifest lines `<sha256>  <path>`."""
    lines = "".join(f"{manifest[path]}  {path}\n" for path in sorted(manifest))
    return hashlib.sha256(lines.encode()).hexdigest()


def check_model_files(folder: Path, expected: str | None, recorded: dict[str, str] | None, model: str) -> str:
    """Refuse the files in `folder` unless their content hash is `expected`; the error names the
    files that differ from the `recorded` manifest. Returns the digest."""
    if not expected:
        raise ModelIntegrityError(f"{model}: no content hash recorded for this model; refusing to load {folder}")
    manifest = model_manifest(folder)
    digest = manifest_digest(manifest)
    if digest == expected:
        return digest
    if recorded is None or manifest_digest(recorded) != expected:
        differ = "the recorded file list is missing or does not match the recorded hash"
    else:
        changed = sorted(p for p in manifest.keys() & recorded.keys() if manifest[p] != recorded[p])
        missing, extra = sorted(recorded.keys() - manifest.keys()), sorted(manifest.keys() - recorded.keys())
        parts = [f"changed: {changed}" if changed else "", f"missing: {missing}" if missing else ""]
        parts.append(f"unexpected: {extra}" if extra else "")
        differ = "; ".join(p for p in parts if p)
    raise ModelIntegrityError(
        f"{model}: the model files in {folder} do not match the recorded content hash "
        f"(sha256 {digest[:16]}… ≠ recorded {expected[:16]}…): {differ}. Refusing to load them."
    )
