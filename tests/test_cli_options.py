"""Numeric options of the `custseg` commands: a bad value is argparse's one error line naming
the option (exit 2), before anything starts; good values pass through as numbers."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from custseg.cli import main
from custseg.entrypoint import port, positive_int, positive_seconds, share

# (command line before the value, option): every numeric option a command has.
OPTIONS = [
    (["serve"], "--port"),
    (["serve"], "--max-body-mb"),
    (["llm", "serve"], "--port"),
    (["llm", "check"], "--max-tokens"),
    (["kafka", "status"], "--port"),
    (["kafka", "status"], "--controller-port"),
    (["kafka", "up"], "--timeout"),
    (["team", "status"], "--pg-port"),
    (["team", "status"], "--port"),
    (["capture"], "--idle"),
    (["capture"], "--timeout"),
    (["capture"], "--workers"),
    (["eval", "calibrate"], "--limit"),
    (["eval", "calibrate"], "--min-accuracy"),
]
# Out of range for the option only: a port past 65535, a share past 1, zero for the rest.
TOO_HIGH = {"--port": "65536", "--pg-port": "70000", "--controller-port": "65536"}
BAD = ["-1", "0x", "nan", "inf", "", "1e999"]


@pytest.mark.parametrize(
    ("command", "option"), OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
@pytest.mark.parametrize("value", BAD)
def test_a_bad_number_is_one_line_naming_the_option(
    command: list[str], option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, option, value])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"custseg {' '.join(command)}: error: argument {option}: expected")
    assert repr(value) in error


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        *((c, o, TOO_HIGH[o]) for c, o in OPTIONS if o in TOO_HIGH),
        (["eval", "calibrate"], "--min-accuracy", "1.01"),
    ],
)
def test_a_number_out_of_the_option_range_is_refused(
    command: list[str], option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([*command, option, value])
    assert f"argument {option}: expected" in capsys.readouterr().err


@given(st.integers())
def test_integer_options_take_exactly_their_range(number: int) -> None:
    for kind, low, high in ((port, 1, 65535), (positive_int, 1, None)):
        if number >= low and (high is None or number <= high):
            assert kind(str(number)) == number
        else:
            with pytest.raises(argparse.ArgumentTypeError):
                kind(str(number))


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_float_options_take_exactly_their_range(number: float) -> None:
    for kind, ok in ((positive_seconds, 0 < number < float("inf")), (share, 0 <= number <= 1)):
        if ok:
            assert kind(repr(number)) == number
        else:
            with pytest.raises(argparse.ArgumentTypeError):
                kind(repr(number))


def _all_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict:
    """Every `custseg` command line → its parser, groups included (`custseg eval`, not only its
    actions)."""
    found = {path: parser}
    for group in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        for name, sub in group.choices.items():
            found.update(_all_commands(sub, (*path, name)))
    return found


def _leaf_commands(parser: argparse.ArgumentParser) -> dict:
    """Every runnable `custseg` command line → its parser."""
    return {
        path: sub
        for path, sub in _all_commands(parser).items()
        if not any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
    }


def test_every_command_and_group_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    # A "%" in any help string (argparse %-formats them) made `custseg eval --help` a traceback.
    from custseg.cli import build_parser

    helps = {}
    for command in _all_commands(build_parser()):
        with pytest.raises(SystemExit) as stopped:
            main([*command, "--help"])
        assert stopped.value.code == 0, command
        helps[command] = capsys.readouterr().out
        assert helps[command].startswith("usage: custseg"), command
    assert {(), ("eval",), ("eval", "calibrate"), ("kafka", "up")} <= set(helps)
    assert "95 % intervals" in " ".join(helps[("eval",)].split())


# The positional arguments a command needs before its options, to get as far as reading params.
POSITIONAL = {
    ("submit",): ["a question"],
    ("promote",): ["1"],
    ("monitor",): ["--simulate-drift", "none"],
}


def test_every_command_that_reads_params_takes_params(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's claim: the commands that read params.yaml take `--params` (and read that
    file, first): a missing one is one line naming it, before anything starts."""
    from custseg.cli import build_parser

    monkeypatch.chdir(tmp_path)  # no params.yaml here: a command reading the default fails too
    with_params = [
        command
        for command, parser in _leaf_commands(build_parser()).items()
        if any("--params" in action.option_strings for action in parser._actions)
    ]
    assert {("serve",), ("promote",), ("agents",), ("eval", "calibrate")} <= set(with_params)
    for command in with_params:
        assert main([*command, *POSITIONAL.get(command, []), "--params", "nope.yaml"]) == 2
        assert capsys.readouterr().err.strip() == "error: nope.yaml: file not found", command


def test_the_help_texts_say_what_the_commands_do(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    summary = capsys.readouterr().out
    for command in ("team", "promote", "serve", "kafka"):
        assert f"\ncustseg {command} " in summary, command
    for action, meaning in (
        ("up", "seconds to wait for the started broker to answer"),
        ("down", "not used by down"),
        ("status", "not used by status"),
    ):
        with pytest.raises(SystemExit):
            main(["kafka", action, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
        assert meaning in text and "for 'up'" not in text, action
    with pytest.raises(SystemExit):
        main(["promote", "--help"])
    assert "VERSION" in capsys.readouterr().out


@given(st.text(alphabet="0123456789 +-x.", max_size=6))
def test_promote_takes_only_a_version_number(text: str) -> None:
    from custseg.cli import build_parser

    parser = build_parser()
    valid = re.fullmatch(r"\s*\+?\d+\s*", text) is not None and int(text) >= 1
    if valid:
        assert parser.parse_args(["promote", "--", text]).version == int(text)
    else:
        with pytest.raises(SystemExit):
            parser.parse_args(["promote", "--", text])


def test_the_command_line_imports_no_heavy_library_until_a_command_runs() -> None:
    # Every agent, capture and submit process (and `--help`) builds this parser: importing SciPy,
    # pandas, MLflow or scikit-learn for it cost ~2 s of CPU each time.
    code = (
        "import sys, custseg.cli; custseg.cli.build_parser(); "
        "print(' '.join(m for m in ('scipy', 'pandas', 'mlflow', 'sklearn') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"imported at parser build: {done.stdout.strip()}"
