"""Several in-process ingest replicas splitting the same scrape targets through a real Redis: each
target scraped by exactly one replica, each sample stored once (even when two replicas scrape one
target in the same interval), and a dead replica's targets picked up within two scrape intervals.

The replicas run their real schedulers (``ScrapeManager.step``) on one virtual clock, stepped every
50 ms, so the timing claims are checked exactly rather than against a wall clock."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from opscale.clock import VirtualClock
from opscale.config import ScrapeTarget, Settings
from opscale.counters import RedisCounterStore
from opscale.db.migrate import upgrade
from opscale.db.repo import DeploymentRepo
from opscale.scrape import state_from_json
from opscale.services.ingest.shard import owner
from opscale.services.ingest.wiring import Ingest, assemble, scrape_state_for
from opscale.services.runtime import Runtime, open_runtime
from opscale.signals import read_window_summary, store_settings
from opscale.telemetry import build_telemetry
from tests.component.scrape_kit import Endpoint, serve_endpoint
from tests.fixtures.metrics.enginesim import T0, EngineSim, Workload

pytestmark = pytest.mark.redis
TARGETS = 6
STEP_S = 0.05
LOAD = Workload(rate_per_s=3.0, slots=40, kv_capacity_tokens=125_000)


@dataclass
class Replica:
    name: str
    runtime: Runtime
    ingest: Ingest
    alive: bool = True


@dataclass
class Cluster:
    clock: VirtualClock
    sims: list[EngineSim]
    replicas: list[Replica]
    scrapes: list[tuple[str, str, float]]  # (replica, key, time)

    async def run_until(self, end_s: float) -> None:
        while self.clock.now() < end_s - 1e-9:
            self.clock.advance(STEP_S)
            for r in self.replicas:
                if r.alive:
                    await r.ingest.manager.step(wait=True)

    async def problems(self) -> list[str]:
        """Each target's stored window against the truth, from its first scrape (the baseline) to its
        last committed reading: every count exact (an interval written twice or lost shows at once),
        token totals within 2% (SGLang-free, so exact too). Signal fidelity is test_ingest_scrape's."""
        out = []
        rt = self.replicas[0].runtime
        for i, sim in enumerate(self.sims):
            key = self.replicas[0].ingest.loops[i].key
            start = min(at for _, k, at in self.scrapes if k == key)
            _, stored = await scrape_state_for(rt).load(f"{key}#")
            assert stored is not None
            end = state_from_json(stored)[0].at_s
            until = math.floor(end) + 1
            w = await read_window_summary(
                rt.counters, f"d{i}", now_s=until, window_s=until - math.floor(start)
            )
            truth = sim.truth(start, end)
            stored_counts = (w.arrivals, w.ttft_ms.count, w.tbt_ms.count, w.e2e_ms.count)
            true_counts = (truth.arrivals, len(truth.ttft_s), len(truth.itl_s), len(truth.e2e_s))
            if stored_counts != true_counts:
                out.append(f"d{i}: stored (arrivals, ttft, tbt, e2e) {stored_counts}, true {true_counts}")
            decode = w.decode_tokens_per_s * w.window_s
            if abs(decode - truth.decode_tokens) > 1e-6 * truth.decode_tokens + 1e-6:
                out.append(f"d{i}: {decode} decode tokens stored, true {truth.decode_tokens}")
        return out


MakeCluster = Callable[[int], Awaitable[Cluster]]


@pytest.fixture
async def make_cluster(redis_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[MakeCluster]:
    import redis.asyncio as aioredis

    db_url = f"sqlite:///{tmp_path}/opscale.db"
    upgrade(db_url)
    opened: list[Runtime] = []
    endpoints: list[AsyncIterator[Endpoint]] = []

    async def make(n: int) -> Cluster:
        clock = VirtualClock(T0)
        sims = [EngineSim("vllm", workload=LOAD, horizon_s=120, seed=100 + i) for i in range(TARGETS)]
        targets = []
        for i, sim in enumerate(sims):
            gen = serve_endpoint()
            endpoint = await gen.__anext__()
            endpoints.append(gen)
            endpoint.render = lambda sim=sim: sim.exposition_at(clock.now())
            targets.append(
                ScrapeTarget.model_validate({"url": endpoint.url, "deployment": f"d{i}", "role": "serving"})
            )
        cluster = Cluster(clock, sims, [], [])
        for k in range(n):
            settings = Settings(
                database_url=db_url, counters_url=redis_url, metrics_port=None, scrape_targets=targets
            )
            counters = RedisCounterStore(
                aioredis.from_url(redis_url), key_prefix, store_settings(), owns_client=True
            )
            rt = await open_runtime(settings, build_telemetry(f"ingest-{k}"), clock=clock, counters=counters)
            opened.append(rt)
            ingest = assemble(rt, member=f"replica-{k}")
            cluster.replicas.append(Replica(f"replica-{k}", rt, ingest))
            for scraper in ingest.loops:
                original = scraper.scrape_once

                async def logged(original=original, name=f"replica-{k}", key=scraper.key) -> bool:
                    cluster.scrapes.append((name, key, clock.now()))
                    return await original()

                scraper.scrape_once = logged  # type: ignore[method-assign]
        async with opened[0].sessions() as session, session.begin():
            repo = DeploymentRepo(session, clock=clock)
            for i in range(TARGETS):
                if await _absent(repo, f"d{i}"):
                    spec = {
                        "name": f"d{i}",
                        "model": {"preset": "llama3-8b"},
                        "slo": {"ttft_ms": 1000, "tbt_ms": 100},
                    }
                    await repo.create(f"d{i}", spec, "test")
        for r in cluster.replicas:  # everyone registered and sees everyone before the first scrape
            await r.ingest.manager.membership.beat()
        for r in cluster.replicas:
            await r.ingest.manager.membership.beat()
        return cluster

    try:
        yield make
    finally:
        for rt in opened:
            await rt.close()
        for gen in endpoints:
            await gen.aclose()


async def _absent(repo: DeploymentRepo, name: str) -> bool:
    from opscale.errors import NotFound

    try:
        await repo.get(name)
    except NotFound:
        return True
    return False


def owners(cluster: Cluster, start_s: float, end_s: float) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for replica, key, at in cluster.scrapes:
        if start_s <= at < end_s:
            out.setdefault(key, set()).add(replica)
    return out


@pytest.mark.parametrize("n", [2, 3])
async def test_each_target_is_scraped_by_one_replica_and_stored_once(
    make_cluster: MakeCluster, n: int
) -> None:
    cluster = await make_cluster(n)
    await cluster.run_until(T0 + 60)
    by_key = owners(cluster, T0, T0 + 60)
    assert len(by_key) == TARGETS and all(len(replicas) == 1 for replicas in by_key.values()), by_key
    # Split as rendezvous hashing over the replicas says (which one gets what varies with the
    # targets' random ports; that each gets its owner's is what matters).
    members = [r.name for r in cluster.replicas]
    assert all(replicas == {owner(key, members)} for key, replicas in by_key.items())
    # Every interval of every target once: the stored totals are the truth, exactly for counts.
    assert await cluster.problems() == []


async def test_two_replicas_scraping_one_target_at_once_write_it_once(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster(2)
    await cluster.run_until(T0 + 20)
    # Views that disagree (a join or a death not seen yet): every replica scrapes every target.
    for _ in range(5):
        cluster.clock.advance(1.0)
        for r in cluster.replicas:
            for scraper in r.ingest.loops:
                await scraper.scrape_once()
    await cluster.run_until(T0 + 40)
    assert await cluster.problems() == []


async def test_a_dead_replicas_targets_move_within_two_intervals(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster(3)
    interval = 1.0
    await cluster.run_until(T0 + 30)
    # The replica that holds the most targets dies (target URLs have random ports, so which replica
    # rendezvous gives what differs from run to run; one of three holds at least two of six).
    by_key = owners(cluster, T0 + 25, T0 + 30)
    dead = max(cluster.replicas, key=lambda r: sum(r.name in rs for rs in by_key.values()))
    held = {key for key, rs in by_key.items() if dead.name in rs}
    assert len(held) >= 2
    dead.alive = False  # no leave(): a crash, its entry must expire
    died_at = cluster.clock.now()
    await cluster.run_until(T0 + 60)
    for key in held:
        taken = min(
            at for replica, k, at in cluster.scrapes if k == key and at > died_at and replica != dead.name
        )
        assert taken - died_at <= 2 * interval, (key, taken - died_at)
    # The survivors continued from the dead replica's last committed reading: nothing lost.
    assert await cluster.problems() == []
