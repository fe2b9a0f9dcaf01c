"""Where the SRE commands reach the services: named contexts, the channel factory, and the one path from a
failed RPC to a one-line message and an exit code.

The CLI talks to the services over *sync* gRPC channels: a command is one short request/response
exchange, and a sync channel keeps the CLI free of an event loop of its own (so tests can drive it in a
thread next to services running on theirs).

Addresses are resolved, most specific first: the command's ``--decision``/``--placement`` flag (or its
``OPSCALE_DECISION_ADDRESS``/``OPSCALE_PLACEMENT_ADDRESS`` env var, read by Typer only), then the named
``--context`` (or the config file's ``current-context``), then the ``opscale up`` defaults on localhost.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import grpc
import typer
import yaml

from opscale.api.decision.v1 import decision_pb2_grpc
from opscale.api.placement.v1 import placement_pb2_grpc
from opscale.cli.common import fail
from opscale.cli.credentials import GIVEN
from opscale.cli.exit_codes import ExitCode, exit_for_status
from opscale.grpcutil.client import ClientSecurity, sync_channel
from opscale.grpcutil.tls import TlsFiles
from opscale.yamlio import YamlError, load

Service = Literal["decision", "placement", "ingest"]
SERVICES: tuple[Service, ...] = ("decision", "placement", "ingest")
#: Credential keys a context may hold beside the addresses (the same names as the settings).
CREDENTIAL_KEYS = ("token", "tls_ca_file", "tls_cert_file", "tls_key_file", "tls_server_name")
# The ports `opscale up` listens on by default (opscale.config.Settings).
DEFAULT_ADDRESSES: dict[str, str] = {
    "ingest": "127.0.0.1:50061",
    "decision": "127.0.0.1:50062",
    "placement": "127.0.0.1:50063",
}
DEFAULT_CONFIG_PATH = Path("~/.config/opscale/config.yaml")
DEFAULT_TIMEOUT_S = 10.0

T = TypeVar("T")

# --- options every SRE command shares --------------------------------------------------------------------

CliConfigOpt = Annotated[
    Path,
    typer.Option(
        "--opscale-config",
        envvar="OPSCALE_CLI_CONFIG",
        help="CLI config file with named contexts",
        show_default=str(DEFAULT_CONFIG_PATH),
    ),
]
ContextOpt = Annotated[
    str | None,
    typer.Option("--context", help="named context to use (default: the file's current-context)"),
]
DecisionOpt = Annotated[
    str | None,
    typer.Option(
        "--decision", envvar="OPSCALE_DECISION_ADDRESS", help="decision service host:port", show_default=False
    ),
]
PlacementOpt = Annotated[
    str | None,
    typer.Option(
        "--placement",
        envvar="OPSCALE_PLACEMENT_ADDRESS",
        help="placement service host:port",
        show_default=False,
    ),
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.1, help="deadline of each call, seconds")]


# --- contexts ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    name: str
    addresses: dict[str, str]
    credentials: dict[str, str] = field(default_factory=dict)


def security_for(context: Context) -> ClientSecurity:
    merged = {**context.credentials, **{k: v for k, v in GIVEN.values.items() if v}}

    def path(key: str) -> Path | None:
        return Path(merged[key]).expanduser() if merged.get(key) else None

    tls = TlsFiles(
        path("tls_cert_file"), path("tls_key_file"), path("tls_ca_file"), merged.get("tls_server_name", "")
    )
    if (tls.cert_file is None) != (tls.key_file is None):
        raise fail("--tls-cert and --tls-key go together: give both or neither", ExitCode.USAGE)
    return ClientSecurity(tls, merged.get("token", ""))


@dataclass(slots=True)
class CliConfig:
    """``~/.config/opscale/config.yaml``: ``contexts: {name: {decision: h:p, placement: h:p, ingest:
    h:p}}`` and ``current-context: name``."""

    path: Path
    contexts: dict[str, dict[str, str]] = field(default_factory=dict)
    current: str | None = None

    @classmethod
    def load(cls, path: Path) -> CliConfig:
        path = path.expanduser()
        if not path.exists():
            return cls(path)
        try:
            data = load(path.read_text()) or {}
        except (OSError, YamlError) as exc:
            raise fail(f"cannot read {path}: {_one_line(str(exc))}", ExitCode.USAGE) from None
        if not isinstance(data, dict):
            raise fail(f"{path}: expected a mapping with 'contexts' and 'current-context'", ExitCode.USAGE)
        contexts = data.get("contexts") or {}
        if not isinstance(contexts, dict) or not all(isinstance(v, dict) for v in contexts.values()):
            raise fail(f"{path}: contexts must map each name to {{decision: host:port, ...}}", ExitCode.USAGE)
        for name, addresses in contexts.items():
            unknown = set(addresses) - set(SERVICES) - set(CREDENTIAL_KEYS)
            if unknown:
                raise fail(
                    f"{path}: contexts.{name}: unknown key {sorted(map(str, unknown))[0]!r} "
                    f"(allowed: {', '.join((*SERVICES, *CREDENTIAL_KEYS))})",
                    ExitCode.USAGE,
                )
        current = data.get("current-context")
        return cls(
            path, {str(k): {str(s): str(a) for s, a in v.items()} for k, v in contexts.items()}, current
        )

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {"contexts": self.contexts}
        if self.current:
            data["current-context"] = self.current
        self.path.touch(mode=0o600)  # it may hold a bearer token
        self.path.write_text(yaml.safe_dump(data, sort_keys=True))

    def context(self, name: str | None) -> Context:
        """The named context, else the current one, else the localhost defaults."""
        wanted = name or self.current
        if wanted is None:
            return Context("default", dict(DEFAULT_ADDRESSES))
        if wanted not in self.contexts:
            known = ", ".join(sorted(self.contexts)) or "none"
            raise fail(f"no context {wanted!r} in {self.path} (known: {known})", ExitCode.USAGE)
        entry = self.contexts[wanted]
        addresses: dict[str, str] = {k: v for k, v in entry.items() if k in SERVICES}
        credentials = {k: v for k, v in entry.items() if k in CREDENTIAL_KEYS}
        return Context(wanted, {**DEFAULT_ADDRESSES, **addresses}, credentials)


# --- the client --------------------------------------------------------------------------------------------


@dataclass
class Client:
    """Sync stubs for one command's run; ``call`` is the one place a failed RPC becomes an exit."""

    addresses: dict[str, str]
    timeout_s: float = DEFAULT_TIMEOUT_S
    security: ClientSecurity = field(default_factory=ClientSecurity)
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)

    def channel(self, service: Service) -> grpc.Channel:
        if service not in self._channels:
            self._channels[service] = sync_channel(self.addresses[service], self.security)
        return self._channels[service]

    @property
    def decision(self) -> Any:
        return decision_pb2_grpc.DecisionServiceStub(self.channel("decision"))

    @property
    def placement(self) -> Any:
        return placement_pb2_grpc.PlacementServiceStub(self.channel("placement"))

    def call(
        self,
        service: Service,
        method: Callable[..., T],
        request: Any,
        *,
        instead: Mapping[grpc.StatusCode, str] | None = None,
    ) -> T:
        """``method(request)`` under the deadline; a gRPC error exits with its mapped code (and the
        message from ``instead`` for that status, where a command knows better what it means)."""
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise self.failure(service, exc, instead) from None

    def find(
        self,
        service: Service,
        method: Callable[..., T],
        request: Any,
        none_on: Collection[grpc.StatusCode] = (grpc.StatusCode.NOT_FOUND,),
    ) -> T | None:
        """Like ``call``, but the statuses in ``none_on`` are an answer (None), not an error."""
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() in none_on:
                return None
            raise self.failure(service, exc) from None

    def failure(
        self, service: Service, exc: grpc.RpcError, instead: Mapping[grpc.StatusCode, str] | None = None
    ) -> typer.Exit:
        """Print the one-line message for ``exc`` and return the exit to raise."""
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        message = (instead or {}).get(code) or describe_rpc_error(
            service,
            self.addresses[service],
            code,
            _details(exc),
            self.timeout_s,
            connected=code is grpc.StatusCode.UNAVAILABLE and self._connected(service),
        )
        return fail(message, exit_for_status(code))

    def _connected(self, service: Service) -> bool:
        """Whether the channel is up: then UNAVAILABLE came from the service (a dependency of its is
        down), not from failing to reach it."""
        try:
            grpc.channel_ready_future(self.channel(service)).result(timeout=0.05)
        except grpc.FutureTimeoutError:
            return False
        return True

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


# GetDecision before a deployment's first tick answers FAILED_PRECONDITION; views show "none yet".
NO_DECISION_YET = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


def describe_rpc_error(
    service: str,
    address: str,
    code: grpc.StatusCode,
    details: str,
    timeout_s: float,
    *,
    connected: bool = False,
) -> str:
    """The one line a user sees for a failed call (without the 'error: ' prefix)."""
    if code is grpc.StatusCode.UNAVAILABLE and connected:
        return f"{service} at {address} is unavailable: {details or 'try again'}"
    if code is grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach {service} at {address} ({details or 'unavailable'})"
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"{service} at {address} did not answer within {timeout_s:g}s"
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return f"{service} at {address} does not implement this call yet ({details or 'unimplemented'})"
    return details or f"{service} at {address} failed: {code.name}"


def _details(exc: grpc.RpcError) -> str:
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return _one_line(details or "")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def connect(
    *,
    config: Path,
    context: str | None,
    decision: str | None = None,
    placement: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Client:
    """A client for the resolved addresses and credentials (flag/env > context > localhost defaults)."""
    resolved = CliConfig.load(config).context(context)
    addresses = dict(resolved.addresses)
    if decision:
        addresses["decision"] = decision
    if placement:
        addresses["placement"] = placement
    return Client(addresses, timeout_s, security_for(resolved))
