"""Trace readers on small fixture files, malformed ones included, and the scaling helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opscale.errors import InvalidArgument
from opscale.sim.traces import (
    PACKAGED,
    Trace,
    TraceError,
    load_trace,
    read_azure_csv,
    read_jsonl,
    read_plain_csv,
    read_servegen,
    scale_rate,
    scale_time,
)

FIX = Path(__file__).parents[1] / "fixtures" / "traces"


def test_azure_reader_parses_seven_fraction_digits_and_rebases() -> None:
    t = read_azure_csv(FIX / "azure_small.csv")
    assert len(t) == 4
    # 18:15:46.6805900 -> 18:15:50.9951690 is 4.314579 s; the first arrival is t = 0.
    assert t.arrival_s[0] == 0.0
    assert t.arrival_s[1] == pytest.approx(4.314579, abs=1e-6)
    assert t.arrival_s[3] == pytest.approx(52 - 46.68059, abs=1e-6)
    assert list(t.input_tokens) == [374, 396, 879, 91]
    # A 0-token generation still needs its first token: counted as 1.
    assert list(t.output_tokens) == [44, 109, 1, 20]


@pytest.mark.parametrize(
    ("name", "line", "column"),
    [
        ("azure_bad_tokens.csv", 3, "ContextTokens"),
        ("azure_bad_time.csv", 3, "TIMESTAMP"),
    ],
)
def test_azure_malformed_rows_name_line_and_column(name: str, line: int, column: str) -> None:
    with pytest.raises(TraceError) as err:
        read_azure_csv(FIX / name)
    assert err.value.line == line
    assert err.value.column == column
    assert f"{name}:{line}" in str(err.value)


def test_plain_csv_sorts_by_arrival() -> None:
    t = read_plain_csv(FIX / "plain_small.csv")
    assert list(t.arrival_s) == [0.0, 0.25, 0.5]
    assert list(t.input_tokens) == [100, 300, 200]
    assert list(t.output_tokens) == [10, 30, 20]


@pytest.mark.parametrize(
    ("name", "line", "column"),
    [
        ("plain_short_row.csv", 3, "output_tokens"),
        ("plain_negative.csv", 3, "arrival_s"),
    ],
)
def test_plain_csv_malformed(name: str, line: int, column: str) -> None:
    with pytest.raises(TraceError) as err:
        read_plain_csv(FIX / name)
    assert (err.value.line, err.value.column) == (line, column)


def test_jsonl_reads_milliseconds_and_skips_blank_lines() -> None:
    t = read_jsonl(FIX / "mooncake_small.jsonl")
    assert list(t.arrival_s) == [0.0, 1.5, 3.0]
    assert list(t.input_tokens) == [6955, 6472, 100]
    assert list(t.output_tokens) == [52, 26, 1]


def test_jsonl_malformed() -> None:
    with pytest.raises(TraceError) as err:
        read_jsonl(FIX / "mooncake_bad_json.jsonl")
    assert err.value.line == 2
    with pytest.raises(TraceError) as err:
        read_jsonl(FIX / "mooncake_missing.jsonl")
    assert (err.value.line, err.value.column) == (2, "output_length")


def test_load_trace_dispatches_by_suffix_and_header() -> None:
    assert len(load_trace(FIX / "azure_small.csv")) == 4
    assert len(load_trace(FIX / "plain_small.csv")) == 3
    assert len(load_trace(FIX / "mooncake_small.jsonl")) == 3
    with pytest.raises(InvalidArgument):
        load_trace("no-such-trace")


def test_servegen_generation_is_seeded_and_follows_the_rates() -> None:
    rates, pmf = FIX / "rate_small.csv", FIX / "pmf_small.csv"
    a = read_servegen(rates, pmf, rng=np.random.default_rng(7))
    b = read_servegen(rates, pmf, rng=np.random.default_rng(7))
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.output_tokens, b.output_tokens)
    # Expected 2 rps × 600 s + 4 rps × 600 s = 3600 requests; the last window has rate 0.
    assert 3000 < len(a) < 4200
    assert a.arrival_s.max() < 1200.0
    assert set(np.unique(a.input_tokens)) <= {100, 1000}
    assert a.output_tokens.min() >= 1  # the PMF's 0-token outputs cost one step
    # Window compression: each 600 s window replayed in 60 s at the same rate -> a tenth of the requests.
    c = read_servegen(rates, pmf, rng=np.random.default_rng(7), window_s=60.0)
    assert c.arrival_s.max() < 120.0 and 250 < len(c) < 450


def test_packaged_traces_exist() -> None:
    for paths in PACKAGED.values():
        for p in paths:
            assert p.is_file(), p


def test_time_and_rate_scaling() -> None:
    t = read_plain_csv(FIX / "plain_small.csv")
    fast = scale_time(t, 2.0)
    assert list(fast.arrival_s) == [0.0, 0.125, 0.25]
    rng = np.random.default_rng(0)
    three = scale_rate(t, 3.0, rng)
    assert len(three) == 9
    assert np.all(np.diff(three.arrival_s) >= 0)
    with pytest.raises(InvalidArgument):
        scale_rate(t, 0.0, rng)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.1, 5.0), st.integers(0, 2**32 - 1))
def test_rate_scaling_keeps_the_span_and_scales_the_count(factor: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = read_servegen(
        FIX / "rate_small.csv", FIX / "pmf_small.csv", rng=np.random.default_rng(1), window_s=60.0
    )
    out = scale_rate(base, factor, rng)
    assert np.all(np.diff(out.arrival_s) >= 0)
    assert out.arrival_s.max() <= base.arrival_s.max() + 1e-9
    # Binomial count: mean factor × n; 6 standard deviations of slack.
    n = len(base)
    assert abs(len(out) - factor * n) <= 6 * np.sqrt(n) + 1


def test_rate_scaling_adds_users_not_clumps() -> None:
    """× 4 on a Poisson trace stays Poisson-like (index of dispersion of 1-s counts ≈ 1, where copies in
    the gap to the next arrival gave ≈ 4) and keeps the rate profile: a 2-minute step stays a step."""
    rng = np.random.default_rng(7)
    rate = np.where(np.arange(600) < 300, 2.0, 6.0)  # req/s per second of the trace
    t = np.sort(np.concatenate([s + rng.random(rng.poisson(r)) for s, r in enumerate(rate)]))
    base = Trace("poisson", t, np.full(len(t), 100, dtype=np.int64), np.full(len(t), 10, dtype=np.int64))
    four = scale_rate(base, 4.0, rng)
    counts = np.bincount(four.arrival_s.astype(int), minlength=600)[:600]
    for part in (counts[30:270], counts[330:570]):
        assert part.var() / part.mean() < 1.4
    assert counts[30:270].mean() == pytest.approx(8.0, rel=0.1)
    assert counts[330:570].mean() == pytest.approx(24.0, rel=0.1)
    assert four.arrival_s.min() >= base.arrival_s[0] and four.arrival_s.max() <= base.arrival_s[-1]


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.text(alphabet=',0123456789.-ab "', max_size=12), min_size=1, max_size=4))
def test_garbage_rows_raise_trace_errors_not_crashes(
    tmp_path_factory: pytest.TempPathFactory, rows: list[str]
) -> None:
    p = tmp_path_factory.mktemp("t") / "x.csv"
    p.write_text("arrival_s,input_tokens,output_tokens\n" + "\n".join(rows) + "\n")
    try:
        t = read_plain_csv(p)
    except TraceError as err:
        assert err.line >= 2
    else:
        assert np.all(t.input_tokens >= 1)


SERVEGEN_PAIR = f"{FIX / 'rate_small.csv'},{FIX / 'pmf_small.csv'}"


def test_a_scenario_starts_in_replay_seconds_for_servegen_as_for_request_traces() -> None:
    from opscale.sim.experiment import Scenario, build_trace

    # 600 s windows replayed 10x faster: the replay's second 60 is the file's second window (4 rps)
    whole = build_trace(Scenario(SERVEGEN_PAIR, speedup=10.0))
    later = build_trace(Scenario(SERVEGEN_PAIR, speedup=10.0, start_s=60.0))
    assert whole.arrival_s.max() < 120.0 and later.arrival_s.max() < 60.0
    assert 180 < len(later) < 300 < len(whole)
    # the replay's second 100 is in the third window, whose rate is 0 (the file's second 100 is not)
    with pytest.raises(InvalidArgument, match="start_s"):
        build_trace(Scenario(SERVEGEN_PAIR, speedup=10.0, start_s=100.0))
    # a span shorter than a window, with no window starting in it, says that windows are whole
    with pytest.raises(InvalidArgument, match="takes whole 60 s windows that start in the span"):
        build_trace(Scenario(SERVEGEN_PAIR, speedup=10.0, start_s=10.0, duration_s=30.0))


@pytest.mark.parametrize("trace", [str(FIX / "plain_small.csv"), SERVEGEN_PAIR])
def test_a_window_past_the_trace_names_start_s_instead_of_failing_later(trace: str) -> None:
    from opscale.sim.experiment import Scenario, build_trace

    with pytest.raises(InvalidArgument, match=r"start_s/duration_s: no request .* arrives 5000 s to 5030 s"):
        build_trace(Scenario(trace, start_s=5000.0, duration_s=30.0))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("binary.csv", b"\xff\xfe\x00garbage"),  # undecodable from the first byte (the header sniff)
        ("late.csv", b"arrival_s,input_tokens,output_tokens\n1,5,5\n\xff\n"),  # a valid head, then not
        ("late.jsonl", b'{"timestamp": 0, "input_length": 5, "output_length": 3}\n\xff\n'),
        ("x_aggregate_rate_10min.csv", b"\xff"),  # a ServeGen rate file, recognised by its name
    ],
)
def test_a_file_that_is_not_utf8_text_is_an_error_naming_the_file(
    tmp_path: Path, name: str, text: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(text)
    (tmp_path / "x_length_pmf.csv").write_bytes(FIX.joinpath("pmf_small.csv").read_bytes())
    with pytest.raises(InvalidArgument, match=rf"trace '.*{name}' is not UTF-8 text \(byte \d+") as err:
        load_trace(path, rng=np.random.default_rng(0))
    assert err.value.field == "trace"


def test_a_servegen_length_pmf_that_is_not_utf8_text_names_the_pmf(tmp_path: Path) -> None:
    pmf = tmp_path / "pmf.csv"
    pmf.write_bytes(b"field,tokens,prob\n\xff\n")
    with pytest.raises(InvalidArgument, match=r"pmf.csv' is not UTF-8 text"):
        load_trace(f"{FIX / 'rate_small.csv'},{pmf}", rng=np.random.default_rng(0))


def test_a_trace_with_a_header_and_no_request_says_so(tmp_path: Path) -> None:
    from opscale.sim.experiment import Scenario, build_trace

    path = tmp_path / "empty.csv"
    path.write_text("arrival_s,input_tokens,output_tokens\n")
    with pytest.raises(InvalidArgument, match=r"trace '.*empty.csv' holds no requests") as err:
        build_trace(Scenario(str(path)))
    assert err.value.field == "trace"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"rate_scale": float("nan")}, "rate_scale"),
        ({"speedup": float("inf")}, "speedup"),
        ({"start_s": float("nan")}, "start_s"),
        ({"duration_s": -5.0}, "duration_s"),
        ({"seed": -1}, "seed"),
    ],
)
def test_a_scenario_rejects_a_value_no_replay_has_naming_it(kw: dict[str, float], field: str) -> None:
    from opscale.sim.experiment import Scenario

    with pytest.raises(InvalidArgument, match=rf"^{field} must be") as err:
        Scenario("azure-conv", **kw)  # type: ignore[arg-type]
    assert err.value.field == field


@pytest.mark.parametrize("trace", [str(FIX / "plain_small.csv"), SERVEGEN_PAIR])
def test_a_rate_scale_past_what_a_replay_holds_is_refused_before_generating(trace: str) -> None:
    from opscale.sim.experiment import Scenario, build_trace

    with pytest.raises(
        InvalidArgument, match=r"rate_scale: .* makes ~.* requests; a simulated replay holds at most"
    ):
        build_trace(Scenario(trace, rate_scale=1e12))


HEAD = "arrival_s,input_tokens,output_tokens\n"
RECORD = '"input_length": 5, "output_length": 3}\n'


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("long-field.csv", HEAD + "1" * 200_000 + ",5,3\n", r"long-field.csv:2: .*not CSV: field larger"),
        ("two-columns.csv", "arrival_s,input_tokens,output_tokens,arrival_s\n0,5,3,1\n", r"appears 2 times"),
        (
            "digits.jsonl",
            '{"timestamp": ' + "1" * 5000 + ", " + RECORD,
            r"digits.jsonl:1: .*not a trace record",
        ),
        ("deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n", r"deep.jsonl:1: .*nested too deeply"),
    ],
)
def test_csv_and_json_the_parsers_refuse_are_trace_errors(
    tmp_path: Path, name: str, text: str, says: str
) -> None:
    # Each ended in 'internal error': csv.Error, ValueError (Python's integer-digits limit), RecursionError;
    # the repeated column was read silently from its last copy.
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TraceError, match=says):
        load_trace(path)


def test_a_byte_order_mark_before_the_header_is_read_past(tmp_path: Path) -> None:
    # Spreadsheets write one; the header read '\ufeffarrival_s' and the column was "missing".
    path = tmp_path / "excel.csv"
    path.write_text("\ufeff" + HEAD + "0,5,3\n1.5,7,2\n", encoding="utf-8")
    assert load_trace(path).input_tokens.tolist() == [5, 7]
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_text('\ufeff{"timestamp": 0, ' + RECORD, encoding="utf-8")
    assert load_trace(jsonl).output_tokens.tolist() == [3]


def test_a_replay_longer_than_the_simulator_keeps_is_refused_before_it_runs(tmp_path: Path) -> None:
    from opscale.sim.experiment import Scenario, build_trace

    path = tmp_path / "far.jsonl"  # JSONL timestamps are milliseconds: 1e300 of them
    path.write_text('{"timestamp": 0, ' + RECORD + '{"timestamp": 1e300, ' + RECORD)
    with pytest.raises(InvalidArgument, match=r"spans 1e\+297 s, over the simulator's 604,800 s") as err:
        build_trace(Scenario(str(path)))
    assert err.value.field == "duration_s"
    assert len(build_trace(Scenario(str(path), duration_s=60.0))) == 1


def test_length_weights_near_the_float_limit_are_normalised(tmp_path: Path) -> None:
    # Their sum overflowed to inf and numpy's sampler raised "probabilities do not sum to 1".
    pmf = tmp_path / "pmf.csv"
    pmf.write_text("field,tokens,prob\ninput_tokens,5,1e308\ninput_tokens,6,1e308\noutput_tokens,3,1\n")
    t = load_trace(f"{FIX / 'rate_small.csv'},{pmf}", rng=np.random.default_rng(0))
    assert set(t.input_tokens.tolist()) == {5, 6}
