"""The judge's replies on disk: a cache keyed by everything that shapes a reply, and seed files.

`JudgeCache` keeps one JSON file per reply under the user's cache directory, with a read-only
fallback: the replies a JSONL file carries (`read_seed`, written by `seed_text`). The repository
commits two such files, the eval stage's (data/judge_cache.jsonl) and calibration's
(eval/calibration_judge_cache.jsonl), so unchanged prompts cost no judge call on a fresh clone.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any

from custseg import jsonl
from custseg.config import directory_from_env
from custseg.errors import ConfigError
from custseg.io import write_text_atomic
from custseg.llm.base import Completion, TokenLogprob, TopLogprob

CACHE_ENV = "CUSTSEG_JUDGE_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/custseg/judge")
CACHE_VERSION = 1  # bump when the stored entry format changes


def cache_dir(param: Path | str | None = None) -> Path:
    """Where judge replies are kept: $CUSTSEG_JUDGE_CACHE, else `eval.cache_dir`, else
    ~/.cache/custseg/judge (a user directory, so it survives fresh clones). Created if missing;
    ConfigError (one line) if it cannot be a writable directory: checked before any judge call,
    whose reply could not be kept."""
    source = "eval.cache_dir" if param else "the judge cache"
    path = directory_from_env(CACHE_ENV, param or DEFAULT_CACHE_DIR, default_source=source)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # not a file in the way (checked above): permissions, a full disk
        raise ConfigError(f"judge cache {path}: {(error.strerror or str(error)).lower()}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"judge cache {path}: not writable")
    return path


def cache_key(kind: str, prompt: str, settings: dict[str, Any]) -> str:
    """sha256 over (kind, prompt, settings) as canonical JSON."""
    payload = json.dumps(
        {"v": CACHE_VERSION, "kind": kind, "prompt": prompt, "settings": settings},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class JudgeCache:
    """One small JSON file per key under `root/<2 hex>/<key>.json`, written atomically.

    `seed` is a read-only fallback (the replies the repository carries for its committed
    conversations, see `read_seed`); `used` collects every reply this cache returned or stored,
    so a run can write exactly the seed its conversations need.
    """

    def __init__(self, root: Path, seed: dict[str, dict[str, Any]] | None = None) -> None:
        self.root = Path(root)
        self.seed = seed or {}
        self.used: dict[str, dict[str, Any]] = {}

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            value = json.loads(self._path(key).read_text())
        except (FileNotFoundError, ValueError):  # ValueError: bad JSON, bad UTF-8
            value = None  # a corrupt entry is just a miss
        if not _usable_reply(value):
            value = self.seed.get(key)
        if value is not None:
            self.used[key] = value
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        write_text_atomic(self._path(key), jsonl.dumps_line(value))  # any reply text round-trips
        self.used[key] = value


def mean_call_seconds(cache: JudgeCache, sample: int = 200) -> float | None:
    """The judge's measured cost per call: the mean latency of the replies this cache holds
    (the seed's, else up to `sample` of the user cache's); None when it holds none."""
    replies = list(cache.seed.values())
    if not replies and cache.root.is_dir():
        for path in itertools.islice(cache.root.glob("*/*.json"), sample):
            with contextlib.suppress(OSError, ValueError):
                if isinstance(reply := json.loads(path.read_text()), dict):
                    replies.append(reply)
    seconds = [r["latency_s"] for r in replies if _is_number(r.get("latency_s"))]
    return sum(seconds) / len(seconds) if seconds else None


def read_seed(path: Path) -> dict[str, dict[str, Any]]:
    """The judge replies a JSONL file carries (`{"key": …, "value": {…}}` per line); a missing
    file is empty, and a line that is not such an entry is ignored (it can only cost a call)."""
    try:
        entries = jsonl.read(path).values
    except FileNotFoundError:
        return {}
    seed: dict[str, dict[str, Any]] = {}
    for entry in entries:
        usable = isinstance(entry, dict) and isinstance(entry.get("key"), str)
        if usable and _usable_reply(entry.get("value")):
            seed[entry["key"]] = entry["value"]
    return seed


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _usable_reply(value: object) -> bool:
    """A stored reply the judge can read back (right fields, right types)."""
    try:
        reply = completion_from_dict(value)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, AttributeError):
        return False
    tokens = reply.logprobs or ()
    return (
        isinstance(reply.text, str)
        and isinstance(reply.model, str)
        and all(map(_is_number, (reply.prompt_tokens, reply.completion_tokens, reply.latency_s)))
        and all(
            isinstance(t.token, str)
            and _is_number(t.logprob)
            and all(isinstance(x.token, str) and _is_number(x.logprob) for x in t.top_logprobs)
            for t in tokens
        )
    )


def write_seed(path: Path, used: dict[str, dict[str, Any]]) -> None:
    """`used` as the seed file `read_seed` reads: one sorted, stable line per reply."""
    jsonl.write(path, ({"key": key, "value": used[key]} for key in sorted(used)), sort_keys=True)


def completion_to_dict(completion: Completion) -> dict[str, Any]:
    return {
        "text": completion.text,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "latency_s": completion.latency_s,
        "model": completion.model,
        "finish_reason": completion.finish_reason,
        "logprobs": None
        if completion.logprobs is None
        else [
            [t.token, t.logprob, [[x.token, x.logprob] for x in t.top_logprobs]]
            for t in completion.logprobs
        ],
    }


def completion_from_dict(data: dict[str, Any]) -> Completion:
    logprobs = data.get("logprobs")
    return Completion(
        text=data["text"],
        prompt_tokens=data["prompt_tokens"],
        completion_tokens=data["completion_tokens"],
        latency_s=data["latency_s"],
        model=data["model"],
        finish_reason=data.get("finish_reason", "stop"),
        logprobs=None
        if logprobs is None
        else tuple(
            TokenLogprob(tok, lp, tuple(TopLogprob(t, p) for t, p in tops))
            for tok, lp, tops in logprobs
        ),
    )
