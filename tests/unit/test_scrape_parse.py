"""Parsing engine /metrics text and reading it per model and engine. The example files are built by
tests/fixtures/metrics/enginesim.py from the engines' metric definitions (see their README)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from opscale.scrape import Engine, ExpositionError, detect_engine, models_of, parse_exposition, read_models
from tests.fixtures.metrics.enginesim import T0, EngineSim

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"


@pytest.mark.parametrize("kind", ["vllm", "sglang"])
def test_the_checked_in_examples_are_what_the_builder_makes(kind: str) -> None:
    # The examples are for reading; this keeps them from drifting from the builder the tests use.
    built = EngineSim(kind, horizon_s=30, dp=1, seed=7).exposition_at(T0 + 20)
    assert (FIXTURES / f"{kind}_example.txt").read_text() == built


@pytest.mark.parametrize(("kind", "engine"), [("vllm", Engine.VLLM), ("sglang", Engine.SGLANG)])
def test_a_reading_matches_the_simulated_engine(kind: str, engine: Engine) -> None:
    sim = EngineSim(kind, horizon_s=40, dp=1, seed=3)
    expo = parse_exposition(sim.exposition_at(T0 + 30))
    assert detect_engine(expo) is engine
    (r,) = read_models(expo, engine, T0 + 30).values()
    truth = sim.truth(T0, T0 + 30)
    assert (r.model, r.engines, r.running, r.waiting) == ("llama", 1, truth.running, truth.waiting)
    assert r.kv_usage == pytest.approx(truth.kv_by_engine[0])
    assert r.missing == ()
    # Every token generated so far; SGLang's decode counter lags by up to 40 steps and leaves out
    # the first tokens (made by prefill).
    generated = sum(1 for q in sim.requests for t in q.tokens if t <= T0 + 30)
    assert r.decode_tokens is not None
    if kind == "vllm":
        assert r.decode_tokens == generated and r.arrivals is None
    else:
        assert 0.9 * generated < r.decode_tokens < generated
        assert r.arrivals == sum(1 for q in sim.requests if q.arrival <= T0 + 30)
    ttft = r.ttft_s
    assert ttft is not None and math.isinf(ttft.bounds[-1]) and ttft.count == len(truth.ttft_s)
    assert r.prompt_len is not None and r.prompt_len.count == r.finished


def test_two_models_on_one_endpoint_are_two_readings() -> None:
    sim = EngineSim("vllm", models=("llama", "mistral"), horizon_s=20, seed=2)
    expo = parse_exposition(sim.exposition_at(T0 + 15))
    readings = read_models(expo, Engine.VLLM, T0 + 15)
    assert sorted(readings) == models_of(expo, Engine.VLLM) == ["llama", "mistral"]
    for model, r in readings.items():
        assert r.running == sim.truth(T0, T0 + 15, model).running
        assert r.process_start_s == T0  # unlabelled series are shared by every model


@pytest.mark.parametrize("kind", ["vllm", "sglang"])
def test_data_parallel_engines_sum_counts_and_take_the_max_kv_use(kind: str) -> None:
    sim = EngineSim(kind, dp=2, horizon_s=20, seed=4)
    expo = parse_exposition(sim.exposition_at(T0 + 15))
    (r,) = read_models(expo, Engine(kind), T0 + 15).values()
    truth = sim.truth(T0, T0 + 15)
    assert r.engines == 2 and r.running == truth.running
    assert r.kv_usage == pytest.approx(max(truth.kv_by_engine))
    assert [v for _, v in r.kv_usage_by_engine] == pytest.approx(truth.kv_by_engine)


TEXT = """\
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m",tp_rank="0",dp_rank="0"} 3
sglang:num_running_reqs{model_name="m",tp_rank="1",dp_rank="0"} 3
sglang:num_running_reqs{model_name="m",tp_rank="0",dp_rank="1"} 5
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="m",tp_rank="0",dp_rank="0"} 1
# TYPE sglang:realtime_tokens counter
sglang:realtime_tokens_total{model_name="m",tp_rank="0",dp_rank="0",mode="decode"} 100
sglang:realtime_tokens_created{model_name="m",tp_rank="0",dp_rank="0",mode="decode"} 1700000000.5
sglang:realtime_tokens_total{model_name="m",tp_rank="0",dp_rank="0",mode="prefill_compute"} 900
sglang:realtime_tokens_total{model_name="m",tp_rank="0",dp_rank="1",mode="decode"} 50
"""


def test_created_times_are_kept_and_repeated_tensor_parallel_ranks_left_out() -> None:
    expo = parse_exposition(TEXT)
    assert "sglang:realtime_tokens_created" not in expo.scalars
    (r,) = read_models(expo, Engine.SGLANG, 0.0).values()
    assert (r.running, r.waiting, r.decode_tokens, r.prefill_computed) == (
        8,
        1,
        150,
        900,
    )  # tp_rank 1 left out
    assert len(r.created) == 1 and r.created[0][1] == 1_700_000_000.5
    # No latency or KV series here: reported missing, by their current names.
    assert "sglang:time_to_first_token_seconds" in r.missing and "sglang:token_usage" in r.missing


def test_legacy_vllm_names_are_read_under_the_new_meaning() -> None:
    expo = parse_exposition(
        "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 2\n"
        "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 1\n"
        "# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc 0.3\n"
        "# TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total 7\n"
    )
    (r,) = read_models(expo, Engine.VLLM, 0.0).values()
    assert (r.model, r.kv_usage, r.decode_tokens) == ("", 0.3, 7)


def test_unknown_or_malformed_text() -> None:
    assert detect_engine(parse_exposition("# TYPE up gauge\nup 1\n")) is None
    with pytest.raises(ExpositionError):
        parse_exposition("this is { not metrics\n")


def _hist(name: str, buckets: list[tuple[str, str]], count: str = "3", total: str = "6") -> str:
    lines = [f"# TYPE {name} histogram"]
    lines += [f'{name}_bucket{{le="{le}"}} {c}' for le, c in buckets]
    return "\n".join([*lines, f"{name}_sum {total}", f"{name}_count {count}", ""])


@pytest.mark.parametrize(
    ("buckets", "count"),
    [
        ([("1.0", "1"), ("soon", "2"), ("+Inf", "3")], "3"),  # a bound that is not a number
        ([("1.0", "1"), ("+Inf", "+Inf")], "3"),  # a count that is not finite
        ([("1.0", "NaN"), ("+Inf", "3")], "3"),
        ([("1.0", "-1"), ("+Inf", "3")], "3"),  # a negative count
        ([("1.0", "1"), ("+Inf", "3")], "NaN"),
    ],
)
def test_a_malformed_histogram_series_is_left_out_not_raised(
    buckets: list[tuple[str, str]], count: str
) -> None:
    # prometheus_client's parser takes any string as le and any float as a count; reading them as they
    # were raised ValueError past the scraper's handler, or OverflowError when the deltas were rounded.
    expo = parse_exposition(_hist("h", buckets, count) + _hist("ok", [("1.0", "1"), ("+Inf", "3")]))
    assert set(expo.histograms) == {"ok"}


def test_a_scalar_that_is_not_finite_or_a_negative_counter_is_absent() -> None:
    expo = parse_exposition(
        "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running +Inf\n"
        "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting NaN\n"
        "# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc 0.3\n"
        "# TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total -7\n"
        "# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total 5\n"
    )
    assert set(expo.scalars) == {"vllm:gpu_cache_usage_perc", "vllm:prompt_tokens_total"}
    (r,) = read_models(expo, Engine.VLLM, 0.0).values()
    assert (r.running, r.waiting, r.decode_tokens, r.kv_usage) == (None, None, None, 0.3)


@pytest.mark.parametrize("total", ["+Inf", "-Inf", "NaN"])
def test_a_histogram_sum_that_is_not_finite_is_absent_and_the_buckets_kept(total: str) -> None:
    # One rule where the text is read, as for the other values: the readers of a sum each guarded an
    # infinite one (no mean from it) as they do an absent one; now it is absent, and the buckets stay.
    (h,) = parse_exposition(_hist("h", [("1.0", "1"), ("+Inf", "3")], total=total)).histograms["h"].values()
    assert math.isnan(h.sum) and h.buckets == ((1.0, 1.0), (math.inf, 3.0)) and h.count == 3.0
