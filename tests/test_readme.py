"""Every `bash` block of the README and of docs/*.md, as written, in a fresh clone and a new shell.

The commands are extracted from README.md, then from each docs/ page in name order (so they
cannot drift), and run in that order by `bash -c` in a `git clone` of this checkout (its
tracked changes included), with a PATH that does not hold the project's venv: a block works
only if the README itself activates it. Set-up is the README's too (`make run`), except that
the clone's `.venv` is this checkout's (a symlink, its install stamp kept current), which
spares a second install of ~200 packages. Servers are started in the background and stopped by
process group; one that later commands need is waited for at once, the others are checked
before the end (their start overlaps the commands after them). The LLM behind the agents is a
stand-in (seconds, not minutes), the broker and every port are the test's own.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from custseg.agents.client import read_tasks
from custseg.net import free_port
from custseg.testing.browser import stop_process
from tests.fixtures.project import ROOT, committed_judge_calls

pytestmark = [pytest.mark.clone, pytest.mark.timeout(900)]


# `make test` is this suite: running it from inside itself would recurse.
NOT_RUN = {"make test"}
# Commands that run the eval stage: in a clone it is up to date or re-scores the committed
# conversations from the replies the repository carries, never with a judge call.
RUNS_EVAL = {"make run", "dvc repro eval"}
SHELL_STATE = ("source ", "export ")  # lines that set up the shell for the lines after them
COMMAND_TIMEOUT_S = 600


def documented_pages() -> list[Path]:
    """The pages whose ```bash blocks this test runs, in the order it runs them."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_commands(text: str) -> list[str]:
    """Each command line of a page's ```bash blocks, comments and blank lines dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def documented_commands() -> list[str]:
    """The command lines of every page's ```bash blocks: the README's first, then docs/."""
    return [c for page in documented_pages() for c in readme_commands(page.read_text())]


def test_the_readme_commands_are_what_this_test_runs() -> None:
    readme = readme_commands((ROOT / "README.md").read_text())
    assert readme[:2] == ["make run", "make test"], "the README starts with the two commands"
    assert "source .venv/bin/activate" in readme
    commands = documented_commands()
    unknown = [c for c in commands if c.split()[0] not in ("make", "dvc", "custseg", "source")]
    assert not unknown, f"teach this test how to run {unknown}"
    # Each command is proved once: a page that mentions another page's command shows it in a
    # ```sh or ```console block (or inline), which this test does not run.
    repeated = sorted({c for c in commands if commands.count(c) > 1})
    assert not repeated, f"run in more than one ```bash block: {repeated}"


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    return check


def _log_says(log: Path, text: str) -> Callable[[], bool]:
    return lambda: log.is_file() and text in log.read_text(errors="replace")


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh clone, the environment of a new shell, and the broker stopped afterwards."""
    path = tmp_path / "clone"
    # --shared: the clone sees every object here, the snapshot of uncommitted changes too.
    subprocess.run(["git", "clone", "-q", "--shared", str(ROOT), str(path)], check=True)
    # A developer's uncommitted (staged or tracked) changes too: CI's checkout has none.
    snapshot = subprocess.run(
        ["git", "stash", "create"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    if snapshot:
        subprocess.run(["git", "checkout", "-q", snapshot], cwd=path, check=True)
    (path / ".venv").symlink_to(ROOT / ".venv")
    stamp = (ROOT / ".venv/.install-stamp").stat().st_mtime
    for name in ("pyproject.toml", "requirements.lock"):  # `make install` is already done
        os.utime(path / name, (stamp - 60, stamp - 60))
    venv_bin = str(ROOT / ".venv/bin")
    path_dirs = [d for d in os.environ["PATH"].split(os.pathsep) if d != venv_bin]
    drop = ("VIRTUAL_ENV", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "KAFKA_BOOTSTRAP_SERVERS")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("MAKE")}
    env.update(
        PATH=os.pathsep.join(path_dirs),
        KAFKA_PORT=str(free_port()),
        KAFKA_CONTROLLER_PORT=str(free_port()),
        CUSTSEG_KAFKA_STATE=str(tmp_path / "kafka-state"),
        UI_PORT=str(free_port()),
        APP_PORT=str(free_port()),
        # An empty judge cache: the eval stage must live on the replies the repository carries.
        CUSTSEG_JUDGE_CACHE=str(tmp_path / "judge-cache"),
    )
    yield path, env
    subprocess.run(["make", "--no-print-directory", "kafka-down"], cwd=path, env=env, timeout=120)


def test_every_readme_block_runs_as_written(
    clone: tuple[Path, dict[str, str]], outbound_check: Path, stand_in_llm: str
) -> None:
    path, env = clone
    # The agents' LLM is the stand-in; the judge stays the bundled model's configuration, whose
    # replies for the committed conversations the repository carries (no model is loaded).
    agents_env = {**env, "CUSTSEG_LLM_PROVIDER": "openai", "CUSTSEG_LLM_BASE_URL": stand_in_llm}
    agent_commands = {"make agents-demo", "custseg agents"}
    logs = path.parent / "logs"
    logs.mkdir()
    # Commands that serve until stopped, and how to tell they are up.
    servers = {
        "make ui": _http_ok(f"http://127.0.0.1:{env['UI_PORT']}/health"),
        "make app": _http_ok(f"http://127.0.0.1:{env['APP_PORT']}/_stcore/health"),
        "custseg agents": _log_says(logs / "custseg agents.log", "Ctrl-C/SIGTERM stops"),
    }
    needed_at_once = {"custseg agents"}  # the commands after it talk to the agents
    shell_state: list[str] = []
    running: list[subprocess.Popen] = []
    starting: list[tuple[str, subprocess.Popen, float]] = []  # (command, process, deadline)

    def wait_until_up(command: str, process: subprocess.Popen, deadline: float) -> None:
        while not servers[command]():
            assert process.poll() is None, (
                f"{command} exited: {(logs / f'{command}.log').read_text()}"
            )
            assert time.monotonic() < deadline, f"{command} not up after 120 s"
            time.sleep(0.5)

    began = time.monotonic()
    try:
        for command in documented_commands():
            if command in NOT_RUN:
                continue
            if command.startswith(SHELL_STATE):
                shell_state.append(command)
                continue
            script = " && ".join([*shell_state, command])
            print(f"{time.monotonic() - began:6.1f} s  {command}")  # where the time goes (-s)
            if command in servers:
                log = (logs / f"{command}.log").open("w")
                process = subprocess.Popen(
                    ["bash", "-c", script], cwd=path, stdout=log, stderr=log,
                    env=agents_env if command in agent_commands else env,
                    start_new_session=True,
                )  # fmt: skip
                running.append(process)
                deadline = time.monotonic() + 120
                if command in needed_at_once:
                    wait_until_up(command, process, deadline)
                else:
                    starting.append((command, process, deadline))
                continue
            argv = ["bash", "-c", script]
            if command == "make run":  # the main command: nothing may leave the machine
                argv = [str(outbound_check), "--", *argv]
            done = subprocess.run(
                argv,
                cwd=path,
                env=agents_env if command in agent_commands else env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
            )
            output = done.stdout + done.stderr
            assert done.returncode == 0, f"`{command}` failed:\n{output[-4000:]}"
            if command == "make run":
                assert "0 non-loopback destination(s)" in output, output[-2000:]
            if command in RUNS_EVAL:
                # eval is up to date in a clone (its lock matches), or re-scores from the
                # replies the repository carries: never a judge call.
                judged = f"judge calls made: 0, cache hits: {committed_judge_calls()}" in output
                assert judged or "Stage 'eval' didn't change" in output, output[-2000:]
        for command, process, deadline in starting:
            wait_until_up(command, process, deadline)
        print(f"{time.monotonic() - began:6.1f} s  every server up; done")
    finally:
        for process in running:
            stop_process(process, 60, group=True)
    # What the blocks were for: experiments to compare, an offline plots page, conversations,
    # the data pushed to the DVC remote beside the clone.
    assert (path / "dvc_plots/index.html").is_file()
    assert any((path.parent / "custseg-dvc-remote").rglob("*")), "dvc push wrote nothing"
    conversations = (path / "data/conversations.jsonl").read_text().splitlines()
    committed = (ROOT / "data/conversations.jsonl").read_text().splitlines()
    sample_tasks = len(read_tasks(ROOT / "eval/tasks.yaml"))
    assert len(conversations) == len(committed) + sample_tasks + 1, "the samples and the docs'"
