"""`custseg pull` (`make pull`): `dvc pull`, and one line saying what to do when the remote has
nothing yet. The clone test uses real git clones and a real, empty DVC local remote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from custseg.pipeline.pull import _MISSING, pull_failure
from tests.test_team import client_env, git_sandbox, run

NOTHING_PUSHED = (
    "nothing has been pushed there yet; run `make run` to build them here, then `dvc push`"
)
PATHS = st.lists(
    st.from_regex(r"[a-z_]{1,8}(/[a-z_.]{1,10}){0,2}", fullmatch=True), min_size=1, max_size=8
)


def _dvc_missing(targets: list[str], hashes: int) -> str:
    """DVC 3.67's output when the remote lacks what dvc.lock names (as seen on a fresh clone)."""
    return "\n".join(
        [
            "Everything is up to date.",
            "WARNING: Some of the cache files do not exist neither locally nor on remote. "
            "Missing cache files:",
            *[f"md5: {i:032x}" for i in range(hashes)],
            "ERROR: failed to pull data from the cloud - Checkout failed for following targets:",
            *targets,
            "Is your cache up to date?",
            "<https://error.dvc.org/missing-files>",
        ]
    )


@given(targets=PATHS, hashes=st.integers(0, 6))
def test_a_remote_without_the_outputs_says_what_to_do_in_one_line(
    targets: list[str], hashes: int
) -> None:
    line = pull_failure(_dvc_missing(targets, hashes), 1)
    assert "\n" not in line and line.endswith(NOTHING_PUSHED)
    shown = sorted(targets)[:3]
    assert all(t in line for t in shown)
    if len(targets) > 3:
        assert f" and {len(targets) - 3} more)" in line


@given(cause=st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1))
def test_any_other_failure_passes_through_in_one_line(cause: str) -> None:
    assume(not cause.strip().startswith("ERROR:") and not _MISSING.search(cause))
    output = f"WARNING: failed to collect 'workspace', skipping\nERROR: {cause}\nERROR: later\n"
    line = pull_failure(output, 253)
    assert line == f"dvc pull failed: {cause.strip() or 'later'}"
    assert pull_failure(f"\n  {cause}  \n", 1) == f"dvc pull failed: {cause.strip() or 'exit 1'}"
    assert pull_failure("", 7) == "dvc pull failed: exit 7"


def _custseg_pull(clone: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "custseg", "pull", *arguments],
        cwd=clone, env=client_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.clone  # two git clones and a DVC remote: the slow tier
def test_a_pull_before_anyone_pushed_says_what_to_do(tmp_path: Path) -> None:
    alice = git_sandbox(tmp_path / "alice")
    (tmp_path / "custseg-dvc-remote").mkdir()  # the committed remote, still empty
    bob = tmp_path / "bob"
    run("git", "clone", "-q", str(alice), str(bob), cwd=tmp_path)

    done = _custseg_pull(bob)
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("error: the DVC remote lacks outputs that dvc.lock names (")
    assert "data/customers.csv" in line and line.endswith(NOTHING_PUSHED)
    assert (
        not (bob / "data/customers.csv").exists() and not (bob / "models/model_info.json").exists()
    )

    # Once one stage is pushed, pulling it works; pulling everything still names what is missing.
    run("dvc", "repro", "simulate", cwd=alice)
    run("git", "add", "dvc.lock", cwd=alice)
    run("git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "data", cwd=alice)
    run("dvc", "push", "--with-deps", "simulate", cwd=alice)
    run("git", "pull", "-q", cwd=bob)
    done = _custseg_pull(bob, "simulate")
    assert done.returncode == 0, done.stderr
    assert (bob / "data/customers.csv").read_bytes() == (alice / "data/customers.csv").read_bytes()
    done = _custseg_pull(bob)
    assert done.returncode == 2 and "models/model_info.json" in done.stderr
    assert "data/customers.csv" not in done.stderr, "what was pushed is not called missing"

    # Any other failure passes through in one line.
    done = _custseg_pull(bob, "no-such-stage")
    [line] = done.stderr.splitlines()
    assert done.returncode == 2 and line.startswith("error: dvc pull failed: ")
    assert "'no-such-stage' does not exist" in line
