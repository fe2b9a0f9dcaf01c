"""What an OpenTelemetry collector receives from opscale, through the standard environment only.

An in-process OTLP/gRPC trace receiver (opentelemetry-proto's generated ``TraceService``, on a loopback
port) stands in for the collector; ``OTEL_EXPORTER_OTLP_ENDPOINT`` alone points opscale at it. Then:

- ``opscale up`` (``opscale.services.main.serve`` with every service in one process) reports each
  service under its own ``service.name``;
- periodic passes leave no empty root spans (an idle decision tick or reconcile pass exports nothing);
- server spans follow the OpenTelemetry gRPC conventions: NOT_FOUND and INVALID_ARGUMENT are recorded
  in ``rpc.grpc.status_code`` but are not span errors; a server fault (INTERNAL) is, with the exception.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from opscale.api.decision.v1 import decision_pb2 as pb
from opscale.api.decision.v1 import decision_pb2_grpc
from opscale.config import Settings
from opscale.grpcutil.server import ServiceDef, start_service, stop_service
from opscale.services.catalog import SERVICES
from opscale.services.main import serve
from opscale.services.runtime import prepare_embedded_database
from opscale.telemetry import HANDED_ON, PERIODIC, build_telemetry
from tests.builders import static_spec_pb
from tests.component.decision_kit import eventually

INVALID_ARGUMENT, NOT_FOUND, INTERNAL = 3, 5, 13


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every exported span with its resource's service.name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, trace_pb2.Span]] = []
        self._lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        with self._lock:
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    self.spans.extend((attrs.get("service.name", ""), s) for s in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def snapshot(self) -> list[tuple[str, trace_pb2.Span]]:
        with self._lock:
            return list(self.spans)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    servicer = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    for name in ("OTEL_SERVICE_NAME", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")  # http: plaintext
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    try:
        yield servicer
    finally:
        server.stop(None)


def _attrs(span: trace_pb2.Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, kind) if kind else None
    return out


def _is_error(span: trace_pb2.Span) -> bool:
    return span.status.code == trace_pb2.Status.STATUS_CODE_ERROR


async def test_opscale_up_exports_per_service_names_no_idle_roots_and_only_faults_as_errors(
    receiver: Receiver, tmp_path: Path
) -> None:
    cfg = Settings(
        database_url=f"sqlite:///{tmp_path}/opscale.db",
        counters_url="memory://",
        metrics_port=None,
        ingest_port=0,
        decision_port=0,
        placement_port=0,
        keda_port=0,
    )
    prepare_embedded_database(cfg.database_url)
    said: list[str] = []
    up = asyncio.create_task(serve(cfg, list(SERVICES.values()), "opscale", said.append))
    try:
        await eventually(lambda: any(line.startswith("opscale ready") for line in said), timeout_s=30)
        port = re.search(r"decision on [\d.]+:(\d+)", said[0])
        assert port is not None, said
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port.group(1)}") as channel:
            stub = decision_pb2_grpc.DecisionServiceStub(channel)
            spec = static_spec_pb("traced", {"serving/model": 1}, interval_s=1.0, mode="colocated")
            await stub.CreateDeployment(pb.CreateDeploymentRequest(spec=spec), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetDeployment(pb.GetDeploymentRequest(name="nope"), timeout=5)
            assert missing.value.code() is grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub.CreateDeployment(pb.CreateDeploymentRequest(), timeout=5)
            assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            # Several seconds of ticks (every 0.2 s) and reconcile passes, most of them idle.
            await asyncio.sleep(2.5)
    finally:
        up.cancel()
        await asyncio.gather(up, return_exceptions=True)  # stops the services, flushes the exporter

    spans = receiver.snapshot()
    names = {service for service, _ in spans}
    assert {"opscale-decision", "opscale-placement"} <= names, names
    assert "opscale" not in names  # nothing reports under the process's shared name
    by_service = {(service, s.name) for service, s in spans}
    assert ("opscale-decision", "opscale.api.decision.v1.DecisionService/CreateDeployment") in by_service
    assert ("opscale-placement", "opscale.api.placement.v1.PlacementService/ApplyDesired") in by_service

    # No empty periodic roots: each exported periodic root has company in its trace or handed it on.
    traces: dict[bytes, int] = {}
    for _, s in spans:
        traces[s.trace_id] = traces.get(s.trace_id, 0) + 1
    periodic = [s for _, s in spans if _attrs(s).get(PERIODIC)]
    assert any(s.name == "decision.tick" for s in periodic)  # the ticks that decided are there
    for s in periodic:
        assert traces[s.trace_id] > 1 or _attrs(s).get(HANDED_ON), f"empty periodic root {s.name}"

    server = [s for _, s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    codes = {s.name: _attrs(s)["rpc.grpc.status_code"] for s in server if not _is_error(s)}
    assert codes["opscale.api.decision.v1.DecisionService/GetDeployment"] == NOT_FOUND
    assert INVALID_ARGUMENT in {_attrs(s)["rpc.grpc.status_code"] for s in server}
    for s in server:
        assert s.status.code != trace_pb2.Status.STATUS_CODE_ERROR or _attrs(s)["rpc.grpc.status_code"] in (
            2,
            4,
            12,
            13,
            14,
            15,
        ), (s.name, _attrs(s))
        assert {"rpc.system", "rpc.service", "rpc.method"} <= _attrs(s).keys()


async def boom(_request: empty_pb2.Empty, _context: object) -> empty_pb2.Empty:
    raise RuntimeError("a bug")


def _faulty(server: grpc.aio.Server) -> None:
    handler = grpc.unary_unary_rpc_method_handler(
        boom,
        request_deserializer=empty_pb2.Empty.FromString,
        response_serializer=empty_pb2.Empty.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Faulty", {"Boom": handler}),))


async def test_a_server_fault_is_a_span_error_with_its_exception(receiver: Receiver) -> None:
    telemetry = build_telemetry("opscale-faulty")
    running = await start_service(ServiceDef("faulty", ("test.Faulty",), _faulty), "127.0.0.1", 0, telemetry)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            call = channel.unary_unary(
                "/test.Faulty/Boom",
                request_serializer=empty_pb2.Empty.SerializeToString,
                response_deserializer=empty_pb2.Empty.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(empty_pb2.Empty(), timeout=5)
            assert info.value.code() is grpc.StatusCode.INTERNAL
    finally:
        await stop_service(running, 0.5)
        telemetry.shutdown()
    (span,) = [s for service, s in receiver.snapshot() if service == "opscale-faulty"]
    assert span.name == "test.Faulty/Boom" and _attrs(span)["rpc.grpc.status_code"] == INTERNAL
    assert _is_error(span)
    assert [e.name for e in span.events] == ["exception"]
