"""Which metrics of vLLM and SGLang mean what, and an engine-neutral reading of one model on an endpoint.

The names, types, labels and bucket bounds are those the engines register with prometheus_client; see
docs/signals.md for each signal's source per engine and version, and tests/fixtures/metrics/README.md
for the source files they were read from. Where a metric was renamed, every known name is listed,
newest first; the first one present wins.

Splitting an endpoint:

- by model: every ``vllm:``/``sglang:`` series carries ``model_name``; one reading per value, so two
  models behind one endpoint are never added together. Series without the label (``process_*``) are
  shared by every model of the endpoint.
- by engine (data-parallel rank): vLLM labels its engine cores ``engine``, SGLang its schedulers
  ``dp_rank``. Counts and counters are summed over engines; KV-cache use is the *max* over them (one
  saturated engine is what limits admission; an average would hide it), and each engine's value is
  kept in ``kv_usage_by_engine``. SGLang reports scheduler metrics from tensor-parallel rank 0 only by
  default; with ``--enable-metrics-for-all-schedulers`` the other ranks repeat the same state, so
  series with ``tp_rank`` other than ``"0"`` are left out rather than counted again.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from opscale.scrape.parse import Exposition, HistogramValue, Labels

MODEL_LABEL = "model_name"


class Engine(enum.StrEnum):
    VLLM = "vllm"
    SGLANG = "sglang"


@dataclass(frozen=True, slots=True)
class Sel:
    """A metric name, and label values a series must have to count (e.g. SGLang's ``mode="decode"``)."""

    name: str
    where: Labels = ()


def _s(name: str, **where: str) -> Sel:
    return Sel(name, tuple(sorted(where.items())))


@dataclass(frozen=True, slots=True)
class EngineNames:
    prefix: str  # every metric of the engine starts with it
    engine_label: str  # tells data-parallel engines apart
    running: tuple[Sel, ...]
    waiting: tuple[Sel, ...]
    kv_usage: tuple[Sel, ...]  # fraction of KV-cache capacity in use, 0..1 (despite vLLM's "perc")
    arrivals: tuple[Sel, ...]  # counter of requests received; empty: arrivals come from conservation
    finished: tuple[Sel, ...]  # counter of finished requests
    decode_tokens: tuple[Sel, ...]  # counter that grows while tokens are generated
    prefill_computed: tuple[Sel, ...]  # counter of prompt tokens computed (cache misses); empty: below
    prompt_tokens: tuple[Sel, ...]  # counter of prompt tokens, cache hits included
    cache_hits: tuple[Sel, ...]  # counter of prompt tokens served from the prefix cache, same clock
    finished_prompt_tokens: tuple[Sel, ...]  # counters bumped once per finished request (mean lengths)
    finished_output_tokens: tuple[Sel, ...]
    ttft: tuple[str, ...]  # histograms, seconds
    tbt: tuple[str, ...]
    e2e: tuple[str, ...]
    prompt_len: tuple[str, ...]  # histograms, tokens per finished request
    output_len: tuple[str, ...]


NAMES: Mapping[Engine, EngineNames] = {
    Engine.VLLM: EngineNames(
        prefix="vllm:",
        engine_label="engine",
        running=(_s("vllm:num_requests_running"),),
        waiting=(_s("vllm:num_requests_waiting"),),
        kv_usage=(_s("vllm:kv_cache_usage_perc"), _s("vllm:gpu_cache_usage_perc")),
        arrivals=(),  # vLLM counts requests only when they finish
        finished=(_s("vllm:request_success_total"),),
        decode_tokens=(_s("vllm:generation_tokens_total"),),
        prefill_computed=(),
        prompt_tokens=(_s("vllm:prompt_tokens_total"),),
        cache_hits=(_s("vllm:prefix_cache_hits_total"), _s("vllm:gpu_prefix_cache_hits_total")),
        finished_prompt_tokens=(),
        finished_output_tokens=(),
        ttft=("vllm:time_to_first_token_seconds",),
        tbt=("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
        e2e=("vllm:e2e_request_latency_seconds",),
        prompt_len=("vllm:request_prompt_tokens",),
        output_len=("vllm:request_generation_tokens",),
    ),
    Engine.SGLANG: EngineNames(
        prefix="sglang:",
        engine_label="dp_rank",
        running=(_s("sglang:num_running_reqs"),),
        waiting=(_s("sglang:num_queue_reqs"),),
        kv_usage=(_s("sglang:token_usage"),),
        arrivals=(_s("sglang:num_requests_received_total"),),
        finished=(_s("sglang:num_requests_total"),),
        # The scheduler's realtime counters grow every log interval; prompt_tokens_total and
        # generation_tokens_total grow only when a request finishes (fallback for older releases).
        decode_tokens=(
            _s("sglang:realtime_tokens_total", mode="decode"),
            _s("sglang:generation_tokens_total"),
        ),
        prefill_computed=(_s("sglang:realtime_tokens_total", mode="prefill_compute"),),
        prompt_tokens=(_s("sglang:prompt_tokens_total"),),
        cache_hits=(_s("sglang:cached_tokens_total"),),
        finished_prompt_tokens=(_s("sglang:prompt_tokens_total"),),
        finished_output_tokens=(_s("sglang:generation_tokens_total"),),
        ttft=("sglang:time_to_first_token_seconds",),
        tbt=("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
        e2e=("sglang:e2e_request_latency_seconds",),
        prompt_len=("sglang:prompt_tokens_histogram",),
        output_len=("sglang:generation_tokens_histogram",),
    ),
}

# EngineReading's cumulative counters, and its histograms with the EngineNames field naming each.
COUNTER_FIELDS = (
    "arrivals",
    "finished",
    "decode_tokens",
    "prefill_computed",
    "prompt_tokens",
    "cache_hits",
    "finished_prompt_tokens",
    "finished_output_tokens",
)
HISTOGRAM_FIELDS: Mapping[str, str] = {
    "ttft_s": "ttft",
    "tbt_s": "tbt",
    "e2e_s": "e2e",
    "prompt_len": "prompt_len",
    "output_len": "output_len",
}

# What an endpoint must export for the engine to be recognised (and scraped usefully).
_REQUIRED = ("running", "waiting", "decode_tokens")


@dataclass(frozen=True, slots=True)
class EngineReading:
    """One model on one endpoint at one scrape, engine-neutral. None: the endpoint does not export it."""

    engine: Engine
    at_s: float
    model: str  # the model_name label value ("" when the endpoint does not label its model)
    engines: int  # data-parallel engines (label sets of the running gauge)
    running: float | None
    waiting: float | None
    kv_usage: float | None  # max over engines
    kv_usage_by_engine: tuple[tuple[str, float], ...]
    arrivals: float | None
    finished: float | None
    decode_tokens: float | None
    prefill_computed: float | None
    prompt_tokens: float | None
    cache_hits: float | None
    finished_prompt_tokens: float | None
    finished_output_tokens: float | None
    ttft_s: HistogramValue | None
    tbt_s: HistogramValue | None
    e2e_s: HistogramValue | None
    prompt_len: HistogramValue | None
    output_len: HistogramValue | None
    process_start_s: float | None  # process_start_time_seconds, when exported
    created: tuple[tuple[str, float], ...]  # creation time of each counter/histogram child
    missing: tuple[str, ...]  # expected metrics not found (each reported by its newest name)

    @property
    def queued(self) -> float | None:
        """Requests in the engine: running plus waiting."""
        if self.running is None or self.waiting is None:
            return None
        return self.running + self.waiting


def detect_engine(expo: Exposition) -> Engine | None:
    """The engine whose required metrics the exposition has (vLLM first), else None."""
    names = expo.names()
    for engine, n in NAMES.items():
        if all(any(s.name in names for s in getattr(n, attr)) for attr in _REQUIRED):
            return engine
    return None


def _model(labels: Labels) -> str | None:
    return next((v for k, v in labels if k == MODEL_LABEL), None)


def _kept(labels: Labels) -> bool:
    """False for the repeated state of SGLang's non-zero tensor-parallel ranks (see the docstring)."""
    return all(v == "0" for k, v in labels if k == "tp_rank")


def models_of(expo: Exposition, engine: Engine) -> list[str]:
    """The model_name values of the engine's series, sorted; [""] when none carries the label."""
    prefix = NAMES[engine].prefix
    found: set[str] = set()
    for family in (expo.scalars, expo.histograms):
        for name, series in family.items():
            if name.startswith(prefix):
                found.update(m for m in map(_model, series) if m is not None)
    return sorted(found) or [""]


class _ModelView:
    """The series of one model (and the unlabelled ones every model shares)."""

    def __init__(self, expo: Exposition, model: str) -> None:
        self._expo = expo
        self._model = model

    def _mine(self, labels: Labels) -> bool:
        m = _model(labels)
        return (m is None or m == self._model) and _kept(labels)

    def series(self, sels: Iterable[Sel]) -> list[tuple[Labels, float]]:
        """The label sets and values of the first selector that has any."""
        for sel in sels:
            found = [
                (labels, v)
                for labels, v in self._expo.scalars.get(sel.name, {}).items()
                if self._mine(labels) and all(pair in labels for pair in sel.where)
            ]
            if found:
                return found
        return []

    def total(self, sels: Iterable[Sel]) -> float | None:
        found = self.series(sels)
        return sum(v for _, v in found) if found else None

    def histogram(self, names: Iterable[str]) -> HistogramValue | None:
        """Sum of a family's series; series with other bucket bounds than the first are left out."""
        for name in names:
            values = [v for labels, v in self._expo.histograms.get(name, {}).items() if self._mine(labels)]
            if values:
                bounds = values[0].bounds
                same = [v for v in values if v.bounds == bounds]
                buckets = tuple((le, sum(v.buckets[i][1] for v in same)) for i, le in enumerate(bounds))
                return HistogramValue(buckets, sum(v.sum for v in same), sum(v.count for v in same))
        return None

    def created(self, prefix: str) -> tuple[tuple[str, float], ...]:
        out = []
        for name, series in self._expo.created.items():
            if name.startswith(prefix):
                out += [(f"{name}{list(labels)}", ts) for labels, ts in series.items() if self._mine(labels)]
        return tuple(sorted(out))


def _by_engine(found: list[tuple[Labels, float]], label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, v in found:
        key = next((val for k, val in labels if k == label), "0")
        out[key] = max(out.get(key, -math.inf), v)
    return out


def read_model(expo: Exposition, engine: Engine, model: str, at_s: float) -> EngineReading:
    n = NAMES[engine]
    view = _ModelView(expo, model)
    kv = _by_engine(view.series(n.kv_usage), n.engine_label)
    running = view.series(n.running)
    start = expo.scalars.get("process_start_time_seconds", {})
    reading = EngineReading(
        engine=engine,
        at_s=at_s,
        model=model,
        engines=len(_by_engine(running, n.engine_label)),
        running=view.total(n.running),
        waiting=view.total(n.waiting),
        kv_usage=max(kv.values()) if kv else None,
        kv_usage_by_engine=tuple(sorted(kv.items())),
        arrivals=view.total(n.arrivals),
        finished=view.total(n.finished),
        decode_tokens=view.total(n.decode_tokens),
        prefill_computed=view.total(n.prefill_computed),
        prompt_tokens=view.total(n.prompt_tokens),
        cache_hits=view.total(n.cache_hits),
        finished_prompt_tokens=view.total(n.finished_prompt_tokens),
        finished_output_tokens=view.total(n.finished_output_tokens),
        ttft_s=view.histogram(n.ttft),
        tbt_s=view.histogram(n.tbt),
        e2e_s=view.histogram(n.e2e),
        prompt_len=view.histogram(n.prompt_len),
        output_len=view.histogram(n.output_len),
        process_start_s=min(start.values()) if start else None,
        created=view.created(n.prefix),
        missing=(),
    )
    expected = {
        "running": n.running[0].name,
        "waiting": n.waiting[0].name,
        "kv_usage": n.kv_usage[0].name,
        "finished": n.finished[0].name,
        "decode_tokens": n.decode_tokens[0].name,
        "ttft_s": n.ttft[0],
        "tbt_s": n.tbt[0],
    }
    missing = tuple(name for attr, name in expected.items() if getattr(reading, attr) is None)
    return dataclasses.replace(reading, missing=missing)


def read_models(expo: Exposition, engine: Engine, at_s: float) -> dict[str, EngineReading]:
    """One reading per model_name on the endpoint."""
    return {m: read_model(expo, engine, m, at_s) for m in models_of(expo, engine)}
