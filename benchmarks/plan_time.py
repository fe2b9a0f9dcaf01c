"""Plan time of the ``operator`` policy: one ``decide`` (plan + stabilizer) per tick, as the decision
service calls it, for llama3-70b and mixtral-8x7b on H100 at several steady loads.

Two kinds of case per model:

* ``steady``: the same token lengths every tick, arrival rate jittered ±1% tick to tick — the
  ``PerfModel`` pass-time cache is warm after the first tick, as in a live loop at steady lengths;
* ``lengths vary``: the mean prompt (500..2132, 97 values) and output (100..540, 89 values) lengths
  change every tick, so prefill pass times miss the cache for the first 97 ticks and decode pass times
  (priced at prompt + output/2) miss for most ticks — the pessimistic case;
* ``servegen mix``: the windows carry the packaged ServeGen m-large length distributions (prompts
  from a few tokens to ~32k, median ~600), as ingest's histograms give them: prefill is priced per
  length, and its long prompts take the batched pools' long-prompt view (``prefill_queue.pool_queue``),
  the most expensive path of a plan. Its rate never repeats a tick's (a live window's histogram
  changes every tick), so the prefill queue's cache does not answer it.

Each case starts from a fresh ``PerfModel`` (empty cache); the first tick's cold start is included.

Reference: OpScale reports 2.6 ms per plan for a 7B model and 4.4 ms for a 57B model (arXiv 2608.13499);
ratios below 1 are faster than the reference.

    .venv/bin/python benchmarks/plan_time.py            # 1000 plans per case
    .venv/bin/python benchmarks/plan_time.py --quick    # 100 plans per case
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

from opscale.model import PerfModel, get_preset
from opscale.policy.lengths import LengthDist
from opscale.policy.operator import OperatorPolicy
from opscale.policy.types import SLO, LoadWindow, PolicyInput, Signal
from opscale.sim.traces import PACKAGED, read_length_pmf

REF_7B_MS = 2.6
REF_57B_MS = 4.4
FRESH = {s: 0.0 for s in Signal}


CASES = ("steady", "lengths vary", "servegen mix")


def servegen_mix() -> tuple[LengthDist, LengthDist]:
    """The packaged ServeGen m-large (prompt, output) length distributions."""
    pmf = read_length_pmf(PACKAGED["servegen-m-large"][1])
    ti, pi = pmf["input_tokens"]
    to, po = pmf["output_tokens"]
    return LengthDist.from_weighted(ti, pi), LengthDist.from_weighted(to, po)


def window(
    rps: float, n_in: float, n_out: float, mix: tuple[LengthDist, LengthDist] | None = None
) -> LoadWindow:
    if mix is not None:
        n_in, n_out = mix[0].mean, mix[1].mean
    return LoadWindow(
        window_s=1.0,
        arrival_rate_rps=rps,
        input_tokens_mean=n_in,
        output_tokens_mean=n_out,
        staleness_s=FRESH,
        input_tokens_dist=mix[0] if mix else None,
        output_tokens_dist=mix[1] if mix else None,
    )


def jitter(i: int, case: str) -> float:
    """The rate's factor at tick ``i``: ±1% in a cycle of three, whose repeats the planner's caches
    answer; the ServeGen case never repeats (golden-ratio steps), as a live window's histogram does not."""
    if case == "servegen mix":
        return 1.0 + 0.02 * ((i * 0.6180339887) % 1.0 - 0.5)
    return 1.0 + 0.01 * ((i % 3) - 1)


def run_case(
    policy: OperatorPolicy, rps: float, plans: int, case: str, mix: tuple[LengthDist, LengthDist] | None
) -> list[float]:
    slo = SLO(2000.0, 100.0)
    times = []
    for i in range(plans):
        n_in = 500 + 17 * (i % 97) if case == "lengths vary" else 1000.0
        n_out = 100 + 5 * (i % 89) if case == "lengths vary" else 250.0
        inp = PolicyInput(
            now_s=float(i),
            deployment="bench",
            current={},
            slo=slo,
            load=window(rps * jitter(i, case), n_in, n_out, mix),
        )
        t0 = time.perf_counter()
        out = policy.decide(inp)
        times.append((time.perf_counter() - t0) * 1e3)
        if i == 0 and out.infeasible:
            print(f"  note: infeasible at {rps} req/s: {out.infeasible[0].message}", file=sys.stderr)
    return times


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[98]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 plans per case instead of 1000")
    ap.add_argument("--plans", type=int, default=None, help="plans per case (overrides --quick)")
    ap.add_argument("--case", choices=CASES, action="append", help="only these cases (repeatable)")
    args = ap.parse_args()
    plans = args.plans or (100 if args.quick else 1000)
    print(
        f"# operator policy plan time; {plans} plans per case; python {platform.python_version()}, "
        f"{platform.machine()}, {platform.processor() or 'cpu'}"
    )
    print(
        f"{'model':<14}{'case':<14}{'req/s':>7}{'median ms':>11}{'p99 ms':>9}{'/2.6 ms':>9}{'/4.4 ms':>9}"
        f"{'GPUs':>6}"
    )
    servegen = servegen_mix()
    for name in ("llama3-70b", "mixtral-8x7b"):
        for case in args.case or CASES:
            for rps in (2.0, 10.0, 40.0, 100.0):
                perf = PerfModel(get_preset(name), "H100")  # a fresh pass-time cache per case
                policy = OperatorPolicy.from_params({"model": name}, perf)
                mix = servegen if case == "servegen mix" else None
                times = run_case(policy, rps, plans, case, mix)
                med = statistics.median(times)
                gpus = policy.decide(
                    PolicyInput(
                        now_s=0.0,
                        deployment="b",
                        current={},
                        slo=SLO(2000, 100),
                        load=window(rps, 1000, 250, mix),
                    )
                ).predicted
                print(
                    f"{name:<14}{case:<14}{rps:>7g}{med:>11.3f}{p99(times):>9.3f}{med / REF_7B_MS:>9.2f}"
                    f"{med / REF_57B_MS:>9.2f}{(gpus.gpus if gpus else 0):>6}"
                )


if __name__ == "__main__":
    main()
