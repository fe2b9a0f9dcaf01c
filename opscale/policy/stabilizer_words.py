"""How the stabilizer words what it did (pure): pool lists, counts, and what a hold kept from happening."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opscale.policy.types import PoolKey

STALE_UP = " (no scale-out on stale data)"
STALE_IN = " (never scaling in on stale data)"


def names_text(pools: Iterable[PoolKey]) -> str:
    return ", ".join(str(p) for p in pools)


def counts_text(counts: Mapping[PoolKey, int]) -> str:
    return ", ".join(f"{p} {n}" for p, n in counts.items())


def held_move(raw: int, held: int, up_note: str = "", in_note: str = "") -> str:
    """What holding ``held`` kept from happening, in the direction the policy wanted: a held scale-up
    and a refused scale-in read differently (a scale-up is never described as a scale-in)."""
    if raw > held:
        return f" instead of scaling up to {raw} as the policy recommended{up_note}"
    if raw < held:
        return f" instead of scaling in to {raw} as the policy recommended{in_note}"
    return ", as the policy recommended"
