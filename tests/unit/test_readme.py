"""The README is the runbook: its commands must exist and accept the options it shows.

Every `python -m <module>` line runs with `--help` and must know each `--option` the line
uses; every `prefect deployment run` names a deployment of prefect.yaml and parameters
its flow has; every `make` target exists; every repository path it names exists. The two
commands themselves run in CI (`make test`) and in tests/deploy (`make stack`'s script)."""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys

import pytest

from tasks.core.spec import read_yaml
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
SHELL_BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)
LINES = [line.split(" #")[0].strip() for block in SHELL_BLOCKS for line in block.splitlines() if line.strip()]
MODULE_LINES = [line for line in LINES if " -m " in line and not line.startswith("#")]
DEPLOY_RUNS = re.findall(r"prefect deployment run ([\w-]+/[\w-]+)((?: --param [\w]+=\S+)*)", README)


def _module_of(line: str) -> str:
    return shlex.split(line)[shlex.split(line).index("-m") + 1]


@pytest.mark.parametrize("module", sorted({_module_of(line) for line in MODULE_LINES}))
def test_every_module_command_runs_and_knows_its_options(module):
    if module == "pytest":
        return
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    used = {opt for line in MODULE_LINES if _module_of(line) == module for opt in re.findall(r"(--[\w-]+)", line)}
    unknown = [opt for opt in used - {"--help"} if opt not in out.stdout]
    assert not unknown, f"README uses {unknown} of `python -m {module}`, which its --help does not list"


def test_every_deployment_run_names_a_deployment_and_its_parameters():
    deployments = {d["name"]: d["entrypoint"] for d in read_yaml(ROOT / "prefect.yaml")["deployments"]}
    assert DEPLOY_RUNS, "the README shows no `prefect deployment run`"
    for target, params in DEPLOY_RUNS:
        flow_name, deployment = target.split("/")
        assert deployment in deployments, f"{target}: no deployment {deployment!r} in prefect.yaml"
        path, attr = deployments[deployment].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attr)
        assert flow.name == flow_name, f"{target}: the deployment's flow is {flow.name!r}"
        for name in re.findall(r"--param ([\w]+)=", params):
            assert name in flow.parameters.properties, f"{target}: the flow has no parameter {name!r}"


def test_every_make_target_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = {m for line in LINES for m in re.findall(r"^make ([\w-]+)", line)}
    assert {"run", "test", "stack", "stack-down"} <= targets
    for target in targets:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), f"make {target}: no such target"


def test_every_repository_path_it_names_exists():
    paths = set(re.findall(r"`((?:configs|deployments|docs|bentos|flows|tasks|blocks|benchmarks)/[\w./-]+)`", README))
    assert paths
    missing = [p for p in paths if "<" not in p and not (ROOT / p.rstrip("/")).exists()]
    assert not missing, missing


def test_the_simulation_command_writes_its_batches(tmp_path):
    line = next(line for line in MODULE_LINES if "tasks.simulate" in line and "--out" in line)
    args = shlex.split(line)[1:]
    args[args.index("--out") + 1] = str(tmp_path)
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "same.csv").is_file() and (tmp_path / "drifted.csv").is_file()
