"""One contract suite for every ``CounterStore``: the in-process twin and Redis.

Times are offsets from T0 (a realistic epoch, so the millisecond arithmetic meets real magnitudes).
Settings: 1 s buckets, 60 s retention, 30 s dedupe TTL; ``ttft_ms`` uses the bins
[0,10] (10,20] (20,50] (50,100] (100,200] (200,inf). A read at ``now`` covers the closed buckets
``[floor(now) - window, floor(now))``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opscale.counters import (
    CounterStore,
    CounterWrite,
    GaugeWrite,
    HistogramBin,
    HistogramLayout,
    HistogramWrite,
    InMemoryCounterStore,
    Kind,
    ReadQuery,
    RedisCounterStore,
    SeriesKey,
    StoreSettings,
    Write,
    WriteBatch,
)
from opscale.errors import InvalidArgument, ResourceExhausted

T0 = 1_700_000_000.0
SETTINGS = StoreSettings(
    bucket_s=1.0,
    retention_s=60.0,
    dedupe_ttl_s=30.0,
    histograms={"ttft_ms": HistogramLayout((10.0, 20.0, 50.0, 100.0, 200.0))},
)
ARRIVALS = SeriesKey.of("d1", "arrivals")
QUEUE = SeriesKey.of("d1", "queue_depth", stage="decode")
TTFT = SeriesKey.of("d1", "ttft_ms", stage="prefill")
MakeStore = Callable[[StoreSettings], CounterStore]


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> MakeStore:
    """Builds a store of this parameter's implementation; Redis ones live under the test's prefix."""
    if request.param == "memory":
        return InMemoryCounterStore
    client = request.getfixturevalue("redis_client")
    prefix = request.getfixturevalue("key_prefix")
    return lambda s: RedisCounterStore(client, f"{prefix}{uuid.uuid4().hex[:8]}:", s)


@pytest.fixture
def store(make_store: MakeStore) -> CounterStore:
    return make_store(SETTINGS)


def add(at: float, delta: float, key: SeriesKey = ARRIVALS) -> CounterWrite:
    return CounterWrite(key, T0 + at, delta)


def gauge(at: float, value: float, key: SeriesKey = QUEUE) -> GaugeWrite:
    return GaugeWrite(key, T0 + at, value)


def obs(at: float, value: float, count: int = 1, key: SeriesKey = TTFT) -> HistogramWrite:
    return HistogramWrite(key, T0 + at, value, count)


async def apply(store: CounterStore, *writes: Write, now: float, batch_id: str | None = None) -> bool:
    return await store.apply(WriteBatch.of(*writes), batch_id=batch_id, now_s=T0 + now)


async def test_counter_sums_and_rates_over_windows(store: CounterStore) -> None:
    await apply(store, add(100.0, 3), add(100.5, 2), add(101.2, 5), add(105.9, 10), add(109.999, 1), now=110)
    await apply(store, add(110.0, 100), add(99.999, 1000), now=110)

    r = await store.read(ARRIVALS, Kind.COUNTER, now_s=T0 + 110, window_s=10)
    # Buckets [100, 110): 3 + 2 + 5 + 10 + 1 = 21 over 10 s; 99.999 is before, 110.0 is the open bucket.
    assert (r.start_s, r.end_s) == (T0 + 100, T0 + 110)
    assert (r.sum, r.count, r.rate_per_s) == (21.0, 5, 2.1)
    # [105, 110): 10 + 1 = 11 over 5 s.
    r5 = await store.read(ARRIVALS, Kind.COUNTER, now_s=T0 + 110, window_s=5)
    assert (r5.sum, r5.rate_per_s) == (11.0, 2.2)
    # A counter has no min/max/last/bins.
    assert (r.min_value, r.max_value, r.last_value, r.bins) == (None, None, None, ())


async def test_window_edges(store: CounterStore) -> None:
    await apply(store, add(99.999, 1000), add(100.0, 1), add(109.999, 10), add(110.0, 100), now=110)
    # now=110.7 reads the same closed buckets as now=110.0: [100, 110) -> 1 + 10.
    for now in (110.0, 110.7):
        r = await store.read(ARRIVALS, Kind.COUNTER, now_s=T0 + now, window_s=10)
        assert r.sum == 11.0
    # now=111.0 closes bucket 110 and drops bucket 100: [101, 111) -> 10 + 100.
    r = await store.read(ARRIVALS, Kind.COUNTER, now_s=T0 + 111, window_s=10)
    assert (r.start_s, r.sum, r.rate_per_s) == (T0 + 101, 110.0, 11.0)


async def test_gauge_mean_last_min_max(store: CounterStore) -> None:
    # 9 is written after 2 in the batch but is older (101.5 < 102.5), so 2 stays the last value.
    await apply(store, gauge(100.2, 4), gauge(100.8, 6), gauge(102.5, 2), gauge(101.5, 9), now=103)
    r = await store.read(QUEUE, Kind.GAUGE, now_s=T0 + 110, window_s=10)
    # count 4, sum 4 + 6 + 2 + 9 = 21, mean 21 / 4 = 5.25.
    assert (r.count, r.sum, r.mean) == (4, 21.0, 5.25)
    assert (r.min_value, r.max_value) == (2.0, 9.0)
    assert (r.last_value, r.last_at_s) == (2.0, T0 + 102.5)
    # Same at_s as the current last: the later-applied sample wins the tie.
    await apply(store, gauge(102.5, 7), now=103)
    r = await store.read(QUEUE, Kind.GAUGE, now_s=T0 + 110, window_s=10)
    assert (r.last_value, r.count, r.sum) == (7.0, 5, 28.0)
    # A window holding only bucket 100 sees 6 (at 100.8) as its last value; negatives are fine.
    await apply(store, gauge(104.0, -3.5), now=105)
    r = await store.read(QUEUE, Kind.GAUGE, now_s=T0 + 101, window_s=1)
    assert (r.last_value, r.mean) == (6.0, 5.0)
    r = await store.read(QUEUE, Kind.GAUGE, now_s=T0 + 105, window_s=1)
    assert (r.min_value, r.last_value) == (-3.5, -3.5)


async def test_histogram_percentiles_and_distribution(store: CounterStore) -> None:
    await apply(
        store, obs(100.1, 5), obs(100.1, 12), obs(100.1, 400), obs(101.5, 15), obs(101.5, 18), now=102
    )
    await apply(
        store, obs(101.5, 30), obs(104.0, 40), obs(104.0, 45), obs(104.0, 60), obs(104.0, 150), now=105
    )
    r = await store.read(TTFT, Kind.HISTOGRAM, now_s=T0 + 110, window_s=10)
    # 10 observations: 5 | 12 15 18 | 30 40 45 | 60 | 150 | 400; sum 775, mean 77.5.
    assert r.bins == (
        HistogramBin(0.0, 10.0, 1),
        HistogramBin(10.0, 20.0, 3),
        HistogramBin(20.0, 50.0, 3),
        HistogramBin(50.0, 100.0, 1),
        HistogramBin(100.0, 200.0, 1),
        HistogramBin(200.0, math.inf, 1),
    )
    assert (r.count, r.sum, r.mean, r.min_value, r.max_value) == (10, 775.0, 77.5, 5.0, 400.0)
    # p50: rank 0.5 * 10 = 5; cumulative 1, 4, 7 -> bin (20, 50] with 4 before it:
    #      20 + (50 - 20) * (5 - 4) / 3 = 30.
    assert r.quantile(0.5) == pytest.approx(30.0)
    # p99: rank 9.9; cumulative ... 8, 9, 10 -> overflow bin (200, inf), its top narrowed to max 400:
    #      200 + (400 - 200) * (9.9 - 9) / 1 = 380.
    assert r.quantile(0.99) == pytest.approx(380.0)
    # p90: rank 9 is reached exactly at the top of (100, 200] -> 200.
    assert r.quantile(0.9) == pytest.approx(200.0)
    # p25: rank 2.5 -> (10, 20] with 1 before: 10 + 10 * 1.5 / 3 = 15.
    # p5: rank 0.5 -> [0, 10] narrowed to [min 5, 10]: 5 + 5 * 0.5 = 7.5. p0 / p100 are min / max.
    assert r.quantiles([0.25, 0.05, 0.0, 1.0]) == pytest.approx((15.0, 7.5, 5.0, 400.0))
    # Window [104, 105) alone: 40 45 60 150 -> p50 rank 2 in (20, 50] (2 of 2): 50.
    r = await store.read(TTFT, Kind.HISTOGRAM, now_s=T0 + 105, window_s=1)
    assert r.count == 4
    assert r.quantile(0.5) == pytest.approx(50.0)


async def test_histogram_counts_and_default_layout(store: CounterStore) -> None:
    tbt = SeriesKey.of("d1", "tbt_ms")  # not in SETTINGS.histograms: the default log-spaced layout
    await apply(store, obs(100.0, 15.0, count=3), obs(100.0, 40.0, key=tbt), now=101)
    r = await store.read(TTFT, Kind.HISTOGRAM, now_s=T0 + 101, window_s=1)
    assert (r.count, r.sum, r.bins) == (3, 45.0, (HistogramBin(10.0, 20.0, 3),))
    d = await store.read(tbt, Kind.HISTOGRAM, now_s=T0 + 101, window_s=1)
    [b] = d.bins
    assert b.lower < 40.0 <= b.upper and b.upper / b.lower == pytest.approx(2 ** (1 / 8))
    assert d.quantile(0.5) == 40.0  # one observation: the bin narrowed to [min, max] = [40, 40]
    empty = await store.read(TTFT, Kind.HISTOGRAM, now_s=T0 + 110, window_s=1)
    assert (empty.count, empty.quantile(0.99), empty.mean) == (0, None, None)


async def test_staleness(store: CounterStore) -> None:
    never = await store.read(QUEUE, Kind.GAUGE, now_s=T0 + 100, window_s=10)
    assert (never.last_write_s, never.staleness_s) == (None, None)
    await apply(store, gauge(102.5, 1), gauge(100.0, 3), now=103)
    r = await store.read(QUEUE, Kind.GAUGE, now_s=T0 + 110, window_s=1)
    # The window [109, 110) is empty, but the series is alive: newest sample 102.5, 7.5 s ago.
    assert (r.count, r.last_write_s, r.staleness_s) == (0, T0 + 102.5, 7.5)
    # The open bucket counts for staleness although not for the window.
    await apply(store, gauge(110.25, 1), now=110.5)
    r = await store.read(QUEUE, Kind.GAUGE, now_s=T0 + 110.5, window_s=1)
    assert (r.count, r.staleness_s) == (0, 0.25)
    # A sample stamped ahead of now (another host's clock) reads as 0 s stale, never negative.
    await apply(store, gauge(112.0, 1), now=111)
    assert (await store.read(QUEUE, Kind.GAUGE, now_s=T0 + 111, window_s=1)).staleness_s == 0.0
    # Retention: 60 s after the newest sample (112): alive at 171.9, gone at 172.0.
    assert (await store.read(QUEUE, Kind.GAUGE, now_s=T0 + 171.9, window_s=1)).staleness_s == pytest.approx(
        59.9
    )
    gone = await store.read(QUEUE, Kind.GAUGE, now_s=T0 + 172, window_s=1)
    assert (gone.last_write_s, gone.staleness_s) == (None, None)


async def test_expiry_after_retention(store: CounterStore) -> None:
    await apply(store, add(100.5, 7), now=101)
    # Bucket [100, 101) is readable until its end + 60 s: a 60 s window at 160 still holds it.
    assert (await store.read(ARRIVALS, Kind.COUNTER, now_s=T0 + 160, window_s=60)).sum == 7.0
    r = await store.read(ARRIVALS, Kind.COUNTER, now_s=T0 + 161, window_s=60)
    assert (r.sum, r.count, r.staleness_s) == (0.0, 0, None)
    # Writing into an expired bucket is refused, not silently dropped.
    with pytest.raises(InvalidArgument, match=r"writes\[0\]\.at_s"):
        await apply(store, add(100.5, 1), now=161)
    # A window longer than retention cannot be asked for.
    with pytest.raises(InvalidArgument, match="retention_s=60"):
        await store.read(ARRIVALS, Kind.COUNTER, now_s=T0 + 161, window_s=61)


BAD_WRITES: list[tuple[Write, str]] = [
    (CounterWrite(ARRIVALS, T0 + 100, math.nan), "delta"),
    (CounterWrite(ARRIVALS, T0 + 100, math.inf), "delta"),
    (CounterWrite(ARRIVALS, T0 + 100, -1.0), "delta"),
    (GaugeWrite(QUEUE, T0 + 100, -math.inf), "value"),
    (GaugeWrite(QUEUE, T0 + 100, 1e19), "value"),
    (HistogramWrite(TTFT, T0 + 100, math.nan), "value"),
    (HistogramWrite(TTFT, T0 + 100, -0.5), "value"),
    (HistogramWrite(TTFT, T0 + 100, 5.0, count=-1), "count"),
    (HistogramWrite(TTFT, T0 + 100, 5.0, count=0), "count"),
    (HistogramWrite(TTFT, T0 + 100, 5.0, count=True), "count"),
    (CounterWrite(ARRIVALS, math.nan, 1.0), "at_s"),
    (CounterWrite(ARRIVALS, T0 + 30, 1.0), "at_s"),  # bucket ended 70 s before now: past retention
    (CounterWrite(ARRIVALS, T0 + 161, 1.0), "at_s"),  # 61 s ahead of now: past max_future_s
]


@pytest.mark.parametrize(("bad", "field"), BAD_WRITES)
async def test_invalid_write_rejects_the_whole_batch(store: CounterStore, bad: Write, field: str) -> None:
    good: list[Write] = [add(100.0, 1), gauge(100.0, 5), bad, obs(100.0, 15)]
    with pytest.raises(InvalidArgument, match=rf"writes\[2\]\.{field}") as err:
        await store.apply(WriteBatch(tuple(good)), batch_id="b1", now_s=T0 + 100)
    assert err.value.field == f"writes[2].{field}"
    reads = await store.read_many(
        [
            ReadQuery(ARRIVALS, Kind.COUNTER, 1),
            ReadQuery(QUEUE, Kind.GAUGE, 1),
            ReadQuery(TTFT, Kind.HISTOGRAM, 1),
        ],
        now_s=T0 + 101,
    )
    assert [(r.count, r.staleness_s) for r in reads] == [(0, None)] * 3
    # The rejected batch did not consume its id: the corrected batch goes through under it.
    assert await store.apply(WriteBatch.of(good[0], good[1], good[3]), batch_id="b1", now_s=T0 + 100)


async def test_batch_id_dedupes_within_ttl(store: CounterStore) -> None:
    assert await apply(store, add(100, 1), now=100, batch_id="ingest-7:42") is True
    assert await apply(store, add(100, 1), now=101, batch_id="ingest-7:42") is False  # a retry
    assert await apply(store, add(100, 1), now=101, batch_id="ingest-7:43") is True  # another batch
    assert await apply(store, add(100, 1), now=101) is True  # no id: no dedupe
    assert (await store.read(ARRIVALS, Kind.COUNTER, now_s=T0 + 102, window_s=2)).sum == 3.0
    # Dedupe TTL 30 s from the first apply at 100: still a duplicate at 129.999, forgotten at 130.
    assert await apply(store, add(120, 1), now=129.999, batch_id="ingest-7:42") is False
    assert await apply(store, add(120, 1), now=130, batch_id="ingest-7:42") is True
    assert (await store.read(ARRIVALS, Kind.COUNTER, now_s=T0 + 131, window_s=31)).sum == 4.0


async def test_empty_batch_and_bad_arguments(store: CounterStore) -> None:
    assert await store.apply(WriteBatch(), now_s=T0) is True
    assert await store.apply(WriteBatch(), batch_id="e", now_s=T0) is True
    assert await store.apply(WriteBatch(), batch_id="e", now_s=T0) is False
    for bad_id in ("", "has space", "x" * 201):
        with pytest.raises(InvalidArgument, match="batch_id"):
            await store.apply(WriteBatch(), batch_id=bad_id, now_s=T0)
    with pytest.raises(InvalidArgument, match="now_s"):
        await store.read(ARRIVALS, Kind.COUNTER, now_s=math.nan, window_s=1)
    for window in (0, 1.5, -1, math.inf):
        with pytest.raises(InvalidArgument, match=r"queries\[0\]\.window_s"):
            await store.read(ARRIVALS, Kind.COUNTER, now_s=T0, window_s=window)


async def test_batch_size_limit(make_store: MakeStore) -> None:
    small = make_store(StoreSettings(retention_s=60, max_batch_writes=3))
    with pytest.raises(ResourceExhausted, match="at most 3 writes"):
        await small.apply(WriteBatch.of(*[add(100, 1)] * 4), now_s=T0 + 100)
    assert await small.apply(WriteBatch.of(*[add(100, 1)] * 3), now_s=T0 + 100)


async def test_read_many_keeps_query_order(store: CounterStore) -> None:
    await apply(store, add(100, 2), gauge(100, 4), obs(100, 15), now=101)
    reads = await store.read_many(
        [
            ReadQuery(TTFT, Kind.HISTOGRAM, 1),
            ReadQuery(ARRIVALS, Kind.COUNTER, 2),
            ReadQuery(QUEUE, Kind.GAUGE, 60),
            ReadQuery(SeriesKey.of("d1", "nothing"), Kind.COUNTER, 1),
        ],
        now_s=T0 + 101,
    )
    assert [(r.key, r.kind, r.window_s, r.sum) for r in reads] == [
        (TTFT, Kind.HISTOGRAM, 1.0, 15.0),
        (ARRIVALS, Kind.COUNTER, 2.0, 2.0),  # 2 over 2 s
        (QUEUE, Kind.GAUGE, 60.0, 4.0),
        (SeriesKey.of("d1", "nothing"), Kind.COUNTER, 1.0, 0.0),
    ]
    assert reads[1].rate_per_s == 1.0
    assert await store.read_many([], now_s=T0) == []


async def test_one_series_read_over_two_windows_at_once(store: CounterStore) -> None:
    """The window summary reads the arrivals histogram over the window and its last seconds in one
    round trip (``opscale.signals.summary``)."""
    await apply(store, obs(95, 10), obs(99, 20), obs(100, 30), now=101)
    long, short = await store.read_many(
        [ReadQuery(TTFT, Kind.HISTOGRAM, 30), ReadQuery(TTFT, Kind.HISTOGRAM, 5)], now_s=T0 + 101
    )
    assert (long.count, long.sum, long.window_s) == (3, 60.0, 30.0)
    assert (short.count, short.sum, short.window_s) == (2, 50.0, 5.0)


async def test_series_are_isolated(store: CounterStore) -> None:
    other_ns = SeriesKey.of("d2", "arrivals")
    labelled = SeriesKey.of("d1", "arrivals", stage="prefill")
    await apply(store, add(100, 1), add(100, 10, other_ns), add(100, 100, labelled), now=101)
    await apply(store, gauge(100, 1000, key=ARRIVALS), now=101)  # a gauge of the same name: own series
    sums = [
        (await store.read(k, kind, now_s=T0 + 101, window_s=1)).sum
        for k, kind in [(ARRIVALS, Kind.COUNTER), (other_ns, Kind.COUNTER), (labelled, Kind.COUNTER)]
    ]
    assert sums == [1.0, 10.0, 100.0]
    assert (await store.read(ARRIVALS, Kind.GAUGE, now_s=T0 + 101, window_s=1)).sum == 1000.0
    # Label order does not make another series.
    two = SeriesKey("d1", "busy_s", (("op", "ffn"), ("stage", "decode")))
    await apply(store, add(100, 5, two), now=101)
    flipped = SeriesKey("d1", "busy_s", (("stage", "decode"), ("op", "ffn")))
    assert (await store.read(flipped, Kind.COUNTER, now_s=T0 + 101, window_s=1)).sum == 5.0


async def test_one_batch_equals_many(store: CounterStore, make_store: MakeStore) -> None:
    writes: list[Write] = [
        add(100.1, 1),
        add(100.9, 2),
        gauge(100.5, 3),
        gauge(101.2, 8),
        obs(100.4, 12),
        obs(101.0, 60),
    ]
    other = make_store(SETTINGS)
    await store.apply(WriteBatch(tuple(writes)), now_s=T0 + 102)
    for w in writes:
        await other.apply(WriteBatch.of(w), now_s=T0 + 102)
    qs = [
        ReadQuery(ARRIVALS, Kind.COUNTER, 5),
        ReadQuery(QUEUE, Kind.GAUGE, 5),
        ReadQuery(TTFT, Kind.HISTOGRAM, 5),
    ]
    assert await store.read_many(qs, now_s=T0 + 103) == await other.read_many(qs, now_s=T0 + 103)


# --- the twins agree: random batches give identical reads (floats compared exactly) ---------------

_KEYS = [ARRIVALS, QUEUE, TTFT, SeriesKey.of("d2", "ttft_ms", stage="prefill")]
_at = st.integers(0, 24).map(lambda i: 100 + i * 0.25)
_value = st.sampled_from([0.0, 0.1, 0.2, 0.3, 1.0, 2.5, 7.0, 12.0, 33.3, 150.0, 1e6])
_write: st.SearchStrategy[Write] = st.one_of(
    st.builds(lambda k, at, v: CounterWrite(k, T0 + at, v), st.sampled_from(_KEYS), _at, _value),
    st.builds(lambda k, at, v: GaugeWrite(k, T0 + at, -v), st.sampled_from(_KEYS), _at, _value),
    st.builds(
        lambda k, at, v, c: HistogramWrite(k, T0 + at, v, c),
        st.sampled_from(_KEYS),
        _at,
        _value,
        st.integers(1, 3),
    ),
)
_step = st.tuples(
    st.lists(_write, max_size=6), st.sampled_from([None, "a", "b"]), st.sampled_from([0.0, 0.5, 20.0])
)


@pytest.mark.redis
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_step, min_size=1, max_size=4))
async def test_twins_read_the_same(
    redis_client: aioredis.Redis, key_prefix: str, steps: list[tuple[list[Write], str | None, float]]
) -> None:
    memory = InMemoryCounterStore(SETTINGS)
    red = RedisCounterStore(redis_client, f"{key_prefix}{uuid.uuid4().hex[:8]}:", SETTINGS)
    now = T0 + 106.0
    for writes, batch_id, advance in steps:
        now += advance
        batch = WriteBatch(tuple(writes))
        # Late steps push early samples past retention: both must then refuse the batch alike.
        outcomes: list[bool | str] = []
        for s in (memory, red):
            try:
                outcomes.append(await s.apply(batch, batch_id=batch_id, now_s=now))
            except InvalidArgument as exc:
                outcomes.append(str(exc))
        assert outcomes[0] == outcomes[1]
    qs = [ReadQuery(k, kind, w) for k in _KEYS for kind in Kind for w in (1, 3, 60)]
    for t in (now, now + 0.5, now + 30):
        assert await memory.read_many(qs, now_s=t) == await red.read_many(qs, now_s=t)


# --- Redis only: the key layout and expiry that redis.py promises ------------------------------------


async def test_redis_keys_layout_and_ttls(redis_client: aioredis.Redis, key_prefix: str) -> None:
    store = RedisCounterStore(redis_client, key_prefix, SETTINGS)
    await store.apply(WriteBatch.of(add(100.5, 2), obs(100.5, 15, count=2)), batch_id="b-1", now_s=T0 + 101)
    start_ms = int(T0 + 100) * 1000
    keys = {k.decode().removeprefix(key_prefix) async for k in redis_client.scan_iter(match=f"{key_prefix}*")}
    assert keys == {
        f"b:c:d1:arrivals::{start_ms}",
        "m:c:d1:arrivals:",
        f"b:h:d1:ttft_ms:stage=prefill:{start_ms}",
        "m:h:d1:ttft_ms:stage=prefill",
        "d:b-1",
    }
    fields = await redis_client.hgetall(f"{key_prefix}b:h:d1:ttft_ms:stage=prefill:{start_ms}")
    # 15 falls in bin 1, (10, 20]; twice.
    assert fields == {b"s": b"30", b"n": b"2", b"lo": b"15.0", b"hi": b"15.0", b"b1": b"2"}
    # Upper bounds only (Redis counts down in real time from here): bucket [100, 101) + 60 s - now 101
    # = 60 s; meta: newest sample 100.5 + 60 s - 101 = 59.5 s; dedupe record: 30 s.
    expected = {f"b:c:d1:arrivals::{start_ms}": 60_000, "m:c:d1:arrivals:": 59_500, "d:b-1": 30_000}
    for key, ttl_ms in expected.items():
        assert 0 < await redis_client.pttl(key_prefix + key) <= ttl_ms


async def test_redis_reloads_a_script_it_does_not_know(redis_client: aioredis.Redis, key_prefix: str) -> None:
    store = RedisCounterStore(redis_client, key_prefix, SETTINGS)
    # What a Redis restart (or SCRIPT FLUSH, which would disturb other tests) looks like to the client.
    store._apply_script.sha = "0" * 40
    assert await store.apply(WriteBatch.of(add(100, 1)), now_s=T0 + 101)
    assert (await store.read(ARRIVALS, Kind.COUNTER, now_s=T0 + 101, window_s=1)).sum == 1.0


# --- Redis only: the server-side window read (redis_read.READ_LUA) ----------------------------------


@pytest.mark.redis
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    samples=st.lists(
        st.tuples(
            st.integers(0, 9),  # bucket offset: sums run over many buckets, in order
            st.floats(0, 1e18, allow_nan=False, allow_infinity=False),
            st.sampled_from([Kind.COUNTER, Kind.GAUGE, Kind.HISTOGRAM]),
        ),
        min_size=1,
        max_size=40,
    )
)
async def test_server_side_fold_equals_the_twin_for_any_floats(
    redis_client: aioredis.Redis, key_prefix: str, samples: list[tuple[int, float, Kind]]
) -> None:
    # Arbitrary doubles (not the tidy values above) make float addition order visible: the script must
    # add bucket sums in the twin's order to agree bit for bit. Gauges get negative and -0.0 values.
    memory = InMemoryCounterStore(SETTINGS)
    red = RedisCounterStore(redis_client, f"{key_prefix}{uuid.uuid4().hex[:8]}:", SETTINGS)
    writes: list[Write] = []
    for i, (offset, v, kind) in enumerate(samples):
        at = T0 + 100 + offset + (i % 7) / 8
        if kind is Kind.COUNTER:
            writes.append(CounterWrite(ARRIVALS, at, v))
        elif kind is Kind.GAUGE:
            writes.append(GaugeWrite(QUEUE, at, -v))
        else:
            writes.append(HistogramWrite(TTFT, at, v, 1 + i % 3))
    for start in range(0, len(writes), 5):  # several batches: stored sums are re-added per batch
        batch = WriteBatch(tuple(writes[start : start + 5]))
        for s in (memory, red):
            await s.apply(batch, now_s=T0 + 111)
    qs = [
        ReadQuery(k, kind, w)
        for k, kind in ((ARRIVALS, Kind.COUNTER), (QUEUE, Kind.GAUGE), (TTFT, Kind.HISTOGRAM))
        for w in (1, 5, 10, 60)
    ]
    assert await memory.read_many(qs, now_s=T0 + 110.5) == await red.read_many(qs, now_s=T0 + 110.5)


async def test_redis_read_is_one_round_trip(
    redis_client: aioredis.Redis, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisCounterStore(redis_client, key_prefix, SETTINGS)
    await apply(store, add(100, 1), gauge(101, 2), obs(102, 30), now=103)
    commands: list[object] = []
    real: Callable[..., Awaitable[object]] = redis_client.execute_command

    async def counting(*args: object, **kwargs: object) -> object:
        commands.append(args[0])
        return await real(*args, **kwargs)

    monkeypatch.setattr(redis_client, "execute_command", counting)
    qs = [
        ReadQuery(k, kind, 60)
        for k, kind in ((ARRIVALS, Kind.COUNTER), (QUEUE, Kind.GAUGE), (TTFT, Kind.HISTOGRAM))
    ]
    reads = await store.read_many(qs, now_s=T0 + 103)
    # 3 queries × 60 buckets would have been 183 pipelined commands; the script does them in Redis.
    assert commands == ["EVALSHA"]
    assert [r.sum for r in reads] == [1.0, 2.0, 30.0]


async def test_redis_counts_past_2_53_are_exact(redis_client: aioredis.Redis, key_prefix: str) -> None:
    # Lua adds counts as doubles, exact only below 2**53; such a query is re-read bucket by bucket.
    # Two buckets of 2**52 and 2**52 + 1 sum to 2**53 + 1, which a double would round to 2**53.
    store = RedisCounterStore(redis_client, key_prefix, SETTINGS)
    start_ms = int(T0 + 100) * 1000
    for offset, n in ((0, 2**52), (1000, 2**52 + 1)):
        await redis_client.hset(
            f"{key_prefix}b:h:d1:ttft_ms:stage=prefill:{start_ms + offset}",
            mapping={"s": "1", "n": str(n), "lo": "1.0", "hi": "1.0", "b0": str(n)},
        )
    await apply(store, add(100.5, 3), now=101)
    reads = await store.read_many(
        [ReadQuery(TTFT, Kind.HISTOGRAM, 2), ReadQuery(ARRIVALS, Kind.COUNTER, 2)], now_s=T0 + 102
    )
    assert reads[0].count == 2**53 + 1
    assert [(b.upper, b.count) for b in reads[0].bins] == [(10.0, 2**53 + 1)]
    assert reads[0].sum == 2.0
    assert reads[1].sum == 3.0  # the query answered by the script, alongside the re-read one


async def test_redis_read_reloads_its_script(redis_client: aioredis.Redis, key_prefix: str) -> None:
    store = RedisCounterStore(redis_client, key_prefix, SETTINGS)
    await apply(store, add(100, 1), now=101)
    store._read_script.sha = "0" * 40  # as after a Redis restart
    assert (await store.read(ARRIVALS, Kind.COUNTER, now_s=T0 + 101, window_s=1)).sum == 1.0
