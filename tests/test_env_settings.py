"""Settings read from the environment (directories, the Kafka cluster): a bad one stops the
command with one line naming the variable, before anything starts."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from custseg.agents.runtime import TIMINGS_ENV, Timings, timings_from_env
from custseg.cli import main
from custseg.config import directory_from_env
from custseg.errors import ConfigError
from custseg.kafka.admin import ENV_BOOTSTRAP
from custseg.kafka.broker import state_home
from custseg.kafka.cluster import bootstrap_servers, checked_bootstrap
from custseg.kafka.jars import jars_home
from custseg.llm.models import model_dir
from custseg.team import team_dir
from custseg.tracking import template_path
from tests.fixtures.project import ROOT

# Each directory a variable may move, and what reads it.
DIRECTORIES: dict[str, Callable[[], Path]] = {
    "CUSTSEG_KAFKA_CACHE": jars_home,
    "CUSTSEG_KAFKA_STATE": state_home,
    "CUSTSEG_MODEL_DIR": model_dir,
    "CUSTSEG_MLFLOW_TEMPLATES": template_path,
    "CUSTSEG_TEAM_DIR": team_dir,
}


@pytest.mark.parametrize("env", DIRECTORIES)
def test_a_directory_variable_naming_a_file_is_one_line(
    env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    monkeypatch.setenv(env, str(a_file))
    with pytest.raises(ConfigError, match=rf"^\${env}: {a_file}: not a directory$"):
        DIRECTORIES[env]()
    monkeypatch.setenv(env, str(a_file / "below"))
    with pytest.raises(ConfigError, match=rf"^\${env}: .*: {a_file} is not a directory$"):
        DIRECTORIES[env]()
    monkeypatch.setenv(env, str(tmp_path / "not" / "yet"))
    assert str(DIRECTORIES[env]()).startswith(str(tmp_path / "not" / "yet"))  # made when used


def test_directory_from_env_falls_back_to_the_default(tmp_path: Path) -> None:
    assert directory_from_env("X", tmp_path / "d", environ={}) == tmp_path / "d"
    assert directory_from_env("X", tmp_path / "d", environ={"X": "  "}) == tmp_path / "d"
    assert directory_from_env("X", "/nowhere", environ={"X": str(tmp_path)}) == tmp_path


def test_kafka_commands_report_a_bad_state_directory_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    monkeypatch.setenv("CUSTSEG_KAFKA_STATE", str(a_file))
    assert main(["kafka", "status"]) == 2
    assert capsys.readouterr().err == f"error: $CUSTSEG_KAFKA_STATE: {a_file}: not a directory\n"


@pytest.mark.parametrize(
    "servers",
    ["127.0.0.1:9092", "localhost:1", "kafka-1.internal:9093,kafka-2.internal:9093", "[::1]:9092"],
)
def test_good_bootstrap_servers_pass(servers: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BOOTSTRAP, servers)
    assert bootstrap_servers() == servers


@pytest.mark.parametrize(
    "servers", ["::::,@@", "localhost", "localhost:", "host:0", "host:65536", "a:1,", "a b:1"]
)
def test_bad_bootstrap_servers_are_one_line(servers: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BOOTSTRAP, servers)
    with pytest.raises(ConfigError, match=rf"^{ENV_BOOTSTRAP}: expected host:port"):
        bootstrap_servers()


@given(st.text(max_size=60))
def test_any_bootstrap_text_is_kept_or_refused_in_one_line(servers: str) -> None:
    try:
        assert checked_bootstrap(servers) == servers
    except ConfigError as error:
        assert "\n" not in str(error).replace(repr(servers), "")


def test_the_agents_waits_keep_their_production_defaults_unless_a_variable_is_set() -> None:
    assert timings_from_env({}) == Timings() == Timings(10.0, 10.0, 5.0, 30.0, 300.0, 10.0, 30.0)
    assert Timings().heartbeat_interval_ms == 3_000
    assert set(TIMINGS_ENV) == {f.name for f in dataclasses.fields(Timings)}, "one variable each"
    env = {variable: f"{n + 1}.5" for n, variable in enumerate(TIMINGS_ENV.values())}
    assert timings_from_env(env) == Timings(1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5)
    assert timings_from_env(env).heartbeat_interval_ms == 500  # a third of the session
    assert timings_from_env(dict.fromkeys(TIMINGS_ENV.values(), " ")) == Timings()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e999", "ten", "3s"])
@pytest.mark.parametrize("variable", TIMINGS_ENV.values())
def test_a_bad_agents_wait_is_one_line_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        timings_from_env({variable: value})
    assert str(refused.value) == (
        f"${variable}: expected a positive number of seconds, got {value!r}"
    )


def test_the_agents_command_refuses_a_bad_wait_before_it_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CUSTSEG_AGENTS_STUCK_S", "soon")
    monkeypatch.setenv(ENV_BOOTSTRAP, "127.0.0.1:1")  # never reached: the refusal comes first
    assert main(["agents", "--params", str(ROOT / "params.yaml")]) == 2
    assert capsys.readouterr().err == (
        "error: $CUSTSEG_AGENTS_STUCK_S: expected a positive number of seconds, got 'soon'\n"
    )
