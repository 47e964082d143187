"""Every error class of the project, in one place.

UserError is what a user can fix: every entry point prints it as `error: <one line>` and exits
with code 2 (custseg.entrypoint). The others say which part failed, so callers can catch them
without importing that part.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable


class UserError(Exception):
    """Something the user can fix; the message is one line saying what and, where it helps, how."""


class ConfigError(UserError, ValueError):
    """A bad params.yaml entry or bad input data; the message is one line naming the key."""


class RegistryError(UserError):
    """The MLflow registry failed to answer; nothing may be promoted on a guess."""


class TeamError(UserError):
    """Team mode cannot do what was asked (one line, saying why)."""


class KafkaBrokerError(UserError):
    """The broker cannot be fetched, started, reached or stopped; the message says why."""


class LLMError(UserError):
    """Any provider failure; the message is one line naming provider, model and cause."""

    def __init__(self, message: str, *, attempts: int = 1, retryable: bool = False) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.retryable = retryable


class RetryableError(Exception):
    """A failure that another identical attempt may not repeat (transport, 5xx, bad JSON)."""


class HTTPRequestError(Exception):
    """A failure another identical request would repeat (400, 401, 404, …)."""


class WriteError(UserError):
    """An output could not be written (full disk, read-only file system, vanished directory):
    one line naming the path and the errno (`custseg.io.cannot_write`); nothing half-written is
    left in its place."""


class MonitorError(UserError):
    """Drift cannot be assessed (bad or too few scored rows, a reference without data): one line."""


class NoGrounding(UserError):
    """No champion to ground the answers in (one line, naming the command that fixes it)."""


class AgentStopped(UserError):
    """A worker cannot go on (the broker is gone, the producer fenced, …)."""


class CallAbandoned(Exception):
    """An LLM call walked away from because the process is stopping (its input is redone)."""


class InvalidMessage(ValueError):
    """A record that is not a valid envelope; the message says what is wrong, in one line."""


class ServingError(Exception):
    """A problem the user can act on; the message says what to do and is shown as is."""


class ModelNotFoundError(ServingError):
    """No registry, no registered model, or no version under the asked alias."""


class InvalidInput(ServingError):
    """Input that cannot be scored (a customer, a CSV, a request); `problems` lists each issue
    in one line."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class BatchError(InvalidInput):
    """An uploaded CSV that cannot be scored."""


class RequestError(InvalidInput):
    """A REST request that cannot be scored; `status` is the HTTP status to answer (4xx)."""

    def __init__(self, status: int, problems: Iterable[str]) -> None:
        self.status = status
        super().__init__(problems)


class ServerNotUp(RuntimeError):
    """The server exited, or did not answer in time (one line saying which)."""


def first_line(error: BaseException) -> str:
    """A library's exception as one line for our own message (its name if it has no text)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def require_extra(module: str, extra: str, needed_by: str) -> None:
    """ConfigError naming the extra to install when an optional part's package is missing
    (`pip install .` without extras runs the pipeline, the app and the agents)."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"{needed_by} needs the '{extra}' extra: pip install 'custseg[{extra}]' "
            f"(no module named {module!r})"
        )
