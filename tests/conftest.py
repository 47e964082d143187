"""Shared fixtures live in tests/fixtures/; each module is one kind of real service or sandbox."""

pytest_plugins = [
    "tests.fixtures.project",
    "tests.fixtures.kafka",
    "tests.fixtures.llm",
    "tests.fixtures.app",
]
