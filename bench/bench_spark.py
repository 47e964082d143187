"""Spark local vs scikit-learn KMeans in the same run: time, peak memory, inertia ratio, and
Spark's iterations and inertia for each tol (one k; the sweep multiplies both engines alike).

python bench/bench_spark.py [--customers 1000000 10000000] [--master local[2]] [--tol 1e-4 0.1]

Each measurement runs in its own process; peak memory is the largest sum of RSS over that
process and its children (Spark's JVM included), sampled every 0.1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from _common import env, report

K = 5
SEED = 42


def measure_sklearn(data: Path, n_init: int) -> dict:
    import pandas as pd

    from custseg.config import TrainParams
    from custseg.features import FEATURES
    from custseg.pipeline.segments import fit_segments

    start = time.perf_counter()
    X = pd.read_parquet(data)[FEATURES].astype(float)
    loaded = time.perf_counter()
    model = fit_segments(X, K, TrainParams(n_init=n_init), SEED)
    done = time.perf_counter()
    return {
        "load_s": loaded - start,
        "fit_s": done - loaded,
        "n_iter": int(model.n_iter_),
        "inertia": float(model.inertia_),
    }


def measure_spark(data: Path, master: str, tol: float) -> dict:
    from custseg.config import SparkParams, TrainParams
    from custseg.pipeline.spark_engine import SparkKMeans, spark_frame, start_spark

    params = SparkParams(master=master, tol=tol, driver_memory="4g")
    start = time.perf_counter()
    spark = start_spark(params, app_name="custseg-bench")
    started = time.perf_counter()
    frame = spark_frame(spark, data)  # Spark reads the Parquet file itself
    frame.count()  # materialise the cache: loading is not fitting
    loaded = time.perf_counter()
    model = SparkKMeans(spark, frame, params).fit_spark(K, TrainParams(), SEED)
    done = time.perf_counter()
    result = {
        "start_s": started - start,
        "load_s": loaded - started,
        "fit_s": done - loaded,
        "n_iter": int(model.summary.numIter),  # the summary lives in the JVM: read it first
        "inertia": float(model.summary.trainingCost),
    }
    spark.stop()
    return result


def child(args: argparse.Namespace) -> None:
    data = Path(args.data)
    if args.engine == "sklearn":
        result = measure_sklearn(data, args.n_init)
    else:
        result = measure_spark(data, args.master, args.tol_one)
    print("RESULT " + json.dumps(result))


def tree_rss(process: psutil.Process) -> int:
    total = 0
    try:
        tree = [process, *process.children(recursive=True)]
    except psutil.Error:  # the process has just exited
        return 0
    for proc in tree:
        with contextlib.suppress(psutil.Error):  # a child that just exited
            total += proc.memory_info().rss
    return total


def in_child(*extra: str) -> dict:
    """Run this script with `--one ...` in a fresh process; its result plus peak tree RSS."""
    command = [sys.executable, __file__, "--one", *extra]
    proc = subprocess.Popen(command, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watched, peak, stop = psutil.Process(proc.pid), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss(watched))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{err.decode()[-3000:]}")
    line = next(x for x in out.decode().splitlines() if x.startswith("RESULT "))
    return {**json.loads(line.removeprefix("RESULT ")), "peak_mib": peak[0] / 2**20}


def write_customers(n: int, path: Path) -> None:
    from custseg.config import SimulateParams
    from custseg.pipeline.data import simulate_customers

    simulate_customers(SimulateParams(n_customers=n), SEED).to_parquet(path, index=False)


def bench(n: int, master: str, tols: list[float], n_inits: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="custseg-bench-spark-") as tmp:
        data = Path(tmp, "customers.parquet")
        write_customers(n, data)
        print(f"-- {n:,} customers, k={K}, Spark {master} vs scikit-learn (same data)")
        base = {}
        for n_init in n_inits:  # 10: the sklearn engine's default (train.n_init)
            sk = base[n_init] = in_child("sklearn", str(data), "--n-init", str(n_init))
            report(f"sklearn n_init={n_init}: fit", sk["fit_s"], "s")
            report(f"  iterations / inertia {sk['inertia']:.6g}", sk["n_iter"], "it")
            report("  peak memory (process)", sk["peak_mib"], "MiB")
        runs = {}
        for tol in tols:
            sp = runs[tol] = in_child("spark", str(data), "--master", master, "--tol-one", str(tol))
            report(f"spark tol={tol:g}: session start", sp["start_s"], "s")
            report("  read Parquet + cache", sp["load_s"], "s")
            report("  fit", sp["fit_s"], "s")
            report(f"  iterations / inertia {sp['inertia']:.6g}", sp["n_iter"], "it")
            report(
                "  per iteration (fit / iterations, init included)", sp["fit_s"] / sp["n_iter"], "s"
            )
            report("  peak memory (driver + JVM)", sp["peak_mib"], "MiB")
            ratio = sp["fit_s"] / base[min(n_inits)]["fit_s"]
            report(f"  fit time ratio spark / sklearn n_init={min(n_inits)}", ratio, "x")
            best = max(n_inits)
            ratio = sp["inertia"] / base[best]["inertia"]
            report(f"  inertia ratio spark / sklearn n_init={best}", ratio, "x")
        if len(tols) >= 2:
            low, high = sorted(tols)[0], sorted(tols)[-1]
            extra = runs[low]["n_iter"] - runs[high]["n_iter"]
            if extra > 0:
                marginal = (runs[low]["fit_s"] - runs[high]["fit_s"]) / extra
                report(f"  marginal cost per iteration (tol {low:g} vs {high:g})", marginal, "s")
        one = base[min(n_inits)]
        sk_per_iter = one["fit_s"] / max(one["n_iter"], 1) / min(n_inits)
        report(f"  sklearn per iteration (n_init={min(n_inits)}, init included)", sk_per_iter, "s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--tol", type=float, nargs="+", default=[1e-4, 0.1])
    parser.add_argument(
        "--sklearn-n-init", type=int, nargs="+", default=[1, 10], help="sklearn restarts to time"
    )
    parser.add_argument("--one", nargs=2, metavar=("ENGINE", "DATA"), help=argparse.SUPPRESS)
    parser.add_argument("--n-init", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--tol-one", type=float, default=1e-4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.engine, args.data = args.one
        child(args)
        return
    for n in args.customers:
        bench(n, args.master, args.tol, args.sklearn_n_init)


if __name__ == "__main__":
    main()
