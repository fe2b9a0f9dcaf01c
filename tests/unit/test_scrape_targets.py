"""Scrape targets from a Prometheus file_sd file, grouped into endpoints, and picked up by the
scrape manager when the file changes (a wrong file is refused whole and the old targets stay)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from opscale.clock import VirtualClock
from opscale.config import ScrapeEngine, ScrapeRole, ScrapeTarget
from opscale.errors import ConfigError
from opscale.services.ingest.scrape import EndpointSpec, Route
from opscale.services.ingest.scrapers import Membership, ScrapeManager, Scraper
from opscale.services.ingest.shard import MemoryScrapeState
from opscale.services.ingest.targets import TargetsFile, all_targets, group_targets, parse_file_sd

GROUPS = [
    {
        "targets": ["10.0.0.5:8000", "10.0.0.6:8000"],
        "labels": {"deployment": "chat", "role": "decode", "model_name": "llama", "engine": "vllm"},
    },
    {"targets": ["p:30000"], "labels": {"deployment": "chat", "role": "prefill", "__scheme__": "https",
                                        "__metrics_path__": "/m"}},
]  # fmt: skip


def test_file_sd_json_and_yaml() -> None:
    targets = parse_file_sd(json.dumps(GROUPS), yaml_format=False)
    assert [t.url for t in targets] == [
        "http://10.0.0.5:8000/metrics",
        "http://10.0.0.6:8000/metrics",
        "https://p:30000/m",
    ]
    assert (targets[0].model_name, targets[0].engine, targets[2].role) == (
        "llama",
        ScrapeEngine.VLLM,
        ScrapeRole.PREFILL,
    )
    yaml_text = "- targets: ['e:1']\n  labels: {deployment: d, role: serving}\n"
    assert [t.deployment for t in parse_file_sd(yaml_text, yaml_format=True)] == ["d"]
    assert parse_file_sd("", yaml_format=True) == []


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{", "not JSON"),
        ('{"targets": []}', "must be a list of target groups"),
        ('[{"labels": {}}]', "group 0: must be a mapping with a 'targets' list"),
        (
            '[{"targets": ["e:1"], "labels": {"role": "decode"}}]',
            "group 0.targets[0] (e:1): deployment: Field required",
        ),
        ('[{"targets": ["e:1"], "labels": {"deployment": "d", "role": "router"}}]', "role: Input should be"),
    ],
)
def test_a_wrong_file_names_the_group_and_field(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_file_sd(text, yaml_format=False)
    assert says in info.value.message


def target(url: str, deployment: str, model: str | None = None, **more: object) -> ScrapeTarget:
    return ScrapeTarget.model_validate(
        {"url": url, "deployment": deployment, "role": "decode", "model_name": model, **more}
    )


def test_targets_of_one_url_are_one_endpoint() -> None:
    (spec,) = group_targets([target("http://e:1/m", "a", "m1"), target("http://e:1/m", "b", "m2")], 1.0)
    assert spec.routes == (Route("a", ScrapeRole.DECODE, "m1"), Route("b", ScrapeRole.DECODE, "m2"))
    with pytest.raises(ConfigError, match="disagree on engine, interval_s or timeout_s"):
        group_targets(
            [target("http://e:1/m", "a", "m1"), target("http://e:1/m", "b", "m2", interval_s=5)], 1.0
        )
    with pytest.raises(ConfigError, match="each needs its own model_name"):
        group_targets([target("http://e:1/m", "a"), target("http://e:1/m", "b", "m2")], 1.0)
    static = [target("http://e:1/m", "a")]
    assert (
        all_targets(static, [target("http://e:1/m", "z"), target("http://f:1/m", "b")])[1].deployment == "b"
    )


class Fake:
    def __init__(self, spec: EndpointSpec) -> None:
        self.spec = spec
        self.key = spec.url
        self.interval_s = spec.interval_s
        self.scrapes = 0

    async def scrape_once(self) -> bool:
        self.scrapes += 1
        return True


def make(targets: list[ScrapeTarget]) -> list[Scraper]:
    return [Fake(spec) for spec in group_targets(targets, 1.0)]


async def test_the_manager_picks_up_a_changed_file_and_keeps_the_old_one_when_wrong(tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    path.write_text(json.dumps(GROUPS[:1]))
    clock = VirtualClock()
    membership = Membership(MemoryScrapeState(), clock, interval_s=1.0, sharded=False)
    manager = ScrapeManager(membership, clock, make, static_targets=[target("http://s:1/m", "s")],
                            targets_file=TargetsFile(path), default_interval_s=1.0)  # fmt: skip
    await manager.step(wait=True)
    assert sorted(manager.scrapers) == [
        "http://10.0.0.5:8000/metrics",
        "http://10.0.0.6:8000/metrics",
        "http://s:1/m",
    ]
    kept = manager.scrapers["http://10.0.0.5:8000/metrics"]
    for _ in range(19):  # each first scrape is put off by its own part of the 1 s interval
        clock.advance(0.05)
        await manager.step(wait=True)
    assert all(s.scrapes == 1 for s in manager.scrapers.values())  # type: ignore[attr-defined]

    groups = [{**GROUPS[0], "targets": ["10.0.0.5:8000", "10.0.0.7:8000"]}]
    path.write_text(json.dumps(groups))
    os.utime(path, (1, 1))  # a new modification time, whatever the file system's resolution
    clock.advance(1.0)
    await manager.step(wait=True)
    assert sorted(manager.scrapers) == [
        "http://10.0.0.5:8000/metrics",
        "http://10.0.0.7:8000/metrics",
        "http://s:1/m",
    ]
    assert manager.scrapers["http://10.0.0.5:8000/metrics"] is kept  # unchanged: same scraper, same health

    path.write_text("[{")  # broken: refused, the targets in force stay
    os.utime(path, (2, 2))
    clock.advance(1.0)
    await manager.step(wait=True)
    assert len(manager.scrapers) == 3
