"""The agents are grounded in the registered champion's segments (#17): what they are told,
what their replies record, how a moved alias is picked up, and the refusal without a model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from custseg.agents.envelope import parse_envelope
from custseg.agents.grounding import Champion, load_grounding
from custseg.agents.roles import ROLES, answer, prompt
from custseg.conversation import CHAIN, GroundedIn, Segment
from custseg.errors import NoGrounding
from custseg.llm.base import Completion
from custseg.telemetry import NO_TELEMETRY
from custseg.testing.conversations import conversation
from tests.fixtures.project import ROOT

SEGMENTS = (
    Segment(id=0, name="low income · high spending", size=38, share=0.19, mean_income=25.7,
            mean_spending=79.4),
    Segment(id=1, name="high income · low spending", size=34, share=0.17, mean_income=88.2,
            mean_spending=17.1),
)  # fmt: skip
GROUNDING = GroundedIn(model="customer-segments", version="7", segments=SEGMENTS)


class Echo:
    """An LLM that answers with a fixed plan/draft, or a review as JSON."""

    name, model, temperature = "stand-in", "echo", 0.0

    def complete(self, messages, *, max_tokens=None, temperature=None) -> Completion:
        self.last = messages
        return Completion("1. Pick the segment.", 1, 1, 0.0, "echo")

    def complete_json(self, messages, schema, *, max_tokens=None):
        self.last = messages
        return schema(review="Fine.", final="Offer a loyalty card."), None


@pytest.mark.parametrize("role", ["planner", "writer", "reviewer"])
def test_every_role_is_told_the_segments_and_records_the_version(role: str) -> None:
    chat = prompt(role, "Which segment?", GROUNDING)
    system = chat[0]["content"]
    for segment in SEGMENTS:
        assert f'"{segment.name}": {segment.size:,} customers' in system
        assert f"mean annual income {segment.mean_income:.0f} k$" in system
    assert "customer-segments v7" in system and "invent no others" in system
    assert chat[1]["content"].startswith("Task: Which segment?")

    # The message this role answers, from a conversation linked as the agents link it.
    incoming = dict(zip(CHAIN, conversation("Which segment?"), strict=True))[ROLES[role].consumes]
    llm = Echo()
    reply = answer(ROLES[role], incoming, llm, 64, GROUNDING)
    assert reply.grounded_in == GROUNDING  # the model, its version and the segments it was told
    assert llm.last[0]["content"] == system  # what the LLM was told
    assert parse_envelope(reply.to_bytes()) == reply  # the wire format carries it


def test_the_champion_is_read_again_once_the_refresh_is_due() -> None:
    """The alias is resolved at every due refresh; the segments loaded only for a new version;
    a registry that fails keeps the last grounding."""
    versions = iter(["3", "4"])
    loads: list[str] = []
    events: list[str] = []

    def version_of(model: str, alias: str) -> str:
        version = next(versions, None)
        if version is None:
            raise NoGrounding("registry gone")
        return version

    def load(model: str, alias: str) -> GroundedIn:
        loads.append(version := ["3", "4"][len(loads)])
        return GroundedIn(model=model, version=version, segments=SEGMENTS)

    champion = Champion(
        "customer-segments", "champion", load, refresh_s=0, on_event=events.append,
        version_of=version_of,
    )  # fmt: skip
    assert champion.current().version == "3"  # resolved "3": nothing loaded again
    assert champion.current().version == "4"  # resolved "4": loaded
    assert loads == ["3", "4"]
    assert events == ["grounding: customer-segments@champion moved to v4 (was v3)"]
    assert champion.current().version == "4", "a registry that fails keeps the last grounding"
    assert events[-1] == "grounding: kept v4: registry gone"
    slow = Champion("m", "champion", lambda m, a: GROUNDING, refresh_s=3600, version_of=None)
    assert slow.current().version == "7"  # not due: the registry is not asked


def test_the_registered_champion_grounds_the_agents(served_project: Path) -> None:
    """The session's trained project: v1 @champion, its profiles as train logged them."""
    grounding = load_grounding("customer-segments", "champion")
    assert grounding.version == "1" and len(grounding.segments) >= 2
    assert sum(s.size for s in grounding.segments) == 200  # params.yaml: simulate.n_customers
    assert sum(s.share for s in grounding.segments) == pytest.approx(1.0)
    assert len({s.name for s in grounding.segments}) == len(grounding.segments)
    assert all("income" in s.name and "spending" in s.name for s in grounding.segments)


def test_without_a_registered_model_the_agents_refuse_in_one_line(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        **NO_TELEMETRY,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # never reached: the refusal comes first
    }
    done = subprocess.run(
        [sys.executable, "-m", "custseg", "agents", "--params", str(ROOT / "params.yaml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: no registered model customer-segments@champion in ")
    assert line.endswith("run `make run` first")


@pytest.mark.parametrize(
    ("column", "value", "named"),
    [
        ("name", "high income · " * 30, "segments[0].name"),
        ("size", -5, "segments[0].size"),
        ("mean_income", -3.0, "segments[0].mean_income"),
    ],
)
def test_a_profile_no_reply_could_carry_refuses_the_start_in_one_line(
    project: Path, column: str, value: object, named: str
) -> None:
    """A registered profile outside the envelope's limits: refused at load, naming the field,
    instead of every reply being invalid, retried and dead-lettered."""
    import pandas as pd

    from custseg.tracking import configure_mlflow

    mlflow = configure_mlflow("hostile-profiles")
    profile = pd.DataFrame(
        {"segment": [0, 1], "name": ["low income · low spending", "high income · high spending"],
         "size": [10, 10], "share": [0.5, 0.5], "mean_income": [20.0, 90.0],
         "mean_spending": [10.0, 90.0]}
    )  # fmt: skip
    profile.loc[0, column] = value
    with mlflow.start_run() as run:
        mlflow.log_param("k", 2)
        mlflow.log_table(profile, "segment_profiles.json")
    client = mlflow.MlflowClient()
    client.create_registered_model("hostile")
    version = client.create_model_version("hostile", run.info.artifact_uri, run.info.run_id)
    client.set_registered_model_alias("hostile", "champion", version.version)

    with pytest.raises(NoGrounding) as refused:
        load_grounding("hostile", "champion")
    message = str(refused.value)
    assert "\n" not in message and named in message, message
    assert message.startswith("hostile v1's segment profiles cannot ground the agents: ")
