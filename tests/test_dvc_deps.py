"""dvc.yaml cannot drift from the code: every stage lists as deps each project module it runs,
DVC sees an edit to any of them, and the data paths agree with custseg/paths.py."""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from custseg import paths
from custseg.testing.sandbox import copy_project
from tests.fixtures.project import ROOT

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
# dvc.yaml as DVC reads it: `${simulate.format}` and the like filled in from params.yaml.
DVC_YAML = yaml.safe_load(
    re.sub(
        r"\$\{([\w.]+)\}",
        lambda m: str(functools.reduce(dict.__getitem__, m[1].split("."), PARAMS)),
        (ROOT / "dvc.yaml").read_text(),
    )
)
STAGES = DVC_YAML["stages"]
PACKAGE = ROOT / "custseg"
CODE = ("stages/", "custseg")  # dep paths that are code, not data
# What each stage reads and writes besides code, as custseg.paths names it.
# Every stage but `params` also waits for its marker (PARAMS_CHECKED).
DATA = {
    "params": ({paths.PARAMS_CHECKED}, {paths.PARAMS}),
    "simulate": ({paths.CUSTOMERS}, {paths.PARAMS_CHECKED}),
    "train": (
        {paths.TRAIN_RUN, paths.K_SWEEP, paths.TRAIN_METRICS},
        {paths.CUSTOMERS, paths.PARAMS_CHECKED},
    ),
    "export": (
        {paths.MODEL_INFO, paths.EXPORT_METRICS},
        {paths.TRAIN_RUN, paths.CUSTOMERS, paths.PARAMS_CHECKED},
    ),
    "eval": (
        {paths.EVAL_RESULTS, paths.EVAL_METRICS, paths.JUDGE_SEED},
        {paths.CONVERSATIONS, paths.PARAMS_CHECKED},
    ),
    "monitor": ({paths.MONITOR_METRICS}, {paths.SCORED, paths.MODEL_INFO, paths.PARAMS_CHECKED}),
    "calibrate": (
        {paths.CALIBRATION_METRICS, paths.CALIBRATION_REPLIES},
        {paths.CALIBRATION, paths.PARAMS_CHECKED},
    ),
}
# Prints the project modules that importing a stage script loads, in a fresh interpreter.
LOADED = """
import json, runpy, sys
runpy.run_path(sys.argv[1])
print(json.dumps([getattr(m, "__file__", None) for m in list(sys.modules.values())]))
"""


def script(stage: str) -> Path:
    """The stage's script, from its command `python stages/<name>.py`."""
    command = STAGES[stage]["cmd"].split()
    assert command[:1] == ["python"] and command[1].startswith("stages/"), command
    return ROOT / command[1]


def names(entries: list) -> list[str]:
    """dvc.yaml list entries (a path, or {path: options}) as paths."""
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def module_file(name: str) -> Path | None:
    """The source file of a custseg module (None for anything outside the package)."""
    if name != "custseg" and not name.startswith("custseg."):
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` anywhere in `path` names (functions' lazy imports too), with the
    packages a dotted import also loads."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


@cache
def statically_reached(stage: str) -> frozenset[Path]:
    """The package's files that the stage script can reach through imports, lazy ones included."""
    reached: set[Path] = set()
    todo = [script(stage)]
    while todo:
        for name in imported_modules(todo.pop()):
            file = module_file(name)
            if file is not None and file not in reached:
                reached.add(file)
                todo.append(file)
    return frozenset(reached)


@cache
def loaded_at_import(stage: str) -> frozenset[Path]:
    """The package's files a fresh interpreter has loaded after importing the stage script."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED, str(script(stage))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    files = {Path(f).resolve() for f in json.loads(done.stdout.splitlines()[-1]) if f}
    return frozenset(f for f in files if f.is_relative_to(PACKAGE.resolve()))


def covered(file: Path, deps: list[str]) -> bool:
    relative = file.resolve().relative_to(ROOT.resolve())
    return any(relative == Path(d) or Path(d) in relative.parents for d in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_module_a_stage_runs_is_one_of_its_deps(stage: str) -> None:
    deps = names(STAGES[stage]["deps"])
    assert str(script(stage).relative_to(ROOT)) in deps
    runtime, static = loaded_at_import(stage), statically_reached(stage)
    assert runtime, "the stage loaded no project module: is it still a stage script?"
    assert runtime <= static, f"imports the AST walk missed: {sorted(runtime - static)}"
    missing = sorted(str(f.relative_to(ROOT)) for f in static if not covered(f, deps))
    assert not missing, f"dvc.yaml stage {stage!r} runs these but does not list them: {missing}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_data_paths_are_custseg_paths(stage: str) -> None:
    spec = STAGES[stage]
    outs = {Path(p) for p in names(spec.get("outs", []) + spec.get("metrics", []))}
    data_deps = {Path(p) for p in names(spec["deps"]) if not p.startswith(CODE)}
    assert (outs, data_deps) == DATA[stage]


def _git_sandbox(dest: Path) -> Path:
    copy_project(ROOT, dest)
    for name in ("dvc.lock",):
        (dest / name).write_text((ROOT / name).read_text())
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "s"]):
        subprocess.run(command, cwd=dest, env=env, check=True, capture_output=True)
    return dest


def _dvc_status(project: Path) -> dict:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(
        ["dvc", "status", "--json"], cwd=project, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _modified_deps(status: dict, stage: str) -> set[str]:
    return {
        dep
        for entry in status.get(stage, [])
        if isinstance(entry, dict)
        for dep, state in entry.get("changed deps", {}).items()
        if state == "modified"
    }


def test_the_committed_dvc_lock_matches_the_code(tmp_path: Path) -> None:
    """Code changed without `dvc repro` leaves the committed metrics stale: caught here."""
    status = _dvc_status(_git_sandbox(tmp_path / "project"))
    stale = {
        stage: sorted(d for d in _modified_deps(status, stage) if d.startswith(CODE))
        for stage in STAGES
    }
    stale = {stage: deps for stage, deps in stale.items() if deps}
    assert not stale, f"dvc.lock is stale for {stale}: run `dvc repro` and commit dvc.lock"


def test_dvc_reports_an_edit_to_any_module_a_stage_runs(tmp_path: Path) -> None:
    """One comment added to every module a stage runs: `dvc status` names each as a changed dep
    of that stage (DVC itself sees the edit: no module can hide behind a missing dep)."""
    project = _git_sandbox(tmp_path / "project")
    runs = {stage: statically_reached(stage) | {script(stage)} for stage in STAGES}
    for file in set().union(*runs.values()):
        copy = project / file.relative_to(ROOT)
        copy.write_text(copy.read_text() + "# edited by test_dvc_deps\n")
    status = _dvc_status(project)
    for stage, files in runs.items():
        changed = _modified_deps(status, stage)
        unseen = sorted(str(f.relative_to(ROOT)) for f in files if not covered(f, sorted(changed)))
        assert not unseen, f"dvc status does not see edits to {unseen} as changes of {stage}"
