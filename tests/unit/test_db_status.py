"""Every lifecycle table, checked exhaustively: listed moves pass, every other pair is refused."""

from __future__ import annotations

import enum
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from opscale.db import status
from opscale.db.status import VALID_TRANSITIONS, CommandStatus, NodeStatus, allowed, transition
from opscale.errors import FailedPrecondition

LIFECYCLES = list(VALID_TRANSITIONS.items())


@pytest.mark.parametrize(("enum_cls", "table"), LIFECYCLES, ids=[c.__name__ for c, _ in LIFECYCLES])
def test_every_pair_is_allowed_exactly_when_listed(
    enum_cls: type[enum.Enum], table: dict[object, frozenset[object]]
) -> None:
    assert set(table) == set(enum_cls), "every member needs a row, even a terminal one (empty set)"
    for old, new in itertools.product(enum_cls, repeat=2):
        if new in table[old]:
            assert allowed(old, new)  # type: ignore[type-var]
            assert transition(old, new) is new  # type: ignore[type-var]
        else:
            assert not allowed(old, new)  # type: ignore[type-var]
            with pytest.raises(FailedPrecondition) as info:
                transition(old, new, what="thing x")  # type: ignore[type-var]
            assert f"'{old.value}'" in str(info.value) and f"'{new.value}'" in str(info.value)
            assert str(info.value).startswith("thing x: ")


@pytest.mark.parametrize(("enum_cls", "table"), LIFECYCLES, ids=[c.__name__ for c, _ in LIFECYCLES])
def test_no_self_loops_and_every_status_reachable(
    enum_cls: type[enum.Enum], table: dict[object, frozenset[object]]
) -> None:
    # Staying put is not a transition; and a status nothing leads to (other than the initial one) is dead.
    initial = next(iter(enum_cls))
    reachable = {initial} | set().union(*table.values())
    for member in enum_cls:
        assert member not in table[member]
        assert member in reachable, f"{member} cannot be reached"


def test_every_edge_has_a_comment_saying_why() -> None:
    # An edge is a line like "_N.READY,  # why"; a table row ("_N.READY: frozenset(") is not one.
    lines = Path(status.__file__).read_text().splitlines()
    edges = [
        line
        for line in lines
        if line.lstrip().startswith(("_N.", "_D.", "_O.", "_C."))
        and line.split("#")[0].rstrip().endswith(",")
        and "frozenset" not in line
    ]
    expected = sum(len(targets) for table in VALID_TRANSITIONS.values() for targets in table.values())
    assert len(edges) == expected
    for line in edges:
        assert "#" in line, f"edge without a reason: {line.strip()}"


def test_mixed_enums_are_refused() -> None:
    assert not allowed(NodeStatus.READY, CommandStatus.SENT)  # type: ignore[type-var]


def test_terminal_message_says_terminal() -> None:
    with pytest.raises(FailedPrecondition, match="terminal"):
        transition(CommandStatus.ACKED, CommandStatus.PENDING)


def test_status_module_is_pure() -> None:
    # Pure cores import the lifecycles; that must not drag SQLAlchemy (or anything with I/O) in.
    code = "import sys, opscale.db.status; print(sorted(m for m in sys.modules if m.split('.')[0] in %r))"
    banned = ("sqlalchemy", "alembic", "grpc", "redis", "psycopg", "aiosqlite")
    out = subprocess.run([sys.executable, "-c", code % (banned,)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
