"""JSON schemas sent to servers for constrained (structured) output."""

from __future__ import annotations

import copy
import re
from typing import Any

from pydantic import BaseModel


def cap_string_lengths(schema: dict[str, Any], max_length: int) -> dict[str, Any]:
    """A copy of `schema` where every string without a `maxLength` gets `max_length`.

    A small model can loop inside a string forever; with a cap the grammar forces the closing
    quote instead. Explicit `maxLength`s, enums and consts are left alone.
    """
    capped = copy.deepcopy(schema)
    _cap(capped, max_length)
    return capped


def _cap(node: Any, max_length: int) -> None:
    if isinstance(node, list):
        for item in node:
            _cap(item, max_length)
        return
    if not isinstance(node, dict):
        return
    types = node.get("type")
    is_string = types == "string" or (isinstance(types, list) and "string" in types)
    if is_string and "maxLength" not in node and "enum" not in node and "const" not in node:
        node["maxLength"] = max_length
    for value in node.values():
        _cap(value, max_length)


def capped_json_schema(model: type[BaseModel], max_length: int) -> dict[str, Any]:
    """`model`'s JSON schema with every free string capped at `max_length` characters."""
    return cap_string_lengths(model.model_json_schema(), max_length)


def json_schema_name(model: type[BaseModel]) -> str:
    """A name OpenAI-style servers accept for `json_schema.name` (letters, digits, _ and -)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", model.__name__)[:64] or "reply"
