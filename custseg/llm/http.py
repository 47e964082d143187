"""One small JSON-over-HTTP POST with the standard library (no extra dependency)."""

from __future__ import annotations

import http.client
import ipaddress
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from custseg.errors import HTTPRequestError, RetryableError
from custseg.llm.base import RETRYABLE_STATUS

# Loopback calls never go through a proxy, whatever http_proxy says.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_DEFAULT = urllib.request.build_opener()


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def error_detail(body: bytes, limit: int = 200) -> str:
    """The server's own error message from an OpenAI- or Ollama-style error body."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:limit] or "empty body"
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        error = error.get("message", error)
    return " ".join(str(error).split())[:limit]


def post_json(
    url: str, payload: dict[str, Any], *, headers: dict[str, str], timeout: float
) -> dict[str, Any]:
    """POST `payload` as JSON and return the decoded JSON reply.

    `timeout` bounds the connection and the wait for the reply. Raises RetryableError for
    transport failures, timeouts and HTTP 408/429/5xx, HTTPRequestError for other HTTP errors.
    """
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json", **headers},
        method="POST",
    )
    opener = _DIRECT if is_loopback(url) else _DEFAULT
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        cause = f"HTTP {error.code} from {url}: {error_detail(error.read())}"
        if error.code in RETRYABLE_STATUS:
            raise RetryableError(cause) from None
        raise HTTPRequestError(cause) from None
    except TimeoutError:
        raise RetryableError(f"no reply from {url} within {timeout:g} s") from None
    except urllib.error.URLError as error:
        raise RetryableError(f"cannot reach {url}: {error.reason}") from None
    except (ConnectionError, http.client.HTTPException, OSError) as error:
        raise RetryableError(f"connection to {url} failed: {error}") from None
    try:
        data = json.loads(body)
    except ValueError:
        raise RetryableError(f"non-JSON reply from {url}: {error_detail(body, 80)}") from None
    if not isinstance(data, dict):
        raise RetryableError(f"unexpected reply from {url}: {type(data).__name__}")
    return data
