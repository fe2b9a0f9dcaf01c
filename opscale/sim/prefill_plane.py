"""The prefill side of the data plane: routing prompts to a path, pass-level events, the KV hand-off.

A stage may be served by two *paths* at once — whole-model replicas and a chain of operator pools — while a
deployment moves from one form to the other (``opscale.policy.hybrid``). A prompt is routed when it
arrives to the path with the fewest queued prompts per ready replica of its first pool (a path with a
pool still starting only takes prompts when no path is ready), and stays on it.

Each pool is a FIFO queue served by its replicas. A free replica takes the prompts that are ready at its
start time, at most ``batch`` of them and — like engines' chunked prefill — at most
``PREFILL_CHUNK_TOKENS`` tokens together (a longer prompt goes alone: engines prefill it chunk by chunk,
which costs about the same as one pass), and runs one pass of the unit. The pass is priced at the batch's
total tokens for the linear operators and at the root mean square of its prompt lengths for the causal
attention core, whose work is Σ L² (FlashAttention's causal FLOP count): pricing a mixed batch at its
mean length would underestimate its attention. The prompts then queue at the next pool of their path.
Pass start and end times are exact (not rounded to ticks). A prompt whose KV a prefill attention replica
cannot hold is rejected.

The prompt's KV moves to decode over ``kv_link_bytes_s``, streamed layer by layer from the start of the
attention pass (Mooncake, FAST '25; DistServe, OSDI '24): it arrives the last layer's share after the
first token, or when the whole of it has crossed the link if that is later.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING

import numpy as np

from opscale.model.memory import PREFILL_CHUNK_TOKENS

if TYPE_CHECKING:
    from opscale.sim.engine import DataPlane, Path, Pool, TickStats

Queue = list[tuple[float, int, int]]  # (ready_s, seq, request)


def route(dp: DataPlane, ids: np.ndarray) -> None:
    """Queue arriving requests at the first pool of a prefill path (module docstring)."""
    dp.n_enqueued += len(ids)
    paths = dp.prefill_paths
    for i in ids.tolist():
        at = float(dp.req.arrival_s[i])
        path = paths[0] if len(paths) == 1 else min(paths, key=lambda p: _backlog(p, at))
        dp.seq += 1
        heapq.heappush(path.pools[0].queue, (at, dp.seq, i))


def _backlog(path: Path, now_s: float) -> float:
    """Queued prompts per ready replica at the path's first pool; a path with a pool that has no ready
    replica comes after every ready path, and one with no replica at all is never chosen."""
    first = path.pools[0]
    queued = sum(len(p.queue) for p in path.pools)
    if all(any(not r.draining and r.ready_s <= now_s for r in p.replicas) for p in path.pools):
        ready = sum(1 for r in first.replicas if not r.draining and r.ready_s <= now_s)
        return queued / ready
    if all(any(not r.draining for r in p.replicas) for p in path.pools):
        return 1e9 + queued
    return math.inf


def reject_old(dp: DataPlane, queue: Queue, t: float) -> None:
    limit = dp.cfg.queue_timeout_s
    while queue and queue[0][0] + limit < t:
        _, _, i = heapq.heappop(queue)
        dp.req.rejected[i] = True
        dp.n_rejected += 1


def run(dp: DataPlane, t: float, t_end: float, out: TickStats) -> None:
    for path in dp.prefill_paths:
        _run_path(dp, path, t, t_end, out)


def _run_path(dp: DataPlane, path: Path, t: float, t_end: float, out: TickStats) -> None:
    req = dp.req
    last = len(path.pools) - 1
    for idx, pool in enumerate(path.pools):
        q = pool.queue
        reject_old(dp, q, t)
        ready = [r for r in pool.replicas if r.ready_s < t_end]
        reps = [r for r in ready if not r.draining] or ready  # the last, draining, finish the queue
        if not reps or not q:
            continue
        nxt = path.pools[idx + 1] if idx < last else None
        while q and q[0][0] < t_end:
            r = min(reps, key=lambda r: max(r.free_s, r.ready_s))
            start = max(r.free_s, r.ready_s, q[0][0])
            if start >= t_end:
                break
            batch = _take_prompts(dp, q, start, pool.batch, _prompt_capacity(dp, pool, r.gpus))
            if not batch:
                continue
            lens = req.input_tokens[batch]
            tokens = float(lens.sum())
            rms = math.sqrt(float((lens.astype(np.float64) ** 2).mean()))
            s = dp.pass_s(pool, len(batch), tokens / len(batch), r.gpus, rms)
            if "attention" in pool.unit.ops:
                req.kv_start_s[batch] = start
            r.free_s = start + s
            pool.busy_s += s
            pool.batch_sum += len(batch)
            pool.passes += 1
            done = start + s
            if nxt is not None:
                for i in batch:
                    dp.seq += 1
                    heapq.heappush(nxt.queue, (done, dp.seq, i))
                continue
            done += dp.hop_s(path, tokens)
            out.prefill_tokens += tokens
            for i, n_in in zip(batch, lens.tolist(), strict=True):
                req.ttft_s[i] = done - req.arrival_s[i]
                req.prefill_done_s[i] = done
                out.ttft.append((done, (done - req.arrival_s[i]) * 1e3))
                if req.output_tokens[i] <= 1:
                    req.finish_s[i] = done
                    dp.n_finished += 1
                    out.e2e.append((done, (done - req.arrival_s[i]) * 1e3))
                    continue
                dp.seq += 1
                heapq.heappush(dp.decode_state.queue, (kv_arrival(dp, i, n_in, done), dp.seq, i))


def kv_arrival(dp: DataPlane, i: int, n_in: int, done: float) -> float:
    """When request ``i``'s prompt KV is on the decode side (module docstring)."""
    kv_s = n_in * dp.kv_bpt / dp.cfg.kv_link_bytes_s
    start = dp.req.kv_start_s[i]
    backlog = start + kv_s if math.isfinite(start) else done + kv_s
    return max(done + kv_s / dp.perf.shape.layers, backlog)


def _prompt_capacity(dp: DataPlane, pool: Pool, gpus: float) -> float:
    """Tokens of prompt KV a prefill replica holds while it prefills (inf: it holds no KV)."""
    return dp.kv_capacity(pool, gpus) if "attention" in pool.unit.ops else math.inf


def _take_prompts(dp: DataPlane, q: Queue, start: float, limit: int, kv_tokens: float) -> list[int]:
    """FIFO prompts ready at ``start`` for one pass: at most ``limit`` prompts and at most
    ``PREFILL_CHUNK_TOKENS`` tokens together (a longer prompt goes alone, in chunks). A prompt whose KV
    the replica cannot hold at all is rejected."""
    out: list[int] = []
    tokens = 0
    while q and q[0][0] <= start and len(out) < limit:
        i = q[0][2]
        n = int(dp.req.input_tokens[i])
        if n > kv_tokens:
            heapq.heappop(q)
            dp.req.rejected[i] = True
            dp.n_rejected += 1
            continue
        if out and tokens + n > PREFILL_CHUNK_TOKENS:
            break
        heapq.heappop(q)
        out.append(i)
        tokens += n
    return out
