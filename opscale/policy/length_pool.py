"""Prompt and output lengths pooled over the recent past, fast up and slow down.

Each tick mixes the window's prompt and output length distributions into those kept in the state, with
exponential memory ``LENGTH_MEMORY_S`` (weight 1 − e^(−Δt/τ) for the new window), and plans with the
upper envelope of the pool and the window (at every quantile the longer length, ``LengthDist.upper``);
the TTFT percentile must also hold under each of the two (``LoadWindow.input_tokens_also``). The rate
is the window's. Why both:

* the tail that decides a TTFT percentile cannot be read from one window: a 30 s window of a long-prompt
  trace holds ~150 prompts, so its p99 is its second-longest prompt, and whether a 16k+ prompt fell in
  it flipped prefill between 8- and 4-GPU replicas from one tick to the next (each flip starts a new set
  of replicas). The pool keeps a tail seen in the last minutes;
* a pool alone lags a drift: Azure conv's outputs grow from ~120 to ~290 tokens in its first minutes, and
  the pool sized decode KV short (p99 time to second token 20 s). Longer ones count at once;
* the envelope conditioned on the servable prompts can thin the band just below the longest servable
  prompt (it moves the tail up, past it) and drop that band out of the percentile; hence the checks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from opscale.errors import InvalidArgument
from opscale.policy.jsonval import JSONValue, finite_or_none
from opscale.policy.lengths import LengthDist
from opscale.policy.window import LoadWindow

LENGTH_MEMORY_S = 300.0  # time constant of the pooled length distributions


def pooled_lengths(
    data: Mapping[str, JSONValue], load: LoadWindow, now_s: float, memory_s: float = LENGTH_MEMORY_S
) -> tuple[LoadWindow, dict[str, JSONValue]]:
    """The window with the upper envelope of its length distributions and the pooled ones of the state
    (module docstring), and the pool to keep. A window without requests leaves the pool as it was."""
    kept = data.get("lengths")
    old: tuple[float, LengthDist, LengthDist] | None = None
    if isinstance(kept, dict):
        t = finite_or_none(kept.get("t"))
        try:
            if t is not None and t <= now_s:
                old = (t, LengthDist.from_json(kept.get("in")), LengthDist.from_json(kept.get("out")))
        except InvalidArgument:
            old = None  # state written by another version, or damaged: start over from this window
    if load.arrival_rate_rps <= 0.0:
        if old is None:
            return load, {}
        t, p_in, p_out = old
    elif old is None:
        t, p_in, p_out = now_s, load.inputs(), load.outputs()
    else:
        a = 1.0 - math.exp(-(now_s - old[0]) / memory_s) if memory_s > 0.0 else 1.0
        t, p_in, p_out = now_s, _mix(old[1], load.inputs(), a), _mix(old[2], load.outputs(), a)
    keep: dict[str, JSONValue] = {"t": t, "in": _points(p_in), "out": _points(p_out)}
    also: tuple[LengthDist, ...] = ()
    if load.arrival_rate_rps > 0.0:
        also = (p_in, load.inputs())
        p_in, p_out = p_in.upper(also[1]), p_out.upper(load.outputs())
    pooled = replace(
        load,
        input_tokens_dist=p_in,
        output_tokens_dist=p_out,
        input_tokens_mean=p_in.mean,
        output_tokens_mean=p_out.mean,
        input_tokens_also=also,
    )
    return pooled, keep


def _points(d: LengthDist) -> list[JSONValue]:
    return [[t, p] for t, p in d.points()]


def _mix(old: LengthDist, new: LengthDist, a: float) -> LengthDist:
    """(1 − a) × old + a × new."""
    if a >= 1.0:
        return new
    weights = [p * (1.0 - a) for p in old.probs] + [p * a for p in new.probs]
    return LengthDist.from_weighted([*old.tokens, *new.tokens], weights)
