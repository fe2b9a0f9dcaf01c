"""Hypothesis strategies for any protobuf message, from its descriptor alone, aimed at the edges a
hostile or broken client reaches: NUL bytes and over-long strings, integers at and past the column
ranges, NaN and infinities, enum numbers nobody declared, deep and wide nesting, and raw frames that
are not the message at all. A valid seed request can be overlaid with random fields, so the service
code behind the edge is reached too, not only its first check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from hypothesis import strategies as st

NAMES = [
    "chat",
    "gpu-0",
    "",
    "x" * 300,
    "a\x00b",
    "\x00",
    "9223372036854775808",
    "9223372036854775807",
    "-1",
    "0",
    "1",
    "²",
    "decode",
    "operator",
    "model",
    "pd",
    "static",
    "llama3-8b",
    "worker",
    "Bad Name",
    "é" * 70,
    "x" * 5000,
]
strings = st.one_of(st.sampled_from(NAMES), st.text(max_size=12))

INT_EDGES = [0, 1, -1, 2**31 - 1, 2**31, 2**32 - 1, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1]
RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
floats = st.one_of(
    st.sampled_from(
        [0.0, -0.0, 0.5, 1.0, 100.0, 1e6, 1e300, -1.0, float("nan"), float("inf"), float("-inf")]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), floats.filter(lambda f: f == f), strings),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(strings, inner, max_size=3)),
    max_leaves=8,
)


def _ints(kind: int) -> st.SearchStrategy[int]:
    low, high = RANGES[kind]
    return st.one_of(st.sampled_from([v for v in INT_EDGES if low <= v <= high]), st.integers(low, high))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return strings
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=16)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return floats
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        numbers = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(-3, max(numbers) + 3), st.just(2**31 - 1))
    return _ints(kind)


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, cls: type[Message], depth: int = 0) -> Message:
    """A ``cls`` whose fields are each set or not, with edge values; nesting is cut at depth 3."""
    msg = cls()
    if descriptor.full_name == "google.protobuf.Struct":
        assert isinstance(msg, Struct)
        msg.update(draw(st.dictionaries(strings, json_values, max_size=4)))
        return msg
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        _fill(draw, msg, field, depth)
    return msg


def _fill(draw: st.DrawFn, msg: Message, field: FieldDescriptor, depth: int) -> None:
    name = field.name
    sub = field.message_type
    if sub is not None and sub.GetOptions().map_entry:
        key_field, value_field = sub.fields_by_name["key"], sub.fields_by_name["value"]
        target = getattr(msg, name)
        for _ in range(draw(st.integers(0, 3))):
            key = draw(_scalar(key_field))
            if value_field.message_type is None:
                target[key] = draw(_scalar(value_field))
            elif depth < 3:
                target[key].CopyFrom(draw(_nested(value_field, depth)))
        return
    if sub is not None:
        if depth >= 3:
            return
        if field.is_repeated:
            for _ in range(draw(st.integers(0, 3))):
                getattr(msg, name).add().CopyFrom(draw(_nested(field, depth)))
        else:
            getattr(msg, name).CopyFrom(draw(_nested(field, depth)))
        return
    if field.is_repeated:
        getattr(msg, name).extend(draw(st.lists(_scalar(field), max_size=3)))
    else:
        setattr(msg, name, draw(_scalar(field)))


def _nested(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Message]:
    descriptor = field.message_type
    assert descriptor is not None
    return messages(descriptor, message_factory.GetMessageClass(descriptor), depth + 1)


def requests(cls: type[Message], seeds: Sequence[Message] = ()) -> st.SearchStrategy[Message]:
    """Random ``cls`` messages, and (if given) valid seeds overlaid with random fields."""
    generic = messages(cls.DESCRIPTOR, cls)  # type: ignore[arg-type]
    if not seeds:
        return generic

    def overlay(pair: tuple[Message, Message]) -> Message:
        seed, noise = pair
        out = cls()
        out.CopyFrom(seed)
        out.MergeFrom(noise)
        return out

    seeded = st.tuples(st.sampled_from(list(seeds)), generic).map(overlay)
    return st.one_of(generic, seeded, st.sampled_from(list(seeds)))


# Raw frames: random bytes, and the malformations a protobuf parser trips on.
CRAFTED = [
    b"\xff",
    b"\x0a",  # a length-delimited field with no length
    b"\x0a\x05ab",  # a length beyond the frame
    b"\x0a\x02\xff\xfe",  # invalid UTF-8 in a string field
    b"\x08" + b"\xff" * 11,  # a varint longer than 10 bytes
    b"\x0b",  # a start-group tag
    b"\x0a\x7f" * 200,  # nested length prefixes
    b"\x12" + bytes([0x80, 0x80, 0x80, 0x80, 0x10]),  # a 4 GiB length
    b"\x00",  # field number 0
]
raw_frames = st.one_of(st.sampled_from(CRAFTED), st.binary(max_size=64))
