"""opscale's copy of KEDA's externalscaler.proto is KEDA's wire format: package, service, methods
(with their streaming), and every message's field names, numbers, types and labels.

The table below is KEDA's published definition (kedacore/keda, pkg/scalers/externalscaler/
externalscaler.proto at 125494be45e8, see protos/README.md), written out independently of the .proto
file, so an edit to either that changes the wire fails here.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor as F

from opscale.api.keda import externalscaler_pb2

KEDA_METHODS = {
    # name: (input, output, server streaming)
    "IsActive": ("ScaledObjectRef", "IsActiveResponse", False),
    "StreamIsActive": ("ScaledObjectRef", "IsActiveResponse", True),
    "GetMetricSpec": ("ScaledObjectRef", "GetMetricSpecResponse", False),
    "GetMetrics": ("GetMetricsRequest", "GetMetricsResponse", False),
    "StreamMetricSpec": ("ScaledObjectRef", "GetMetricSpecResponse", True),
}
S, B, I64, D, M = F.TYPE_STRING, F.TYPE_BOOL, F.TYPE_INT64, F.TYPE_DOUBLE, F.TYPE_MESSAGE
KEDA_MESSAGES = {
    # message: {field: (number, type, repeated)}
    "ScaledObjectRef": {"name": (1, S, False), "namespace": (2, S, False), "scalerMetadata": (3, M, True)},
    "IsActiveResponse": {"result": (1, B, False)},
    "GetMetricSpecResponse": {"metricSpecs": (1, M, True)},
    "MetricSpec": {
        "metricName": (1, S, False),
        "targetSize": (2, I64, False),
        "targetSizeFloat": (3, D, False),
    },
    "GetMetricsRequest": {"scaledObjectRef": (1, M, False), "metricName": (2, S, False)},
    "GetMetricsResponse": {"metricValues": (1, M, True)},
    "MetricValue": {
        "metricName": (1, S, False),
        "metricValue": (2, I64, False),
        "metricValueFloat": (3, D, False),
    },
}


def test_service_and_methods_are_kedas() -> None:
    file = externalscaler_pb2.DESCRIPTOR
    assert file.package == "externalscaler"
    service = file.services_by_name["ExternalScaler"]
    assert service.full_name == "externalscaler.ExternalScaler"
    got = {
        m.name: (m.input_type.name, m.output_type.name, m.server_streaming)
        for m in service.methods
        if not m.client_streaming
    }
    assert got == KEDA_METHODS and len(service.methods) == len(KEDA_METHODS)


def test_messages_are_kedas_field_by_field() -> None:
    file = externalscaler_pb2.DESCRIPTOR
    assert set(file.message_types_by_name) == set(KEDA_MESSAGES)
    for name, fields in KEDA_MESSAGES.items():
        message = file.message_types_by_name[name]
        got = {f.name: (f.number, f.type, f.is_repeated) for f in message.fields}
        assert got == fields, name
    metadata = file.message_types_by_name["ScaledObjectRef"].fields_by_name["scalerMetadata"].message_type
    assert metadata.GetOptions().map_entry  # map<string, string>
    assert [(f.name, f.type) for f in metadata.fields] == [("key", S), ("value", S)]
