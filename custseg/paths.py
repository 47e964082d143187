"""Where the pipeline reads and writes, relative to the project root (where DVC runs stages).

dvc.yaml names the same files as deps and outs; a test checks that the two agree.
"""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")
DVC_YAML = Path("dvc.yaml")
PARAMS_CHECKED = Path("models/params.ok")  # stage `params`: every stage waits for this check
CUSTOMERS = Path("data/customers.csv")  # simulate → train; the app's segment map
# With simulate.format: parquet the customers are data/customers.parquet instead (dvc.yaml:
# data/customers.${simulate.format}); the spark engine reads it directly.
CUSTOMERS_PARQUET = CUSTOMERS.with_suffix(".parquet")


def customers_path(data_format: str) -> Path:
    """Where simulate writes the customers for `simulate.format` (csv | parquet)."""
    return CUSTOMERS_PARQUET if data_format == "parquet" else CUSTOMERS


TRAIN_RUN = Path("models/train_run.json")  # train → export: the MLflow run and its model
MODEL_INFO = Path("models/model_info.json")  # export: the registered version and the decision
TRAIN_METRICS = Path("metrics/train.json")
EXPORT_METRICS = Path("metrics/export.json")  # the gate's decision and scores, for dvc exp show
K_SWEEP = Path("plots/k_sweep.csv")
TASKS = Path("eval/tasks.yaml")  # the agents' sample tasks (`custseg submit`)
CONVERSATIONS = Path("data/conversations.jsonl")  # `custseg capture` → eval
EVAL_RESULTS = Path("data/eval_results.jsonl")
EVAL_METRICS = Path("metrics/eval.json")
MONITOR_METRICS = Path("metrics/monitor.json")  # stage monitor → the app's Monitoring page
# What the app, batch and REST scored (git-ignored but for its _README.md): stage monitor reads it.
SCORED = Path("data/scored")
# The judge's replies for the committed conversations: a fresh clone re-scores them with no call.
JUDGE_SEED = Path("data/judge_cache.jsonl")
CALIBRATION = Path("eval/calibration.yaml")  # the judge's labeled pairs (`custseg eval calibrate`)
# The bundled judge's replies for those pairs (`custseg eval calibrate --save-replies`): read back
# as a fallback cache, so anyone re-derives the calibration numbers with no judge call.
CALIBRATION_REPLIES = Path("eval/calibration_judge_cache.jsonl")
# The calibration table (DVC stage `calibrate`, a dvc metric; the README table is read from it).
CALIBRATION_METRICS = Path("metrics/calibration.json")
