"""How the stabilizer words what it did (pure): pool lists, counts, and what a hold kept from happening."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opscale.policy.stabilizer_config import MIN_BUCKET_S, StabilizerConfig
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


def window_why(cfg: StabilizerConfig, scale_up: bool, up_rec: int, down_rec: int) -> str:
    """What a stabilization window held the recommendation to, and why."""
    if scale_up:
        w = cfg.scale_up_window_s
        return f"scale-up stabilization: the lowest recommendation in the last {w:g} s was {up_rec}"
    w, bucket = cfg.scale_down_window_s, min(cfg.scale_down_evidence_s, cfg.scale_down_window_s)
    by = f" (each {bucket:g} s by its median)" if bucket >= MIN_BUCKET_S else ""
    return f"scale-down stabilization: the highest recommendation in the last {w:g} s{by} was {down_rec}"
