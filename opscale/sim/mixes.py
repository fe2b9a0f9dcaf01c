"""Named request-length mixes for steady synthetic loads (``opscale validate``, ``opscale oracle``).

* ``fixed`` — every request 1024 prompt / 256 output tokens (the previous validation's setting);
* ``sharegpt`` — (prompt, output) pairs drawn jointly from the ShareGPT per-request token counts shipped
  in ``data/sharegpt_lengths`` (30,731 conversations ≤ 8k tokens, Llama-2 tokenizer; etalon, Apache-2.0):
  prompt p50/p90/p99 1730/5696/7434, output 415/834/998, and the real correlation between the two;
* ``longtail`` — a long-prompt conversation mix: ShareGPT pairs for 92% of requests and, for 8%, a
  prompt log-uniform in [16k, 128k] tokens (with a ShareGPT output), so ≥ 5% of prompts exceed 16k and
  the longest reach the ~126k of long-context conversation traces. Synthetic, stated as such: it is there
  to exercise the tail that mean-length pricing and KV sizing get wrong.

``fixed:IN/OUT`` (e.g. ``fixed:4096/512``) is any fixed pair.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from opscale.errors import InvalidArgument

SHAREGPT = (
    Path(__file__).parent / "data" / "sharegpt_lengths" / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
)
LONG_SHARE = 0.08
LONG_RANGE = (16_384, 131_072)
MAX_FIXED_TOKENS = 1_000_000

Mix = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@lru_cache(maxsize=1)
def sharegpt_pairs() -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(SHAREGPT, delimiter=",", skiprows=1, usecols=(0, 1), dtype=np.int64)
    return np.maximum(data[:, 0], 1), np.maximum(data[:, 1], 1)


def _sharegpt(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    i, o = sharegpt_pairs()
    pick = rng.integers(0, len(i), size=n)
    return i[pick].copy(), o[pick].copy()


def _longtail(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    i, o = _sharegpt(n, rng)
    long = rng.random(n) < LONG_SHARE
    lo, hi = np.log(LONG_RANGE[0]), np.log(LONG_RANGE[1])
    i[long] = np.exp(rng.uniform(lo, hi, size=int(long.sum()))).astype(np.int64)
    return i, o


def _fixed(inp: int, out: int) -> Mix:
    def draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return np.full(n, inp, dtype=np.int64), np.full(n, out, dtype=np.int64)

    return draw


MIXES: dict[str, Mix] = {"fixed": _fixed(1024, 256), "sharegpt": _sharegpt, "longtail": _longtail}


def register_pairs(name: str, inputs: np.ndarray, outputs: np.ndarray) -> str:
    """Register a mix that draws (prompt, output) pairs from a trace's own requests (``evaluate``'s oracle
    replays each minute's rate with the trace's lengths); returns ``name``."""
    if len(inputs) == 0 or len(inputs) != len(outputs):
        raise InvalidArgument("a trace mix needs as many outputs as prompts, at least one", field="mix")
    i, o = np.asarray(inputs, dtype=np.int64).copy(), np.asarray(outputs, dtype=np.int64).copy()

    def draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        pick = rng.integers(0, len(i), size=n)
        return i[pick].copy(), o[pick].copy()

    MIXES[name] = draw
    return name


def get_mix(name: str) -> Mix:
    """A mix by name: ``fixed``, ``sharegpt``, ``longtail`` or ``fixed:IN/OUT``."""
    if name in MIXES:
        return MIXES[name]
    if name.startswith("fixed:"):
        try:
            a, b = (int(x) for x in name[len("fixed:") :].split("/"))
        except ValueError:
            raise InvalidArgument(f"a fixed mix is written fixed:IN/OUT, got {name!r}", field="mix") from None
        for what, v in (("input", a), ("output", b)):
            if not 1 <= v <= MAX_FIXED_TOKENS:
                raise InvalidArgument(
                    f"mix {name!r}: {what} tokens must be in [1, {MAX_FIXED_TOKENS:,}], got {v}", field="mix"
                )
        return _fixed(a, b)
    known = ", ".join([*MIXES, "fixed:IN/OUT"])
    raise InvalidArgument(f"unknown length mix {name!r}; known mixes: {known}", field="mix")
