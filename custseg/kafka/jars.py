"""The broker's jars and the files shipped with it.

There is no Kafka package on PyPI or Debian, so the broker jars come from Maven: `pom.xml`
beside this module (package data, with `server.properties` and `log4j2.yaml`) is copied to a
cache directory keyed by its digest, where Maven fills `libs/` once per machine and pom.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from custseg.config import directory_from_env
from custseg.errors import KafkaBrokerError

CACHE_ENV = "CUSTSEG_KAFKA_CACHE"  # where the jars go; default ~/.cache/custseg/kafka
LOG_TAIL_LINES = 25


def resource_text(name: str) -> str:
    """A file shipped beside this module: pom.xml, server.properties or log4j2.yaml."""
    return resources.files(__package__).joinpath(name).read_text()


def pom_digest() -> str:
    return hashlib.sha256(resource_text("pom.xml").encode()).hexdigest()


def jars_home() -> Path:
    """Where this pom's jars live: $CUSTSEG_KAFKA_CACHE (or ~/.cache/custseg/kafka)/<digest>/.

    Keyed by the pom, so a fresh clone reuses them and a changed pom never meets stale jars.
    """
    return directory_from_env(CACHE_ENV, "~/.cache/custseg/kafka") / pom_digest()[:16]


def require_tool(tool: str, why: str) -> str:
    """Path of an executable, or a one-line error naming the Debian package to install."""
    path = shutil.which(tool)
    if path is None:
        package = {"java": "openjdk-17-jre-headless", "mvn": "maven"}.get(tool, tool)
        raise KafkaBrokerError(f"`{tool}` not found ({why}): apt-get install -y {package}")
    return path


def tail_text(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines, without Java stack frames (they would crowd out the cause)."""
    kept = [ln for ln in text.rstrip().splitlines() if not ln.lstrip().startswith(("at ", "..."))]
    return "\n".join(kept[-lines:])


def jars_ready(home: Path | None = None) -> bool:
    """True when Maven filled `home/libs` from the current pom.xml (the stamp holds its digest)."""
    stamp = (home or jars_home()) / "libs" / ".pom-sha256"
    return stamp.is_file() and stamp.read_text().strip() == pom_digest()


def fetch_jars(home: Path | None = None, force: bool = False) -> Path:
    """Fill `home/libs` (default: `jars_home()`) with the broker's jars unless already done;
    return the libs directory.

    A lock file keeps two processes (parallel tests, a `make kafka-up` during tests) from
    filling it at the same time.
    """
    home = home or jars_home()
    libs = home / "libs"
    libs.mkdir(parents=True, exist_ok=True)
    with open(libs / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if jars_ready(home) and not force:
            return libs
        mvn = require_tool("mvn", "needed once to fetch the Kafka jars")
        for old in libs.glob("*.jar"):  # a half-finished earlier fetch must not stay behind
            old.unlink()
        (home / "pom.xml").write_text(resource_text("pom.xml"))
        cmd = [mvn, "-q", "-B", "dependency:copy-dependencies", "-DoutputDirectory=libs"]
        done = subprocess.run(cmd, cwd=home, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise KafkaBrokerError(
                f"mvn could not fetch the Kafka jars:\n{tail_text(done.stdout + done.stderr)}"
            )
        (libs / ".pom-sha256").write_text(pom_digest() + "\n")
        return libs
