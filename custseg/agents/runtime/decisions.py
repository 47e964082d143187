"""What a worker decides about each record (`Decisions`, mixed into AgentWorker): route it
(move it home, skip it, dead-letter it) or answer it with the LLM within the task's time budget;
a failed answer goes to the retry topic or is dead-lettered, naming the original record. No
Kafka client here: the outcomes are written by the worker's loop, in its transactions."""

from __future__ import annotations

import threading
import time

from kafka.errors import KafkaError

from custseg.agents.envelope import Envelope, one_line, parse_envelope
from custseg.agents.roles import answer
from custseg.agents.runtime.calls import call_within, give_up_reason, spent_so_far
from custseg.agents.runtime.letters import (
    MAX_KEY_BYTES,
    dead_letter,
    place,
    retry_header,
    retry_note,
)
from custseg.agents.runtime.outcome import Job, Outcome, Send
from custseg.agents.runtime.settings import LLM_ATTEMPTS, SEEN_LIMIT
from custseg.agents.topics import home_partition
from custseg.errors import CallAbandoned, InvalidMessage
from custseg.llm import LLMError


class Decisions:
    """Record → Outcome for one role; AgentWorker provides the attributes used here (role, llm,
    timings, topics, partitions, seen, handed, stop, champion, max_tokens, params)."""

    def _not_due_for(self, record) -> float:
        """Seconds until this worker's retry copy is due (0: now, or not a retry of mine)."""
        if record.topic != self.retry_topic:
            return 0.0
        note = retry_note(record)
        if note is None or note["role"] != self.role.name:
            return 0.0
        try:
            return max(0.0, float(note["due"]) - time.time())
        except (TypeError, ValueError):
            return 0.0

    def decide_safely(self, record) -> Outcome:
        """What one record comes to, its LLM call (if any) made here and now."""
        step = self.route_safely(record)
        return step if isinstance(step, Outcome) else self.answer_safely(step, self.stop)

    def decide(self, record) -> Outcome:
        """`decide_safely` without the last line of defence."""
        step = self.route(record)
        return step if isinstance(step, Outcome) else self.answer(step, self.stop)

    def route_safely(self, record) -> Outcome | Job:
        """`route`, with a last line of defence (`_unforeseen`)."""
        try:
            return self.route(record)
        except (KafkaError, CallAbandoned):
            raise
        except Exception as error:  # any record-caused failure
            return self._unforeseen(record, error)

    def answer_safely(self, job: Job, abandon: threading.Event) -> Outcome:
        """`answer`, with a last line of defence (`_unforeseen`)."""
        try:
            return self.answer(job, abandon)
        except (KafkaError, CallAbandoned):
            raise
        except Exception as error:  # any record-caused failure
            return self._unforeseen(job.record, error)

    def _unforeseen(self, record, error: Exception) -> Outcome:
        """A record that makes the worker fail in a way nobody foresaw is dead-lettered with the
        error, instead of crashing the agent and, as its offset is never committed, crashing it
        again after every restart. Kafka errors (the broker, not the record) still propagate."""
        note = retry_note(record) if record.topic == self.retry_topic else None
        reason = f"unexpected {type(error).__name__}: {error}"
        return self.dead_letter(record, reason, source=note and note["source"])

    def route(self, record) -> Outcome | Job:
        """What to do with one record: move it home, skip it, dead-letter it (an Outcome), or
        answer it with the LLM (a Job for `answer`)."""
        note = None
        if record.topic == self.retry_topic:
            note = retry_note(record)
            if note is None or note["role"] != self.role.name:
                return Outcome("not mine")  # another role's retry: its worker answers it
        try:
            incoming = parse_envelope(record.value)
            if incoming.type != self.role.consumes:
                raise InvalidMessage(
                    f"{self.role.name} answers {self.role.consumes}s, got a {incoming.type}"
                )
        except InvalidMessage as error:
            return self.dead_letter(record, str(error), source=note and note["source"])
        cid = incoming.correlation_id
        home = home_partition(cid, self.partitions)
        if note is None and record.partition != home:
            return Outcome(
                "moved",
                (Send(self.in_topic, home, cid.encode(), record.value),),
                f"{self.role.name}: {cid[:8]} moved from partition {record.partition} to its "
                f"home partition {home}",
            )
        if incoming.event_id in self.seen and incoming.event_id not in self.handed:
            return Outcome("duplicate")
        return Job(record, note, incoming, home, int(note["attempt"]) if note else 1)

    def answer(self, job: Job, abandon: threading.Event) -> Outcome:
        """Answer with the LLM within what is left of the task's time budget (CallAbandoned
        once `abandon` is set); a failure goes to the retry topic, or is dead-lettered."""
        record, note, incoming, attempt = job.record, job.note, job.incoming, job.attempt
        budget_s, spent_s = self.timings.task_budget_s, spent_so_far(note)
        started = time.perf_counter()
        try:
            if spent_s >= budget_s:
                raise LLMError("no time left for another attempt")
            grounding = self.champion.current() if self.champion else None
            outgoing = call_within(
                lambda: answer(self.role, incoming, self.llm, self.max_tokens, grounding),
                budget_s - spent_s,
                abandon,
            )
            llm_s = time.perf_counter() - started
            value = outgoing.to_bytes()  # an empty or broken reply fails here: like a failed call
        except (LLMError, InvalidMessage) as error:
            source = note["source"] if note else place(record)
            spent_s += time.perf_counter() - started
            if reason := give_up_reason(attempt, LLM_ATTEMPTS, spent_s, budget_s):
                return self.dead_letter(record, f"{reason}: {error}", incoming, source)
            return self.retry_later(record, incoming, attempt, source, error, spent_s)
        cid = incoming.correlation_id
        self._remember(incoming.event_id)
        return Outcome(
            "answered",
            (Send(self.out_topic, job.home, cid.encode(), value),),
            f"{self.role.name}: {cid[:8]} {self.role.consumes} → {self.role.produces} "
            f"({llm_s:.1f} s)",
            incoming.event_id,
            llm_s,
        )

    def hand_over(self, job: Job, spent_s: float) -> Outcome:
        """A copy for the retry topic of an input whose call holds up its partition: the same
        attempt, due now, its time spent counted (or a dead letter once the budget is spent)."""
        source = job.note["source"] if job.note else place(job.record)
        if spent_s >= self.timings.task_budget_s:
            reason = give_up_reason(job.attempt, LLM_ATTEMPTS, spent_s, self.timings.task_budget_s)
            return self.dead_letter(job.record, f"{reason}: still waiting", job.incoming, source)
        cid = job.incoming.correlation_id
        header = retry_header(self.role.name, job.attempt, time.time(), source, round(spent_s, 3))
        return Outcome(
            "retry",
            (Send(self.retry_topic, job.home, cid.encode(), job.record.value, (header,)),),
            f"{self.role.name}: {cid[:8]} handed to the retry topic after {spent_s:.1f} s "
            f"(attempt {job.attempt} of {LLM_ATTEMPTS}): later inputs of its partition were done",
        )

    def retry_later(
        self,
        record,
        incoming: Envelope,
        attempt: int,
        source: dict,
        error: Exception,
        spent_s: float = 0.0,
    ) -> Outcome:
        """A copy of the input for the retry topic, due `retry_pause_s` × attempt from now,
        carrying the LLM time its attempts have spent so far."""
        pause_s = self.timings.retry_pause_s * attempt
        due = time.time() + pause_s
        header = retry_header(self.role.name, attempt + 1, due, source, round(spent_s, 3))
        cid = incoming.correlation_id
        return Outcome(
            "retry",
            (
                Send(
                    self.retry_topic,
                    home_partition(cid, self.partitions),
                    cid.encode(),
                    record.value,
                    (header,),
                ),
            ),
            f"{self.role.name}: {cid[:8]} attempt {attempt} of {LLM_ATTEMPTS} failed after "
            f"{spent_s:.1f} s of its {self.timings.task_budget_s:g} s budget, retried in "
            f"{pause_s:g} s: {one_line(str(error))}",
        )

    def dead_letter(
        self,
        record,
        reason: str,
        incoming: Envelope | None = None,
        source: dict | None = None,
    ) -> Outcome:
        """The dead letter for `record`, on its conversation's home partition when it has one
        (so the capture reading that partition closes the conversation)."""
        key = record.key if record.key is None or len(record.key) <= MAX_KEY_BYTES else None
        partition = (
            None if incoming is None else home_partition(incoming.correlation_id, self.partitions)
        )
        letter = dead_letter(record, reason, self.role.name, incoming, source)
        where = source or place(record)
        return Outcome(
            "dead-lettered",
            (Send(self.params.topics.dlq, partition, key, letter),),
            f"{self.role.name}: dead-lettered {where['topic']}@{where['offset']}: "
            f"{one_line(reason)}",
        )

    def _remember(self, event_id: str) -> None:
        self.seen[event_id] = None
        if len(self.seen) > SEEN_LIMIT:
            self.seen.popitem(last=False)
