"""JSON values for policy state and plans: the type, and narrowing helpers for ``from_json``.

``from_json`` reads what an earlier version of us wrote into the decision ledger; a wrong shape there
is a corrupt or foreign row, so it raises ``InvalidArgument`` naming what was expected — no casts.
"""

from __future__ import annotations

import math

from opscale.errors import InvalidArgument

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]
JSONObject = dict[str, JSONValue]


def _bad(what: str, value: object) -> InvalidArgument:
    return InvalidArgument(f"policy state: expected {what}, got {value!r}", field="state")


def json_obj(value: JSONValue) -> JSONObject:
    if not isinstance(value, dict):
        raise _bad("an object", value)
    return value


def json_pairs(value: JSONValue) -> list[list[JSONValue]]:
    if not isinstance(value, list) or not all(isinstance(e, list) and len(e) == 2 for e in value):
        raise _bad("a list of [t, value] pairs", value)
    return [e for e in value if isinstance(e, list)]


def json_int(value: JSONValue) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad("an integer", value)
    return value


def json_float(value: JSONValue) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad("a number", value)
    return float(value)


def json_opt_int(value: JSONValue) -> int | None:
    return None if value is None else json_int(value)


def json_opt_float(value: JSONValue) -> float | None:
    return None if value is None else json_float(value)


def finite_or_none(value: JSONValue) -> float | None:
    """A finite number from stored state, or None (state written by another version, or damaged)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)
