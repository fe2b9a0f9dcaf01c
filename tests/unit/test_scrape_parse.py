"""Parsing engine /metrics text (the fixtures are hand-written in each engine's format; see their
README) and reading it as one engine-neutral reading."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from opscale.scrape import Engine, ExpositionError, detect_engine, parse_exposition, read_engine

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"


def text(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize(
    ("name", "engine", "running", "waiting", "kv", "prompt", "requests"),
    [
        ("vllm_v0.10_t0.txt", Engine.VLLM, 12, 3, 0.42, 1_250_000, 1250),  # 1200 stop + 50 length + 0 abort
        ("vllm_v0.10_t1.txt", Engine.VLLM, 14, 5, 0.5, 1_256_000, 1255),
        ("vllm_v0.6_legacy.txt", Engine.VLLM, 12, 3, 0.42, 1_250_000, 1250),
        ("sglang_v0.4_t0.txt", Engine.SGLANG, 20, 2, 0.62, 2_400_000, 2000),
        ("sglang_v0.4_t1.txt", Engine.SGLANG, 22, 4, 0.68, 2_404_800, 2004),
    ],
)
def test_fixture_readings(
    name: str, engine: Engine, running: float, waiting: float, kv: float, prompt: float, requests: float
) -> None:
    expo = parse_exposition(text(name))
    assert detect_engine(expo) is engine
    r = read_engine(expo, engine, 100.0)
    assert (r.running, r.waiting, r.kv_usage, r.prompt_tokens, r.requests) == (
        running,
        waiting,
        kv,
        prompt,
        requests,
    )
    assert r.at_s == 100.0 and r.ttft_s is not None and r.tbt_s is not None and r.e2e_s is not None
    assert r.missing == ()


def test_legacy_vllm_names_are_read_under_the_new_meaning() -> None:
    r = read_engine(parse_exposition(text("vllm_v0.6_legacy.txt")), Engine.VLLM, 0.0)
    assert r.kv_usage == 0.42  # vllm:gpu_cache_usage_perc
    assert r.tbt_s is not None and r.tbt_s.count == 308_750  # vllm:time_per_output_token_seconds
    assert r.cached_prompt_tokens is None  # V0 had no prefix-cache token counters


def test_histograms_keep_cumulative_buckets_sum_and_count() -> None:
    r = read_engine(parse_exposition(text("vllm_v0.10_t0.txt")), Engine.VLLM, 0.0)
    ttft = r.ttft_s
    assert ttft is not None
    assert ttft.bounds[:3] == (0.001, 0.005, 0.01) and math.isinf(ttft.bounds[-1])
    assert ttft.count == 1250 and ttft.buckets[-1][1] == 1250 and ttft.sum == 370.25
    # SGLang has no per-request length histograms; vLLM does.
    assert r.prompt_len is not None and r.prompt_len.count == 1250
    sg = read_engine(parse_exposition(text("sglang_v0.4_t0.txt")), Engine.SGLANG, 0.0)
    assert sg.prompt_len is None and sg.cached_prompt_tokens == 600_000


def test_created_series_and_other_metrics_are_ignored() -> None:
    expo = parse_exposition(text("sglang_v0.4_t0.txt"))
    assert "sglang:prompt_tokens_created" not in expo.scalars
    assert expo.scalars["sglang:prompt_tokens_total"]  # counters keep their _total name


def test_several_label_sets_sum_counts_and_average_fractions() -> None:
    expo = parse_exposition(
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0"} 3\n'
        'vllm:num_requests_running{engine="1"} 5\n'
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{engine="0"} 1\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0"} 0.2\n'
        'vllm:kv_cache_usage_perc{engine="1"} 0.6\n'
        "# TYPE vllm:prompt_tokens_total counter\n"
        'vllm:prompt_tokens_total{engine="0"} 10\n'
        'vllm:prompt_tokens_total{engine="1"} 30\n'
        "# TYPE vllm:generation_tokens_total counter\n"
        "vllm:generation_tokens_total 7\n"
    )
    r = read_engine(expo, Engine.VLLM, 0.0)
    assert (r.running, r.waiting, r.prompt_tokens, r.generation_tokens) == (8, 1, 40, 7)
    assert r.kv_usage == pytest.approx(0.4)
    # No latency histograms here: reported as missing, by their current names.
    assert r.missing == ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds")


def test_unknown_or_malformed_text() -> None:
    assert detect_engine(parse_exposition("# TYPE up gauge\nup 1\n")) is None
    with pytest.raises(ExpositionError):
        parse_exposition("this is { not metrics\n")
