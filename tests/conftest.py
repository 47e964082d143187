"""Shared fixtures live in tests/fixtures/; each module is one kind of real service or sandbox."""

from custseg.tracking import disable_telemetry

disable_telemetry()  # before any test imports MLflow, DVC, Streamlit or deepeval

pytest_plugins = [
    "tests.fixtures.project",
    "tests.fixtures.kafka",
    "tests.fixtures.llm",
    "tests.fixtures.app",
]
