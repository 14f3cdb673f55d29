import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    proc = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_imports_follow_the_house_rules():
    """tasks never import flows; blocks import nothing of ours; serving code stays Prefect-free."""
    for path in (ROOT / "tasks").glob("*.py"):
        assert "from flows" not in path.read_text() and "import flows" not in path.read_text(), path
    for path in (ROOT / "blocks").glob("*.py"):
        text = path.read_text()
        assert "from tasks" not in text and "from flows" not in text, path
    for name in ("spec.py", "features.py", "errors.py"):
        assert "prefect" not in (ROOT / "tasks" / name).read_text(), name
