"""List pages on the wire: a bounded page size, a token that is the last key returned, and a byte cap.

Every list RPC pages (``opscale.api.common.v1.PageRequest``): at most ``MAX_PAGE_SIZE`` items, and
never more bytes than ``MAX_PAGE_BYTES``, below the 4 MiB a gRPC client accepts by default, so a few
large objects (specs up to 256 KiB each) cannot make a list fail for every client. A token is the key
of the last item of the previous page; items are listed in key order, so one added meanwhile shows on
a later page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from opscale.errors import InvalidArgument

MAX_PAGE_SIZE = 1000
MAX_PAGE_BYTES = 3 * 1024 * 1024

T = TypeVar("T")
M = TypeVar("M", bound=Message)


def page_size(requested: int, default: int) -> int:
    if requested > MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page.page_size must be at most {MAX_PAGE_SIZE}, got {requested}", field="page"
        )
    return requested or default


def take_page(items: Sequence[T], key: Callable[[T], str], size: int, token: str) -> tuple[list[T], str]:
    """The ``size`` items after ``token`` (in key order) and the token of the next page ("" at the end)."""
    after = sorted((i for i in items if not token or key(i) > token), key=key)
    chosen = after[:size]
    return chosen, key(chosen[-1]) if len(after) > size else ""


def cap_bytes(messages: Sequence[M], key: Callable[[M], str], next_token: str) -> tuple[list[M], str]:
    """The longest prefix of ``messages`` within ``MAX_PAGE_BYTES`` (at least one), and the token that
    continues after it: the page's own ``next_token`` when nothing was cut."""
    total = 0
    for i, msg in enumerate(messages):
        total += msg.ByteSize()
        if total > MAX_PAGE_BYTES and i > 0:
            return list(messages[:i]), key(messages[i - 1])
    return list(messages), next_token
