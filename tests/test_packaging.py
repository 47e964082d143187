"""One installable distribution: a built wheel holds every module and the package data, and,
installed without the checkout, imports and runs its commands from any directory."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.fixtures.project import ROOT

IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info")
COMMANDS = [
    ["--help"],
    ["submit", "--help"],
    ["agents", "--help"],
    ["capture", "--help"],
    ["eval", "calibrate", "--help"],
    ["llm", "fetch", "--help"],
    ["kafka", "up", "--help"],
    ["mlflow", "template", "--help"],
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources (a build writes build/ beside them)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "custseg", source / "custseg", ignore=IGNORED)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(source)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [built] = out.glob("custseg-*.whl")
    return built


def test_the_wheel_holds_every_module_and_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "custseg").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sources <= names, f"missing from the wheel: {sorted(sources - names)}"
    assert not {n for n in names if n.split("/")[0] in ("stages", "tests", "eval", "app")}


def venv_with(wheel: Path, venv: Path, dependencies: list[str]) -> Path:
    """A new venv outside the checkout with the wheel installed (not editable), its
    dependencies taken from `dependencies` (site-packages folders, as plain path lines: no
    editable install's import hook)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    [site_dir] = (venv / "lib").glob("python*/site-packages")
    (site_dir / "deps.pth").write_text("\n".join(dependencies) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return venv


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel with this interpreter's site-packages as its dependencies."""
    return venv_with(wheel, tmp_path_factory.mktemp("venv"), site.getsitepackages())


def _elsewhere(*command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_installed_package_imports_from_another_directory(installed: Path, tmp_path: Path) -> None:
    python = str(installed / "bin" / "python")
    code = (
        "import custseg, custseg.agents.runtime, custseg.agents.capture, custseg.evaluation.scorer"
        ", custseg.kafka.broker, custseg.serving.batch, custseg.pipeline.segments\n"
        "from custseg.kafka.jars import resource_text\n"
        "assert 'kafka_2.13' in resource_text('pom.xml')\n"
        "print(custseg.__file__)"
    )
    done = _elsewhere(python, "-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    where = Path(done.stdout.strip())
    assert where.is_relative_to(installed), f"imported {where}, not the installed wheel"


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_console_scripts_answer_help_from_another_directory(
    installed: Path, tmp_path: Path, args: list[str]
) -> None:
    done = _elsewhere(str(installed / "bin" / "custseg"), *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: custseg")
    assert not any(tmp_path.iterdir()), "--help wrote files"


EXTRAS = {"spark": ("pyspark", "py4j"), "team": ("psycopg", "psycopg_binary")}


@pytest.fixture(scope="module")
def installed_without_extras(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel with this interpreter's site-packages minus the optional extras' packages
    (a folder of links to every other entry): what `pip install .` gives."""
    deps = tmp_path_factory.mktemp("deps")
    optional = {name for names in EXTRAS.values() for name in names}
    for site_packages in map(Path, site.getsitepackages()):
        for entry in site_packages.iterdir():
            top = entry.name.split("-")[0].split(".")[0].lower()
            if top not in optional and not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    return venv_with(wheel, tmp_path_factory.mktemp("venv-base"), [str(deps)])


def test_the_extras_are_declared(wheel: Path) -> None:
    [metadata] = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("/METADATA")]
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    for extra, (module, *_) in EXTRAS.items():
        assert f"Provides-Extra: {extra}" in text
        requirement = next(line for line in text.splitlines() if f'extra == "{extra}"' in line)
        assert module.split("_")[0] in requirement.lower(), requirement
    assert "pyarrow" in text, "pyarrow is imported, so it is declared"


def test_without_extras_every_module_imports_and_an_engine_names_its_extra(
    installed_without_extras: Path, tmp_path: Path
) -> None:
    """The pipeline, app and agents need no extra; the Spark engine and team mode say which."""
    python = str(installed_without_extras / "bin" / "python")
    code = (
        "import importlib, pkgutil, custseg\n"
        "for spec in ('pyspark', 'psycopg'):\n"
        "    assert importlib.util.find_spec(spec) is None, spec\n"
        "for m in pkgutil.walk_packages(custseg.__path__, 'custseg.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "from custseg.config import SparkParams\n"
        "from custseg.errors import ConfigError\n"
        "from custseg.pipeline.spark_engine import spark_session\n"
        "try:\n"
        "    with spark_session(SparkParams()):\n"
        "        pass\n"
        "except ConfigError as error:\n"
        "    print(error)\n"
    )
    done = _elsewhere(python, "-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "train.engine: spark needs the 'spark' extra: pip install 'custseg[spark]' "
        "(no module named 'pyspark')"
    )
    team = _elsewhere(str(installed_without_extras / "bin" / "custseg"), "team", "up", cwd=tmp_path)
    assert team.returncode == 2
    assert team.stderr.strip().splitlines() == [
        "error: custseg team up (MLflow on PostgreSQL) needs the 'team' extra: "
        "pip install 'custseg[team]' (no module named 'psycopg')"
    ]
