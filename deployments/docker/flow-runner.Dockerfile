# The flow-run image for the docker work pool: this project and its locked environment.
# Built by prefect.yaml's build step (prefect_docker.deployments.steps.build_docker_image).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
WORKDIR /opt/lifecycle
ENV UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/opt/lifecycle/.venv PATH=/opt/lifecycle/.venv/bin:$PATH \
    LIFECYCLE_PROJECT_DIR=/opt/lifecycle PREFECT_SERVER_ANALYTICS_ENABLED=false
RUN python3 -m pip install --no-cache-dir --break-system-packages uv==0.13.9 || python3 -m pip install --no-cache-dir uv==0.13.9
COPY pyproject.toml uv.lock README.md ./
COPY flows ./flows
COPY tasks ./tasks
COPY blocks ./blocks
RUN uv sync --frozen --no-dev
COPY . .
