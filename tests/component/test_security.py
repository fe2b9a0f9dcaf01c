"""TLS, mTLS, tokens and roles against the real services over real gRPC (issue 13, "Done when"):

- with TLS + auth configured a plaintext client fails; an unauthenticated CreateDeployment gets
  UNAUTHENTICATED; a viewer token gets PERMISSION_DENIED on apply and drain; an operator token applies,
  and the audit row names the token's subject, not the actor the client claimed;
- with mTLS, an agent certificate for node A cannot register as node B (and can as A), a client
  without a certificate cannot connect, and a certificate's OU is its role;
- a server refuses a non-loopback address without TLS unless allow_insecure.

Certificates come from ``opscale.certs`` (what ``opscale certs init`` writes), made once per module.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from opscale.api.agent.v1 import agent_pb2 as apb
from opscale.api.decision.v1 import decision_pb2 as dpb
from opscale.api.decision.v1 import decision_pb2_grpc
from opscale.api.placement.v1 import placement_pb2 as ppb
from opscale.api.placement.v1 import placement_pb2_grpc
from opscale.certs import DEFAULT_SERVER_NAMES, init, write
from opscale.clock import VirtualClock
from opscale.config import Settings
from opscale.db.migrate import upgrade
from opscale.db.repo import AuditRepo
from opscale.errors import ConfigError
from opscale.grpcutil.auth import Authenticator, Role, TokenEntry, sha256_hex
from opscale.grpcutil.client import ClientSecurity, instrumented_channel
from opscale.grpcutil.server import RunningService, ServerSecurity, start_service, stop_service
from opscale.grpcutil.tls import TlsFiles
from opscale.services.catalog import SERVICES
from opscale.services.runtime import Runtime, open_runtime
from opscale.telemetry import build_telemetry
from tests.builders import register_once, spec_pb

TOKENS = {"viewer-secret": ("vera", Role.VIEWER), "operator-secret": ("olga", Role.OPERATOR)}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    issued = init(
        server_names=DEFAULT_SERVER_NAMES,
        agents=["node-a", "node-b"],
        clients=[("vera", "viewer"), ("adam", "admin")],
        days=1,
    )
    write(issued, out, force=False)
    return out


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    url = f"sqlite:///{tmp_path}/opscale.db"
    upgrade(url)
    telemetry = build_telemetry("opscale-test")
    rt = await open_runtime(Settings(database_url=url, metrics_port=None), telemetry, clock=VirtualClock())
    try:
        yield rt
    finally:
        await rt.close()
        telemetry.shutdown()


Serve = Callable[[str, ServerSecurity], "AsyncIterator[str]"]


@dataclass
class Servers:
    runtime: Runtime
    started: list[RunningService]

    async def start(self, name: str, security: ServerSecurity) -> str:
        definition = SERVICES[name].build(self.runtime)
        running = await start_service(definition, "127.0.0.1", 0, self.runtime.telemetry, security=security)
        self.started.append(running)
        return f"127.0.0.1:{running.port}"


@pytest.fixture
async def servers(runtime: Runtime) -> AsyncIterator[Servers]:
    found = Servers(runtime, [])
    try:
        yield found
    finally:
        for running in reversed(found.started):
            await stop_service(running, 0.5)


def tokens() -> dict[str, TokenEntry]:
    return {sha256_hex(token): TokenEntry(subject, role) for token, (subject, role) in TOKENS.items()}


def code_of(exc: grpc.aio.AioRpcError) -> grpc.StatusCode:
    return exc.code()


async def test_tls_with_tokens_refuses_plaintext_anonymous_and_the_wrong_role(
    certs: Path, servers: Servers
) -> None:
    security = ServerSecurity(
        TlsFiles(certs / "server.crt", certs / "server.key"), auth=Authenticator(tokens(), certificates=False)
    )
    decision = await servers.start("decision", security)
    placement = await servers.start("placement", security)
    request = dpb.CreateDeploymentRequest(spec=spec_pb(name="chat"), actor="mallory-claims-to-be-root")

    def client(address: str, token: str = "") -> grpc.aio.Channel:
        return instrumented_channel(
            address, None, security=ClientSecurity(TlsFiles(ca_file=certs / "ca.crt"), token)
        )

    # A plaintext client never gets an answer from a TLS server.
    async with grpc.aio.insecure_channel(decision) as plain:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await decision_pb2_grpc.DecisionServiceStub(plain).CreateDeployment(request, timeout=5)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE

    async with client(decision) as anonymous, client(decision, "not-a-token") as forged:
        for channel in (anonymous, forged):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await decision_pb2_grpc.DecisionServiceStub(channel).CreateDeployment(request, timeout=5)
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED, info.value.details()

    async with client(decision, "viewer-secret") as viewer_d, client(placement, "viewer-secret") as viewer_p:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await decision_pb2_grpc.DecisionServiceStub(viewer_d).CreateDeployment(request, timeout=5)
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "vera" in (info.value.details() or "") and "operator" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await placement_pb2_grpc.PlacementServiceStub(viewer_p).DrainNode(
                ppb.DrainNodeRequest(name="gpu-0"), timeout=5
            )
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        # What a viewer may do, it can.
        listed = await decision_pb2_grpc.DecisionServiceStub(viewer_d).ListDeployments(
            dpb.ListDeploymentsRequest(), timeout=5
        )
        assert list(listed.deployments) == []

    async with client(decision, "operator-secret") as operator:
        created = await decision_pb2_grpc.DecisionServiceStub(operator).CreateDeployment(request, timeout=5)
    assert created.deployment.version == 1
    async with servers.runtime.sessions() as session:
        rows = await AuditRepo(session).list(name="chat")
    assert [(r.action, r.actor) for r in rows] == [("create", "olga")]


async def test_mtls_binds_an_agent_to_its_node_and_a_certificate_to_its_role(
    certs: Path, servers: Servers
) -> None:
    tls = TlsFiles(certs / "server.crt", certs / "server.key", certs / "ca.crt")
    security = ServerSecurity(tls, auth=Authenticator({}, certificates=True))
    placement = await servers.start("placement", security)
    decision = await servers.start("decision", security)

    def as_(name: str, address: str) -> grpc.aio.Channel:
        files = TlsFiles(certs / f"{name}.crt", certs / f"{name}.key", certs / "ca.crt")
        return instrumented_channel(address, None, security=ClientSecurity(files))

    async def register(channel: grpc.aio.Channel, node: str) -> apb.ConnectResponse:
        reply: apb.ConnectResponse = await register_once(
            channel, apb.Register(node_name=node, session_id="s-" + node)
        )
        return reply

    async with as_("agent-node-a", placement) as agent_a:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await register(agent_a, "node-b")
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "node-a" in (info.value.details() or "") and "s-node-a" not in (info.value.details() or "")
        assert (await register(agent_a, "node-a")).register_ack.node_name == "node-a"

    # A viewer's certificate reads but cannot drain or register; an admin's can drain.
    async with as_("client-vera", placement) as vera, as_("client-adam", placement) as adam:
        stub = placement_pb2_grpc.PlacementServiceStub(vera)
        nodes = await stub.ListNodes(ppb.ListNodesRequest(), timeout=5)
        assert [n.name for n in nodes.nodes] == ["node-a"]
        for call in (
            stub.DrainNode(ppb.DrainNodeRequest(name="node-a"), timeout=5),
            register(vera, "vera"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        drained = await placement_pb2_grpc.PlacementServiceStub(adam).DrainNode(
            ppb.DrainNodeRequest(name="node-a", actor="someone-else"), timeout=5
        )
        assert drained.node.name == "node-a"

    # No client certificate: the TLS handshake itself fails.
    no_cert = ClientSecurity(TlsFiles(ca_file=certs / "ca.crt"))
    async with instrumented_channel(decision, None, security=no_cert) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await decision_pb2_grpc.DecisionServiceStub(channel).ListDeployments(
                dpb.ListDeploymentsRequest(), timeout=5
            )
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_no_plaintext_beyond_loopback_unless_allowed(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    definition = SERVICES["decision"].build(servers.runtime)
    with pytest.raises(ConfigError, match=r"without TLS.*allow_insecure"):
        await start_service(definition, "0.0.0.0", 0, servers.runtime.telemetry)
    with caplog.at_level(logging.WARNING):
        running = await start_service(
            definition, "0.0.0.0", 0, servers.runtime.telemetry, security=ServerSecurity(allow_insecure=True)
        )
    servers.started.append(running)
    assert "WITHOUT TLS" in caplog.text
