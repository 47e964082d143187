"""SIGTERM stops `custseg agents` on the bundled model within the stated bound while a long
decode is in flight (#31 item 3). With provider `local`, llama.cpp runs inside the agents'
process: releasing it at exit waited for the abandoned decode to end, holding the GIL (575 s
once, on a loaded machine), so the command ends with `exit_now` once its workers are done.
Real broker, real model in the agents' own process; the task's offset stays uncommitted."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
import yaml
from kafka import KafkaAdminClient

from custseg.agents.runtime import Timings
from custseg.testing.sandbox import project_env
from tests.fixtures.agents import FAST_TIMINGS, Workdir, wait_for

SHUTDOWN_S = Timings().shutdown_s  # the stated bound, with the shipped settings
# Far more than a SIGTERM's bound to decode on any machine: ~3000 tokens at 20-25 tok/s.
LONG_TASK = "Write a launch plan of 150 numbered steps, each step two full sentences long."
# llama.cpp's own log lines (CUSTSEG_LLM_DEBUG): a request taken into its slot, and ended.
STARTED = re.compile(r"launch_slot_: id +\d+ \| task (\d+) \| processing task")
ENDED = "| task {} | stop processing"


@pytest.mark.timeout(240)  # ~30 s on 2 idle cores: agents start, model load, SIGTERM
def test_sigterm_during_a_long_local_decode_stops_within_the_bound_and_commits_nothing(
    tmp_path: Path, kafka_bootstrap: str, llm_model_path: Path, trained_project: Path
) -> None:
    llm_env = {
        **project_env(trained_project),
        "CUSTSEG_LLM_PROVIDER": "local",
        "CUSTSEG_MODEL_DIR": str(llm_model_path.parent),
        "CUSTSEG_LLM_DEBUG": "1",  # llama.cpp says when it takes the request
    }
    workdir = Workdir(
        tmp_path,
        kafka_bootstrap,
        llm_env,
        max_tokens={"planner": 3000, "writer": 48, "reviewer": 200},
        timings=FAST_TIMINGS,
    )
    log = tmp_path / "agents.log"
    agents = workdir.start("agents", "--role", "planner", log=log.name)
    try:
        workdir.submit(LONG_TASK)
        wait_for(lambda: STARTED.search(log.read_text("utf-8", "replace")), 180, "the decode")
        time.sleep(2)  # well inside the call: its prompt is being read or its tokens made
        sent = time.monotonic()
        agents.send_signal(signal.SIGTERM)
        code = agents.wait(timeout=600)
        took = time.monotonic() - sent
    finally:
        if agents.poll() is None:
            agents.kill()
            agents.wait()
    text = log.read_text("utf-8", "replace")
    assert took <= SHUTDOWN_S, f"stopped {took:.1f} s after SIGTERM"
    assert code == 0, text[-3000:]
    (task,) = STARTED.findall(text)
    assert ENDED.format(task) not in text, "the decode ended before the exit: nothing abandoned"
    for topic in ("plans", "dlq", "retries"):
        assert not workdir.read_topic(topic), f"{topic}: the abandoned call left a record"
    group = yaml.safe_load((tmp_path / "params.yaml").read_text())["agents"]["group_prefix"]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        offsets = admin.list_group_offsets([f"{group}.planner"]).get(f"{group}.planner") or {}
    finally:
        admin.close()
    committed = {tp.partition: o.offset for tp, o in offsets.items() if o.offset > 0}
    assert not committed, f"the task's offset was committed: {committed}"
