"""The credentials given to ``opscale`` itself, before any command runs (a module of its own, so that
the top-level callback imports nothing heavy for commands that never call a service)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Credentials:
    """``opscale --token/--tls-ca/--tls-cert/--tls-key`` (or OPSCALE_TOKEN, OPSCALE_TLS_*_FILE): given,
    they win over the context's."""

    values: dict[str, str] = field(default_factory=dict)


GIVEN = Credentials()
