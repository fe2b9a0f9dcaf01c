"""Names a request carries (deployments, nodes, replicas): present and of a sane length."""

from __future__ import annotations

from opscale.errors import InvalidArgument


def require_name(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is required", field=field)
    if len(value) > 253:
        raise InvalidArgument(f"{field} is {len(value)} characters; at most 253", field=field)
    return value
