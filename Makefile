# Two commands do all the set-up on a fresh machine with Python 3.11 + pip:
#   make run    – create .venv if missing, then run the lifecycle on the bundled sample
#   make test   – create .venv if missing, then run the test suite
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/default.yaml
WORKDIR ?= artifacts
PYTEST_ARGS ?=

export UV_PYTHON_DOWNLOADS := never

.PHONY: setup run test lint clean serve bench bench-lifecycle bench-large bench-drift bench-stream bench-serve bench-soak stack stack-down

setup: $(VENV)/.synced

$(UV):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(TOOLS) uv==$(UV_VERSION)

# The environment is rebuilt only when the lock file changes. Bytecode is compiled once here (~40 s):
# with PYTHONDONTWRITEBYTECODE set (as on our machines) every process otherwise compiles each library
# it imports from source again — `import flows.lifecycle` 15 s instead of 5 s, `import prefect` 2.9 s
# instead of 1.2 s, paid by every flow run, CLI call and server a test starts.
$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	touch $@

run: setup
	$(PY) -m flows.lifecycle --config $(CONFIG) --workdir $(WORKDIR)

# The real-server layers need Debian packages: installed first when missing (root or sudo).
test: setup
	deployments/system-deps.sh
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(WORKDIR) .pytest_cache

PORT ?= 3000
WORKERS ?= 2
BENCH_ARGS ?=

# Serve WORKDIR's champion: `flows.package` finds (or builds) its bento, then `bentoml serve` runs it;
# the prediction log goes to WORKDIR/predictions/<dataset>/, where `python -m flows.monitor` reads by default.
# WORKERS processes (2): one dying leaves the other answering while it is replaced.
serve: setup
	tag=$$($(PY) -m flows.package --config $(CONFIG) --workdir $(WORKDIR) | tail -n 1 | $(PY) -c "import json, sys; print(json.load(sys.stdin)['bento_tag'])") && \
	LIFECYCLE_WORKERS=$(WORKERS) LIFECYCLE_PREDICTION_LOG_DIR=$(abspath $(WORKDIR))/predictions $(PY) -m tasks.stores.bento_server $$tag --host 127.0.0.1 --port $(PORT)

BENCH_RUNS ?= 3
BENCH_ROWS ?= 1000000
BENCH_MEMORY_CAP ?= 3072

# Every benchmark table (docs/benchmarks.md holds the latest figures).
bench: bench-lifecycle bench-large bench-drift bench-stream bench-serve bench-soak

bench-lifecycle: setup
	$(PY) -m benchmarks.lifecycle --config $(CONFIG) --runs $(BENCH_RUNS) --n-trials 50

bench-large: setup
	$(PY) -m benchmarks.lifecycle --config $(CONFIG) --runs 1 --n-trials 10 --rows $(BENCH_ROWS)

bench-drift: setup
	$(PY) -m benchmarks.drift --config $(CONFIG) --sizes 10000 100000 --runs $(BENCH_RUNS)

bench-stream: setup
	$(PY) -m benchmarks.stream --config $(CONFIG) --rows 10000000 --memory-cap-mib $(BENCH_MEMORY_CAP)

bench-serve: setup
	deployments/system-deps.sh hey
	$(PY) -m benchmarks.serve --config $(CONFIG) $(BENCH_ARGS)

SOAK_SECONDS ?= 600

bench-soak: setup
	deployments/system-deps.sh nginx-light
	$(PY) -m benchmarks.soak --config $(CONFIG) --seconds $(SOAK_SECONDS) $(BENCH_ARGS)

# The local stack: Prefect server + pools + blocks + deployments + worker + MLflow UI (loopback).
# Ports: PREFECT_PORT (4200), MLFLOW_PORT (5000). LIFECYCLE_STACK_PASSWORD locks the Prefect API and
# the MLflow UI for user admin (README: the local stack).
stack: setup
	WORKDIR=$(WORKDIR) deployments/stack.sh up

stack-down:
	deployments/stack.sh down
