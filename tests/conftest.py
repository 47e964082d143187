"""Shared fixtures live in tests/fixtures/; each module is one kind of real service or sandbox."""

import os

import pytest
from hypothesis import settings

from custseg.telemetry import disable_telemetry

# No per-example deadline: the tests share 2 cores with a broker, an LLM server and browsers, and
# speed is measured by the benchmarks, not by a test that fails when the machine is busy.
settings.register_profile("project", deadline=None)
settings.load_profile("project")

disable_telemetry()  # before any test imports MLflow, DVC, Streamlit or deepeval
# The tests choose their LLM themselves: none inherits the calling shell's CUSTSEG_LLM_* choice.
for _var in [v for v in os.environ if v.upper().startswith("CUSTSEG_LLM_")]:
    del os.environ[_var]

# Scoring records into data/scored/ by default (drift monitoring): tests that score (the app,
# batch, REST) record only where they name a folder, never into the checkout.
os.environ["CUSTSEG_RECORD_DIR"] = "off"

pytest_plugins = [
    "tests.fixtures.project",
    "tests.fixtures.kafka",
    "tests.fixtures.agents",
    "tests.fixtures.llm",
    "tests.fixtures.app",
    "tests.fixtures.spark",
]
# A test that uses one of these talks to a real LLM (the bundled model): it is marked `llm`, one of
# the marks `make check` leaves out (pyproject.toml lists them and what each means).
LLM_FIXTURES = {"llm_model_path", "local_provider", "llm_server", "ollama_stand_in"}
# `make test` and `make check` run two workers (pytest-xdist, --dist loadgroup). Every test that
# needs the session's Kafka broker or the bundled LLM runs in one of them, so a session still
# starts one broker and one model server; Spark's tests share one worker too (one JVM); and the
# tests of a module that share a module fixture (a server, a built wheel) share a worker, so it
# is built once.
SERVICE_FIXTURES = LLM_FIXTURES | {"kafka_bootstrap"}


def worker_group(item: pytest.Item) -> str | None:
    """The xdist group `item` must run in, if any."""
    fixtures = set(getattr(item, "fixturenames", ()))
    if SERVICE_FIXTURES & fixtures:
        return "services"
    if item.get_closest_marker("spark"):
        return "spark"
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.values() if info else ()
    if any(d.scope == "module" for defs in definitions for d in defs):
        return item.module.__name__ if item.module else None
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if LLM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.llm)
        if group := worker_group(item):
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(trylast=True)  # after xdist has written the groups into the test ids
def pytest_collection_finish(session: pytest.Session) -> None:
    """Fail at once if a group was not applied (pytest 9 ignores how xdist 3.8 writes it): the
    workers would each start a broker and a model server, and race for them."""
    if not session.config.getoption("loadgroup", False):
        return
    lost = [i.nodeid for i in session.items if worker_group(i) and "@" not in i.nodeid]
    if lost:
        raise pytest.UsageError(f"xdist groups not applied (e.g. {lost[0]}): check pytest-xdist")
