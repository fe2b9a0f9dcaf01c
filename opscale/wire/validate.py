"""The edge check every request passes before any converter or service code reads it.

Generic over the message's descriptor, so a new field or RPC is covered without code here:

- **strings**: no NUL byte (PostgreSQL refuses one in text, and a name with one is never meant), at most
  ``MAX_STRING_CHARS`` characters (``LONG_STRINGS`` names the few fields allowed more);
- **integers** within the database column they may land in: opscale's columns are 32-bit integers
  except timestamps and byte counts (``*_ms``, ``*_bytes``, 64-bit), so a ``uint32`` or 64-bit field is
  at most 2**31 - 1 unless its name carries one of those units;
- **floats** finite (NaN and infinities have no meaning in a load sample, an SLO or a grace period);
- **enums** one of the enum's declared numbers (proto3 keeps unknown numbers; ``*_UNSPECIFIED`` is
  declared and passes here, so a converter decides whether it is allowed);
- nested messages, repeated fields, maps and ``google.protobuf.Struct`` values recursively, with the
  nesting depth bounded (``Struct`` can nest without end).

``decode`` turns raw request bytes into a message, a malformed frame being ``InvalidArgument`` like any
other caller error. Each failure names the field as a path (``spec.limits[2].max_replicas``).

Cost: one pass over the fields a message actually sets (``ListFields``); a 1,000-sample ingest batch
takes about a millisecond (measured in ``tests/unit/test_wire_validate.py``'s benchmark note).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from opscale.errors import InvalidArgument

MAX_STRING_CHARS = 4096
#: A deployment spec, serialized, is at most this many bytes (docs/spec.md). It bounds what one spec
#: costs every reader: a page of ``ListDeployments`` holds at most 16 MiB (the gRPC message limit).
MAX_SPEC_BYTES = 256 * 1024
#: Fields that may carry more than ``MAX_STRING_CHARS``, and how many characters.
LONG_STRINGS = {"hf_config_json": MAX_SPEC_BYTES}
MAX_DEPTH = 32

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
WIDE_SUFFIXES = ("_ms", "_bytes")

M = TypeVar("M", bound=Message)

_INTEGERS = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}
_FLOATS = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}


class _Bad(Exception):
    """A rule broken ``why`` at ``parts`` (innermost last); the path is built only on failure."""

    def __init__(self, why: str, parts: list[str]) -> None:
        super().__init__(why)
        self.why, self.parts = why, parts


def int_range(field: FieldDescriptor) -> tuple[int, int]:
    """The values ``field`` may hold on a request (see the module docstring)."""
    if field.name.endswith(WIDE_SUFFIXES):
        return INT64_MIN, INT64_MAX
    signed = field.type in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    )
    return (-INT32_MAX - 1 if signed else 0), INT32_MAX


def text_problem(value: str, limit: int = MAX_STRING_CHARS) -> str | None:
    """Why ``value`` may not be a request string, or None."""
    if "\x00" in value:
        return "must not contain a NUL byte"
    if len(value) > limit:
        return f"is {len(value)} characters; at most {limit}"
    return None


def check_text(value: str, path: str, limit: int = MAX_STRING_CHARS) -> str:
    problem = text_problem(value, limit)
    if problem is not None:
        raise InvalidArgument(f"{path}: {problem}", field=path)
    return value


# What to check of one field, computed once per field descriptor: (kind, a, b, repeated, map entry).
_STRING, _INT, _FLOAT, _ENUM, _BYTES, _MESSAGE, _MAP, _OTHER = range(8)
_Plan = tuple[int, Any, Any, bool]
_plans: dict[FieldDescriptor, _Plan] = {}


def _plan(field: FieldDescriptor) -> _Plan:
    found = _plans.get(field)
    if found is not None:
        return found
    kind: int = _OTHER
    a: Any = None
    b: Any = None
    if field.message_type is not None:
        if field.message_type.GetOptions().map_entry:
            kind = _MAP
            a, b = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        else:
            kind = _MESSAGE
    elif field.type == FieldDescriptor.TYPE_STRING:
        kind, a = _STRING, LONG_STRINGS.get(field.name, MAX_STRING_CHARS)
    elif field.type in _INTEGERS:
        kind, (a, b) = _INT, int_range(field)
    elif field.type in _FLOATS:
        kind = _FLOAT
    elif field.type == FieldDescriptor.TYPE_ENUM:
        kind, a = _ENUM, field.enum_type
    elif field.type == FieldDescriptor.TYPE_BYTES:
        kind = _BYTES
    plan = (kind, a, b, field.is_repeated and kind != _MAP)
    _plans[field] = plan
    return plan


def _scalar(kind: int, a: Any, b: Any, value: Any) -> str | None:
    """Why ``value`` breaks its field's rule, or None."""
    if kind == _STRING:
        return text_problem(value, a)
    if kind == _INT:
        return None if a <= value <= b else f"{value} is out of range [{a}, {b}]"
    if kind == _FLOAT:
        return None if math.isfinite(value) else f"must be a finite number, got {value}"
    if kind == _ENUM:
        if value in a.values_by_number:
            return None
        return f"{value} is not one of {', '.join(v.name for v in a.values)}"
    if kind == _BYTES and len(value) > MAX_SPEC_BYTES:
        return f"is {len(value)} bytes; at most {MAX_SPEC_BYTES}"
    return None


def _check_field(kind: int, a: Any, b: Any, value: Any, depth: int) -> None:
    if kind == _MESSAGE:
        _walk(value, depth + 1)
        return
    if kind == _MAP:
        key_plan, value_plan = _plan(a), _plan(b)
        for key, item in value.items():
            try:
                why = _scalar(*key_plan[:3], key)
                if why is not None:
                    raise _Bad(why, [])
                _check_field(*value_plan[:3], item, depth)
            except _Bad as bad:
                bad.parts.append(f"[{key!r:.40}]")
                raise
        return
    why = _scalar(kind, a, b, value)
    if why is not None:
        raise _Bad(why, [])


def _walk(msg: Message, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _Bad(f"nests deeper than {MAX_DEPTH} levels", [])
    for field, value in msg.ListFields():
        kind, a, b, repeated = _plan(field)
        try:
            if repeated:
                for i, item in enumerate(value):
                    try:
                        _check_field(kind, a, b, item, depth)
                    except _Bad as bad:
                        bad.parts.append(f"[{i}]")
                        raise
            elif kind != _OTHER:
                _check_field(kind, a, b, value, depth)
        except _Bad as bad:
            bad.parts.append(f".{field.name}")
            raise


def check_message(msg: Message, path: str = "") -> None:
    """Raise ``InvalidArgument`` naming the first field of ``msg`` that breaks a rule above."""
    try:
        _walk(msg, 0)
    except _Bad as bad:
        where = (path + "".join(reversed(bad.parts))).lstrip(".") or "request"
        raise InvalidArgument(f"{where}: {bad.why}", field=where) from None


def parse_id(text: str, field: str) -> int:
    """A database id sent as a decimal string: 1 to 2**63 - 1 (a BIGINT), ASCII digits only."""
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= INT64_MAX:
        raise InvalidArgument(
            f"{field} must be a decimal id in [1, {INT64_MAX}], got {text[:40]!r}", field=field
        )
    return int(text)


def decode_with(deserializer: Callable[[bytes], M], data: bytes, *, check: bool = True) -> M:
    """``deserializer(data)`` (a message class's ``FromString``), then ``check_message`` unless
    ``check`` is False; a malformed frame is the caller's error (``InvalidArgument``), not ours."""
    try:
        msg = deserializer(data)
    except (DecodeError, RuntimeError, ValueError, TypeError) as exc:
        # upb raises DecodeError for bad wire data, and RuntimeError/ValueError for some (recursion
        # limit, invalid UTF-8 in a string field), depending on the build.
        owner = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
        what = owner.full_name if owner is not None else "request"
        raise InvalidArgument(f"request is not a valid {what} message: {exc}", field="request") from None
    if check:
        check_message(msg)
    return msg


def decode(cls: type[M], data: bytes) -> M:
    return decode_with(cls.FromString, data)
