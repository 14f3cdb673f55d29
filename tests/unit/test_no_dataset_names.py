"""Bring your own data: nothing outside configs/, data/, tests/ and the docs names a bundled
table, its columns, its labels or its categories."""

from __future__ import annotations

import re
import subprocess

from tasks.core.spec import load_spec
from tests.conftest import CONFIGS, ROOT

DOCS_AND_DATA = ("configs/", "data/", "tests/", "docs/", "README.md", "uv.lock")
COMMON_WORDS = {"ignore", "other", "others", "fixed", "single"}  # categories that are also everyday code words


def _names() -> tuple[set[str], set[str]]:
    """(dataset names, quoted literals that only a bundled table would use)."""
    datasets, literals = set(), set()
    for path in CONFIGS.glob("*.yaml"):
        spec = load_spec(path)
        datasets.add(spec.name)
        literals |= {spec.target.column, *spec.columns, *getattr(spec.target, "labels", [])}
        for column in spec.columns.values():
            literals |= {str(c) for c in column.categories or [] if isinstance(c, str)}
    return datasets, {name for name in literals if len(name) > 3 and name not in COMMON_WORDS}


def test_no_bundled_dataset_is_named_in_code():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    datasets, literals = _names()
    dataset_word = re.compile("|".join(re.escape(d) for d in datasets) + r"|\btelco\b|\bchurn", re.IGNORECASE)
    literal = re.compile(r"""["'](""" + "|".join(re.escape(name) for name in literals) + r""")["']""")
    found = []
    for name in files:
        path = ROOT / name
        if name.startswith(DOCS_AND_DATA) or path.is_symlink() or not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        found += [f"{name}: {m.group(0)}" for m in dataset_word.finditer(text)]
        found += [f"{name}: {m.group(0)}" for m in literal.finditer(text)]
    assert not found, found
