"""One typed model of params.yaml, validated before any stage writes anything."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from custseg.errors import ConfigError
from custseg.features import BOUNDS, INCOME, MALL_HEADERS, SPENDING
from custseg.paths import PARAMS


class _Section(BaseModel):
    # Unknown keys are typos more often than not: refuse them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseParams(_Section):
    seed: int = Field(42, ge=0)


class Range(_Section):
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min > self.max:
            raise ValueError(f"min ({self.min:g}) > max ({self.max:g})")
        return self


class IncomeParams(Range):
    """Annual income in k$: normal(mean, std) clipped to [min, max]."""

    min: float = BOUNDS[INCOME][0]
    max: float = BOUNDS[INCOME][1]
    mean: float = 60
    std: float = Field(15, gt=0)


class SpendingParams(Range):
    """Spending score: uniform integers in [min, max]."""

    min: float = BOUNDS[SPENDING][0]
    max: float = BOUNDS[SPENDING][1]


class ColumnMapping(_Section):
    """Which columns of a user's CSV hold each field (`customer_id` is optional)."""

    annual_income: str = MALL_HEADERS[INCOME]
    spending_score: str = MALL_HEADERS[SPENDING]
    customer_id: str | None = None


class SimulateParams(_Section):
    n_customers: int = Field(200, ge=1, le=50_000_000)
    income: IncomeParams = IncomeParams()
    spending: SpendingParams = SpendingParams()
    # parquet: data/customers.parquet instead of .csv, for large n_customers: ~10x faster to
    # write and read, and the spark engine reads it directly.
    format: Literal["csv", "parquet"] = "csv"
    source: Path | None = None  # a CSV, or a Parquet file or folder
    columns: ColumnMapping = ColumnMapping()


class KRange(_Section):
    min: int = Field(2, ge=2)
    max: int = Field(10, ge=2)

    @model_validator(mode="after")
    def _ordered(self) -> KRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) > max ({self.max})")
        return self


# Spark master URLs as Spark documents them; anything else fails here, before Spark starts.
SPARK_MASTER = re.compile(
    r"^(local(\[(\*|[1-9]\d*)(,[1-9]\d*)?\])?"
    r"|local-cluster\[\d+,\d+,\d+\]"
    r"|spark://[^\s/:,]+:\d+(,[^\s/:,]+:\d+)*"
    r"|yarn|k8s://\S+|mesos://\S+)$"
)


class SparkParams(_Section):
    """The spark engine: where it runs and how it converges (train.engine: spark)."""

    master: str = "local[*]"
    driver_memory: str = Field("2g", pattern=r"^\d+[kmgt]?$")
    # Spark's convergence test moves no center more than this (sklearn's tol is relative).
    tol: float = Field(1e-4, gt=0)
    # k-means|| seeds well; each restart is a whole Spark job per k, so one by default.
    n_init: int = Field(1, ge=1)
    conf: dict[str, str | int | float | bool] = {}  # extra `spark.*` settings, passed unchanged

    @field_validator("master")
    @classmethod
    def _master_url(cls, value: str) -> str:
        if not SPARK_MASTER.match(value):
            raise ValueError(
                "not a Spark master URL (local, local[N], local[*], spark://host:port, yarn, "
                "k8s://..., mesos://...)"
            )
        return value

    @field_validator("conf")
    @classmethod
    def _spark_keys(cls, value: dict) -> dict:
        for key in value:
            if not key.startswith("spark.") or key == "spark.master":
                raise ValueError(f"{key!r}: only spark.* settings, and the master as master:")
        return value


class TrainParams(_Section):
    n_clusters: int | Literal["auto"] = 5
    k_range: KRange = KRange()
    init: Literal["k-means++", "random"] = "k-means++"
    n_init: int = Field(10, ge=1)
    max_iter: int = Field(300, ge=1)
    # Silhouette is O(n²): score a fixed-seed sample of this many customers on large data.
    silhouette_sample: int = Field(10_000, ge=100)
    experiment: str = Field("customer-segmentation", min_length=1)
    engine: Literal["sklearn", "spark"] = "sklearn"
    spark: SparkParams = SparkParams()

    @field_validator("n_clusters", mode="before")
    @classmethod
    def _k_or_auto(cls, value: object) -> object:
        if value == "auto" or (type(value) is int and value >= 2):
            return value
        raise ValueError("must be an integer ≥ 2 or 'auto'")


class ExportParams(_Section):
    model_name: str = Field("customer-segments", min_length=1, pattern=r"^[\w.-]+$")
    alias: str = Field("champion", pattern=r"^[A-Za-z_][\w-]*$")
    candidate_alias: str = Field("candidate", pattern=r"^[A-Za-z_][\w-]*$")
    # A candidate becomes champion unless, on its own data, its silhouette is worse than the
    # champion's by more than this.
    tolerance: float = Field(0.01, ge=0, le=2)
    # Stability: the least adjusted Rand index between the two models' segments (None: off).
    min_ari: float | None = Field(None, ge=-1, le=1)
    # Promote even when the gate says no (or the champion cannot score this data).
    force: StrictBool = False


class LLMParams(_Section):
    """The LLM behind the agents and the judge; CUSTSEG_LLM_* environment variables override."""

    provider: Literal["local", "ollama", "openai"] = "local"
    # local: the bundled GGUF's id; ollama: a pulled model such as qwen2.5:1.5b; openai: any name.
    model: str = Field("qwen2.5-coder-1.5b-instruct-q4_k_m", min_length=1)
    base_url: str | None = None  # ollama: http://127.0.0.1:11434; openai: required
    api_key_env: str = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # never the key
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(512, ge=1, le=32_768)
    timeout: float = Field(120, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    context_size: int = Field(4096, ge=512)  # local only
    threads: int | None = Field(None, ge=1)  # local only; default: all cores


class TopicNames(_Section):
    tasks: str = "agent.tasks"
    plans: str = "agent.plans"
    drafts: str = "agent.drafts"
    finals: str = "agent.finals"
    dlq: str = "agent.dlq"
    retries: str = "agent.retries"  # inputs whose LLM call failed, read again once due


class RoleTokens(_Section):
    """Reply budgets per agent: enough for a useful answer, small enough for a 2-core CPU."""

    planner: int = Field(160, ge=16)
    writer: int = Field(256, ge=16)
    reviewer: int = Field(384, ge=16)


class AgentsParams(_Section):
    """Planner → Writer → Reviewer over Kafka (KAFKA_BOOTSTRAP_SERVERS picks the cluster)."""

    topics: TopicNames = TopicNames()
    partitions: int = Field(3, ge=1, le=1000)
    group_prefix: str = Field("custseg", pattern=r"^[\w.-]+$")
    # Capture processes; worker k reads partitions p % N == k of every topic (default: one per
    # partition). One conversation's records share a key, so they meet in one worker.
    capture_workers: int | None = Field(None, ge=1)
    max_tokens: RoleTokens = RoleTokens()
    # The agent variant the submitted tasks ask for, recorded in every envelope;
    # `custseg eval compare` pairs two variants' scores by task. Within the envelope's rule
    # (custseg.conversation.Variant, 1-32 characters; not imported: the params stage's deps stay
    # few), and a plain name, as it becomes a table column and an MLflow param.
    variant: str = Field("v1", min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

    @model_validator(mode="after")
    def _workers_fit(self) -> AgentsParams:
        if self.capture_workers and self.capture_workers > self.partitions:
            raise ValueError(
                f"capture_workers ({self.capture_workers}) > partitions ({self.partitions}): "
                "each worker needs a partition of its own"
            )
        return self

    @property
    def workers(self) -> int:
        return self.capture_workers or self.partitions


class EvalThresholds(_Section):
    """Pass marks (0–1) per GEval definition; helpfulness covers both draft and final."""

    plan_quality: float = Field(0.52, ge=0, le=1)  # from calibration (eval/calibration.yaml)
    helpfulness: float = Field(0.5, ge=0, le=1)
    improvement: float = Field(0.55, ge=0, le=1)  # 0.5 = the final only as good as the draft
    grounding: float = Field(0.6, ge=0, le=1)


class EvalParams(_Section):
    """GEval scoring of captured conversations by the `llm:` judge, cached on disk."""

    experiment: str = Field("agent-evaluation", min_length=1)
    cache_dir: Path | None = None  # default ~/.cache/custseg/judge; CUSTSEG_JUDGE_CACHE overrides
    max_tokens: int = Field(128, ge=16, le=4096)  # judge reply budget (score + short reason)
    top_logprobs: int = Field(20, ge=1, le=20)
    thresholds: EvalThresholds = EvalThresholds()


class MonitorParams(_Section):
    """Drift of scored customers from the served version's training data (custseg monitor)."""

    min_rows: int = Field(100, ge=10)  # fewer scored rows tell nothing reliable
    # Chance that a window like the training data is flagged (split over every test).
    alpha: float = Field(0.01, gt=0, lt=1)
    psi_bins: int = Field(10, ge=2, le=100)
    psi_drift: float = Field(0.05, gt=0)  # a feature drifted: significant and PSI ≥ this
    psi_retrain: float = Field(0.25, gt=0)  # the usual "significant shift" mark of PSI
    share_drift: float = Field(0.05, gt=0, le=1)  # a segment moved: share changed by this much
    share_retrain: float = Field(0.1, gt=0, le=1)
    window_days: int | None = Field(None, ge=1)  # stage monitor: the last N days of data/scored

    @model_validator(mode="after")
    def _ordered(self) -> MonitorParams:
        if self.psi_retrain < self.psi_drift:
            raise ValueError(f"psi_retrain ({self.psi_retrain:g}) < psi_drift ({self.psi_drift:g})")
        if self.share_retrain < self.share_drift:
            raise ValueError(
                f"share_retrain ({self.share_retrain:g}) < share_drift ({self.share_drift:g})"
            )
        return self


class Params(_Section):
    base: BaseParams = BaseParams()
    simulate: SimulateParams = SimulateParams()
    train: TrainParams = TrainParams()
    export: ExportParams = ExportParams()
    llm: LLMParams = LLMParams()
    agents: AgentsParams = AgentsParams()
    eval: EvalParams = EvalParams()
    monitor: MonitorParams = MonitorParams()


def _describe(error: ValidationError, source: str) -> str:
    """The first validation problem as `source: key.path: message`."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"{source}: {key}: unknown key"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "model_type":  # e.g. `base:` left empty (None) or given a value
        message = "must be a section of `key: value` lines"
    got = first.get("input")
    return f"{source}: {key}: {message}" + ("" if isinstance(got, dict) else f" (got {got!r})")


def parse_params(raw: object, source: str = str(PARAMS)) -> Params:
    """Validate an already-loaded params mapping."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


def read_yaml(path: Path) -> object:
    """The file's YAML as loaded; ConfigError (one line naming the file) when it is missing, not
    a readable file, not UTF-8 text, not YAML, or nested too deeply to load."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a directory, not a file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(f"{path}: nested too deeply to be read as YAML") from None


def directory_from_env(
    env: str,
    default: Path | str,
    environ: Mapping[str, str] | None = None,
    default_source: str = "default",
) -> Path:
    """The directory $`env` names, else `default` (named `default_source` in errors), expanded;
    it need not exist yet. ConfigError (one line naming where the path came from) when it, or
    the nearest part of it that exists, is a file."""
    chosen = (os.environ if environ is None else environ).get(env, "").strip()
    path = Path(chosen or default).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        what = "not a directory" if existing == path else f"{existing} is not a directory"
        raise ConfigError(f"{'$' + env if chosen else default_source}: {path}: {what}")
    return path


def load_params(path: Path | str = PARAMS) -> Params:
    """Read and validate params.yaml; raise ConfigError with one line naming the bad key."""
    return parse_params(read_yaml(Path(path)), str(path))


def _has_key(raw: dict, dotted: str) -> bool:
    node: object = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def check_params_file(path: Path | str, dvc_params: list[str]) -> Params:
    """Validate params.yaml as a whole, and check that every key DVC's stages track
    (`dvc_params`, e.g. "base.seed", "export") is present: DVC fails on a missing one only after
    it has started a stage. Raises ConfigError naming the first problem in one line."""
    raw = read_yaml(Path(path))
    params = parse_params(raw, str(path))  # a mapping of sections, or ConfigError
    missing = [key for key in dvc_params if not _has_key(raw or {}, key)]
    if missing:
        raise ConfigError(
            f"{path}: {missing[0]}: missing (dvc.yaml's stages track it"
            + (f"; also missing: {', '.join(missing[1:])})" if missing[1:] else ")")
        )
    return params
