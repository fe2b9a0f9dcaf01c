"""Who is calling, and may they: bearer tokens, certificate subjects, roles.

Authentication is on when a server has a tokens file (``auth_tokens_file``) or requires client
certificates (``tls_ca_file``); the embedded default has neither and lets every loopback caller act
(as ``anonymous``, recorded in the audit log as ``unverified:<actor the client claimed>``).

- A **bearer token** (``authorization: Bearer <token>`` metadata) is looked up by its SHA-256 in the
  tokens file, a YAML list of ``{token_sha256, subject, role}``: the file holds no secret.
- A **client certificate** (mTLS) names the caller by its subject's common name; its role is the
  certificate's organizational unit (``OU=viewer``), which only the CA can vouch for. ``opscale certs
  init`` issues certificates so. A token, when present too, wins: one certificate per host, a token per
  person.

Roles (``ROLE_FOR_METHOD`` below is the one table): ``viewer`` reads (get, describe, explain, watch,
top, what-if), ``operator`` also changes specs and nodes (apply, freeze, cordon, drain), ``admin`` also
deletes and sets desired counts, ``ingest`` only pushes samples, ``agent`` only holds the agent stream,
and only for the node named by its certificate's common name or its token's subject.
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from opscale.api.agent.v1 import agent_pb2
from opscale.api.decision.v1 import decision_pb2
from opscale.api.ingest.v1 import ingest_pb2
from opscale.api.keda import externalscaler_pb2
from opscale.api.placement.v1 import placement_pb2
from opscale.api.worker.v1 import worker_pb2
from opscale.errors import ConfigError, PermissionDenied, Unauthenticated
from opscale.yamlio import YamlError, load


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
    INGEST = "ingest"
    AGENT = "agent"


#: Which roles may call a method of each kind. viewer < operator < admin is a ladder; ingest and agent
#: stand apart (a serving framework's or a GPU host's credentials can do nothing else).
READ = frozenset({Role.VIEWER, Role.OPERATOR, Role.ADMIN})
OPERATE = frozenset({Role.OPERATOR, Role.ADMIN})
ADMIN = frozenset({Role.ADMIN})
# The agent pushes its GPUs' telemetry to ingest (``opscale agent --ingest``): a narrow exception.
PUSH = frozenset({Role.INGEST, Role.AGENT, Role.ADMIN})
AGENT = frozenset({Role.AGENT})
PUBLIC: frozenset[Role] = frozenset()  # no credentials needed (health checks of load balancers)


def _methods(module: Any, service: str, rules: Mapping[str, frozenset[Role]]) -> dict[str, frozenset[Role]]:
    """``/<full service>/<method>`` -> roles, refusing a rule for a method the service lacks and a
    method without a rule (a new RPC must be classified here before it can be called with auth on)."""
    descriptor = module.DESCRIPTOR.services_by_name[service]
    names = {m.name for m in descriptor.methods}
    if names != set(rules):
        raise RuntimeError(f"{service}: roles for {sorted(set(rules))} but methods {sorted(names)}")
    return {f"/{descriptor.full_name}/{name}": roles for name, roles in rules.items()}


ROLE_FOR_METHOD: dict[str, frozenset[Role]] = {
    **_methods(
        decision_pb2,
        "DecisionService",
        {
            "CreateDeployment": OPERATE,
            "UpdateDeployment": OPERATE,
            "GetDeployment": READ,
            "ListDeployments": READ,
            "DeleteDeployment": ADMIN,
            "FreezeDeployment": OPERATE,
            "UnfreezeDeployment": OPERATE,
            "GetDecision": READ,
            "WatchDecisions": READ,
            "ListDecisions": READ,
            "ExplainDecision": READ,
            "WhatIf": READ,
        },
    ),
    **_methods(
        placement_pb2,
        "PlacementService",
        {
            "ListNodes": READ,
            "GetNode": READ,
            "ListGpus": READ,
            "CordonNode": OPERATE,
            "UncordonNode": OPERATE,
            "DrainNode": OPERATE,
            "GetReplicas": READ,
            "ApplyDesired": ADMIN,  # desired counts: the decision service's hand-off, or an override
        },
    ),
    **_methods(agent_pb2, "AgentService", {"Connect": AGENT}),
    **_methods(
        ingest_pb2,
        "IngestService",
        {"PushSamples": PUSH, "StreamSamples": PUSH, "GetWindowSummary": READ},
    ),
    **_methods(
        externalscaler_pb2,
        "ExternalScaler",
        {
            "IsActive": READ,
            "StreamIsActive": READ,
            "GetMetricSpec": READ,
            "GetMetrics": READ,
            "StreamMetricSpec": READ,
        },
    ),
    **_methods(
        worker_pb2,
        "WorkerService",
        # The serving framework sends the batches; the node agent drains the worker it started.
        {
            "ExecuteBatch": frozenset({Role.INGEST, Role.ADMIN}),
            "Drain": frozenset({Role.AGENT, Role.ADMIN}),
            "GetStatus": READ | AGENT,
        },
    ),
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": READ,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": READ,
}


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    role: Role | None
    #: False only when authentication is off (the embedded default): the caller is taken on trust.
    authenticated: bool
    via: str = "none"  # token, certificate or none

    def audit_actor(self, claimed: str) -> str:
        """The name the audit log records: the authenticated subject, never what the client says."""
        if self.authenticated:
            return self.subject
        return f"unverified:{claimed or 'api'}"[:255]


ANONYMOUS = Identity("anonymous", None, authenticated=False)
_current: contextvars.ContextVar[Identity] = contextvars.ContextVar("opscale_identity", default=ANONYMOUS)


def current_identity() -> Identity:
    """The caller of the RPC being served (``ANONYMOUS`` when authentication is off)."""
    return _current.get()


def set_identity(identity: Identity) -> None:
    _current.set(identity)


def audit_actor(claimed: str) -> str:
    return current_identity().audit_actor(claimed)


def require_node(node: str) -> None:
    """An agent may act only as its own node (its certificate's CN or its token's subject)."""
    identity = current_identity()
    if identity.authenticated and identity.subject != node:
        raise PermissionDenied(
            f"register.node_name: identity '{identity.subject}' may register only as node "
            f"'{identity.subject}', not '{node}'",
            field="register.node_name",
        )


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenEntry:
    subject: str
    role: Role


def load_tokens(path: Path) -> dict[str, TokenEntry]:
    """The tokens file: a YAML list of ``{token_sha256, subject, role}``; ``ConfigError`` names the
    entry at fault."""
    try:
        doc = load(Path(path).expanduser().read_text())
    except (OSError, YamlError) as exc:
        raise ConfigError(f"auth_tokens_file {path}: cannot read it: {exc}") from None
    if not isinstance(doc, list):
        raise ConfigError(f"auth_tokens_file {path}: must be a list of {{token_sha256, subject, role}}")
    out: dict[str, TokenEntry] = {}
    roles = ", ".join(r.value for r in Role)
    for i, entry in enumerate(doc):
        where = f"auth_tokens_file {path}: entry {i}"
        if not isinstance(entry, dict) or set(entry) != {"token_sha256", "subject", "role"}:
            raise ConfigError(f"{where}: must have exactly token_sha256, subject and role")
        digest, subject, role = entry["token_sha256"], entry["subject"], entry["role"]
        if (
            not isinstance(digest, str)
            or len(digest) != 64
            or not all(c in "0123456789abcdef" for c in digest)
        ):
            raise ConfigError(
                f"{where}: token_sha256 must be 64 lower-case hex digits (sha256sum of the token)"
            )
        if not isinstance(subject, str) or not 1 <= len(subject) <= 200 or "\x00" in subject:
            raise ConfigError(f"{where}: subject must be a name of 1 to 200 characters")
        if role not in Role.__members__.values():
            raise ConfigError(f"{where}: role {role!r} is not one of {roles}")
        if digest in out:
            raise ConfigError(f"{where}: the same token appears twice")
        out[digest] = TokenEntry(subject, Role(role))
    return out


@lru_cache(maxsize=1024)
def _certificate_identity(pem: bytes) -> tuple[str, str]:
    """(common name, organizational unit) of a PEM certificate; parsed once per certificate."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(pem)

    def first(oid: x509.ObjectIdentifier) -> str:
        values = cert.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else ""

    return first(NameOID.COMMON_NAME), first(NameOID.ORGANIZATIONAL_UNIT_NAME)


class Authenticator:
    """Identifies the caller of one RPC from its metadata and TLS peer, and checks its role."""

    def __init__(self, tokens: Mapping[str, TokenEntry], *, certificates: bool) -> None:
        self._tokens = dict(tokens)
        self._certificates = certificates

    @classmethod
    def of(cls, settings: Any) -> Authenticator | None:
        """From a ``Settings``; None when authentication is off (no tokens file, no client CA)."""
        certificates = settings.tls_ca_file is not None and settings.tls_cert_file is not None
        if settings.auth_tokens_file is None and not certificates:
            return None
        tokens = load_tokens(settings.auth_tokens_file) if settings.auth_tokens_file else {}
        return cls(tokens, certificates=certificates)

    def identify(self, metadata: Mapping[str, str], auth_context: Mapping[str, Any]) -> Identity:
        header = metadata.get("authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            found = self._tokens.get(sha256_hex(token.strip())) if scheme.lower() == "bearer" else None
            if found is None:
                raise Unauthenticated("the bearer token is not valid (authorization: Bearer <token>)")
            return Identity(found.subject, found.role, authenticated=True, via="token")
        pems = auth_context.get("x509_pem_cert") or []
        if self._certificates and pems:
            common_name, unit = _certificate_identity(bytes(pems[0]))
            role = Role(unit) if unit in Role.__members__.values() else None
            return Identity(common_name, role, authenticated=True, via="certificate")
        raise Unauthenticated(
            "credentials required: a bearer token (--token, OPSCALE_TOKEN) or a client certificate"
        )

    def authorize(self, identity: Identity, method: str) -> None:
        allowed = ROLE_FOR_METHOD.get(method, ADMIN)  # a method nobody classified: admin only
        if not allowed:
            return
        if identity.role not in allowed:
            role = identity.role.value if identity.role is not None else "no role"
            raise PermissionDenied(
                f"'{identity.subject}' ({role}) may not call {method.rsplit('/', 1)[-1]}; it needs "
                f"one of: {', '.join(sorted(r.value for r in allowed))}"
            )

    def describe(self) -> str:
        ways = [f"{len(self._tokens)} tokens"] if self._tokens else []
        ways += ["client certificates"] if self._certificates else []
        return " and ".join(ways) or "a tokens file with no tokens (nobody gets in)"

    def public(self, method: str) -> bool:
        return ROLE_FOR_METHOD.get(method) == PUBLIC
