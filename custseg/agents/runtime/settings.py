"""How the agents use Kafka and the LLM: batching, attempts, the waits (`Timings`) and the
producer.

The waits have production defaults; `timings_from_env` is the one place that reads their
overrides (`CUSTSEG_AGENTS_*_S`, in seconds), so tests can run the agents with short ones
instead of sleeping through Kafka's, and an operator can lengthen them on a slow cluster.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from kafka import KafkaProducer

from custseg.errors import ConfigError

SEEN_LIMIT = 10_000  # inputs remembered per worker, to skip one submitted twice
# An LLM failure is usually transient (a busy or restarting server): the input is tried again
# this many times, `Timings.retry_pause_s` × attempt later each time (from the retry topic),
# then dead-lettered.
LLM_ATTEMPTS = 3
# One transaction commits the inputs answered within this much time (at most MAX_BATCH): a fast
# LLM amortises the commit's round trips over many records, a slow one commits each answer.
BATCH_BUDGET_S = 0.5
MAX_BATCH = 200
# A worker that stops (a broker restart, a fenced producer, stuck in the Kafka client) is
# restarted in place after RESTART_BACKOFF_S × 2^(n-1) for its nth restart in a row, at most
# MAX_RESTART_BACKOFF_S; a worker that ran HEALTHY_RUN_S since its last start counts from 1 again.
RESTART_BACKOFF_S = 1.0
MAX_RESTART_BACKOFF_S = 30.0
HEALTHY_RUN_S = 60.0
# A local LLM call can take minutes on a busy CPU: a worker is not kicked out of its group
# for the time between two polls before this.
MAX_POLL_INTERVAL_MS = 900_000


@dataclass(frozen=True)
class Timings:
    """The waits, in seconds.

    `session_timeout_s`: a group member that stops heartbeating (kill -9) loses its partitions
    after this. kafka-python heartbeats from a background thread, so a long LLM call does not
    count; 10 s tolerates a few missed heartbeats on a busy machine (Kafka's default is 45 s).
    `transaction_timeout_s`: a transaction spans only the sends and the commit (the LLM answers
    before it begins); the coordinator aborts one left open by a killed worker after this,
    releasing its read_committed readers.
    `retry_pause_s`: an input whose LLM call failed is due again this × its attempt later.
    `stuck_s`: a poll returns within its timeout and a commit takes milliseconds, a broker
    restart seconds. A worker that has spent longer than this in the Kafka client (since it last
    began a poll or came back from the LLM) is stuck there: kafka-python waits for the broker
    without a deadline in places (seen: a commit after a broker restart). The process gives up,
    so a supervisor restarts it, rather than hold its partitions, and stall its group's
    rebalances, while doing nothing.
    `task_budget_s`: the LLM time one input may take over all its attempts. Each attempt waits
    at most what is left of it (whatever the provider's own timeout and retries); once it is
    spent the input is dead-lettered with the reason. Waits on the retry topic do not count:
    they do not hold the worker.
    `handoff_s`: the floor of the hand-off bound: a call unanswered after
    max(this, HANDOFF_FACTOR × the recent median call) × its attempt is not waited for any
    longer: its input goes to the retry topic in the batch's transaction (the attempt failed,
    its time counts against the budget) and the worker goes on with other records.
    `shutdown_s`: SIGTERM / Ctrl-C stops `custseg agents` within this: an LLM call in flight
    is abandoned at once (its input is not committed, so the next process answers it), the
    transaction in hand is finished, and workers not done by then are left behind.
    """

    session_timeout_s: float = 10.0
    transaction_timeout_s: float = 10.0
    retry_pause_s: float = 5.0
    stuck_s: float = 30.0
    task_budget_s: float = 300.0
    shutdown_s: float = 10.0
    handoff_s: float = 30.0

    @property
    def heartbeat_interval_ms(self) -> int:
        """A third of the session (Kafka's advice), at most 3 s (the default session's)."""
        return min(3_000, _ms(self.session_timeout_s) // 3)


DEFAULT_TIMINGS = Timings()
# The variable that overrides each Timings field.
TIMINGS_ENV = {
    "session_timeout_s": "CUSTSEG_AGENTS_SESSION_TIMEOUT_S",
    "transaction_timeout_s": "CUSTSEG_AGENTS_TRANSACTION_TIMEOUT_S",
    "retry_pause_s": "CUSTSEG_AGENTS_RETRY_PAUSE_S",
    "stuck_s": "CUSTSEG_AGENTS_STUCK_S",
    "task_budget_s": "CUSTSEG_AGENTS_TASK_BUDGET_S",
    "shutdown_s": "CUSTSEG_AGENTS_SHUTDOWN_S",
    "handoff_s": "CUSTSEG_AGENTS_HANDOFF_S",
}


def timings_from_env(env: Mapping[str, str] | None = None) -> Timings:
    """The Timings with the `CUSTSEG_AGENTS_*_S` overrides set in `env` (default: this
    process's environment; an empty variable counts as unset). ConfigError naming the variable
    for anything but a positive number of seconds."""
    env = os.environ if env is None else env
    chosen = {}
    for name, variable in TIMINGS_ENV.items():
        text = env.get(variable, "").strip()
        if not text:
            continue
        try:
            seconds = float(text)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(f"${variable}: expected a positive number of seconds, got {text!r}")
        chosen[name] = seconds
    return Timings(**chosen)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def make_producer(
    bootstrap: str, transactional_id: str | None = None, timings: Timings = DEFAULT_TIMINGS
) -> KafkaProducer:
    """The agents' producer; transactional with a `transactional_id` (the workers' replies)."""
    # acks=all + idempotence: a retried send never lands twice on the broker. No linger: a
    # worker commits its transaction right after its sends, so batching would only add latency.
    extra = (
        {
            "transactional_id": transactional_id,
            "transaction_timeout_ms": _ms(timings.transaction_timeout_s),
        }
        if transactional_id
        else {}
    )
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        client_id="custseg-agents",
        **extra,
    )


def consumer_settings(timings: Timings) -> dict:
    """The group settings of a worker's consumer."""
    return {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",  # never answer an aborted reply
        "max_poll_records": MAX_BATCH,
        "session_timeout_ms": _ms(timings.session_timeout_s),
        "heartbeat_interval_ms": timings.heartbeat_interval_ms,
        "max_poll_interval_ms": MAX_POLL_INTERVAL_MS,
    }
