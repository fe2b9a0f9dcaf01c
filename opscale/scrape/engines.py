"""Which metrics of vLLM and SGLang mean what, and one engine-neutral reading of an exposition.

Names follow vLLM's V1 engine (v0.8 - v0.11: ``vllm:kv_cache_usage_perc`` and
``vllm:inter_token_latency_seconds`` in recent releases, ``vllm:gpu_cache_usage_perc`` and
``vllm:time_per_output_token_seconds`` before) and SGLang's ``sglang:`` metrics (v0.4 - v0.5). Where a
metric was renamed, every known name is listed, newest first; the first one present wins.

An endpoint may carry several label sets of one metric (vLLM's data-parallel ``engine`` label,
SGLang's ranks, a ``finished_reason`` on request counters): counts and token counters are summed,
fractions (KV-cache use) averaged.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass

from opscale.scrape.parse import Exposition, HistogramValue, Labels


class Engine(enum.StrEnum):
    VLLM = "vllm"
    SGLANG = "sglang"


@dataclass(frozen=True, slots=True)
class EngineNames:
    running: tuple[str, ...]
    waiting: tuple[str, ...]
    kv_usage: tuple[str, ...]  # fraction of KV-cache capacity in use, 0..1 (despite vLLM's "perc")
    prompt_tokens: tuple[str, ...]  # counter: prompt tokens of requests (prefilled or cache hits)
    generation_tokens: tuple[str, ...]  # counter
    cached_prompt_tokens: tuple[str, ...]  # counter: prompt tokens served from the prefix cache
    requests: tuple[str, ...]  # counter: finished requests
    ttft: tuple[str, ...]  # histograms, seconds
    tbt: tuple[str, ...]
    e2e: tuple[str, ...]
    prompt_len: tuple[str, ...]  # histograms, tokens per request
    output_len: tuple[str, ...]


NAMES: Mapping[Engine, EngineNames] = {
    Engine.VLLM: EngineNames(
        running=("vllm:num_requests_running",),
        waiting=("vllm:num_requests_waiting",),
        kv_usage=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        prompt_tokens=("vllm:prompt_tokens_total",),
        generation_tokens=("vllm:generation_tokens_total",),
        cached_prompt_tokens=("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
        requests=("vllm:request_success_total",),
        ttft=("vllm:time_to_first_token_seconds",),
        tbt=("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
        e2e=("vllm:e2e_request_latency_seconds",),
        prompt_len=("vllm:request_prompt_tokens",),
        output_len=("vllm:request_generation_tokens",),
    ),
    Engine.SGLANG: EngineNames(
        running=("sglang:num_running_reqs",),
        waiting=("sglang:num_queue_reqs",),
        kv_usage=("sglang:token_usage",),
        prompt_tokens=("sglang:prompt_tokens_total",),
        generation_tokens=("sglang:generation_tokens_total",),
        cached_prompt_tokens=("sglang:cached_tokens_total",),
        requests=("sglang:num_requests_total",),
        ttft=("sglang:time_to_first_token_seconds",),
        tbt=("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
        e2e=("sglang:e2e_request_latency_seconds",),
        prompt_len=(),  # SGLang exports no per-request length histograms; arrivals use the counters
        output_len=(),
    ),
}

# What an endpoint must export for the engine to be recognised (and scraped usefully).
_REQUIRED = ("running", "waiting", "prompt_tokens", "generation_tokens")


@dataclass(frozen=True, slots=True)
class EngineReading:
    """One scrape, engine-neutral. None: the endpoint does not export that metric."""

    engine: Engine
    at_s: float
    running: float | None
    waiting: float | None
    kv_usage: float | None
    prompt_tokens: float | None
    generation_tokens: float | None
    cached_prompt_tokens: float | None
    requests: float | None
    ttft_s: HistogramValue | None
    tbt_s: HistogramValue | None
    e2e_s: HistogramValue | None
    prompt_len: HistogramValue | None
    output_len: HistogramValue | None
    missing: tuple[str, ...]  # expected metrics not found (each reported by its newest name)


def detect_engine(expo: Exposition) -> Engine | None:
    """The engine whose required metrics the exposition has (vLLM first), else None."""
    names = expo.names()
    for engine, n in NAMES.items():
        if all(any(name in names for name in getattr(n, attr)) for attr in _REQUIRED):
            return engine
    return None


def _scalar(series: Mapping[str, Mapping[Labels, float]], names: tuple[str, ...], mean: bool) -> float | None:
    for name in names:
        values = series.get(name)
        if values:
            total = sum(values.values())
            return total / len(values) if mean else total
    return None


def _merge(values: list[HistogramValue]) -> HistogramValue | None:
    """Sum histograms of one family; label sets with other bucket bounds than the first are left out."""
    if not values:
        return None
    bounds = values[0].bounds
    same = [v for v in values if v.bounds == bounds]
    buckets = tuple((le, sum(v.buckets[i][1] for v in same)) for i, le in enumerate(bounds))
    return HistogramValue(buckets, sum(v.sum for v in same), sum(v.count for v in same))


def _histogram(expo: Exposition, names: tuple[str, ...]) -> HistogramValue | None:
    for name in names:
        series = expo.histograms.get(name)
        if series:
            return _merge(list(series.values()))
    return None


def read_engine(expo: Exposition, engine: Engine, at_s: float) -> EngineReading:
    n = NAMES[engine]
    s = expo.scalars
    reading = EngineReading(
        engine=engine,
        at_s=at_s,
        running=_scalar(s, n.running, mean=False),
        waiting=_scalar(s, n.waiting, mean=False),
        kv_usage=_scalar(s, n.kv_usage, mean=True),
        prompt_tokens=_scalar(s, n.prompt_tokens, mean=False),
        generation_tokens=_scalar(s, n.generation_tokens, mean=False),
        cached_prompt_tokens=_scalar(s, n.cached_prompt_tokens, mean=False),
        requests=_scalar(s, n.requests, mean=False),
        ttft_s=_histogram(expo, n.ttft),
        tbt_s=_histogram(expo, n.tbt),
        e2e_s=_histogram(expo, n.e2e),
        prompt_len=_histogram(expo, n.prompt_len),
        output_len=_histogram(expo, n.output_len),
        missing=(),
    )
    expected = ("running", "waiting", "kv_usage", "prompt_tokens", "generation_tokens", "ttft", "tbt")
    fields = {"ttft": "ttft_s", "tbt": "tbt_s"}
    missing = tuple(getattr(n, a)[0] for a in expected if getattr(reading, fields.get(a, a)) is None)
    return dataclasses.replace(reading, missing=missing)
