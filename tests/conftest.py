"""Fixtures shared by every test layer."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tasks.spec import DatasetSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def telco_spec() -> DatasetSpec:
    return load_spec(CONFIGS / "telco_churn.yaml")


@pytest.fixture(scope="session")
def credit_spec() -> DatasetSpec:
    return load_spec(CONFIGS / "credit_data.yaml")


@pytest.fixture(scope="session")
def orders_spec() -> DatasetSpec:
    return load_spec(FIXTURES / "orders.yaml")


@pytest.fixture(scope="session")
def telco_raw(telco_spec) -> pl.DataFrame:
    return pl.read_csv(telco_spec.resolve(telco_spec.source.path), infer_schema=False)
