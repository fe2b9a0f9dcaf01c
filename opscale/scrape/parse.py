"""Prometheus text exposition -> plain values, using prometheus_client's own text-format parser.

Why that parser: it is the reference implementation of the format the engines emit (vLLM and SGLang
both export through prometheus_client), it is already a dependency (for our own /metrics), and the
format has enough corners (escaping in label values, ``+Inf``/``NaN``, HELP/TYPE ordering,
``_created`` series) that a hand-written parser would be a liability.

Values are kept per sample name and label set; which label sets belong to which model and engine,
and how they add up, is the engine mapping's job (``engines``). ``_created`` samples (the creation
time prometheus_client gives every counter and histogram child) are kept apart in ``created``: a
child whose creation time moved was created again, i.e. the process restarted.

The parser accepts any float as a value and any string as a bucket bound. A gauge or counter that is
NaN or ±Inf, or a counter below zero, is left out as if the engine had not exported it (its signal is
then reported missing, not made up); a histogram series with a bound that is not a number, or a count
that is not a finite number ≥ 0, is left out whole, as one without its ``+Inf`` bucket is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]


class ExpositionError(ValueError):
    """The text is not Prometheus text exposition format."""


@dataclass(frozen=True, slots=True)
class HistogramValue:
    """One histogram series: cumulative counts per upper bound (ascending, ``inf`` last), sum, count."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float

    @property
    def bounds(self) -> tuple[float, ...]:
        return tuple(le for le, _ in self.buckets)


@dataclass(frozen=True, slots=True)
class Exposition:
    # Gauges, counters and untyped samples, by sample name (counters keep their ``_total``).
    scalars: Mapping[str, Mapping[Labels, float]]
    # Histograms, by family name (without ``_bucket`` / ``_sum`` / ``_count``).
    histograms: Mapping[str, Mapping[Labels, HistogramValue]]
    # Creation timestamps (seconds since the epoch), by family name, of counters and histograms.
    created: Mapping[str, Mapping[Labels, float]] = field(default_factory=dict)

    def names(self) -> set[str]:
        return set(self.scalars) | set(self.histograms)


def _labels(raw: Mapping[str, str], drop: str = "") -> Labels:
    return tuple(sorted((k, v) for k, v in raw.items() if k != drop))


@dataclass(slots=True)
class _Parts:
    buckets: dict[float, float] = field(default_factory=dict)
    sum: float = math.nan
    count: float | None = None
    malformed: bool = False  # a bucket whose ``le`` is not a number, or a count that is not one

    def counted(self, value: float) -> float:
        self.malformed |= not (math.isfinite(value) and value >= 0.0)
        return value


def parse_exposition(text: str) -> Exposition:
    """Raises ``ExpositionError`` if the text does not parse."""
    scalars: dict[str, dict[Labels, float]] = {}
    created: dict[str, dict[Labels, float]] = {}
    hist_parts: dict[str, dict[Labels, _Parts]] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise ExpositionError(f"not Prometheus text format: {exc}") from None
    for family in families:
        if family.type in ("summary", "info", "stateset"):
            continue  # the engines' signals we use are never summaries
        for s in family.samples:
            if family.type != "histogram" and not (
                math.isfinite(s.value) and (s.value >= 0.0 or family.type != "counter")
            ):
                continue  # NaN, ±Inf or a negative count says nothing a signal can use: left out as absent
            if s.name.endswith("_created"):
                created.setdefault(family.name, {})[_labels(s.labels)] = float(s.value)
            elif family.type != "histogram":
                scalars.setdefault(s.name, {})[_labels(s.labels)] = float(s.value)
            else:
                parts = hist_parts.setdefault(family.name, {}).setdefault(_labels(s.labels, "le"), _Parts())
                if s.name.endswith("_bucket"):
                    le = _number(s.labels.get("le", "nan"))
                    parts.malformed |= le is None
                    parts.buckets[math.nan if le is None else le] = parts.counted(float(s.value))
                elif s.name.endswith("_sum"):  # ±Inf is as absent as NaN: no mean can come of it
                    parts.sum = float(s.value) if math.isfinite(s.value) else math.nan
                elif s.name.endswith("_count"):
                    parts.count = parts.counted(float(s.value))
    histograms: dict[str, dict[Labels, HistogramValue]] = {}
    for name, series in hist_parts.items():
        for labels, parts in series.items():
            buckets = tuple(sorted((le, c) for le, c in parts.buckets.items() if not math.isnan(le)))
            if parts.malformed or not buckets or buckets[-1][0] != math.inf:
                continue  # malformed (no +Inf bucket, a bound or a count that is not a number): skip
            count = buckets[-1][1] if parts.count is None else parts.count
            histograms.setdefault(name, {})[labels] = HistogramValue(buckets, parts.sum, count)
    return Exposition(scalars, histograms, created)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
