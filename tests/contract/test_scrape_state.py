"""One contract suite for both ``ScrapeState`` implementations (in-process twin and Redis): the
versioned previous reading (compare-and-set) and the membership of live scraper replicas; and the
rendezvous owner function they are used with."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opscale.services.ingest.shard import MemoryScrapeState, RedisScrapeState, ScrapeState, owner

T0 = 1_700_000_000.0


@pytest.fixture(params=["memory", "redis"])
def state(request: pytest.FixtureRequest) -> ScrapeState:
    if request.param == "memory":
        return MemoryScrapeState()
    client = request.getfixturevalue("redis_client")  # its clean-up deletes the test's prefix
    return RedisScrapeState(client, f"{request.getfixturevalue('key_prefix')}{uuid.uuid4().hex[:8]}:")


async def test_commit_is_compare_and_set_on_the_version(state: ScrapeState) -> None:
    assert await state.load("http://e:1/metrics#m") == (0, None)
    assert await state.commit("http://e:1/metrics#m", 0, "first", ttl_s=60)
    assert await state.load("http://e:1/metrics#m") == (1, "first")
    # A second writer that read version 0 too loses: its interval was already written.
    assert not await state.commit("http://e:1/metrics#m", 0, "stale", ttl_s=60)
    assert await state.commit("http://e:1/metrics#m", 1, "second", ttl_s=60)
    assert await state.load("http://e:1/metrics#m") == (2, "second")
    assert await state.load("http://e:1/metrics#other") == (0, None)  # keys are independent


async def test_members_live_until_their_ttl_and_leave_at_once(state: ScrapeState) -> None:
    assert await state.beat("a", now_s=T0, ttl_s=1.5) == ["a"]
    assert await state.beat("b", now_s=T0 + 1, ttl_s=1.5) == ["a", "b"]
    # a's entry ran out at T0 + 1.5; b renews at T0 + 2.
    assert await state.beat("b", now_s=T0 + 2, ttl_s=1.5) == ["b"]
    assert await state.beat("c", now_s=T0 + 2.5, ttl_s=1.5) == ["b", "c"]
    await state.leave("b")
    assert await state.beat("c", now_s=T0 + 2.6, ttl_s=1.5) == ["c"]


@given(
    members=st.lists(st.text("abcdef", min_size=1, max_size=4), min_size=2, max_size=6, unique=True),
    keys=st.lists(st.text("xyz0123", min_size=1, max_size=6), min_size=1, max_size=30, unique=True),
)
def test_rendezvous_moves_only_the_keys_of_the_member_that_left(members: list[str], keys: list[str]) -> None:
    gone, rest = members[0], members[1:]
    for key in keys:
        before, after = owner(key, members), owner(key, rest)
        assert before in members and after in rest
        if before != gone:
            assert after == before
    assert owner("k", []) is None
