"""deploy/k8s/keda (serving side) and deploy/k8s/overlays/keda (control plane) hold together.

Workloads are checked against the Kubernetes schemas (a LeaderWorkerSet's pod templates as PodTemplates),
ScaledObjects against the JSON schema written from KEDA's documented fields
(deploy/k8s/keda/schemas/scaledobject.schema.json, with jsonschema), and both against opscale: each
trigger reaches the KEDA scaler's Service and port, names a deployment whose spec file is here and a
pool that spec's policy scales, with the pool's max_replicas; every engine gets its GPUs from the device
plugin. The overlay runs no agent or placement and sets the decision service's actuator to keda.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
import yaml

from opscale.config import Settings
from opscale.policy.spec_adapter import policy_setup
from opscale.services.keda.app import target_of
from opscale.spec import parse_spec
from tests.unit.test_deploy_k8s import ROOT, _environment, _load, _one, _render, _validate

KEDA = ROOT / "deploy" / "k8s" / "keda"
OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "keda"
SCHEMA = json.loads((KEDA / "schemas" / "scaledobject.schema.json").read_text())
WORKLOADS = {"Deployment": "apps/v1", "LeaderWorkerSet": "leaderworkerset.x-k8s.io/v1"}

Doc = dict[str, Any]


def _docs() -> list[Doc]:
    names = yaml.safe_load((KEDA / "kustomization.yaml").read_text())["resources"]
    return [d for n in names for d in yaml.safe_load_all((KEDA / n).read_text()) if d]


def _scaled_objects() -> list[Doc]:
    return [d for d in _docs() if d["kind"] == "ScaledObject"]


def _pod_templates(workload: Doc) -> list[Doc]:
    if workload["kind"] == "Deployment":
        return [workload["spec"]["template"]]
    lwt = workload["spec"]["leaderWorkerTemplate"]
    return [lwt["leaderTemplate"], lwt["workerTemplate"]]


def test_workloads_are_valid_kubernetes_objects() -> None:
    docs = _docs()
    _validate([d for d in docs if d["kind"] in ("Deployment", "Namespace")], "deploy/k8s/keda")
    for lws in (d for d in docs if d["kind"] == "LeaderWorkerSet"):
        assert lws["apiVersion"] == WORKLOADS["LeaderWorkerSet"]
        assert lws["spec"]["leaderWorkerTemplate"]["size"] >= 2  # a replica spans pods: why LWS
        for i, template in enumerate(_pod_templates(lws)):
            name = f"{lws['metadata']['name']}-{i}"
            _validate(
                [
                    {
                        "apiVersion": "v1",
                        "kind": "PodTemplate",
                        "metadata": {"name": name},
                        "template": template,
                    }
                ],
                "lws",
            )


def test_scaled_objects_follow_kedas_documented_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    validator = jsonschema.Draft202012Validator(SCHEMA)
    objects = _scaled_objects()
    assert len(objects) == 3
    for obj in objects:
        errors = [e.message for e in validator.iter_errors(obj)]
        assert not errors, (obj["metadata"]["name"], errors)
        spec = obj["spec"]
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"]


def test_the_schema_can_fail() -> None:
    bad = copy.deepcopy(_scaled_objects()[0])
    bad["spec"]["maxReplicas"] = bad["spec"].pop("maxReplicaCount")  # misspelt: an HPA field name
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(bad)
    bad = copy.deepcopy(_scaled_objects()[0])
    bad["spec"]["triggers"][0]["metadata"]["deployment"] = 3  # trigger metadata is strings
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(bad)


@pytest.mark.parametrize("obj", _scaled_objects(), ids=lambda o: o["metadata"]["name"])
def test_each_scaled_object_drives_an_opscale_pool(obj: Doc) -> None:
    ref = obj["spec"]["scaleTargetRef"]
    kind = ref.get("kind", "Deployment")
    workload = _one(_docs(), kind, ref["name"])
    assert ref.get("apiVersion", "apps/v1") == WORKLOADS[kind] == workload["apiVersion"]
    assert workload["spec"]["replicas"] == 0  # KEDA owns the count; nothing fights it on apply

    (trigger,) = obj["spec"]["triggers"]
    auth = _one(_docs(), "TriggerAuthentication", trigger["authenticationRef"]["name"])
    params = {r["parameter"] for r in auth["spec"]["secretTargetRef"]}
    assert params == {"caCert", "tlsClientCert", "tlsClientKey"}  # the scaler is mTLS
    assert trigger["type"] in ("external", "external-push") and trigger["metricType"] == "AverageValue"
    metadata = trigger["metadata"]
    host, port = metadata["scalerAddress"].rsplit(":", 1)
    assert host == "keda.opscale.svc.cluster.local" and int(port) == Settings().keda_port
    target = target_of(metadata)
    spec = parse_spec(yaml.safe_load((KEDA / f"{target.deployment}.opscale.yaml").read_text()))
    assert target.pool in policy_setup(spec).pools
    assert obj["spec"]["maxReplicaCount"] == spec.limits_for(target.pool).max_replicas

    for template in _pod_templates(workload):
        for container in template["spec"]["containers"]:
            gpus = container["resources"]["limits"]["nvidia.com/gpu"]
            assert isinstance(gpus, int) and gpus >= 1, "GPUs come from the device plugin"
            assert not any(e["name"].startswith("NVIDIA_VISIBLE") for e in container.get("env", []))


def test_the_keda_overlay_runs_no_agents_and_hands_decisions_to_keda(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _render(OVERLAY)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("DaemonSet", "agent") not in kinds and ("Deployment", "placement") not in kinds
    assert ("Service", "placement") not in kinds and ("PodDisruptionBudget", "placement") not in kinds
    decision = _one(docs, "Deployment", "decision")["spec"]["template"]["spec"]["containers"][0]
    assert _load(_environment(docs, decision), monkeypatch).actuator == "keda"
    keda = _one(docs, "Service", "keda")
    assert keda["metadata"]["namespace"] == "opscale"  # what the triggers' scalerAddress names
    assert {p["name"]: p["port"] for p in keda["spec"]["ports"]}["grpc"] == Settings().keda_port
    _validate(docs, "overlays/keda")
