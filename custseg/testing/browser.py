"""The app served for a real browser: `make app`'s command line on a free port, its health
check, and Debian's Chromium with flags that keep it on 127.0.0.1 (never a downloaded browser)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from custseg.net import free_port, wait_until_answers
from custseg.testing.sandbox import project_env

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_HINT = "chromium not found at /usr/bin/chromium: run `apt-get install -y chromium`"
# Flags tested on this machine; Playwright adds --headless and a temporary profile.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The app is on 127.0.0.1: resolve no host names at all (no DNS query leaves the machine).
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
# Variables that choose what the app serves: a test or benchmark starts without them.
APP_ENV_KEYS = ("CUSTSEG_MODEL_ALIAS", "CUSTSEG_MODEL_NAME", "MLFLOW_UI_URL")


def streamlit_command(app: Path, port: int) -> list[str]:
    """`make app`'s command line for the entry point `app`, on another port."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.headless", "true", "--server.address", "127.0.0.1",
        "--server.port", str(port), "--browser.gatherUsageStats", "false",
    ]  # fmt: skip


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 90.0) -> float:
    """Poll `/_stcore/health` until it answers "ok"; return the seconds waited."""
    return wait_until_answers(
        f"{url}/_stcore/health",
        process,
        timeout_s,
        name="streamlit",
        accept=lambda body: body.strip() == b"ok",
        interval_s=0.2,
    )


def stop_process(process: subprocess.Popen, timeout_s: float = 15.0, group: bool = False) -> None:
    """SIGTERM the server by PID, SIGKILL it if it lingers. `group`: signal its whole process
    group (started with start_new_session=True), e.g. `make` or MLflow and the children they run."""
    if process.poll() is not None:
        return
    send = (lambda sig: os.killpg(process.pid, sig)) if group else process.send_signal
    send(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(timeout_s)


@contextmanager
def running_app(
    app: Path, project: Path, log: Path
) -> Iterator[tuple[str, subprocess.Popen, float]]:
    """`streamlit run <app>` on a free loopback port in `project`; yields (url, process, start
    time). The server is stopped by its PID on exit, whatever happens."""
    port = free_port()
    env = {**os.environ, **project_env(project)}
    for key in APP_ENV_KEYS:
        env.pop(key, None)
    started = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            streamlit_command(app, port), cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield f"http://127.0.0.1:{port}", process, started
    finally:
        stop_process(process)


def set_slider(page: Any, label: str, value: int) -> None:
    """Move the Playwright `page`'s slider labelled `label` to `value` with the keyboard, one
    press a step as a user does, then wait until the page shows the value."""
    slider = page.get_by_role("slider", name=label)
    current = int(slider.get_attribute("aria-valuetext"))
    slider.focus()
    key = "ArrowRight" if value > current else "ArrowLeft"
    for _ in range(abs(value - current)):
        page.keyboard.press(key)
    page.wait_for_function(
        '([label, value]) => document.querySelector(`input[aria-label="${label}"]`)'
        "?.getAttribute('aria-valuetext') === String(value)",
        arg=[label, value],
    )
