"""A slow or hanging LLM call cannot hold `custseg agents` (#31 item 3): SIGTERM stops it within
`Timings.shutdown_s` whatever the LLM does, abandoning the call in flight (its input is redone by
the next process); a task's LLM time over all its attempts is bounded by `task_budget_s`, then
dead-lettered with the reason; a worker that has to stop is restarted in place. Real broker,
the stand-in LLM server told to hang (STALL_CUE, STALL_ONCE_CUE)."""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka import KafkaAdminClient, KafkaProducer

from custseg.agents.runtime import LLM_ATTEMPTS, Timings
from custseg.agents.runtime.calls import call_within, give_up_reason
from custseg.agents.runtime.settings import MAX_RESTART_BACKOFF_S, RESTART_BACKOFF_S
from custseg.agents.runtime.supervisor import restart_delay
from custseg.agents.schemas import RETRY_HEADER, RetryBounds, read_retry
from custseg.errors import CallAbandoned, LLMError
from custseg.kafka.broker import LocalBroker
from custseg.testing.stand_in_llm import STALL_CUE, STALL_ONCE_CUE, STALLED
from tests.fixtures.agents import FAST_TIMINGS, Workdir, assert_linked, retry_note, stop, wait_for
from tests.test_agents_reliability import PARTITIONS, stand_in_env

SHUTDOWN_S = Timings().shutdown_s  # the stated bound, with the shipped settings


# --- the rules, on generated inputs -------------------------------------------------------


@given(
    attempt=st.integers(1, 10),
    attempts=st.integers(1, 10),
    spent=st.floats(0, 1e4, allow_nan=False),
    budget=st.floats(0.001, 1e4, allow_nan=False),
)
def test_an_input_is_given_up_exactly_when_its_budget_or_its_attempts_are_spent(
    attempt: int, attempts: int, spent: float, budget: float
) -> None:
    reason = give_up_reason(attempt, attempts, spent, budget)
    assert (reason is None) == (spent < budget and attempt < attempts)
    if spent >= budget:  # the budget is named first: it is what a user would raise
        assert reason.startswith(f"time budget of {budget:g} s spent over {attempt} attempt")
    elif reason is not None:
        assert reason == f"llm failed {attempt} times"


@given(
    st.one_of(
        st.floats(), st.integers(-(2**70), 2**70), st.booleans(), st.text(max_size=5), st.none()
    )
)
def test_a_retry_header_cannot_forge_a_negative_or_endless_spent_time(value) -> None:
    """`spent` is read only as a finite non-negative number: anything else makes the header
    invalid (one dead letter), so a forged value can neither stretch nor exhaust a budget."""
    note = {
        "role": "writer",
        "attempt": 2,
        "due": 1e9,
        "source": {"topic": "agent.plans", "partition": 0, "offset": 1},
        "spent": value,
    }
    # ±inf as ±1e400, which JSON readers take for infinity; NaN has no JSON spelling at all
    raw = json.dumps(note).replace("Infinity", "1e400").encode()
    bounds = RetryBounds({"writer": "agent.plans"}, 3, LLM_ATTEMPTS, 600.0)
    read = read_retry([(RETRY_HEADER, raw)], bounds, 1e9)
    usable = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )
    assert (read.note is not None) == usable, (value, read.problem)
    if usable:
        assert read.note.spent == float(value)
    else:
        assert "spent" in read.problem or (value != value and "not JSON" in read.problem)


@given(st.integers(1, 10_000))
def test_restart_backoff_doubles_from_one_second_up_to_its_cap(in_a_row: int) -> None:
    delay = restart_delay(in_a_row)
    assert RESTART_BACKOFF_S <= delay <= MAX_RESTART_BACKOFF_S
    assert delay == min(
        MAX_RESTART_BACKOFF_S, 2 * restart_delay(in_a_row - 1) if in_a_row > 1 else 1
    )


def test_a_call_is_waited_for_only_within_its_limit_and_until_a_stop() -> None:
    never = threading.Event()
    stop = threading.Event()
    assert call_within(lambda: 42, 5.0, stop) == 42
    with pytest.raises(ZeroDivisionError):
        call_within(lambda: 1 / 0, 5.0, stop)
    started = time.monotonic()
    with pytest.raises(LLMError, match=r"no answer within 0\.3 s"):
        call_within(never.wait, 0.3, stop)
    assert time.monotonic() - started < 5.0  # not the call's own length (for ever)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(CallAbandoned):
        call_within(never.wait, 600.0, stop)
    assert time.monotonic() - started < 5.0


# --- the real process, broker and stand-in LLM --------------------------------------------


def task_line(task: str) -> str:
    return f"Task: {task}"


def make_workdir(path: Path, bootstrap: str, url: str, project: Path, **options) -> Workdir:
    """A workdir on the stand-in LLM with short Kafka waits; `options` as Workdir's."""
    options.setdefault("timings", FAST_TIMINGS)
    return Workdir(path, bootstrap, stand_in_env(url, project), partitions=PARTITIONS, **options)


@pytest.fixture
def workdir(
    tmp_path: Path, kafka_bootstrap: str, stand_in_llm: str, trained_project: Path
) -> Workdir:
    # The provider retries inside one attempt too (max_retries 2), as shipped: SIGTERM must not
    # wait for any of those requests.
    return make_workdir(tmp_path, kafka_bootstrap, stand_in_llm, trained_project)


@pytest.fixture
def running(workdir: Workdir) -> Iterator[list]:
    """The agents processes a test starts; any still running at the end are stopped."""
    processes: list = []
    yield processes
    for process in processes:
        if process.poll() is None:
            stop(process, signal.SIGKILL)


@pytest.mark.chaos  # hangs the LLM or kills a process at a chosen moment
def test_sigterm_during_a_hanging_llm_call_stops_within_the_bound_and_loses_nothing(
    workdir: Workdir, running: list
) -> None:
    """The Planner's call hangs (the stand-in never answers it): SIGTERM ends the process within
    SHUTDOWN_S, the task's offset uncommitted; the next process answers it once."""
    task = f"Plan a launch {STALL_ONCE_CUE} {time.time_ns()}"
    running.append(first := workdir.start("agents", log="agents-1.log"))
    ids = workdir.submit(task)
    wait_for(lambda: STALLED.get(task_line(task), 0) >= 1, 120, "the hanging LLM call")
    sent = time.monotonic()
    first.send_signal(signal.SIGTERM)
    code = first.wait(timeout=120)
    took = time.monotonic() - sent
    assert took <= SHUTDOWN_S, f"stopped {took:.1f} s after SIGTERM"
    assert code == 0, (workdir.path / "agents-1.log").read_text()[-3000:]
    assert not workdir.read_topic("plans") and not workdir.read_topic("dlq")
    running.append(second := workdir.start("agents", log="agents-2.log"))
    done = workdir.capture(ids, timeout=120)
    assert done.returncode == 0, done.stderr
    (conversation,) = workdir.lines()
    assert conversation["correlation_id"] == ids[0]
    assert_linked(conversation)
    assert len(workdir.read_topic("plans")) == 1, "answered once"
    assert STALLED[task_line(task)] == 1
    assert stop(second) == 0


@pytest.mark.chaos  # hangs the LLM or kills a process at a chosen moment
def test_a_task_that_keeps_hanging_is_dead_lettered_once_its_time_budget_is_spent(
    tmp_path: Path, kafka_bootstrap: str, stand_in_llm: str, trained_project: Path, running: list
) -> None:
    """Each request times out after 1 s (no retry inside the provider), the budget is 2.5 s:
    the attempts stop when the budget is spent, before LLM_ATTEMPTS, with true counts in the
    log; a healthy task sent with it completes meanwhile."""
    budget_s = 2.5
    assert budget_s < LLM_ATTEMPTS * 1.0  # so the budget, not the attempts, ends it
    workdir = make_workdir(
        tmp_path,
        kafka_bootstrap,
        stand_in_llm,
        trained_project,
        llm={"timeout": 1, "max_retries": 0},
        timings={**FAST_TIMINGS, "task_budget_s": str(budget_s)},
    )
    hanging = f"Plan the impossible {STALL_CUE} {time.time_ns()}"
    running.append(agents := workdir.start("agents", log="agents.log"))
    ids = workdir.submit(hanging, "Name one metric for the flyer.")
    done = workdir.capture(ids, timeout=120)
    assert done.returncode != 0 and "1 expected conversation(s) failed" in done.stderr
    assert [c["correlation_id"] for c in workdir.lines()] == ids[1:]
    (letter,) = [json.loads(r.value) for r in workdir.read_topic("dlq")]
    retried = [retry_note(r) for r in workdir.read_topic("retries")]
    attempts = len(retried) + 1
    assert letter["reason"].startswith(
        f"time budget of {budget_s:g} s spent over {attempts} attempts: "
    ), letter["reason"]
    assert 2 <= attempts <= LLM_ATTEMPTS
    spent = [note.spent for note in retried]
    assert spent == sorted(spent) and all(0.9 <= s < budget_s for s in spent), spent
    log = (workdir.path / "agents.log").read_text()
    assert f"attempt 1 of {LLM_ATTEMPTS} failed after" in log
    assert "(after 1 request)" in log and "attempts)" not in log
    assert agents.poll() is None
    assert stop(agents) == 0


@pytest.mark.chaos
@pytest.mark.timeout(600)
def test_agents_stay_up_through_a_broker_restart_and_answer_a_task_sent_after_it(
    tmp_path: Path, stand_in_llm: str, trained_project: Path
) -> None:
    """Its own broker, so the restart touches no other test. A worker that cannot go on is
    restarted in place (whether one has to depends on the moment: counted in the log); the
    process never exits."""
    broker = LocalBroker.ephemeral(tmp_path / "kafka")
    broker.start()
    process = None
    try:
        (tmp_path / "work").mkdir()
        workdir = make_workdir(tmp_path / "work", broker.bootstrap, stand_in_llm, trained_project)
        process = workdir.start("agents", log="agents.log")
        before = workdir.submit("Name one metric for the spring offer.")
        assert workdir.capture(before, timeout=120).returncode == 0
        log = workdir.path / "agents.log"
        broker.stop()
        broker.start()
        after = workdir.submit("Name one metric for the autumn offer.")
        done = workdir.capture(after, timeout=180)
        assert done.returncode == 0, done.stderr + log.read_text()[-4000:]
        assert process.poll() is None, "the process stayed up"
        assert stop(process) == 0
        restarts = [line for line in log.read_text().splitlines() if "; restart " in line]
        print(f"{len(restarts)} worker restart(s) through the broker restart: {restarts}")
    finally:
        if process is not None and process.poll() is None:
            stop(process, signal.SIGKILL)
        broker.stop()


def transactional_ids(bootstrap: str, prefix: str) -> list[str]:
    """The transactional ids of the broker's producers that start with `prefix`."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        listings = admin.list_transactions()
    finally:
        admin.close()
    return sorted(
        t.transactional_id
        for found in listings.values()
        for t in found
        if t.transactional_id.startswith(prefix)
    )


def test_a_fenced_worker_is_restarted_in_place_and_answers_the_next_task(
    workdir: Workdir, running: list
) -> None:
    """Another producer takes the Writer's transactional id (as a zombie's successor would): the
    Writer cannot commit any more, so it stops; the supervisor restarts it in place (counted,
    logged, after 1 s), the process stays up, and the task it was answering completes once."""
    running.append(agents := workdir.start("agents", log="agents.log"))
    first = workdir.submit("Name one metric for the spring offer.")
    assert workdir.capture(first, timeout=120).returncode == 0
    tag = workdir.topics["tasks"].split(".")[0]  # the workdir's group prefix is test-<tag>
    writer_prefix = f"test-{tag}.writer."
    (writer_id,) = transactional_ids(workdir.bootstrap, writer_prefix)
    zombie_successor = KafkaProducer(
        bootstrap_servers=workdir.bootstrap, transactional_id=writer_id
    )
    zombie_successor.init_transactions()  # bumps the epoch: the Writer's producer is fenced
    zombie_successor.close()
    second = workdir.submit("Name one metric for the autumn offer.")
    done = workdir.capture(second, timeout=120)
    log = (workdir.path / "agents.log").read_text()
    assert done.returncode == 0, done.stderr + log[-8000:]
    assert agents.poll() is None, "the process stayed up"
    (restart,) = [line for line in log.splitlines() if "; restart " in line]
    assert restart.startswith("writer: stopped (") and restart.endswith("; restart 1 in 1 s")
    assert "Fenced" in restart, restart
    # The new Writer takes its predecessor's id (fencing it, were it still running).
    assert transactional_ids(workdir.bootstrap, writer_prefix) == [writer_id], "the same id"
    assert len(workdir.read_topic("drafts")) == 2, "each draft once"
    assert stop(agents) == 0
    summary = (workdir.path / "agents.log").read_text().splitlines()
    assert any(line.startswith("writer: 2 answered") and ", 1 restarts" in line for line in summary)
