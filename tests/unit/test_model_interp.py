"""Interpolation rules: hit measured points, stay between neighbours, extrapolate linearly, stay monotone."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opscale.errors import InvalidArgument
from opscale.model.gpus import CATALOG
from opscale.model.interp import Curve, Grid, PowerCurve
from opscale.model.operators import OperatorKind, Stage
from opscale.model.perf import PerfModel
from opscale.model.profiles import load_profile
from opscale.model.shapes import PRESETS, get_preset

XS = [1.0, 4.0, 16.0, 64.0]
YS = [2.0, 2.0, 8.0, 40.0]


def test_curve_hits_measured_points() -> None:
    curve = Curve(XS, YS)
    for x, y in zip(XS, YS, strict=True):
        assert curve(x) == pytest.approx(y, rel=1e-12)


def test_curve_is_log_log_linear_between_points() -> None:
    # Between (4, 2) and (16, 8) the log-log slope is 1, so y(8) = 2 · (8/4)^1 = 4 (the geometric midpoint).
    assert Curve(XS, YS)(8.0) == pytest.approx(4.0, rel=1e-12)


def test_curve_lies_between_neighbours() -> None:
    curve = Curve(XS, YS)
    for (x0, y0), (x1, y1) in zip(zip(XS, YS, strict=True), zip(XS[1:], YS[1:], strict=True), strict=False):
        for f in (0.1, 0.5, 0.9):
            x = x0 + f * (x1 - x0)
            assert y0 <= curve(x) <= y1


def test_curve_extrapolates_linearly_in_x() -> None:
    # Slope of the last two points: (40 − 8) / (64 − 16) = 2/3 ms per token; y(160) = 40 + 96 · 2/3 = 104.
    curve = Curve(XS, YS)
    assert curve(160.0) == pytest.approx(104.0)
    assert curve(1000.0) - curve(500.0) == pytest.approx(500 * 2 / 3)


def test_curve_clamps_below_first_point() -> None:
    curve = Curve([8.0, 16.0], [3.0, 5.0])
    assert curve(1.0) == curve(0.5) == 3.0


def test_curve_running_max_removes_noise_dips() -> None:
    # 1.9 at x=2 is below 2.0 at x=1 (measurement noise): the monotone curve holds 2.0 there.
    curve = Curve([1.0, 2.0, 4.0], [2.0, 1.9, 3.0])
    assert curve(2.0) == pytest.approx(2.0)
    raw = Curve([1.0, 2.0, 4.0], [2.0, 1.9, 3.0], monotone=False)
    assert raw(2.0) == pytest.approx(1.9)


@pytest.mark.parametrize(
    ("xs", "ys"), [([], []), ([1.0, 2.0], [1.0]), ([1.0, 1.0], [1.0, 2.0]), ([0.0, 1.0], [1.0, 2.0])]
)
def test_curve_rejects_bad_points(xs: list[float], ys: list[float]) -> None:
    with pytest.raises(InvalidArgument):
        Curve(xs, ys)


def _grid() -> Grid:
    # Two lengths; the longer row lacks batch 16 (ragged, like the profiles' longest KV lengths).
    return Grid([(1, 100, 1.0), (4, 100, 2.0), (16, 100, 8.0), (1, 400, 4.0), (4, 400, 8.0)])


def test_grid_hits_measured_points() -> None:
    grid = _grid()
    for batch, length, y in [(1, 100, 1.0), (4, 100, 2.0), (16, 100, 8.0), (1, 400, 4.0), (4, 400, 8.0)]:
        assert grid(batch, length) == pytest.approx(y, rel=1e-12)


def test_grid_is_bilinear_in_log_space() -> None:
    # At batch 2 the rows give √(1·2) = √2 and √(4·8) = √32; at length 200 (log-midpoint of 100 and 400)
    # the result is their geometric mean, (2 · 32)^(1/4) = 2√2.
    assert _grid()(2, 200) == pytest.approx(2 * math.sqrt(2), rel=1e-12)


def test_grid_extrapolates_linearly_in_length() -> None:
    # At batch 4: rows 2 (length 100) and 8 (length 400): 6/300 ms per KV token;
    # length 1000 → 8 + 600·0.02 = 20.
    assert _grid()(4, 1000) == pytest.approx(20.0)


def test_grid_completes_ragged_rows_and_stays_ordered() -> None:
    # Row 400 at batch 16 is extrapolated in batch: 8 + (8 − 4)/(4 − 1) · 12 = 24 ≥ row 100's 8.
    grid = _grid()
    assert grid(16, 400) == pytest.approx(24.0)
    assert grid(16, 400) >= grid(16, 100)


def test_power_curve_is_clamped_and_log_linear() -> None:
    power = PowerCurve([64.0, 1024.0, 1024.0], [200.0, 600.0, 700.0])
    # Same-x rows average (650); 256 is halfway between 64 and 1024 in log: 200 + 0.5·450 = 425.
    assert power(256.0) == pytest.approx(425.0)
    assert power(1.0) == 200.0 and power(1e6) == 650.0


PROFILED = sorted(PRESETS)
GPUS = sorted(CATALOG)


@settings(max_examples=1000, deadline=None)
@given(
    model=st.sampled_from(PROFILED),
    gpu=st.sampled_from(GPUS),
    stage=st.sampled_from(list(Stage)),
    kind_index=st.integers(0, 3),
    batch=st.integers(1, 4096),
    extra=st.integers(1, 512),
    length=st.integers(1, 262_144),
)
def test_latency_is_non_decreasing(
    model: str, gpu: str, stage: Stage, kind_index: int, batch: int, extra: int, length: int
) -> None:
    """For every profiled operator, on every GPU type (measured or roofline-scaled), more tokens never
    take less time, and neither does a longer prompt or KV cache."""
    pm = _model(model, gpu)
    kind = pm.operators(stage)[kind_index].kind
    base = pm.pass_latency_ms(stage, kind, batch, length)
    assert pm.pass_latency_ms(stage, kind, batch + extra, length) >= base * (1 - 1e-12)
    assert pm.pass_latency_ms(stage, kind, batch, length + extra) >= base * (1 - 1e-12)


_MODELS: dict[tuple[str, str], PerfModel] = {}


def _model(model: str, gpu: str) -> PerfModel:
    key = (model, gpu)
    if key not in _MODELS:
        _MODELS[key] = PerfModel(get_preset(model), gpu)
    return _MODELS[key]


def test_measured_profile_points_are_reproduced_where_monotone() -> None:
    """Every measured decode attention point of llama3-8b comes back from the model (per layer), unless
    the running max raised it; then it comes back as the largest earlier value."""
    pm = _model("llama3-8b", "h100")
    op = load_profile("llama3-8b", "h100").operator(Stage.DECODE, OperatorKind.ATTENTION)
    for p in op.points:
        assert p.batch is not None and p.kv_len is not None
        got = pm.pass_latency_ms(Stage.DECODE, OperatorKind.ATTENTION, p.batch, p.kv_len) / 32
        earlier = [
            q.latency_ms
            for q in op.points
            if q.batch is not None and q.kv_len is not None and q.batch <= p.batch and q.kv_len <= p.kv_len
        ]
        assert got == pytest.approx(max(earlier), rel=1e-9)
