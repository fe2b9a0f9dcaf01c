"""Energy: per-GPU power with the board cap, fleet totals two ways, kWh integration."""

from __future__ import annotations

import pytest

from opscale.errors import InvalidArgument
from opscale.model.energy import GpuDraw, OperatorLoad, energy_kwh, fleet_watts, gpu_watts
from opscale.model.gpus import get_gpu

H100 = get_gpu("h100")  # idle 127.929 W, limit 700 W


def test_idle_gpu_draws_idle_power() -> None:
    assert gpu_watts(H100, ()) == 127.929


def test_busy_share_adds_above_idle() -> None:
    # 127.929 + (600 − 127.929)·0.5 + (300 − 127.929)·0.25 = 127.929 + 236.0355 + 43.01775 = 406.98225 W.
    loads = (OperatorLoad(600.0, 0.5), OperatorLoad(300.0, 0.25))
    assert gpu_watts(H100, loads) == pytest.approx(406.98225)


def test_power_is_capped_at_the_board_limit() -> None:
    # Two operators each 90% busy at 690 W would add 2·(690 − 127.929)·0.9 = 1011.7 W above idle: capped.
    loads = (OperatorLoad(690.0, 0.9), OperatorLoad(690.0, 0.9))
    assert gpu_watts(H100, loads) == 700.0


def test_busy_power_below_idle_never_lowers_the_floor() -> None:
    assert gpu_watts(H100, (OperatorLoad(100.0, 1.0),)) == 127.929


@pytest.mark.parametrize("fraction", [-0.1, 1.1])
def test_busy_fraction_is_validated(fraction: float) -> None:
    with pytest.raises(InvalidArgument, match="busy_fraction"):
        OperatorLoad(500.0, fraction)


def test_fleet_idle_versus_released() -> None:
    # One busy GPU at 127.929 + (527.929 − 127.929)·0.5 = 327.929 W, two unallocated at 127.929 W each.
    fleet = fleet_watts([GpuDraw(H100, (OperatorLoad(527.929, 0.5),)), GpuDraw(H100), GpuDraw(H100)])
    assert fleet.watts_released_unallocated == pytest.approx(327.929)
    assert fleet.watts_idle_unallocated == pytest.approx(327.929 + 2 * 127.929)
    assert (fleet.allocated_gpus, fleet.unallocated_gpus) == (1, 2)


def test_energy_step_and_trapezoid() -> None:
    # 1000 W for one hour then 2000 W for half an hour: held → 1 + 1 = 2 kWh.
    samples = [(0.0, 1000.0), (3600.0, 2000.0), (5400.0, 0.0)]
    assert energy_kwh(samples) == pytest.approx(2.0)
    # Trapezoid: (1000+2000)/2 W · 1 h + (2000+0)/2 W · 0.5 h = 1.5 + 0.5 = 2.0 kWh as well, by design;
    # a ramp shows the difference: 0 → 1000 W over an hour is 0 kWh held, 0.5 kWh by trapezoid.
    ramp = [(0.0, 0.0), (3600.0, 1000.0)]
    assert energy_kwh(ramp) == 0.0
    assert energy_kwh(ramp, hold=False) == pytest.approx(0.5)


def test_energy_of_short_series_and_bad_order() -> None:
    assert energy_kwh([]) == 0.0 and energy_kwh([(5.0, 100.0)]) == 0.0
    with pytest.raises(InvalidArgument, match="must not decrease"):
        energy_kwh([(10.0, 1.0), (5.0, 1.0)])
