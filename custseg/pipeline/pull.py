"""`custseg pull` (`make pull`): `dvc pull`, with one line saying what to do when it fails.

A fresh clone's `dvc pull` before anyone has pushed ends in DVC's "Checkout failed … Is your
cache up to date?" and a list of hashes, which does not say that nothing was pushed yet nor what
to do instead: build the outputs here (`make run`), then `dvc push` them for the others."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from custseg.errors import UserError

# DVC 3's wording when the remote (and the local cache) lacks outputs that dvc.lock names.
_MISSING = re.compile(r"Checkout failed for following targets:|Missing cache files:")
_TARGETS = re.compile(r"Checkout failed for following targets:\n(.*?)(?:\nIs your cache|\Z)", re.S)
_SHOWN = 3  # targets named in the one line; the rest are counted


def dvc_executable() -> str:
    """This environment's dvc (the venv's), found even when the shell has not activated it."""
    dvc = Path(sys.executable).with_name("dvc")
    return str(dvc) if dvc.is_file() else "dvc"


def pull_failure(output: str, exit_code: int) -> str:
    """The one line a failed `dvc pull` (its combined output) comes to."""
    if _MISSING.search(output):
        found = _TARGETS.search(output)
        targets = [t.strip() for t in found.group(1).splitlines() if t.strip()] if found else []
        named = ", ".join(sorted(targets)[:_SHOWN])
        more = f" and {len(targets) - _SHOWN} more" if len(targets) > _SHOWN else ""
        what = f" ({named}{more})" if targets else ""
        return (
            f"the DVC remote lacks outputs that dvc.lock names{what}: nothing has been pushed "
            "there yet; run `make run` to build them here, then `dvc push`"
        )
    lines = [line.strip() for line in output.splitlines()]
    errors = [line[len("ERROR:") :].strip() for line in lines if line.startswith("ERROR:")]
    # DVC's first ERROR line says why; else its first line; else only the exit code is known.
    said = next((text for text in [*errors, *lines] if text), f"exit {exit_code}")
    return f"dvc pull failed: {said}"


def pull(arguments: Sequence[str] = ()) -> str:
    """Run `dvc pull ARGUMENTS`; its output when it succeeds, else a UserError in one line."""
    done = subprocess.run(
        [dvc_executable(), "pull", *arguments], capture_output=True, text=True, check=False
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise UserError(pull_failure(output, done.returncode))
    return output.strip()
