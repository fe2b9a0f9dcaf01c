"""Live agent sessions of this placement process: who holds which node, and their latest heartbeat.

One entry per open ``Connect`` stream. It is the identity check (a second live session may not claim a
node another live session holds), the doorbell that wakes a stream when commands are queued for its node,
and the heartbeat buffer: beats are kept here and written to the database in one batch per flush (at
2,000 agents and 1 s beats, one UPDATE per beat would be 2,000 transactions a second for a timestamp).

Scope: one placement process. With several placement replicas only the leader holds streams
(``leader.py``); the database's ``agent_session_id`` still refuses a superseded session's beats.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from opscale.api.common.v1 import common_pb2
from opscale.errors import FailedPrecondition, Unavailable


@dataclass
class AgentSession:
    node: str
    session_id: str
    templates: frozenset[str]
    connected_at_s: float
    last_beat_s: float
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    telemetry: tuple[common_pb2.GpuTelemetry, ...] = ()
    seq: int = 0


class SessionRegistry:
    def __init__(self) -> None:
        self._by_node: dict[str, AgentSession] = {}
        self._dirty: dict[str, tuple[str, float]] = {}  # node -> (session id, beat time) not yet written
        self.closing = False  # set by close_all: this process is stopping and takes no new session

    def claim(self, session: AgentSession) -> AgentSession | None:
        """Register ``session`` for its node; returns the session it replaces (the same agent resuming).

        A different live session holding the node means two agents claim one identity: refused, naming
        the node, so the second agent's operator sees which host is misconfigured.
        """
        if self.closing:
            # Still serving through its grace period, but the agent would lose this stream at once: it
            # backs off and reconnects through the placement address, to whoever leads next.
            raise Unavailable("this placement replica is stopping; reconnect through the placement address")
        held = self._by_node.get(session.node)
        if held is not None and not held.closed.is_set() and held.session_id != session.session_id:
            # The live session's id is never told: with it, a caller could resume as that agent.
            raise FailedPrecondition(
                f"node '{session.node}' is held by another live agent session; this session may not "
                "claim it: give each agent its own node name",
                field="register.node_name",
            )
        self._by_node[session.node] = session
        if held is not None and held is not session:
            held.closed.set()
            held.wake.set()
        return held

    def release(self, session: AgentSession) -> None:
        session.closed.set()
        session.wake.set()
        if self._by_node.get(session.node) is session:
            del self._by_node[session.node]

    def close_all(self) -> None:
        """End every agent stream of this process (it is stopping) and take no new one; each agent
        reconnects."""
        self.closing = True
        for session in list(self._by_node.values()):
            session.closed.set()
            session.wake.set()

    def get(self, node: str) -> AgentSession | None:
        return self._by_node.get(node)

    def live(self) -> Mapping[str, AgentSession]:
        return self._by_node

    def wake(self, node: str) -> None:
        session = self._by_node.get(node)
        if session is not None:
            session.wake.set()

    def beat(
        self, session: AgentSession, at_s: float, telemetry: tuple[common_pb2.GpuTelemetry, ...]
    ) -> None:
        session.last_beat_s = at_s
        if telemetry:
            session.telemetry = telemetry
        self._dirty[session.node] = (session.session_id, at_s)

    def take_dirty(self) -> dict[str, tuple[str, float]]:
        dirty, self._dirty = self._dirty, {}
        return dirty

    def fresh(self, node: str, now_s: float, timeout_s: float) -> bool:
        """Whether a live stream here beat for ``node`` within ``timeout_s`` (the database may lag)."""
        session = self._by_node.get(node)
        return session is not None and not session.closed.is_set() and now_s - session.last_beat_s < timeout_s
