"""Pipeline benchmarks: `dvc repro` fresh and no-op, and KMeans on 1,000,000 customers vs sklearn.

python bench/bench_pipeline.py [--customers 1000000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import env, report, run, sandbox, timed

from custseg.config import SimulateParams, TrainParams
from custseg.features import FEATURES
from custseg.pipeline.data import simulate_customers
from custseg.pipeline.segments import fit_segments
from custseg.tracking import TEMPLATE_DIR_ENV


def bench_repro() -> None:
    # A template directory of its own: the first run on a "new machine" builds the migrated
    # MLflow store template, a fresh clone on a machine that has one copies it.
    templates = {TEMPLATE_DIR_ENV: tempfile.mkdtemp(prefix="custseg-bench-templates-")}
    first, clone = sandbox(), sandbox()
    try:
        report(
            "dvc repro, first ever on a machine (migrates MLflow)",
            run(["dvc", "repro", "export"], first, templates),
            "s",
        )
        report(
            "dvc repro, fresh clone (mlflow.db from the template)",
            run(["dvc", "repro", "export"], clone, templates),
            "s",
            "goal ≤ 20 s",
        )
        report("dvc repro, no-op", run(["dvc", "repro", "export"], clone), "s", "goal ≤ 1.5 s")
        report(
            "dvc repro --force, existing mlflow.db",
            run(["dvc", "repro", "--force", "export"], clone),
            "s",
            "goal ≤ 20 s",
        )
    finally:
        for path in (first, clone, Path(templates[TEMPLATE_DIR_ENV])):
            shutil.rmtree(path)


def bench_fit(n: int) -> None:
    from sklearn.cluster import KMeans

    X = simulate_customers(SimulateParams(n_customers=n), seed=42)[FEATURES].astype(float)
    params = TrainParams()
    plain = KMeans(
        n_clusters=5,
        init=params.init,
        n_init=params.n_init,
        max_iter=params.max_iter,
        random_state=42,
    )
    # Alternate the two so drift in machine load affects both alike; keep the best of each.
    ours_s, plain_s = [], []
    for _ in range(2):
        seconds, ours = timed(lambda: fit_segments(X, 5, params, 42))
        ours_s.append(seconds)
        seconds, _ = timed(lambda: plain.fit(X[FEATURES]))
        plain_s.append(seconds)
    report(f"fit_segments, {n:,} customers, k=5", min(ours_s), "s")
    report("plain sklearn KMeans, same data and parameters", min(plain_s), "s")
    report("  ratio fit_segments / sklearn", min(ours_s) / min(plain_s), "x", "goal ≤ 1.2")
    report(
        "  inertia ratio fit_segments / sklearn", ours.inertia_ / plain.inertia_, "x", "goal ≤ 1.0"
    )


PEAK_RSS = """
import resource, runpy, sys
sys.argv = ["stages/train.py"]
try:
    runpy.run_path("stages/train.py", run_name="__main__")
finally:
    print("peak_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def bench_train_stage(n: int) -> None:
    """The whole train stage (k sweep 2..10, MLflow logging) on n customers, in a subprocess."""
    path = sandbox()
    try:
        params = path / "params.yaml"
        params.write_text(params.read_text().replace("n_customers: 200", f"n_customers: {n}"))
        run([sys.executable, "stages/simulate.py"], path)
        seconds, done = timed(
            lambda: subprocess.run(
                [sys.executable, "-c", PEAK_RSS],
                cwd=path,
                env=env(),
                capture_output=True,
                text=True,
                check=True,
            )
        )
        peak_kib = int(done.stderr.rsplit("peak_kib", 1)[1])
        report(f"train stage, {n:,} customers, k sweep 2..10 + MLflow", seconds, "s")
        report("  peak memory (max RSS of the stage)", peak_kib / 1024, "MiB")
    finally:
        shutil.rmtree(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--customers", type=int, default=1_000_000, help="size of the large data set"
    )
    parser.add_argument(
        "--skip-stage", action="store_true", help="skip the full train stage on large data"
    )
    args = parser.parse_args()
    bench_repro()
    bench_fit(args.customers)
    if not args.skip_stage:
        bench_train_stage(args.customers)


if __name__ == "__main__":
    main()
