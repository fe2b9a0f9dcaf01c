"""Trace files the project has never seen: hypothesis writes CSV and JSONL text from the pieces real and
broken traces are made of (headers, numbers at and past every limit, quotes, braces, stray bytes) and
``load_trace`` and ``build_trace`` read it. The only failure allowed is ``InvalidArgument`` naming what
was wrong; a trace that loads has finite, sorted arrivals and lengths within the limits. ``make fuzz``
runs it at scale."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opscale.errors import InvalidArgument
from opscale.sim.experiment import Scenario, build_trace
from opscale.sim.traces import MAX_TOKENS, load_trace
from tests.fuzz_budget import examples, report

OUTCOMES: Counter[str] = Counter()

HEADERS = [
    "arrival_s,input_tokens,output_tokens",
    "TIMESTAMP,ContextTokens,GeneratedTokens",
    "arrival_s,input_tokens",
    "\ufeffarrival_s,input_tokens,output_tokens",
    "arrival_s,input_tokens,output_tokens,arrival_s",
    "",
]
NUMBERS = ["0", "1", "2.5", "-1", "-0", "1e999", "nan", "inf", "1e300", "1" * 400, "0x1f", "", " 7 ", "1_0"]
TIMES = ["2023-11-16 18:15:46.6805900", "2023-11-16 18:15:46", "2023-13-45 99:99:99", "yesterday"]
JUNK = ['"', ",", "\x00", "\r", "\\", "{", "}", "[", "]", "\u2028", "é"]
SECONDS, TOKENS = ["0", "1", "2.5", "300"], ["1", "7", "300", "4096"]  # what a well-formed row holds


def _csv_row(draw: st.DrawFn) -> str:
    """Most rows well formed, so that some traces load and go on to be replayed."""
    if draw(st.integers(0, 3)):
        return ",".join(draw(st.sampled_from(c)) for c in (SECONDS, TOKENS, TOKENS))
    n = draw(st.integers(1, 5))
    return ",".join(draw(st.sampled_from(NUMBERS + TIMES + JUNK)) for _ in range(n))


@st.composite
def csv_text(draw: st.DrawFn) -> str:
    rows = [_csv_row(draw) for _ in range(draw(st.integers(0, 6)))]
    header = draw(st.sampled_from([HEADERS[0], HEADERS[0], *HEADERS]))
    return "\n".join([header, *rows]) + draw(st.sampled_from(["\n", ""]))


@st.composite
def jsonl_text(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 3)):
            t, i, o = (draw(st.sampled_from(c)) for c in (SECONDS, TOKENS, TOKENS))
            lines.append(f'{{"timestamp": {t}, "input_length": {i}, "output_length": {o}}}')
            continue
        fields = draw(
            st.lists(st.sampled_from(["timestamp", "input_length", "output_length", "x"]), max_size=4)
        )
        values = [
            draw(st.sampled_from([*NUMBERS[:10], "true", "null", '"5"', "[1]", "{}", "1" * 5000, "-1e308"]))
            for _ in fields
        ]
        body = ", ".join(f'"{f}": {v}' for f, v in zip(fields, values, strict=True))
        lines.append(draw(st.sampled_from(["{%s}", "[%s]", "%s", "{%s"])) % body)
    return "\n".join(lines) + "\n"


@settings(
    max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.one_of(csv_text().map(lambda t: ("x.csv", t)), jsonl_text().map(lambda t: ("x.jsonl", t))))
def test_any_trace_text_loads_or_is_an_invalid_argument(tmp_path: Path, text: tuple[str, str]) -> None:
    name, body = text
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    try:
        t = load_trace(path)
        sc = Scenario(str(path), duration_s=600.0)
        built = build_trace(sc)
    except InvalidArgument as exc:
        assert str(path) in exc.message or "duration_s" in exc.message, exc.message
        OUTCOMES["refused"] += 1
        return
    for tr in (t, built):
        assert np.isfinite(tr.arrival_s).all() and (np.diff(tr.arrival_s) >= 0).all()
        assert ((tr.input_tokens >= 1) & (tr.input_tokens <= MAX_TOKENS)).all()
        assert ((tr.output_tokens >= 1) & (tr.output_tokens <= MAX_TOKENS)).all()
    OUTCOMES["loaded"] += 1


def teardown_module() -> None:
    report("traces", OUTCOMES)


@pytest.mark.parametrize("name", ["x.csv", "x.jsonl"])
def test_the_fuzzed_shapes_include_a_trace_that_loads(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_text(f"{HEADERS[0]}\n0,5,3\n2.5,1,1\n")
    else:
        path.write_text('{"timestamp": 0, "input_length": 5, "output_length": 3}\n')
    assert len(load_trace(path)) >= 1
