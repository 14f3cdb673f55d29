"""deployments/system-deps.sh: what `make test` installs first, and what it says when it cannot."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "deployments" / "system-deps.sh"
PACKAGES = [
    "nginx-light",
    "docker.io",
    "debootstrap",
    "docker-registry",
    "apache2-utils",
    "chromium",
    "postgresql",
    "hey",
]


def _run(*args: str, env: dict | None = None, user: str | None = None) -> subprocess.CompletedProcess:
    cmd = [str(SCRIPT), *args]
    if user:  # a user who is not root and has no sudo, with the script where that user can read it
        folder = Path(tempfile.mkdtemp(prefix="system-deps-"))
        folder.chmod(0o755)
        shutil.copy2(SCRIPT, folder / SCRIPT.name)
        cmd = [
            "setpriv",
            f"--reuid={user}",
            "--regid=nogroup",
            "--clear-groups",
            "bash",
            str(folder / SCRIPT.name),
            *args,
        ]
    try:
        return subprocess.run(cmd, env=os.environ | (env or {}), capture_output=True, text=True, timeout=120)
    finally:
        if user:
            shutil.rmtree(folder, ignore_errors=True)


def test_every_program_the_suite_needs_is_here_after_make_test():
    out = _run("--check")
    assert out.returncode == 0, out.stdout + out.stderr


def test_check_names_every_missing_package_and_installs_nothing(tmp_path):
    out = _run("--check", env={"LIFECYCLE_SYSTEM_DEPS_PATH": str(tmp_path)})
    assert out.returncode == 1
    assert out.stdout.split(":", 1)[1].split() == PACKAGES


def test_without_root_or_sudo_one_message_says_what_is_missing_and_how_to_get_it(tmp_path):
    # as root (CI), drop to user nobody; a non-root user without password-less sudo is that user
    user = "nobody" if os.geteuid() == 0 else None
    out = _run("hey", "postgresql", env={"LIFECYCLE_SYSTEM_DEPS_PATH": str(tmp_path)}, user=user)
    assert out.returncode == 1
    message = out.stderr
    assert "missing here: hey postgresql" in message
    assert "sudo apt-get update && sudo apt-get install -y hey postgresql" in message
    assert "not root" in message
    assert "installing" not in out.stdout


def test_an_unknown_package_is_an_error_not_skipped():
    out = _run("no-such-package")
    assert out.returncode == 2 and "unknown package no-such-package" in out.stderr
