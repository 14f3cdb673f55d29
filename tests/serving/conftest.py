"""A trained, registered and packaged model per dataset, served by a real `bentoml serve`."""

from __future__ import annotations

import pytest

from tasks.core.spec import load_spec
from tests.serving.server import bento_server


@pytest.fixture(scope="session", autouse=True)
def _prefect(prefect_api):
    return prefect_api


@pytest.fixture(scope="session")
def telco_server(telco_lifecycle, tmp_path_factory):
    result, workdir = telco_lifecycle
    logs, labels = tmp_path_factory.mktemp("predictions-telco"), tmp_path_factory.mktemp("labels-telco")
    env = {"LIFECYCLE_PREDICTION_LOG_DIR": str(logs), "LIFECYCLE_LABEL_DIR": str(labels), "LIFECYCLE_MAX_ROWS": "1000"}
    with bento_server(result.package.bento_tag, workdir / "serve.log", env) as url:
        yield {"url": url, "logs": logs, "labels": labels, "result": result, "workdir": workdir}


@pytest.fixture(scope="session")
def orders_server(orders_lifecycle, tmp_path_factory):
    result, workdir = orders_lifecycle
    logs, labels = tmp_path_factory.mktemp("predictions-orders"), tmp_path_factory.mktemp("labels-orders")
    env = {"LIFECYCLE_PREDICTION_LOG_DIR": str(logs), "LIFECYCLE_LABEL_DIR": str(labels)}
    with bento_server(result.package.bento_tag, workdir / "serve.log", env) as url:
        yield {"url": url, "logs": logs, "labels": labels, "result": result, "workdir": workdir}


@pytest.fixture(scope="session")
def diamonds_server(diamonds_lifecycle, diamonds_config, tmp_path_factory):
    """The session's regression champion (diamond prices), served by a real `bentoml serve`."""
    result, workdir = diamonds_lifecycle
    logs, labels = tmp_path_factory.mktemp("predictions-diamonds"), tmp_path_factory.mktemp("labels-diamonds")
    env = {"LIFECYCLE_PREDICTION_LOG_DIR": str(logs), "LIFECYCLE_LABEL_DIR": str(labels)}
    with bento_server(result.package.bento_tag, workdir / "serve.log", env) as url:
        yield {"url": url, "logs": logs, "labels": labels, "result": result, "workdir": workdir,
               "spec": load_spec(diamonds_config)}  # fmt: skip
