"""``opscale load`` without services: the Poisson schedule, a trace replayed at a chosen rate, bad
traces named in one error, and ``push`` recording each arrival at its time on a virtual clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from opscale.cli.load import Progress, Schedule, poisson, push, replay
from opscale.cli.main import app
from opscale.errors import InvalidArgument


class Recorded:
    def __init__(self) -> None:
        self.arrivals: list[tuple[int, int, float]] = []

    def record_arrival(self, input_tokens: int, output_tokens: int, *, at_s: float) -> bool:
        self.arrivals.append((input_tokens, output_tokens, at_s))
        return True


class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += max(seconds, 1e-3)


def test_poisson_is_seeded_sorted_and_within_the_duration() -> None:
    a, b = poisson(10, 60, "fixed:100/20", seed=3), poisson(10, 60, "fixed:100/20", seed=3)
    assert np.array_equal(a.at_s, b.at_s) and a.span_s == 60
    assert np.all(np.diff(a.at_s) >= 0) and a.at_s[-1] < 60
    # 600 expected; a Poisson count is within 5 sigma (±122) of it
    assert abs(len(a) - 600) < 5 * 600**0.5
    assert set(a.input_tokens.tolist()) == {100} and set(a.output_tokens.tolist()) == {20}
    with pytest.raises(InvalidArgument, match="unknown length mix 'medium'"):
        poisson(1, 1, "medium", seed=0)


def test_a_trace_replays_on_its_clock_or_at_the_asked_rate(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,input_tokens,output_tokens\n10,5,1\n11,6,2\n12,7,3\n14,8,4\n")
    own = replay(str(trace), None, 60, seed=0)
    assert own.at_s.tolist() == [0, 1, 2, 4] and own.span_s == 4  # re-based, ends with the trace
    # 4 requests over 4 s is 1 req/s on average; at 2 req/s the replay runs twice as fast.
    fast = replay(str(trace), 2.0, 60, seed=0)
    assert fast.at_s.tolist() == [0, 0.5, 1, 2] and fast.input_tokens.tolist() == [5, 6, 7, 8]
    cut = replay(str(trace), None, 1.5, seed=0)
    assert cut.at_s.tolist() == [0, 1] and cut.span_s == 1.5


def test_a_bad_trace_is_one_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,input_tokens,output_tokens\nsoon,12,3\n")
    with pytest.raises(InvalidArgument) as caught:
        replay(str(bad), None, 60, seed=0)
    assert str(bad) in caught.value.message and "\n" not in caught.value.message
    with pytest.raises(InvalidArgument, match="no trace named"):
        replay(str(tmp_path / "missing.csv"), None, 60, seed=0)
    binary = tmp_path / "blob.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InvalidArgument, match=r"blob\.csv"):
        replay(str(binary), None, 60, seed=0)


def test_push_records_every_arrival_at_its_time_and_reports_progress() -> None:
    schedule = Schedule(
        np.array([0.0, 0.5, 2.5, 2.5, 3.0]), np.array([1, 2, 3, 4, 5]), np.array([9, 9, 9, 9, 9]), 3.0
    )
    recorder, time = Recorded(), VirtualTime()
    reports: list[tuple[int, float]] = []
    done = push(
        schedule,
        recorder,  # type: ignore[arg-type]
        clock=time.clock,
        wall=lambda: 1000.0,
        sleep=time.sleep,
        report=lambda p: reports.append((p.sent, p.elapsed_s)),
        report_every_s=1.0,
    )
    assert done == Progress(sent=5, elapsed_s=3.0)
    assert [a[2] for a in recorder.arrivals] == [1000.0, 1000.5, 1002.5, 1002.5, 1003.0]
    assert [a[0] for a in recorder.arrivals] == [1, 2, 3, 4, 5]
    assert [sent for sent, _ in reports] == [2, 2]  # at 1 s and 2 s


@pytest.mark.parametrize(
    "command", [["load", "-d", "demo", "--rps", "1"], ["simulate", "--trace", "azure-conv"]]
)
def test_a_negative_seed_is_exit_2_naming_it_before_any_call(command: list[str]) -> None:
    res = CliRunner().invoke(app, [*command, "--seed", "-1"])
    assert res.exit_code == 2, res.output
    assert "--seed" in res.output and "Traceback" not in res.output
