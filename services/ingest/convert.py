"""Metrics ingest: proto <-> domain conversions and request validation."""

from __future__ import annotations

import math

from opscale.api.ingest.v1 import ingest_pb2 as pb
from opscale.errors import InvalidArgument
from services.common_convert import require_name
from services.ingest.app import MAX_WINDOW_S, WindowQuery


def window_query_from_pb(msg: pb.GetWindowSummaryRequest) -> WindowQuery:
    deployment = require_name(msg.deployment, "deployment")
    if not math.isfinite(msg.window_s) or not 0 < msg.window_s <= MAX_WINDOW_S:
        raise InvalidArgument(
            f"window_s must be in (0, {MAX_WINDOW_S:g}] seconds, got {msg.window_s!r}", field="window_s"
        )
    return WindowQuery(deployment=deployment, window_s=msg.window_s)
