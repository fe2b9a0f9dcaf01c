"""The decision service's leases: one per deployment. The implementation is generic (``opscale.lease``,
also used for other leaders); these names stay importable from here."""

from opscale.lease import (
    DEFAULT_TTL_S,
    InProcessLease,
    Lease,
    LockTable,
    PostgresAdvisoryLease,
    fence,
    lock_key,
    lock_table,
    make_lease,
)

__all__ = [
    "DEFAULT_TTL_S",
    "InProcessLease",
    "Lease",
    "LockTable",
    "PostgresAdvisoryLease",
    "fence",
    "lock_key",
    "lock_table",
    "make_lease",
]
