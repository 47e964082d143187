"""Joining a conversation's records: the linked chain, the line written for a complete one or
for one a dead letter closed, and which offsets are safe to commit meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka.structs import TopicPartition

from custseg.agents.envelope import Envelope
from custseg.conversation import CHAIN


def conversation_record(chain: dict[str, Envelope]) -> dict:
    """The JSON line written for one complete conversation (times and models stay objects: msgspec
    encodes them in C, times in RFC 3339 as on the wire)."""
    task, plan, draft, final = (chain[t] for t in CHAIN)
    return {
        "correlation_id": task.correlation_id,
        "task": task.content["task"],
        "plan": plan.content["plan"],
        "draft": draft.content["draft"],
        "final": final.content["final"],
        "review": final.content["review"],
        "grounded_in": final.grounded_in,  # the model whose segments the answer was given
        "variant": final.variant,  # the agent variant that gave the final
        # v2: the tools called, revisions, breaches left and the review's edits, per agent.
        **({"work": {t: e.work for t, e in chain.items() if e.work}} if final.work else {}),
        "started_at": task.produced_at,
        "completed_at": final.produced_at,
        "events": {
            t: {
                "event_id": e.event_id,
                "causation_id": e.causation_id,
                "agent": e.agent,
                "produced_at": e.produced_at,
                "model": e.model,
                "grounded_in": e.grounded_in,
                "variant": e.variant,
                **({"work": e.work} if e.work else {}),
            }
            for t, e in chain.items()
        },
    }


def find_chain(parts: list[Envelope]) -> dict[str, Envelope] | None:
    """A task → plan → draft → final chain linked by causation ids, if one is complete."""
    answers: dict[tuple[str | None, str], Envelope] = {}
    for e in parts:  # the first copy read wins, should a reply ever exist twice
        answers.setdefault((e.causation_id, e.type), e)
    for task in (e for e in parts if e.type == "task"):
        chain, parent = {"task": task}, task
        for step in CHAIN[1:]:
            child = answers.get((parent.event_id, step))
            if child is None:
                break
            chain[step], parent = child, child
        if len(chain) == len(CHAIN):
            return chain
    return None


# One part of a pending conversation: the envelope, and where it was read.
Part = tuple[Envelope, TopicPartition, int]


def failure_record(cid: str, parts: list[Part], letter: dict) -> dict:
    """The line recorded for a conversation a dead letter closed: how far it got, and why."""
    return {
        "correlation_id": cid,
        "status": "failed",
        "reason": letter["reason"],
        "agent": letter["agent"],
        "failed_at": letter["at"],
        "dead_lettered": {"topic": letter["source"]["topic"], **letter["envelope"]},
        "reached": [t for t in CHAIN if any(e.type == t for e, _, _ in parts)],
    }


@dataclass
class Assembler:
    """Holds partial conversations; tells which offsets are safe to commit; releases replies
    whose task never comes (`release_orphans`), so they cannot hold an offset for ever."""

    written: set[str] = field(default_factory=set)
    # correlation_id → the parts read so far, with where each was read
    pending: dict[str, list[Part]] = field(default_factory=dict)
    # partition → offsets still needed by pending conversations; keys stay in offset order
    # because a partition is read in order, so the first key is the oldest
    held: dict[TopicPartition, dict[int, None]] = field(default_factory=dict)
    consumed: dict[TopicPartition, int] = field(default_factory=dict)
    # correlation_id → when its first part, a reply, was read; until its task is. Insertion
    # order is time order (one monotonic clock), so the oldest orphan is the first key.
    taskless: dict[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic

    def add(self, envelope: Envelope, tp: TopicPartition, offset: int) -> dict | None:
        """Add one message; return the conversation record if it just became complete."""
        self.consumed[tp] = offset + 1
        cid = envelope.correlation_id
        if cid in self.written:
            return None
        parts = self.pending.setdefault(cid, [])
        parts.append((envelope, tp, offset))
        self.held.setdefault(tp, {})[offset] = None
        if envelope.type == "task":
            self.taskless.pop(cid, None)
        elif len(parts) == 1:
            self.taskless[cid] = self.clock()
        if len(parts) < len(CHAIN):  # too few parts for a chain: nothing to look for yet
            return None
        chain = find_chain([e for e, _, _ in parts])
        if chain is None:
            return None
        return self._close(cid, conversation_record(chain))

    def add_dead_letter(self, letter: dict, tp: TopicPartition, offset: int) -> dict | None:
        """Add a dead letter, read after the record it names; return the failure record if that
        record is part of a pending conversation (read from the letter's source topic)."""
        self.consumed[tp] = offset + 1
        about = letter["envelope"]
        cid, source = about["correlation_id"], (letter["source"]["topic"], about["event_id"])
        parts = self.pending.get(cid, ())
        if source not in {(part_tp.topic, e.event_id) for e, part_tp, _ in parts}:
            return None  # written already, or not a record this capture holds
        return self._close(cid, failure_record(cid, self.pending[cid], letter))

    def release_orphans(self, wait_s: float) -> list[tuple[str, list[str]]]:
        """Let go of the conversations that got replies but no task within `wait_s` of reading
        the first reply (a task is always written before its replies): their offsets are no
        longer held, and their later records are skipped. Each as (correlation id, the types
        read)."""
        released = []
        now = self.clock()
        while self.taskless:
            cid, since = next(iter(self.taskless.items()))
            if now - since <= wait_s:
                break
            released.append(
                (cid, [t for t in CHAIN if any(e.type == t for e, _, _ in self.pending[cid])])
            )
            self._done(cid)
        return released

    def _close(self, cid: str, record: dict) -> dict:
        self._done(cid)
        return record

    def _done(self, cid: str) -> None:
        """Forget a pending conversation: its offsets are released, its later records skipped."""
        for _, part_tp, part_offset in self.pending.pop(cid):
            del self.held[part_tp][part_offset]
        self.taskless.pop(cid, None)
        self.written.add(cid)

    def skip(self, tp: TopicPartition, offset: int) -> None:
        self.consumed[tp] = offset + 1

    def safe_offsets(self) -> dict[TopicPartition, int]:
        """Per partition: the oldest offset still needed by a pending conversation, else the end."""
        return {tp: next(iter(self.held.get(tp, ())), end) for tp, end in self.consumed.items()}

    def missing(self) -> dict[str, list[str]]:
        """Incomplete conversations and the parts they still lack."""
        missing = {}
        for cid, parts in self.pending.items():
            types = {e.type for e, _, _ in parts}
            missing[cid] = [t for t in CHAIN if t not in types] or ["a linked chain"]
        return missing
