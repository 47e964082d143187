"""REST scoring (`custseg serve`) against in-process predict, same rows, same run.

Rows per second for batches of 1 (one request per customer) and 10,000 (one request), each
against `model.predict` on the same rows in this process (the baseline), printed as ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import ROOT

from custseg.telemetry import disable_telemetry


def rows_per_second(fn, rows: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return rows / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--singles", type=int, default=300, help="requests of one row")
    parser.add_argument("--batch", type=int, default=10_000, help="rows in the large request")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    disable_telemetry()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from custseg.serving.model import features_frame
    from custseg.testing.browser import APP_ENV_KEYS
    from custseg.testing.rest import post_json, running_scoring_server
    from custseg.testing.sandbox import build_trained_project, inside
    from custseg.tracking import configure_mlflow

    with tempfile.TemporaryDirectory(prefix="bench-rest-") as tmp:
        project = build_trained_project(ROOT, Path(tmp), clear=APP_ENV_KEYS)
        with inside(project):
            model = configure_mlflow().sklearn.load_model("models:/customer-segments@champion")
        rng = np.random.default_rng(0)
        X = features_frame(rng.uniform(15, 140, args.batch), rng.uniform(1, 100, args.batch))
        singles = [
            json.dumps({"dataframe_split": X.iloc[[i]].to_dict(orient="split", index=False)})
            for i in range(args.singles)
        ]
        big = json.dumps({"dataframe_split": X.to_dict(orient="split", index=False)}).encode()
        started = time.perf_counter()
        with running_scoring_server(project, Path(tmp) / "serve.log") as url:
            print(f"custseg serve up in {time.perf_counter() - started:.1f} s at {url}")
            status, reply = post_json(url, big)
            assert status == 200 and reply["predictions"] == model.predict(X).tolist()

            def rest_singles() -> None:
                for body in singles:
                    post_json(url, body.encode())

            results = {
                "batch of 1": (
                    rows_per_second(rest_singles, args.singles, args.repeats),
                    rows_per_second(
                        lambda: [model.predict(X.iloc[[i]]) for i in range(args.singles)],
                        args.singles,
                        args.repeats,
                    ),
                ),
                f"batch of {args.batch:,}": (
                    rows_per_second(lambda: post_json(url, big), args.batch, args.repeats),
                    rows_per_second(lambda: model.predict(X), args.batch, args.repeats),
                ),
            }
    print(f"\n{'':18s} {'REST rows/s':>14s} {'in-process rows/s':>18s} {'REST / in-process':>18s}")
    for name, (rest, local) in results.items():
        print(f"{name:18s} {rest:14,.0f} {local:18,.0f} {rest / local:17.3f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
