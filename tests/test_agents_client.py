"""The tasks file behind `custseg submit`: every malformed shape is one line naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from custseg.agents.client import read_tasks
from custseg.errors import ConfigError


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "just a string",
        "42",
        "{task: not in a list}",
        "- ''",
        "- 3",
        "- [nested]",
        "- {name: no task key}",
        "- ok\n- null",
        "- {task: 7}",
    ],
)
def test_a_file_that_is_not_a_list_of_tasks_is_refused_in_one_line(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        read_tasks(path)
    assert str(error.value) == f"{path}: must be a non-empty list of task strings"


def test_unreadable_and_missing_files_are_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("- [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{broken}: not valid YAML at line \d+$"):
        read_tasks(broken)
    with pytest.raises(ConfigError, match=r"^tasks file not found: .*missing\.yaml$"):
        read_tasks(tmp_path / "missing.yaml")


def test_strings_and_task_mappings_are_read_and_trimmed(tmp_path: Path) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text("- '  Which segment?  '\n- task: Write a subject line\n")
    assert read_tasks(path) == ["Which segment?", "Write a subject line"]
