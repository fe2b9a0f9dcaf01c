"""What a perfect observer of a trace would report: the load window of an interval, and the peak minute."""

from __future__ import annotations

import numpy as np

from opscale.policy.lengths import LengthDist
from opscale.policy.types import LoadWindow
from opscale.sim.traces import Trace


def window_of(trace: Trace, start_s: float, end_s: float) -> LoadWindow:
    """What a perfect observer would report for [start_s, end_s)."""
    m = (trace.arrival_s >= start_s) & (trace.arrival_s < end_s)
    span = max(end_s - start_s, 1e-9)
    if not m.any():
        return LoadWindow(window_s=span)
    i, o = trace.input_tokens[m], trace.output_tokens[m]
    return LoadWindow(
        window_s=span,
        arrival_rate_rps=float(m.sum()) / span,
        input_tokens_mean=float(i.mean()),
        input_tokens_p99=float(np.percentile(i, 99)),
        output_tokens_mean=float(o.mean()),
        output_tokens_p99=float(np.percentile(o, 99)),
        decode_tps=float(m.sum()) / span * float(o.mean()),
        input_tokens_dist=LengthDist.from_samples(i),
        output_tokens_dist=LengthDist.from_samples(o),
    )


def peak_window(trace: Trace, width_s: float = 60.0) -> LoadWindow:
    counts = np.bincount((trace.arrival_s // width_s).astype(np.int64))
    k = int(np.argmax(counts))
    w = window_of(trace, 0.0, trace.duration_s + 1.0)
    return LoadWindow(
        window_s=width_s,
        arrival_rate_rps=counts[k] / width_s,
        input_tokens_mean=w.input_tokens_mean,
        output_tokens_mean=w.output_tokens_mean,
        input_tokens_dist=w.input_tokens_dist,
        output_tokens_dist=w.output_tokens_dist,
    )
