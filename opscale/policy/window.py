"""What a decision tick reads: the load window of one deployment, and the signals it is built from."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from opscale.errors import InvalidArgument
from opscale.policy.lengths import LengthDist
from opscale.pools import PoolKey


class Signal(enum.StrEnum):
    """The counters a ``LoadWindow`` is built from; staleness is tracked per signal."""

    ARRIVAL_RATE = "arrival_rate"
    TOKEN_LENGTHS = "token_lengths"
    DECODE_TPS = "decode_tps"
    PREFILL_TPS = "prefill_tps"
    TTFT = "ttft"
    TBT = "tbt"
    QUEUE_DEPTH = "queue_depth"
    KV_CACHE = "kv_cache"
    GPU_UTILIZATION = "gpu_utilization"
    BUSY_FRACTION = "busy_fraction"


def check_nonneg(owner: str, **values: float | None) -> None:
    for name, value in values.items():
        if value is not None and not (value >= 0.0 and math.isfinite(value)):
            raise InvalidArgument(f"{owner}.{name} must be a finite number >= 0, got {value}", field=name)


def check_fraction(owner: str, name: str, value: float | None) -> None:
    # Utilization-like signals may exceed 1 slightly through sampling jitter; anything above 1.5 is a bug.
    if value is not None and not 0.0 <= value <= 1.5:
        raise InvalidArgument(f"{owner}.{name} must be a fraction in [0, 1.5], got {value}", field=name)


@dataclass(frozen=True, slots=True)
class LoadWindow:
    """What the decision loop read from the counters for one deployment over the last ``window_s``.

    Latency fields are ``None`` when the window held no observation. ``staleness_s`` gives, per signal,
    the seconds since its last sample at the tick's ``now_s``; a missing key or ``None`` means never seen.
    Per-pool mappings leave out pools without a sample.
    """

    window_s: float
    arrival_rate_rps: float = 0.0
    input_tokens_mean: float = 0.0
    input_tokens_p99: float = 0.0
    output_tokens_mean: float = 0.0
    output_tokens_p99: float = 0.0
    decode_tps: float = 0.0
    prefill_uncached_tps: float = 0.0  # prefill tokens/s after prefix-cache hits: the work actually done
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    tbt_p50_ms: float | None = None
    tbt_p99_ms: float | None = None
    queue_depth: Mapping[PoolKey, float] = field(default_factory=dict)
    kv_cache_use: float | None = None  # fraction of KV-cache blocks in use
    gpu_utilization: float | None = None  # deployment-wide mean, 0..1
    gpu_utilization_by_pool: Mapping[PoolKey, float] = field(default_factory=dict)
    busy_fraction: Mapping[PoolKey, float] = field(default_factory=dict)
    staleness_s: Mapping[Signal, float | None] = field(default_factory=dict)
    # The window's length distributions (from ingest's length histograms); None: only the means are
    # known, and the planners treat every request as a mean one.
    input_tokens_dist: LengthDist | None = None
    output_tokens_dist: LengthDist | None = None
    # Other estimates of the prompt lengths that the TTFT percentile must also hold under. When
    # input_tokens_dist is the upper envelope of several estimates (length_pool.pooled_lengths), it prices
    # the load safely but can move a band of prompts past the longest servable one, out of the
    # percentile; planner_loads checks the percentile under each of these as well.
    input_tokens_also: tuple[LengthDist, ...] = ()
    # The standard deviation of the rate the plan must also cover besides the window's own estimate error,
    # in req/s: the forecast's burst over the start-up (opscale.policy.adaptive). The planners add the two
    # in quadrature (planner_loads.rate_bound). 0: none (the window as measured).
    rate_spread_rps: float = 0.0
    # Requests that arrived in the window's last ``recent_s`` seconds (None: not read; the short window
    # of ``opscale.signals.summary``). A burst shows here seconds before the window's mean moves
    # (``opscale.policy.recent.recent_floor``).
    recent_arrivals: int | None = None
    recent_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("input_tokens_dist", "output_tokens_dist"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, LengthDist):
                raise InvalidArgument(f"LoadWindow.{name} must be a LengthDist or None", field=name)
        if not all(isinstance(d, LengthDist) for d in self.input_tokens_also):
            raise InvalidArgument(
                "LoadWindow.input_tokens_also must hold LengthDists", field="input_tokens_also"
            )
        if not (self.window_s > 0 and math.isfinite(self.window_s)):
            raise InvalidArgument(f"LoadWindow.window_s must be > 0, got {self.window_s}", field="window_s")
        check_nonneg(
            "LoadWindow",
            arrival_rate_rps=self.arrival_rate_rps,
            rate_spread_rps=self.rate_spread_rps,
            recent_arrivals=self.recent_arrivals,
            recent_s=self.recent_s,
            input_tokens_mean=self.input_tokens_mean,
            input_tokens_p99=self.input_tokens_p99,
            output_tokens_mean=self.output_tokens_mean,
            output_tokens_p99=self.output_tokens_p99,
            decode_tps=self.decode_tps,
            prefill_uncached_tps=self.prefill_uncached_tps,
            ttft_p50_ms=self.ttft_p50_ms,
            ttft_p99_ms=self.ttft_p99_ms,
            tbt_p50_ms=self.tbt_p50_ms,
            tbt_p99_ms=self.tbt_p99_ms,
        )
        check_fraction("LoadWindow", "kv_cache_use", self.kv_cache_use)
        check_fraction("LoadWindow", "gpu_utilization", self.gpu_utilization)
        for pool, value in self.gpu_utilization_by_pool.items():
            check_fraction("LoadWindow", f"gpu_utilization_by_pool[{pool}]", value)
        for pool, value in self.busy_fraction.items():
            check_fraction("LoadWindow", f"busy_fraction[{pool}]", value)
        for sig, age in self.staleness_s.items():
            check_nonneg("LoadWindow", **{f"staleness_s[{sig}]": age})

    def inputs(self) -> LengthDist:
        """Prompt lengths: the distribution when known, else every prompt at the mean."""
        return self.input_tokens_dist or LengthDist.fixed(max(1.0, self.input_tokens_mean))

    def outputs(self) -> LengthDist:
        """Output lengths: the distribution when known, else every output at the mean."""
        return self.output_tokens_dist or LengthDist.fixed(max(1.0, self.output_tokens_mean))

    def age_s(self, signal: Signal) -> float | None:
        """Seconds since ``signal`` was last sampled; ``None`` if it never was."""
        return self.staleness_s.get(signal)
