"""Shared entry-point plumbing: every CLI fails with one line and a non-zero code, never a trace."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from custseg.config import DEFAULT_PARAMS, ConfigError


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--params", type=Path, default=DEFAULT_PARAMS, help="params file (default: params.yaml)"
    )
    return parser


def run_cli(body: Callable[[], None]) -> int:
    """Run an entry point; a ConfigError becomes `error: <one line>` and exit code 2."""
    try:
        body()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
