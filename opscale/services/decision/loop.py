"""The control loop: one task per decision replica.

Every ``wake_s`` it lists the deployments (names, versions, freeze flags — not the specs), syncs the
lease, and for each deployment it leads whose tick slot is new: read the window from the counter store →
``LoadWindow`` → ``policy.decide`` (continuing from the last recorded decision's plan and state) → record
it → hand the desired counts to the actuator (placement + agents, or KEDA: ``actuators.py``) → record
the outcome → publish to watchers.

Ticks are slots: ``tick_at = floor(now / interval) × interval``. The ledger keeps one decision per
(deployment, slot), so two replicas that both think they lead (for the moment between a leader's lease
connection dying and it noticing) cannot both record one; the loser skips and re-reads.

Phases, so that one slow dependency does not serialise the rest: loads are read concurrently; the
decisions of one tick are recorded in one transaction; hand-offs run concurrently under a short deadline;
their outcomes are written in a second transaction. A pass slower than the lease's TTL (the cold one,
which builds every policy) renews the lease as it goes (``opscale.lease.renewing``). A deployment that
fails (bad spec, policy error, unreadable window) is logged with its name, counted, and skipped; the loop
goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry.trace import Tracer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opscale.actuation import Actuator, Outcome
from opscale.clock import Clock
from opscale.counters import CounterStore
from opscale.db.records import DecisionRecord, DeploymentRecord
from opscale.db.repo import DeploymentRepo
from opscale.decisions.deployment import Deployment
from opscale.decisions.record import DecisionView, decode, encode, view_of, with_placement
from opscale.errors import OpscaleError
from opscale.lease import Lease, Progress, fence, renewing
from opscale.outage import OUTAGE_ERRORS, Outage
from opscale.policy.types import PolicyInput, PolicyOutput, PolicyState
from opscale.services.decision.ledger import DecisionLedger, DeploymentHead
from opscale.services.decision.metrics import LoopMetrics
from opscale.services.decision.policies import Setup, SetupCache, setup_for
from opscale.services.decision.publish import DecisionHub
from opscale.signals.load import read_load_and_summary, window_for
from opscale.signals.summary import WindowSummary
from opscale.telemetry import PERIODIC
from opscale.wire.commands import resizes_of

log = logging.getLogger(__name__)

Pace = Callable[[float], Awaitable[None]]

# A plan that took longer than this last time runs in a worker thread next time (habit 10); the cheap
# policies (pd, utilization, static: tens of µs) stay on the event loop, where a thread hop would cost more.
THREAD_ABOVE_S = 0.002
READ_CONCURRENCY = 32
HANDOFF_CONCURRENCY = 64


@dataclass(frozen=True, slots=True)
class LoopOptions:
    replica_id: str
    wake_s: float = 0.2  # how often the loop looks for deployments whose slot is due
    # Load window the policies see (rounded up to whole buckets). Reading costs one counter-store bucket
    # per series per second of window (31 series for a P/D deployment), so it is kept short: 10 s.
    window_wanted_s: float = 10.0


@dataclass(slots=True)
class _Due:
    head: DeploymentHead
    setup: Setup
    slot: float
    last: DecisionView | None
    inp: PolicyInput | None = None
    out: PolicyOutput | None = None
    record: DecisionRecord | None = None
    summary: WindowSummary | None = None


class DecisionLoop:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        read_sessions: async_sessionmaker[AsyncSession],
        counters: CounterStore,
        clock: Clock,
        lease: Lease,
        actuator: Actuator,
        hub: DecisionHub,
        tracer: Tracer,
        metrics: LoopMetrics,
        options: LoopOptions,
        pace: Pace | None = None,
    ) -> None:
        self._sessions = sessions
        self._read_sessions = read_sessions  # the scan each wake: never holds SQLite's write lock
        self._counters = counters
        self._clock = clock
        self._lease = lease
        self._actuator = actuator
        self._hub = hub
        self._tracer = tracer
        self._metrics = metrics
        self._options = options
        self._pace = pace or clock.sleep
        self._setups = SetupCache()
        self._last: dict[str, DecisionView | None] = {}  # per led deployment; absent: read the ledger
        self._slow: set[str] = set()  # deployments whose plans run in a worker thread
        self._broken: dict[str, int] = {}  # deployment -> spec version whose policy failed to build
        self._window_s = window_for(counters.settings.bucket_s, options.window_wanted_s)
        self.held: frozenset[str] = frozenset()
        who = {"replica": options.replica_id}
        self._outage = Outage("decision loop: a dependency is unavailable", log, extra=who)
        self._counters_outage = Outage("decision loop: the counter store is unavailable", log, extra=who)

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            while not stopping.is_set():
                try:
                    await self.tick()
                    self._outage.ok()
                except OUTAGE_ERRORS as exc:  # the database is away: said once, retried quietly
                    self._outage.failed(exc)
                except Exception:  # a bug: log it whole, keep the loop alive
                    log.exception("decision tick failed", extra={"replica": self._options.replica_id})
                await self._pace(self._options.wake_s)
        finally:
            await self._lease.release_all()
            self._metrics.leases_held.labels(self._options.replica_id).set(0)
            await self._actuator.close()

    async def tick(self) -> list[DecisionView]:
        """One pass over every deployment; returns the decisions it recorded."""
        started = self._clock.monotonic()
        # A tick with nothing due leaves no trace (opscale.telemetry.PERIODIC): only its children do.
        with self._tracer.start_as_current_span(
            "decision.tick", attributes={"replica": self._options.replica_id, PERIODIC: True}
        ):
            async with self._read_sessions() as session:
                heads = await DecisionLedger(session).heads()
            self.held = await self._lease.sync([h.name for h in heads])
            self._metrics.leases_held.labels(self._options.replica_id).set(len(self.held))
            for name in [n for n in self._last if n not in self.held]:
                del self._last[name]  # lost or gave up the lease: re-read the ledger if it comes back
                self._metrics.deployments.forget(name)
            self._setups.forget_except({h.name for h in heads})
            async with renewing(self._lease) as progress:  # a pass slower than the TTL keeps its leases
                due = await self._due([h for h in heads if h.name in self.held], progress)
                if not due:
                    return []
                sem = asyncio.Semaphore(READ_CONCURRENCY)
                await asyncio.gather(*(self._decide(d, sem, progress) for d in due))
                decided = await self._record([d for d in due if d.record is not None])
                progress.made()
                views = await self._hand_off(decided)
        self._metrics.tick_seconds.observe(self._clock.monotonic() - started)
        return views

    async def _due(self, heads: list[DeploymentHead], progress: Progress) -> list[_Due]:
        # Read first, then build policies (CPU work) after the session closes.
        now = self._clock.now()
        live = [h for h in heads if self._broken.get(h.name) != h.version]
        records: dict[str, DeploymentRecord | Exception] = {}
        unread = [h for h in live if h.name not in self._last]
        unbuilt = [h for h in live if self._setups.get(h.name, h.version) is None]
        if unread or unbuilt:
            async with self._read_sessions() as session:
                for head in unbuilt:
                    try:
                        records[head.name] = await DeploymentRepo(session).get(head.name, head.version)
                    except OUTAGE_ERRORS:
                        raise
                    except Exception as exc:  # counted and logged below, with the spec errors
                        records[head.name] = exc
                    progress.made()
                for head in unread:
                    latest = await DecisionLedger(session).latest(head.name)
                    self._last[head.name] = decode(latest) if latest is not None else None
                    progress.made()
        out: list[_Due] = []
        for head in live:
            progress.made()
            await asyncio.sleep(0)  # building a policy is CPU work: let the lease's renewals in between
            try:
                setup = self._setup(head, records.get(head.name))
            except Exception:
                self._metrics.deployment_errors.labels("spec").inc()
                self._broken[head.name] = head.version
                log.exception(
                    "deployment %s: cannot build the policy of spec version %d; skipped until the "
                    "spec changes",
                    head.name,
                    head.version,
                    extra={"deployment": head.name},
                )
                continue
            slot = math.floor(now / setup.interval_s) * setup.interval_s
            last = self._last[head.name]
            if last is not None and last.tick_at.timestamp() >= slot - 1e-6:
                continue
            out.append(_Due(head, setup, slot, last))
        return out

    def _setup(self, head: DeploymentHead, record: DeploymentRecord | Exception | None) -> Setup:
        hit = self._setups.get(head.name, head.version)
        if hit is not None:
            return hit[1]
        if isinstance(record, Exception):
            raise record
        assert record is not None, "_due reads every spec version missing from the cache"
        deployment = Deployment.from_record(record)
        setup = setup_for(deployment.spec)
        self._setups.put(head.name, head.version, deployment.spec, setup)
        return setup

    async def _decide(self, due: _Due, sem: asyncio.Semaphore, progress: Progress) -> None:
        name, setup, last = due.head.name, due.setup, due.last
        with self._tracer.start_as_current_span(
            "decision.deployment", attributes={"deployment": name, "policy": setup.policy.name}
        ) as span:
            try:
                async with sem:
                    now = self._clock.now()
                    try:
                        load, due.summary = await read_load_and_summary(
                            self._counters, name, setup.read_pools, now_s=now, window_s=self._window_s
                        )
                    except OUTAGE_ERRORS as exc:
                        # One outage for every deployment (they share the store), not a traceback each.
                        self._metrics.deployment_errors.labels("load").inc()
                        self._counters_outage.failed(exc)
                        return
                    self._counters_outage.ok()
                progress.made()
                inp = PolicyInput(
                    now_s=now,
                    deployment=name,
                    load=load,
                    current=dict(last.desired) if last else {},
                    slo=setup.slo,
                    limits=setup.limits,
                    state=last.state if last else PolicyState(),
                    params=setup.params,
                    frozen=due.head.frozen,
                )
                out = await self._plan(name, setup, inp)
                progress.made()
            except Exception as exc:
                self._metrics.deployment_errors.labels("policy").inc()
                span.record_exception(exc)
                log.exception("deployment %s: tick failed; skipped", name, extra={"deployment": name})
                return
            changed = last is None or _counts(out) != _counts_of(last)
            # A partial placement is handed over again every tick (level-triggered): capacity may have
            # come, and the decision keeps saying what is missing instead of "not needed".
            retry = last is not None and last.placement in (Outcome.FAILED, Outcome.PENDING, Outcome.PARTIAL)
            needed = changed or retry
            due.inp, due.out = inp, out
            due.record = encode(
                deployment=name,
                spec_version=due.head.version,
                tick_at=datetime.fromtimestamp(due.slot, UTC),
                policy=setup.policy.name,
                policy_version=setup.policy.version,
                leader_id=self._options.replica_id,
                inp=inp,
                out=out,
                interval_s=setup.interval_s,
                placement=Outcome.PENDING if needed else Outcome.NOT_NEEDED,
                placement_message="" if needed else "no change since the last applied decision",
            )

    async def _plan(self, name: str, setup: Setup, inp: PolicyInput) -> PolicyOutput:
        if name in self._slow:
            return await asyncio.to_thread(setup.policy.decide, inp)
        started = self._clock.monotonic()
        out = setup.policy.decide(inp)
        if self._clock.monotonic() - started > THREAD_ABOVE_S:
            self._slow.add(name)
        return out

    async def _record(self, due: list[_Due]) -> list[tuple[_Due, DecisionRecord]]:
        """All of this tick's decisions in one statement and one transaction."""
        rows, kept = [], []
        for d in due:
            assert d.record is not None
            try:
                rows.append(DecisionLedger.values(d.record))
                kept.append(d)
            except OpscaleError as exc:  # a value the ledger refuses (e.g. a reason that is not JSON)
                self._metrics.deployment_errors.labels("record").inc()
                log.error(
                    "deployment %s: decision not recordable: %s",
                    d.head.name,
                    exc,
                    extra={"deployment": d.head.name},
                )
        async with self._sessions() as session, session.begin():
            current = await self._fenced(session, [d.head.name for d in kept])
            rows = [
                {**r, "lease_epoch": self._lease.epoch(d.head.name)}
                for r, d in zip(rows, kept, strict=True)
                if d.head.name in current
            ]
            ids = await DecisionLedger(session).record_many(rows)
        stored: list[tuple[_Due, DecisionRecord]] = []
        for d in kept:
            assert d.record is not None
            new_id = ids.get(d.head.name)
            if d.head.name not in current:
                self._last.pop(d.head.name, None)
                continue
            if new_id is None:
                # Another replica decided this slot (a hand-over): continue from its decision.
                log.info(
                    "deployment %s: slot already decided by another replica",
                    d.head.name,
                    extra={"deployment": d.head.name},
                )
                self._last.pop(d.head.name, None)
                continue
            stored.append((d, dataclasses.replace(d.record, id=new_id)))
        return stored

    async def _fenced(self, session: AsyncSession, names: list[str]) -> frozenset[str]:
        """Of ``names``, those this replica may still write for, checked in ``session``'s transaction
        against the lease epochs (``opscale.lease.fence``). A replica that was deposed while it worked
        (hung or cut off past the lease TTL; another took over) learns it here, not from its own state,
        and writes nothing for those."""
        epochs = {n: e for n in names if (e := self._lease.epoch(n)) is not None}
        current = await fence(session, self._lease.namespace, epochs)
        # Names without an epoch: a lease that keeps none (tests of the loop alone); nothing to check.
        allowed = current | {n for n in names if n not in epochs}
        for name in sorted(set(names) - allowed):
            log.warning(
                "deployment %s: lease lost to another replica (epoch %d is no longer current); "
                "not writing this tick",
                name,
                epochs[name],
                extra={"deployment": name, "replica": self._options.replica_id},
            )
        return allowed

    async def _hand_off(self, stored: list[tuple[_Due, DecisionRecord]]) -> list[DecisionView]:
        sem = asyncio.Semaphore(HANDOFF_CONCURRENCY)

        async def one(d: _Due, record: DecisionRecord) -> DecisionRecord:
            if record.outputs["placement"]["outcome"] != Outcome.PENDING.value:
                return record
            assert d.out is not None
            async with sem:
                result = await self._actuator.actuate(
                    d.head.name, d.head.version, str(record.id), resizes_of(d.out.desired, d.out.draining)
                )
            failed_before = d.last is not None and d.last.placement == Outcome.FAILED
            if result.outcome == Outcome.FAILED:
                self._metrics.placement_failures.inc()
            if result.outcome == Outcome.FAILED and not failed_before:  # log the change, not every retry
                log.warning(
                    "deployment %s: hand-off to placement failed: %s",
                    d.head.name,
                    result.message,
                    extra={"deployment": d.head.name, "decision": record.id},
                )
            elif failed_before and result.outcome != Outcome.FAILED:
                log.info(
                    "deployment %s: placement accepts hand-offs again",
                    d.head.name,
                    extra={"deployment": d.head.name, "decision": record.id},
                )
            return with_placement(record, result.outcome, result.message)

        finals = await asyncio.gather(*(one(d, r) for d, r in stored))
        changed = [f for f, (_, r) in zip(finals, stored, strict=True) if f is not r]
        if changed:
            async with self._sessions() as session, session.begin():
                ledger = DecisionLedger(session)
                current = await self._fenced(session, [r.deployment for r in changed])
                for record in changed:
                    if record.deployment in current:
                        await ledger.set_outputs(record)
        views = []
        for (d, _), record in zip(stored, finals, strict=True):
            assert d.inp is not None and d.out is not None
            view = view_of(record, d.inp, d.out)
            self._last[d.head.name] = view
            self._metrics.decisions.labels(view.policy, view.placement.value).inc()
            self._metrics.deployments.observe(view, d.inp.load, d.out, d.setup.slo, d.summary, self._clock)
            self._hub.publish(view)
            views.append(view)
        return views


def _counts(out: PolicyOutput) -> dict[str, tuple[int, int]]:
    return {str(p): (plan.replicas, out.draining.get(p, 0)) for p, plan in out.desired.items()}


def _counts_of(view: DecisionView) -> dict[str, tuple[int, int]]:
    return {str(p): (plan.replicas, view.draining.get(p, 0)) for p, plan in view.desired.items()}


__all__ = ["DecisionLoop", "LoopOptions"]
