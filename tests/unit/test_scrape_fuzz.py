"""Engine /metrics text the scraper has never seen: hypothesis mutates vLLM and SGLang expositions (lines
dropped, repeated, swapped or cut; values NaN, ±Inf, negative, huge or not numbers; bucket bounds
garbled; stray text) and runs the ingest scrape path on two of them (``opscale.services.ingest.scrape``:
parse, detect the engine, read per model, derive samples against the previous reading, validate them as
a push is, keep the reading as state). The only failures allowed are the two that path reports as a
failed scrape: ``ExpositionError`` for the text, ``OpscaleError`` for samples that fail validation.
Anything else (ValueError, OverflowError, ZeroDivisionError: four such were found this way) would end
the scrape loop's task. ``make fuzz`` runs it at scale."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opscale.errors import OpscaleError
from opscale.scrape import ExpositionError, derive_samples, detect_engine, parse_exposition, read_models
from opscale.scrape.codec import state_from_json, state_to_json
from opscale.signals import store_settings, validate_samples
from opscale.spec import OperatorKind, PoolRef, Stage
from tests.fixtures.metrics.enginesim import T0, EngineSim
from tests.fuzz_budget import examples, report

OUTCOMES: Counter[str] = Counter()
GAP_S = 15.0
VALUES = ["NaN", "+Inf", "-Inf", "-1", "-0", "0", "1e308", "1e12", "4.2e-320", "x", "", "0x10", "1_000"]
BOUNDS = ['le="abc"', 'le="NaN"', 'le="-Inf"', 'le="1e999"', 'le=""', 'le="+Inf"', 'le="0"']


@functools.cache
def base(kind: str, dp: int) -> tuple[list[str], list[str]]:
    """Two expositions of one simulated engine, ``GAP_S`` apart, as lines."""
    sim = EngineSim(kind, models=("llama", "qwen"), horizon_s=90, dp=dp, seed=11)
    return sim.exposition_at(T0 + 40).splitlines(), sim.exposition_at(T0 + 40 + GAP_S).splitlines()


def _mutate(lines: list[str], ops: list[tuple[int, int, int, int]]) -> str:
    out = list(lines)
    for op, i, j, k in ops:
        if not out:
            break
        i, j = i % len(out), j % len(out)
        if op == 0:
            del out[i]
        elif op == 1:
            out.insert(j, out[i])
        elif op == 2:
            out[i], out[j] = out[j], out[i]
        elif op == 3 and not out[i].startswith("#"):  # the sample's value
            name, _, _ = out[i].rpartition(" ")
            out[i] = f"{name} {VALUES[k % len(VALUES)]}"
        elif op == 4 and 'le="' in out[i]:
            head, _, tail = out[i].partition('le="')
            out[i] = head + BOUNDS[k % len(BOUNDS)] + tail.partition('"')[2]
        elif op == 5:
            out[i] = out[i][: k % (len(out[i]) + 1)]
        elif op == 6:
            out.insert(i, ["# TYPE x counter", "x 1", "}{", "# EOF", "\x00", 'y{a="b"} 2 3 4'][k % 6])
    return "\n".join(out) + "\n"


def _scrape(prev_text: str, cur_text: str) -> Iterator[str]:
    """The ingest scrape path on two texts: the outcome per model, as the scrape loop would count it."""
    readings = []
    for at, text in ((T0 + 40, prev_text), (T0 + 40 + GAP_S, cur_text)):
        try:
            expo = parse_exposition(text)
            engine = detect_engine(expo)
            if engine is None:
                raise ExpositionError("no vLLM or SGLang serving metrics in the response")
            readings.append(read_models(expo, engine, at))
        except ExpositionError:
            yield "exposition error"
            return
    prev, cur = readings
    pool = PoolRef(stage=Stage.SERVING, operator=OperatorKind.MODEL)
    for model, reading in cur.items():
        try:
            d = derive_samples(prev.get(model), reading, deployment=model, pool=pool, instance="e:8000")
            validate_samples(d.samples, now_s=reading.at_s, store=store_settings())
        except OpscaleError:
            yield "samples refused"
            continue
        kept = state_to_json(reading, d.carry)
        assert state_to_json(*state_from_json(kept)) == kept  # NaN, an absent sum, is not == itself
        yield "samples" if d.samples else "no samples"


# Values and bounds most often: a cut line or stray text fails the whole parse, which stops there.
ops = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 2, 3, 3, 3, 3, 4, 4, 4, 5, 6]),
        st.integers(0, 10_000),
        st.integers(0, 10_000),
        st.integers(0, 10_000),
    ),
    max_size=8,
)


@pytest.mark.parametrize(("kind", "dp"), [("vllm", 1), ("vllm", 2), ("sglang", 1), ("sglang", 2)])
@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(prev_ops=ops, cur_ops=ops)
def test_mutated_engine_metrics_fail_only_as_a_failed_scrape(
    kind: str, dp: int, prev_ops: list[tuple[int, int, int, int]], cur_ops: list[tuple[int, int, int, int]]
) -> None:
    prev, cur = base(kind, dp)
    OUTCOMES.update(_scrape(_mutate(prev, prev_ops), _mutate(cur, cur_ops)))


def test_unmutated_expositions_give_samples_for_both_models() -> None:
    for kind in ("vllm", "sglang"):
        prev, cur = base(kind, 1)
        assert list(_scrape("\n".join(prev), "\n".join(cur))) == ["samples", "samples"]


def teardown_module() -> None:
    report("scrape", OUTCOMES)
