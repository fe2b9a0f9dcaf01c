"""M/M/R queueing: Erlang-B/C against textbook values and an independent log-space oracle, the wait and
response quantile formulas, and the server search."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opscale.errors import InvalidArgument
from opscale.policy.queueing import (
    delay_ratio,
    erlang_b,
    erlang_c,
    mean_response_s,
    mean_wait_s,
    min_servers_for,
    paced_scv,
    response_quantile_s,
    response_tail,
    tandem_covariance,
    utilization,
    wait_quantile_s,
)


def full_recursion_b(servers: int, a: float) -> float:
    """Erlang-B by the plain recursion from B(0) = 1, no shortcut."""
    b = 1.0
    for k in range(1, servers + 1):
        b = a * b / (k + a * b)
    return b


def oracle_b(servers: int, a: float) -> float:
    """Independent oracle: B = Poisson pmf(R; a) / cdf(R; a), in log space with lgamma."""
    logs = [k * math.log(a) - a - math.lgamma(k + 1) for k in range(servers + 1)]
    top = max(logs)
    log_cdf = top + math.log(sum(math.exp(x - top) for x in logs))
    return math.exp(logs[-1] - log_cdf)


def test_erlang_c_textbook_two_servers_one_erlang() -> None:
    # B(1) = 1/(1+1) = 1/2; B(2) = 1·(1/2) / (2 + 1/2) = 1/5;
    # C = R·B / (R − a(1 − B)) = 2·(1/5) / (2 − 4/5) = (2/5)/(6/5) = 1/3.
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3, rel=1e-12)


def test_erlang_c_textbook_five_servers_four_erlangs() -> None:
    # B(5, 4) = (4^5/5!) / Σ_{k≤5} 4^k/k! = 8.5333 / 42.8667 = 0.199067;
    # C = 5·0.199067 / (5 − 4·0.800933) = 0.995334 / 1.796267 = 0.554113.
    assert erlang_c(5, 4.0) == pytest.approx(0.554113, abs=1e-6)


def test_erlang_c_large_system_is_finite_probability() -> None:
    # R = 500 at ρ = 0.95: a = 475 Erlangs. Factorials would overflow (500! ≈ 1e1134); the recursion
    # stays in [0, 1]. The value must match the log-space oracle.
    c = erlang_c(500, 475.0)
    assert 0.0 < c < 1.0 and math.isfinite(c)
    b = oracle_b(500, 475.0)
    assert c == pytest.approx(500 * b / (500 - 475 * (1 - b)), rel=1e-10)


@pytest.mark.parametrize("servers", [1, 2, 10, 99, 150, 400, 1000, 3000, 6000])
@pytest.mark.parametrize("rho", [0.3, 0.8, 0.95, 0.999, 1.2])
def test_erlang_b_shortcut_matches_full_recursion_and_oracle(servers: int, rho: float) -> None:
    # The recursion may start at a − 10√a (see queueing's docstring); it must not be visible.
    a = rho * servers
    b = erlang_b(servers, a)
    assert b == pytest.approx(full_recursion_b(servers, a), rel=1e-12, abs=1e-300)
    assert b == pytest.approx(oracle_b(servers, a), rel=1e-9, abs=1e-300)


def test_edge_cases() -> None:
    assert erlang_b(0, 3.0) == 1.0  # B(0) = 1 by definition
    assert erlang_c(3, 0.0) == 0.0  # nobody arrives, nobody waits
    assert erlang_c(2, 2.0) == 1.0  # ρ = 1: everybody waits
    assert erlang_c(0, 1.0) == 1.0
    with pytest.raises(InvalidArgument):
        erlang_c(-1, 1.0)
    with pytest.raises(InvalidArgument):
        erlang_c(2, float("nan"))
    with pytest.raises(InvalidArgument):
        wait_quantile_s(2, 1.0, 1.0, 1.0)


def test_unstable_queue_returns_infinity_not_an_exception() -> None:
    # λ = 2, μ = 1, R = 2: ρ = 1.
    assert utilization(2, 2.0, 1.0) == 1.0
    assert mean_wait_s(2, 2.0, 1.0) == math.inf
    assert wait_quantile_s(2, 3.0, 1.0, 0.99) == math.inf
    assert response_quantile_s(2, 2.0, 1.0, 0.5) == math.inf
    assert utilization(0, 1.0, 1.0) == math.inf


def test_wait_quantile_formula() -> None:
    # M/M/2, λ = 1, μ = 1: C = 1/3 (above), θ = Rμ − λ = 1.
    # E[W] = C/θ = 1/3.  p = 0.9: C > 0.1, t = ln((1/3)/0.1)/1 = ln(10/3) = 1.2039728.
    # p = 0.5: C = 1/3 ≤ 0.5, so at least half never wait: t = 0.
    assert mean_wait_s(2, 1.0, 1.0) == pytest.approx(1 / 3)
    t = wait_quantile_s(2, 1.0, 1.0, 0.9)
    assert t == pytest.approx(math.log(10 / 3), rel=1e-12)
    assert (1 / 3) * math.exp(-1.0 * t) == pytest.approx(0.1)  # P(W > t_p) = 1 − p
    assert wait_quantile_s(2, 1.0, 1.0, 0.5) == 0.0
    # Rates scale time: μ = 10, λ = 10 ⇒ same C, θ = 10, so every time is a tenth.
    assert wait_quantile_s(2, 10.0, 10.0, 0.9) == pytest.approx(math.log(10 / 3) / 10)


def test_response_quantile_mm1_is_exponential() -> None:
    # M/M/1 sojourn time is Exp(μ − λ): λ = 0.5, μ = 1 ⇒ t_0.9 = ln(10)/0.5 = 4.6051702.
    assert response_quantile_s(1, 0.5, 1.0, 0.9) == pytest.approx(2 * math.log(10), rel=1e-8)
    assert mean_response_s(1, 0.5, 1.0) == pytest.approx(2.0)  # 1/(μ − λ)


def test_response_tail_when_drain_rate_equals_service_rate() -> None:
    # M/M/2, λ = μ = 1: θ = 1 = μ, the Erlang-2 branch: P(T > t) = (1 − C)e^−t + C(1 + t)e^−t.
    c = 1 / 3
    for t in (0.1, 1.0, 3.0):
        expected = (1 - c) * math.exp(-t) + c * (1 + t) * math.exp(-t)
        assert response_tail(2, 1.0, 1.0, t) == pytest.approx(expected, rel=1e-12)
    q = response_quantile_s(2, 1.0, 1.0, 0.99)
    assert response_tail(2, 1.0, 1.0, q) == pytest.approx(0.01, rel=1e-6)


def test_min_servers_for_is_the_fewest() -> None:
    # λ = 100/s, μ = 1/s per server (a = 100 Erlangs), p99 wait ≤ 10 ms.
    r = min_servers_for(100.0, 1.0, 0.01, 0.99)
    assert wait_quantile_s(r, 100.0, 1.0, 0.99) <= 0.01
    assert wait_quantile_s(r - 1, 100.0, 1.0, 0.99) > 0.01
    # Square-root staffing: a + β√a with β of a few units.
    assert 100 < r < 100 + 5 * 10
    assert min_servers_for(0.0, 1.0, 0.0, 0.99) == 0
    # A zero wait target needs C ≤ 1 − p.
    r0 = min_servers_for(10.0, 1.0, 0.0, 0.9)
    assert erlang_c(r0, 10.0) <= 0.1 < erlang_c(r0 - 1, 10.0)


def test_min_servers_for_large_load() -> None:
    # a = 5000 Erlangs; the search walks O(√a) steps from R = 5001.
    r = min_servers_for(5000.0, 1.0, 0.001, 0.99)
    assert wait_quantile_s(r, 5000.0, 1.0, 0.99) <= 0.001 < wait_quantile_s(r - 1, 5000.0, 1.0, 0.99)


@settings(max_examples=200, deadline=None)
@given(
    lam=st.floats(0.0, 2000.0),
    extra=st.floats(0.0, 500.0),
    mu=st.floats(0.05, 50.0),
    target=st.floats(0.0, 2.0),
    p=st.sampled_from([0.5, 0.9, 0.95, 0.99, 0.999]),
)
def test_more_load_never_needs_fewer_servers(
    lam: float, extra: float, mu: float, target: float, p: float
) -> None:
    assert min_servers_for(lam, mu, target, p) <= min_servers_for(lam + extra, mu, target, p)


@settings(max_examples=200, deadline=None)
@given(
    lam=st.floats(0.01, 500.0),
    mu=st.floats(0.05, 50.0),
    target=st.floats(0.0, 2.0),
    slack=st.floats(0.0, 2.0),
    p=st.sampled_from([0.9, 0.99]),
)
def test_looser_target_never_needs_more_servers(
    lam: float, mu: float, target: float, slack: float, p: float
) -> None:
    assert min_servers_for(lam, mu, target + slack, p) <= min_servers_for(lam, mu, target, p)


@settings(max_examples=200, deadline=None)
@given(servers=st.integers(1, 400), rho=st.floats(0.01, 0.999), p=st.floats(0.5, 0.999))
def test_wait_quantile_solves_the_tail_equation(servers: int, rho: float, p: float) -> None:
    mu = 2.0
    lam = rho * servers * mu
    t = wait_quantile_s(servers, lam, mu, p)
    c = erlang_c(servers, lam / mu)
    if c <= 1 - p:
        assert t == 0.0
    else:
        assert c * math.exp(-(servers * mu - lam) * t) == pytest.approx(1 - p, rel=1e-9)


def _alpha(x: float) -> float:
    """[1 + x·Φ(x)/φ(x)]⁻¹."""
    cdf = 0.5 * math.erfc(-x / math.sqrt(2.0))
    return 1.0 / (1.0 + x * cdf * math.sqrt(2.0 * math.pi) * math.exp(x * x / 2.0))


def test_delay_ratio_is_one_for_poisson_and_falls_with_smoother_arrivals() -> None:
    assert delay_ratio(3, 0.8, 1.0) == 1.0
    assert delay_ratio(3, 0.8, 2.5) == 1.0  # burstier: Erlang C is kept
    assert delay_ratio(3, 1.0, 0.0) == 1.0  # saturated: every arrival waits
    ratios = [delay_ratio(3, 0.8, c) for c in (0.9, 0.5, 0.0, -0.5)]
    assert all(0.0 < r < 1.0 for r in ratios) and ratios == sorted(ratios, reverse=True)
    assert delay_ratio(3, 0.8, -1.0) == 0.0  # nothing left to wait for (Boxma's identical services)
    # Halfin and Whitt's α at β = (1 − ρ)√R, here 0.2·√4 = 0.4, and at β/√z with z = 0.5
    assert delay_ratio(4, 0.8, 0.0) == pytest.approx(_alpha(0.4 / math.sqrt(0.5)) / _alpha(0.4))


def test_tandem_covariance_of_services_that_vary_together() -> None:
    probs = np.array([0.5, 0.5])
    # E S_prev = 2, E S = 4, E[S_prev·S] = 10: Cov/(E·E) = 10/8 − 1 = 0.25, times ρ_prev·ρ
    assert tandem_covariance(probs, np.array([1.0, 3.0]), 0.8, np.array([2.0, 6.0]), 0.5) == pytest.approx(
        0.1
    )
    assert tandem_covariance(probs, np.array([1.0, 3.0]), 0.8, np.array([4.0, 4.0]), 0.5) == 0.0  # constant
    assert tandem_covariance(probs, np.array([1.0, 3.0]), 0.8, np.array([6.0, 2.0]), 0.5) == 0.0  # opposed
    assert tandem_covariance(np.array([1.0]), np.array([3.0]), 0.9, np.array([5.0]), 0.9) == 0.0  # one length


def test_paced_scv_takes_the_covariance_off_the_heavy_traffic_factor() -> None:
    assert paced_scv(0.8, 0.0, 0.7, 0.5) == 0.8
    k = 0.8 + 0.49 * 0.5
    # the factor (1 + c)/2 shrinks by (k − 2C)/k
    assert (1.0 + paced_scv(0.8, 0.1, 0.7, 0.5)) / 2 == pytest.approx((1.8 / 2) * (k - 0.2) / k)
    assert paced_scv(0.8, k / 2, 0.7, 0.5) == -1.0  # all of it: the factor is 0
    assert paced_scv(0.8, k, 0.7, 0.5) == -1.0
