"""Numeric options of the `custseg` commands: a bad value is argparse's one error line naming
the option (exit 2), before anything starts; good values pass through as numbers."""

from __future__ import annotations

import argparse

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
