"""Persisted lifecycles as tables: every status enum, its allowed transitions and one checker.

Pure: no SQLAlchemy, no I/O, so services, the CLI and the pure cores can all import it. Each enum's
string values are what the database stores (``native_enum=False`` columns), so renaming a value needs
a data migration; adding one does not.

A transition not listed in ``VALID_TRANSITIONS`` is illegal and :func:`transition` raises
:class:`~opscale.errors.FailedPrecondition` — callers never silently apply it. Staying in the same
status is not a transition: callers skip the write instead of asking.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, TypeVar

from opscale.errors import FailedPrecondition


class NodeStatus(enum.StrEnum):
    REGISTERING = "registering"  # agent connected; its processes not yet reconciled
    READY = "ready"  # schedulable
    CORDONED = "cordoned"  # no new replicas; running ones stay
    DRAINING = "draining"  # cordoned and its replicas are being moved off
    LOST = "lost"  # heartbeats stopped; its replicas are re-placed elsewhere
    DECOMMISSIONED = "decommissioned"  # removed from the inventory by an SRE


class ReplicaDesired(enum.StrEnum):
    RUNNING = "running"
    DRAINING = "draining"  # out of routing, in-flight work finishes (soft scale-in)
    STOPPED = "stopped"


class ReplicaObserved(enum.StrEnum):
    PENDING = "pending"  # placed, start command not yet acted on
    STARTING = "starting"  # process launched, not yet healthy
    READY = "ready"  # serving
    DRAINING = "draining"  # out of routing, finishing in-flight work
    STOPPED = "stopped"  # process gone on purpose
    FAILED = "failed"  # process gone by accident (crash, refused start)
    LOST = "lost"  # its node stopped reporting; state unknown


class CommandKind(enum.StrEnum):
    """Not a lifecycle (a command's kind never changes), so it has no transition table."""

    START = "start"
    STOP = "stop"
    DRAIN = "drain"


class CommandStatus(enum.StrEnum):
    PENDING = "pending"  # written, not yet on the agent's stream
    SENT = "sent"  # on the stream, not yet acknowledged
    ACKED = "acked"  # agent confirmed (replica_id, generation)
    FAILED = "failed"  # agent refused it, or it could not be delivered
    SUPERSEDED = "superseded"  # a newer generation for the same replica replaced it


_N = NodeStatus
NODE_TRANSITIONS: Mapping[NodeStatus, frozenset[NodeStatus]] = {
    _N.REGISTERING: frozenset(
        {
            _N.READY,  # inventory read and the agent's running processes reconciled
            _N.LOST,  # the agent went away before registration finished
            _N.DECOMMISSIONED,  # an SRE removes a node that never became ready
        }
    ),
    _N.READY: frozenset(
        {
            _N.REGISTERING,  # the agent restarted with a new session: reconcile again before placing
            _N.CORDONED,  # an SRE stops new placements (maintenance, suspected fault)
            _N.DRAINING,  # an SRE drains: cordon and move the replicas off in one step
            _N.LOST,  # heartbeat timeout
        }
    ),
    _N.CORDONED: frozenset(
        {
            _N.READY,  # uncordon
            _N.DRAINING,  # a cordoned node is now also emptied
            _N.LOST,  # heartbeat timeout; being unschedulable does not stop the clock
            _N.DECOMMISSIONED,  # emptied and cordoned nodes are the ones safe to remove
        }
    ),
    _N.DRAINING: frozenset(
        {
            _N.CORDONED,  # drain finished: the node is empty and stays unschedulable (like kubectl drain)
            _N.READY,  # drain cancelled by an uncordon before it finished
            _N.LOST,  # heartbeat timeout mid-drain; the remaining replicas are re-placed anyway
        }
    ),
    _N.LOST: frozenset(
        {
            _N.REGISTERING,  # the agent came back; its processes must be reconciled before use
            _N.DECOMMISSIONED,  # an SRE gives up on the host
        }
    ),
    _N.DECOMMISSIONED: frozenset(
        {
            _N.REGISTERING,  # a rebuilt host re-registers under the same name
        }
    ),
}

_D = ReplicaDesired
REPLICA_DESIRED_TRANSITIONS: Mapping[ReplicaDesired, frozenset[ReplicaDesired]] = {
    _D.RUNNING: frozenset(
        {
            _D.DRAINING,  # soft scale-in, or the node is drained: leave routing first
            _D.STOPPED,  # hard stop: the node is lost or the replica never started, nothing to drain
        }
    ),
    _D.DRAINING: frozenset(
        {
            _D.STOPPED,  # in-flight work finished (or the drain timed out) and SLOs held
            _D.RUNNING,  # load came back during a soft scale-in: keep the warm replica
        }
    ),
    # STOPPED is terminal: a replica is never restarted in place; placement makes a new one.
    _D.STOPPED: frozenset(),
}

_O = ReplicaObserved
REPLICA_OBSERVED_TRANSITIONS: Mapping[ReplicaObserved, frozenset[ReplicaObserved]] = {
    _O.PENDING: frozenset(
        {
            _O.STARTING,  # the agent acked the start and launched the process
            _O.STOPPED,  # stopped before the start was acted on (scale-in raced placement)
            _O.FAILED,  # the agent refused the start (template not allowed, GPUs busy)
            _O.LOST,  # the node was lost before the start was acked
        }
    ),
    _O.STARTING: frozenset(
        {
            _O.READY,  # health check passed
            _O.STOPPED,  # a stop arrived during start-up and the agent killed it
            _O.FAILED,  # the process exited during start-up
            _O.LOST,  # the node was lost during start-up
        }
    ),
    _O.READY: frozenset(
        {
            _O.DRAINING,  # the agent took it out of routing
            _O.STOPPED,  # hard stop without a drain
            _O.FAILED,  # crashed while serving
            _O.LOST,  # the node was lost
        }
    ),
    _O.DRAINING: frozenset(
        {
            _O.STOPPED,  # in-flight work finished and the process exited
            _O.READY,  # drain cancelled; back into routing
            _O.FAILED,  # crashed while draining
            _O.LOST,  # the node was lost while draining
        }
    ),
    # STOPPED is terminal, like the desired STOPPED.
    _O.STOPPED: frozenset(),
    _O.FAILED: frozenset(
        {
            _O.PENDING,  # retried: re-placed under a new generation
            _O.STOPPED,  # desired is stopped; a dead process counts as stopped, closing the record
        }
    ),
    _O.LOST: frozenset(
        {
            _O.READY,  # the agent came back and found the process still serving (no twin started)
            _O.STOPPED,  # the agent came back and the process is gone, or the replica was given up
            _O.PENDING,  # re-placed under a new generation
        }
    ),
}

_C = CommandStatus
COMMAND_TRANSITIONS: Mapping[CommandStatus, frozenset[CommandStatus]] = {
    _C.PENDING: frozenset(
        {
            _C.SENT,  # written to the agent's stream
            _C.SUPERSEDED,  # a newer generation for the replica was queued before this one went out
            _C.FAILED,  # undeliverable: the node is gone or attempts are exhausted
        }
    ),
    _C.SENT: frozenset(
        {
            _C.ACKED,  # the agent acked (replica_id, generation)
            _C.FAILED,  # the agent reported failure
            _C.PENDING,  # the stream broke before the ack: re-send (level-triggered; agents dedupe)
            _C.SUPERSEDED,  # a newer generation was queued before the ack came
        }
    ),
    # ACKED, FAILED and SUPERSEDED are terminal: a new attempt is a new command with a new key.
    _C.ACKED: frozenset(),
    _C.FAILED: frozenset(),
    _C.SUPERSEDED: frozenset(),
}

#: Every lifecycle by its enum, so one generic check (and one test loop) covers them all.
VALID_TRANSITIONS: Mapping[type[enum.Enum], Mapping[Any, frozenset[Any]]] = {
    NodeStatus: NODE_TRANSITIONS,
    ReplicaDesired: REPLICA_DESIRED_TRANSITIONS,
    ReplicaObserved: REPLICA_OBSERVED_TRANSITIONS,
    CommandStatus: COMMAND_TRANSITIONS,
}

S = TypeVar("S", NodeStatus, ReplicaDesired, ReplicaObserved, CommandStatus)


def allowed(old: S, new: S) -> bool:
    """Whether ``old -> new`` is in the table for their enum."""
    if type(old) is not type(new):
        return False
    return new in VALID_TRANSITIONS[type(old)][old]


def transition(old: S, new: S, *, what: str = "") -> S:
    """Return ``new`` if ``old -> new`` is legal, else raise ``FailedPrecondition`` naming both.

    ``what`` names the object in the message (e.g. ``"node gpu-7"``).
    """
    if not allowed(old, new):
        kind = type(old).__name__
        subject = f"{what}: " if what else ""
        legal = ", ".join(sorted(s.value for s in VALID_TRANSITIONS[type(old)].get(old, frozenset())))
        raise FailedPrecondition(
            f"{subject}{kind} cannot go from '{old.value}' to '{new.value}'; "
            f"from '{old.value}' it may go to: {legal or 'nothing (terminal)'}",
            field="status",
        )
    return new
