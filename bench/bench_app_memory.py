"""The app's memory around large uploads: does it come back once the sessions are closed?

Five browser sessions (one chromium, a context each) upload the same 1M-row CSV (~14 MB) to the
Batch page at once and wait for "Scored 1,000,000 customers"; then their contexts close. The
streamlit process's resident size (/proc) is read before, at the peak, and 30 s after the close
(the app drops closed sessions' results and returns free memory every 20 s), for two rounds;
then once more after Streamlit's disconnected-session TTL (120 s), when the app has dropped
the uploads of sessions that can no longer reconnect. The baseline is the size before the first
round, in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import ROOT

from custseg.serving.memory import TRIM_EVERY_S, resident_bytes
from custseg.telemetry import disable_telemetry

TIMEOUT_MS = 300_000
SETTLE_S = 30.0
SESSION_TTL_S = 120.0  # Streamlit's server.disconnectedSessionTTL default


def customers_csv(rows: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    income, spending = rng.integers(15, 141, rows), rng.integers(1, 101, rows)
    lines = (f"c{i},{a},{b}" for i, a, b in zip(range(rows), income, spending, strict=True))
    return ("customer_id,annual_income,spending_score\n" + "\n".join(lines) + "\n").encode()


def upload_round(browser, url: str, data: bytes, sessions: int, rows: int) -> None:
    pages = []
    for _ in range(sessions):
        page = browser.new_context().new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{url}/batch")
        page.get_by_text("Score a file of customers").wait_for()
        pages.append(page)
    for page in pages:
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
            {"name": "customers.csv", "mimeType": "text/csv", "buffer": data}
        )
    for page in pages:
        page.get_by_text(f"Scored {rows:,} customers").wait_for()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    disable_telemetry()

    from playwright.sync_api import sync_playwright

    from custseg.testing.browser import (
        APP_ENV_KEYS,
        CHROMIUM,
        CHROMIUM_ARGS,
        running_app,
        wait_healthy,
    )
    from custseg.testing.sandbox import build_trained_project

    data = customers_csv(args.rows)
    mib = 2**20
    with tempfile.TemporaryDirectory(prefix="bench-app-memory-") as tmp:
        project = build_trained_project(ROOT, Path(tmp), clear=APP_ENV_KEYS)
        with running_app(ROOT / "app" / "Home.py", project, Path(tmp) / "streamlit.log") as (
            url,
            process,
            _,
        ):
            wait_healthy(url, process)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                try:  # warm: both pages once, so the baseline holds the app's own imports
                    upload_round(browser, url, b"annual_income,spending_score\n60,50\n", 1, 1)
                    for context in browser.contexts:
                        context.close()
                    time.sleep(SETTLE_S)
                    base = resident_bytes(process.pid) / mib
                    rows = []
                    for _ in range(args.rounds):
                        upload_round(browser, url, data, args.sessions, args.rows)
                        peak = resident_bytes(process.pid) / mib
                        for context in browser.contexts:
                            context.close()
                        time.sleep(SETTLE_S)
                        rows.append((peak, resident_bytes(process.pid) / mib))
                    time.sleep(SESSION_TTL_S + 2 * TRIM_EVERY_S)  # the app checks every 20 s
                    upload_round(browser, url, b"annual_income,spending_score\n60,50\n", 1, 1)
                    time.sleep(SETTLE_S)
                    expired = resident_bytes(process.pid) / mib
                finally:
                    browser.close()
    print(
        f"{args.sessions} sessions × {len(data) / 1e6:.1f} MB upload ({args.rows:,} rows); "
        f"server resident size, baseline {base:.0f} MiB"
    )
    print(f"{'round':>5} {'peak':>10} {'vs base':>8} {'closed +30 s':>13} {'vs base':>8}")
    for number, (peak, after) in enumerate(rows, 1):
        print(
            f"{number:5d} {peak:6.0f} MiB {peak / base:7.2f}× {after:9.0f} MiB {after / base:7.2f}×"
        )
    print(
        f"after the {SESSION_TTL_S:.0f} s session TTL and one new visit: {expired:.0f} MiB "
        f"{expired / base:.2f}×"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
