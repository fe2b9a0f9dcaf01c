"""The KEDA external scaler's use cases (transport-free): each pool's decided replica count, and the
changes to it, for the ScaledObject that names the deployment and the pool.

KEDA asks by ``scalerMetadata`` (``deployment: chat``, ``pool: decode/attention``). The answer comes
from the decision service, as any client reads it: ``WatchDecisions`` (current, then every new one) keeps
a cache of each deployment's decided counts; a deployment not yet in the cache is read once with
``GetDecision``, so an unknown deployment is NOT_FOUND at once rather than after a watch round.

The metric is the count itself and its target is 1, so the HPA's replicas (AverageValue: ceil(metric /
target)) equal the decision; ``IsActive`` is false only at 0 replicas, which lets KEDA scale to zero.

The loop records a decision every tick (changed or not), so the watch brings every live deployment at
least once per its interval (at most an hour). A cached deployment the watch has not brought for
``REFRESH_S`` is read again: a deleted one then answers NOT_FOUND instead of its last count forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from opscale.errors import InvalidArgument, NotFound
from opscale.pools import PoolKey, known_pool

log = logging.getLogger(__name__)

#: The HPA target: one replica per unit of the metric, so replicas = the decided count.
TARGET = 1
#: A cached deployment the watch has not brought for this long is read again (deleted?).
REFRESH_S = 120.0
DEPLOYMENT_KEY, POOL_KEY = "deployment", "pool"

Counts = Mapping[PoolKey, int]


@dataclass(frozen=True, slots=True)
class PoolTarget:
    """The pool a ScaledObject scales."""

    deployment: str
    pool: PoolKey

    @property
    def metric_name(self) -> str:
        # Kubernetes metric names are DNS-label-like: no '/' or '_'.
        return f"opscale-{self.deployment}-{self.pool.stage}-{self.pool.operator}".replace("_", "-")


def target_of(metadata: Mapping[str, str]) -> PoolTarget:
    """The pool named by a trigger's metadata; INVALID_ARGUMENT naming the key when one is wrong."""
    deployment = metadata.get(DEPLOYMENT_KEY, "")
    if not deployment:
        raise InvalidArgument(
            f"scalerMetadata.{DEPLOYMENT_KEY} is required: the opscale deployment this ScaledObject scales",
            field=f"scalerMetadata.{DEPLOYMENT_KEY}",
        )
    text = metadata.get(POOL_KEY, "")
    field = f"scalerMetadata.{POOL_KEY}"
    if not text:
        raise InvalidArgument(f"{field} is required, written stage/operator (e.g. decode/model)", field=field)
    try:
        return PoolTarget(deployment, known_pool(PoolKey.parse(text), field))
    except InvalidArgument as exc:
        raise InvalidArgument(f"{field}: {exc.message}", field=field) from None


class DecisionReader(Protocol):
    """Where decisions come from (the decision service over gRPC; a twin in tests)."""

    async def current(self, deployment: str) -> Counts:
        """The deployment's latest decided counts; NotFound / FailedPrecondition / Unavailable."""
        ...

    def watch(self) -> AsyncIterator[tuple[str, Counts]]:
        """Every deployment's current decision, then each new one, until the connection drops."""
        ...


class ScalerApp:
    def __init__(self, reader: DecisionReader, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._reader = reader
        self._monotonic = monotonic
        self._counts: dict[str, dict[PoolKey, int]] = {}
        self._seen: dict[str, float] = {}  # deployment -> monotonic time its counts last arrived
        # Set (and replaced by a fresh one) on every new decision: a stream waits on the one it holds.
        # (An asyncio.Condition waited on in a task that is then cancelled can leave its lock released
        # under the holder's ``async with``, which then raises "Lock is not acquired".)
        self._changed = asyncio.Event()

    async def record(self, deployment: str, counts: Counts) -> None:
        """A new decision for ``deployment``: cache it and wake the streams."""
        self._counts[deployment] = dict(counts)
        self._seen[deployment] = self._monotonic()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _pools(self, deployment: str) -> dict[PoolKey, int]:
        cached = self._counts.get(deployment)
        if cached is None or self._monotonic() - self._seen[deployment] > REFRESH_S:
            try:
                await self.record(deployment, await self._reader.current(deployment))
            except NotFound:
                self._counts.pop(deployment, None)
                raise
            cached = self._counts[deployment]
        return cached

    async def replicas(self, target: PoolTarget) -> int:
        pools = await self._pools(target.deployment)
        if target.pool not in pools:
            known = ", ".join(str(p) for p in sorted(pools)) or "none"
            raise NotFound(
                f"deployment {target.deployment!r} has no pool {target.pool}; its pools: {known}",
                field=f"scalerMetadata.{POOL_KEY}",
            )
        return pools[target.pool]

    async def changes(self, target: PoolTarget, stopping: asyncio.Event) -> AsyncIterator[int]:
        """The pool's count now, then each time a decision changes it, until ``stopping`` is set."""
        changed = self._changed  # taken before the read: a decision after it wakes this stream
        last = await self.replicas(target)
        yield last
        while not stopping.is_set():
            waiter = asyncio.ensure_future(changed.wait())
            stop = asyncio.ensure_future(stopping.wait())
            try:
                await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (waiter, stop):
                    task.cancel()
            if stopping.is_set():
                return
            changed = self._changed
            now = await self.replicas(target)
            if now != last:
                last = now
                yield now

    async def follow(self, stopping: asyncio.Event, retry_s: float = 0.2, max_retry_s: float = 5.0) -> None:
        """Keep the cache current from the watch; reconnect with back-off when it drops."""
        delay, failing = retry_s, False
        while not stopping.is_set():
            try:
                async for deployment, counts in self._reader.watch():
                    await self.record(deployment, counts)
                    if failing:
                        log.info("keda scaler: following the decision service's watch again")
                    delay, failing = retry_s, False
                    if stopping.is_set():
                        return
            except Exception as exc:  # the decision service is away or restarting: keep trying
                if not failing:  # log the change, not every retry
                    log.warning("keda scaler: decision watch failed (%s); retrying", exc)
                failing = True
            try:
                await asyncio.wait_for(stopping.wait(), timeout=delay)
            except TimeoutError:
                delay = min(max_retry_s, delay * 2)
