"""Prompt and output lengths pooled over the recent past, fast up and slow down.

A tick whose window does not overlap the last one pooled mixes the window's prompt and output length
distributions into those kept in the state, as a sample of prompts with exponential memory
``LENGTH_MEMORY_S`` (τ): the prompts kept weigh W, decayed by e^(−Δt/τ) since the last pooled window, and
the window adds its own prompts (rate × window), so its share of the pool is rate·T / W after. At the
start the pool is the prompts seen so far, not the first window at full weight. Started at full weight,
the first tick's window held the pool for minutes (37% of it after τ = 300 s).

A tick whose window overlaps the last one pooled leaves the pool as it is: every prompt is pooled once,
whatever the tick. Pooling every tick's window at the weight of the prompts since the last tick
(rate × Δt) counts each prompt once on average in steady state, but the first window's prompts, pooled
whole at the start, were counted again by the windows of the next 30 s: half as much again on average
for a policy ticking every second, a fifth for one ticking every 20 s. On the long-prompt scenario of
evaluate's quick matrix, whose first seconds hold prompts of 100k+ tokens, the operator policy's
envelope then planned mean prompts of 11,193 tokens at t = 60 s against the model-level policy's 9,053
from the same window, and 7 prefill and 2 decode replicas of 8 GPUs against 6 and 1.

Each tick then plans with the upper envelope of the pool and the window (at every quantile the longer
length, ``LengthDist.upper``); the TTFT percentile must also hold under each of the two
(``LoadWindow.input_tokens_also``). The rate is the window's. Why both:

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
    old: tuple[float, LengthDist, LengthDist, float | None] | None = None
    if isinstance(kept, dict):
        t, w = finite_or_none(kept.get("t")), finite_or_none(kept.get("w"))
        try:
            if t is not None and t <= now_s and (w is None or w > 0.0):
                old = (t, LengthDist.from_json(kept.get("in")), LengthDist.from_json(kept.get("out")), w)
        except InvalidArgument:
            old = None  # state written by another version, or damaged: start over from this window
    if load.arrival_rate_rps <= 0.0:
        if old is None:
            return load, {}
        t, p_in, p_out, w = old
    elif old is None or memory_s <= 0.0:
        w = load.arrival_rate_rps * load.window_s  # the window's prompts
        t, p_in, p_out = now_s, load.inputs(), load.outputs()
    elif now_s - old[0] < load.window_s:
        t, p_in, p_out, w = old  # the window overlaps the last one pooled: its prompts are counted
    else:
        dt = now_s - old[0]
        # a pool kept without its weight (an earlier version) is taken at full weight: rate × τ prompts
        kept_w = old[3] if old[3] is not None else load.arrival_rate_rps * memory_s
        fresh = load.arrival_rate_rps * load.window_s  # the window's prompts, none of them pooled yet
        w = math.exp(-dt / memory_s) * kept_w + fresh
        share = fresh / w
        t, p_in, p_out = now_s, _mix(old[1], load.inputs(), share), _mix(old[2], load.outputs(), share)
    keep: dict[str, JSONValue] = {"t": t, "in": _points(p_in), "out": _points(p_out)}
    if w is not None:
        keep["w"] = w
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
