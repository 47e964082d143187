"""Agents on Kafka: each role consumes its input topic in its own group and replies downstream.

Exactly once: a worker writes its replies (and dead letters) and the offsets of the inputs they
answer in one Kafka transaction, and every reader of the agent topics reads `read_committed`.
Killed at any moment, a worker leaves all of a transaction or none of it: uncommitted inputs are
answered again and only the committed answer is ever visible, so no reply exists in two versions.

The rooms: `letters` (dead letters and retry headers), `settings` (Kafka settings, the waits,
the producer), `outcome` (what an input comes to), `calls` (LLM calls waited for within the
task's time budget, their hand-off bound and until a stop), `batch` (one poll's records from
decision to commit, exactly once), `worker` (one role's loop and decisions), `supervisor`
(the roles' threads, restarts in place, stuck detection, a bounded stop).
"""

from custseg.agents.runtime.batch import CHAOS_KILL_ENV
from custseg.agents.runtime.letters import RETRY_HEADER, dead_letter
from custseg.agents.runtime.settings import (
    LLM_ATTEMPTS,
    TIMINGS_ENV,
    Timings,
    make_producer,
    timings_from_env,
)
from custseg.agents.runtime.supervisor import run_agents
from custseg.agents.runtime.worker import AgentWorker

__all__ = [
    "CHAOS_KILL_ENV",
    "LLM_ATTEMPTS",
    "RETRY_HEADER",
    "TIMINGS_ENV",
    "AgentWorker",
    "Timings",
    "dead_letter",
    "make_producer",
    "run_agents",
    "timings_from_env",
]
