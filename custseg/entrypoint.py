"""What every entry point shares (stages and `custseg` commands): the one `--params` option and
the one place a UserError becomes `error: <one line>` and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from custseg.errors import UserError
from custseg.paths import PARAMS
from custseg.telemetry import disable_telemetry

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def params_option() -> argparse.ArgumentParser:
    """A parent parser holding `--params`, for `parents=[...]` of any command's parser."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--params", type=Path, default=PARAMS, help=f"params file (default: {PARAMS})"
    )
    return parent


def stage_parser(description: str | None) -> argparse.ArgumentParser:
    """A DVC stage's command line: `--help` and `--params`."""
    return argparse.ArgumentParser(description=description, parents=[params_option()])


def run_stage(stage: Callable[[Path], str], argv: list[str] | None = None) -> int:
    """A DVC stage's entry point: `--help` (the stage's docstring) and `--params`, then
    `stage(params_path)`, whose summary is printed; errors as in `run`."""
    args = stage_parser(stage.__doc__).parse_args(argv)
    return run(lambda: print(stage(args.params)))


def run(body: Callable[[], int | None]) -> int:
    """Run an entry point's body; return its exit code: the body's (default 0), 2 on a
    UserError, 130 on Ctrl-C."""
    disable_telemetry()
    try:
        return body() or 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def exit_now(code: int) -> NoReturn:
    """End the process with `code` at once, without the interpreter's shutdown.

    For a command whose threads may still be inside native code once its work is saved: an
    abandoned call to the in-process llama.cpp keeps decoding, and releasing that server at
    exit waits for the decode to end while holding the GIL (seen: 575 s after main returned).
    The kernel ends those threads; only stdout and stderr are flushed, no atexit handler runs."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)


def _literal(help_text: str) -> str:
    """`help_text` as argparse prints it: it %-formats every help string (a listed command's
    too), so "95 % intervals" crashed the group's --help; descriptions are printed as given."""
    return help_text.replace("%", "%%")


def add_command(
    commands: argparse._SubParsersAction,
    name: str,
    summary: str,
    run: Callable[[argparse.Namespace], int | None],
    *,
    params: bool = False,
) -> argparse.ArgumentParser:
    """One `custseg` (sub)command: `summary` as its help and description, `run(args)` as what it
    does, and `--params` when it reads params.yaml. Returns the parser for its own options."""
    parser = commands.add_parser(
        name,
        help=_literal(summary),
        description=summary,
        parents=[params_option()] if params else [],
    )
    parser.set_defaults(run=run)
    return parser


def command_group(
    commands: argparse._SubParsersAction, name: str, summary: str, description: str
) -> argparse._SubParsersAction:
    """A `custseg <name> ACTION` group; returns where its actions are added."""
    group = commands.add_parser(name, help=_literal(summary), description=description)
    return group.add_subparsers(dest="action", required=True, metavar="ACTION")


# Types for numeric options: a bad value is argparse's one error line naming the option
# ("argument --port: expected a port 1-65535, got '99999'"), before anything starts.


def _number(text: str, kind: type[int] | type[float]) -> int | float | None:
    try:
        value = kind(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _ranged(
    name: str, kind: type[int] | type[float], fits: Callable[[Any], bool], expected: str
) -> Callable[[str], Any]:
    """An argparse type: `text` as a finite `kind` for which `fits` holds, else its error."""

    def parse(text: str) -> Any:
        value = _number(text, kind)
        if value is None or not fits(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = name
    return parse


positive_int = _ranged("positive_int", int, lambda v: v >= 1, "a whole number >= 1")
port = _ranged("port", int, lambda v: 1 <= v <= 65535, "a port 1-65535")
positive_seconds = _ranged("positive_seconds", float, lambda v: v > 0, "a number of seconds > 0")
share = _ranged("share", float, lambda v: 0 <= v <= 1, "a number from 0 to 1")


def duration(seconds: float) -> str:
    """A time estimate as people read it: '45 s', '9.5 min', '2.1 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
