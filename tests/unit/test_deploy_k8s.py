"""deploy/k8s: every manifest valid against the Kubernetes OpenAPI schema, and held to the code.

No cluster: ``kubernetes_validate`` carries the published JSON schemas and checks each object offline
(strict: an unknown or misspelt field fails), against the oldest Kubernetes version we support. The
structural checks tie the manifests to opscale itself: each workload's command is a real ``opscale``
command, every ``OPSCALE_*`` variable a real setting, each pod's environment loads as valid ``Settings``,
and every probe, port and annotation agrees with the ports those settings give.

The dev overlay is rendered with ``kubectl kustomize`` (or ``kustomize build``) when one is installed;
otherwise with the tiny renderer below, which understands exactly what the overlay uses (JSON 6902
patches by kind and name, a ConfigMap merge). Both paths check the same things.
"""

from __future__ import annotations

import copy
import functools
import importlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from opscale.cli.main import app
from opscale.cli.serve import ServiceName
from opscale.config import ENV_PREFIX, Settings, load_settings
from opscale.grpcutil.server import LIVENESS

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s" / "base"
DEV = ROOT / "deploy" / "k8s" / "overlays" / "dev"
#: The oldest Kubernetes these manifests promise to work on (gRPC probes are GA since 1.27).
KUBERNETES_VERSION = "1.30.0"
SERVICES = [s.value for s in ServiceName]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

Doc = dict[str, Any]


# --- loading ----------------------------------------------------------------------------------------


def _base_files() -> list[Path]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [BASE / name for name in kustomization["resources"]]


def _base_docs() -> list[Doc]:
    return [doc for path in _base_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def _one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _pod_specs(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "DaemonSet", "Job"):
            yield doc, doc["spec"]["template"]["spec"]


def _containers(pod: Doc) -> list[Doc]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _kustomize_binary() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def _apply_json6902(doc: Doc, ops: list[Doc]) -> None:
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op["op"] == "remove":
                del node[index]
            elif op["op"] == "add":
                node.insert(index, copy.deepcopy(op["value"]))
            else:
                node[index] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del node[last]
        else:
            node[last] = copy.deepcopy(op["value"])


def _render_in_python(directory: Path) -> list[Doc]:
    """The base with its namespace; for an overlay, its JSON 6902 patches (kind/name target) and a
    ConfigMap merge applied on top."""
    docs = copy.deepcopy(_base_docs())
    if directory != BASE:
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        assert kustomization["resources"] == ["../../base"]
        known = {"apiVersion", "kind", "resources", "patches", "configMapGenerator", "replacements"}
        assert set(kustomization) <= known, (
            "the overlay uses a kustomize feature this renderer does not know; extend it or install kubectl"
        )
        for patch in kustomization.get("patches", []):
            if "patch" in patch:  # inline strategic merge: only `$patch: delete` of one object
                gone = yaml.safe_load(patch["patch"])
                assert gone.pop("$patch") == "delete", "the renderer knows only inline delete patches"
                doc = _one(docs, gone["kind"], gone["metadata"]["name"])
                docs.remove(doc)
                continue
            ops = yaml.safe_load((directory / patch["path"]).read_text())
            target = patch["target"]
            matched = [
                d
                for d in docs
                if d["kind"] == target["kind"]
                and re.fullmatch(target.get("name", ".*"), d["metadata"]["name"])
            ]
            assert matched, f"patch {patch['path']} matches nothing"
            for doc in matched:
                _apply_json6902(doc, ops)
        for generator in kustomization.get("configMapGenerator", []):
            assert generator["behavior"] == "merge"
            config_map = _one(docs, "ConfigMap", generator["name"])
            config_map["data"].update(dict(item.split("=", 1) for item in generator["literals"]))
    base = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    for doc in docs:
        if doc["kind"] != "Namespace":
            doc["metadata"]["namespace"] = base["namespace"]
    # The one replacement every kustomization carries: the migration Job's name ends in the image tag.
    assert yaml.safe_load((directory / "kustomization.yaml").read_text())["replacements"] == _REPLACEMENTS
    (image,) = base["images"]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    job["metadata"]["name"] = f"opscale-migrate-{image['newTag']}"
    return docs


#: What the Python renderer knows of replacements: exactly the base's (the Job name from the image tag).
_REPLACEMENTS = yaml.safe_load((BASE / "kustomization.yaml").read_text())["replacements"]


def _render(directory: Path) -> list[Doc]:
    return copy.deepcopy(_render_once(directory))


@functools.cache
def _render_once(directory: Path) -> list[Doc]:
    binary = _kustomize_binary()
    if binary is None:
        return _render_in_python(directory)
    result = subprocess.run([*binary, str(directory)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _validator() -> Any:
    try:
        # Through importlib: the library ships no type information.
        return importlib.import_module("kubernetes_validate")
    except ImportError:
        message = "kubernetes-validate is not installed (pip install kubernetes-validate)"
        if IN_CI:
            pytest.fail(f"{message}; CI=true, so this fails instead of skipping", pytrace=False)
        pytest.skip(message)


def _validate(docs: list[Doc], where: str) -> None:
    """Against the oldest version we support and the newest the library knows (an API removed later)."""
    kv = _validator()
    for version in sorted({KUBERNETES_VERSION, kv.latest_version()}):
        for doc in docs:
            name = f"{where}: {doc['kind']}/{doc['metadata']['name']} on Kubernetes {version}"
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                # The library's message embeds the whole schema; its first paragraph says what is wrong.
                pytest.fail(f"{name}: {str(exc).split(chr(10) + chr(10))[0]}", pytrace=False)


def _environment(docs: list[Doc], container: Doc) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(_one(docs, "Secret", source["secretRef"]["name"])["stringData"])
    for var in container.get("env", []):
        field = var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        env[var["name"]] = {"spec.nodeName": "gpu-node-1"}[field] if field else var["value"]
    return env


def _load(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith(ENV_PREFIX):
            monkeypatch.setenv(key, value)
    return load_settings()


# --- schema ------------------------------------------------------------------------------------------


def test_the_kustomization_lists_every_manifest_in_the_base() -> None:
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert {p.name for p in _base_files()} == on_disk


@pytest.mark.parametrize("path", _base_files(), ids=lambda p: p.name)
def test_each_base_manifest_is_valid_against_the_kubernetes_schema(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    _validate(docs, path.name)


@pytest.mark.parametrize("directory", [BASE, DEV], ids=["base", "dev"])
def test_the_rendered_kustomization_is_valid(directory: Path) -> None:
    docs = _render(directory)
    _validate(docs, directory.name)
    assert all(d["metadata"].get("namespace") == "opscale" for d in docs if d["kind"] != "Namespace")


# --- structure ---------------------------------------------------------------------------------------


def test_every_workload_runs_the_one_image_as_a_real_opscale_command() -> None:
    docs = _base_docs()
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert [i["name"] for i in kustomization["images"]] == ["opscale"]
    for workload, pod in _pod_specs(docs):
        for container in _containers(pod):
            assert container["image"] == "opscale", f"{workload['metadata']['name']}: {container['image']}"
            args = container.get("args")
            if args is None:
                continue  # the initContainer runs a shell loop around `opscale db current`
            if args[0] == "serve":  # --help is eager: click would not check the argument's value
                assert args[1] in SERVICES
            result = CliRunner().invoke(app, [*args, "--help"])
            assert result.exit_code == 0, f"opscale {' '.join(args)}: {result.output}"


def test_every_opscale_variable_is_a_real_setting() -> None:
    docs = _base_docs()
    names = set(_one(docs, "ConfigMap", "opscale-config")["data"])
    names |= set(_one(docs, "Secret", "opscale-secrets")["stringData"])
    for _, pod in _pod_specs(docs):
        names |= {v["name"] for c in _containers(pod) for v in c.get("env", [])}
    for name in names:
        if name.startswith(ENV_PREFIX):
            assert name.removeprefix(ENV_PREFIX).lower() in Settings.model_fields, f"{name} is not a setting"
    # The ConfigMap is commented, not just valid YAML: an OPSCALE_ name in a comment is a setting too.
    for line in (BASE / "configmap.yaml").read_text().splitlines():
        for name in re.findall(rf"\b{ENV_PREFIX}[A-Z_]+", line):
            assert name.removeprefix(ENV_PREFIX).lower() in Settings.model_fields, line


@pytest.mark.parametrize("overlay", [BASE, DEV], ids=["base", "dev"])
def test_each_pod_environment_loads_as_valid_settings(overlay: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _render(overlay)
    for workload, pod in _pod_specs(docs):
        for container in _containers(pod):
            cfg = _load(_environment(docs, container), monkeypatch)
            assert cfg.listen_host == "0.0.0.0"
            assert cfg.address_of("placement") == "placement:50063"
            if workload["kind"] != "DaemonSet":
                assert cfg.database_url.startswith("postgresql://")
                assert cfg.counters_url.startswith("redis://")


def test_secret_values_are_marked_placeholders() -> None:
    secret = _one(_base_docs(), "Secret", "opscale-secrets")
    assert set(secret["stringData"]) == {"OPSCALE_DATABASE_URL", "OPSCALE_COUNTERS_URL"}
    assert all("REPLACE_ME" in v for v in secret["stringData"].values())
    assert "data" not in secret


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_deployment_is_probed_sized_spread_and_scraped(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = _base_docs()
    deployment = _one(docs, "Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    cfg = _load(_environment(docs, container), monkeypatch)
    grpc_port = getattr(cfg, f"{name}_port")

    assert container["args"] == ["serve", name]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": grpc_port, "metrics": cfg.metrics_port}
    # grpc.health.v1 over the server's mTLS (native gRPC probes cannot do TLS): readiness is the whole
    # server (NOT_SERVING while PostgreSQL or Redis is away); startup and liveness ask only whether the
    # process works, so an outage of a dependency takes the pod out of Service endpoints, never restarts it.
    health = ["opscale", "health", f"127.0.0.1:{grpc_port}"]
    assert container["readinessProbe"]["exec"]["command"] == health
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == [*health, "--service", LIVENESS], probe
    assert cfg.tls_cert_file is not None and cfg.tls_ca_file is not None
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets["tls"] == "opscale-tls-server"
    assert str(cfg.tls_cert_file).startswith(mounts["tls"] + "/")
    requests = container["resources"]["requests"]
    assert {"cpu", "memory"} <= set(requests) and "memory" in container["resources"]["limits"]

    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(cfg.metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert pod["terminationGracePeriodSeconds"] > cfg.shutdown_grace_s
    zones = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert zones == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}

    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = _one(docs, "Service", name)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    pdb = _one(docs, "PodDisruptionBudget", name)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == pdb["spec"]["selector"]["matchLabels"]


def test_network_policies_close_the_namespace_and_open_only_the_documented_paths() -> None:
    docs = [d for d in _base_docs() if d["kind"] == "NetworkPolicy"]
    policies = {d["metadata"]["name"]: d["spec"] for d in docs}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}

    def sources(name: str) -> tuple[set[str], set[int]]:
        rule = policies[name]["ingress"][0]
        found = set()
        for peer in rule["from"]:
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            found.add(
                labels.get("app.kubernetes.io/component")
                or next(iter(labels), "")
                or peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            )
        return found, {p["port"] for p in rule["ports"]}

    assert sources("placement-from-agents-and-decision") == ({"agent", "decision"}, {50063})
    assert sources("ingest-from-clients") == ({"opscale.io/client", "agent"}, {50061})
    assert sources("decision-from-clients") == ({"opscale.io/client", "keda"}, {50062})
    assert sources("keda-scaler-from-keda") == ({"keda"}, {50064})


def test_the_agent_presents_its_own_nodes_certificate() -> None:
    docs = _base_docs()
    (container,) = _one(docs, "DaemonSet", "agent")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    names = [e["name"] for e in container["env"]]
    assert names.index("OPSCALE_NODE_NAME") < names.index("OPSCALE_TLS_CERT_FILE")  # $(...) expands
    assert env["OPSCALE_TLS_CERT_FILE"].endswith("/$(OPSCALE_NODE_NAME).crt")
    assert env["OPSCALE_TLS_KEY_FILE"].endswith("/$(OPSCALE_NODE_NAME).key")


def test_certs_init_writes_the_secrets_the_manifests_mount(tmp_path: Path) -> None:
    from opscale.certs import DEFAULT_SERVER_NAMES, init, k8s_secrets

    issued = init(server_names=DEFAULT_SERVER_NAMES, agents=["gpu-a"], clients=[("adam", "admin")], days=1)
    secrets = {d["metadata"]["name"]: d for d in yaml.safe_load_all(k8s_secrets(issued))}
    assert set(secrets["opscale-tls-server"]["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    assert set(secrets["opscale-tls-agents"]["data"]) == {"ca.crt", "gpu-a.crt", "gpu-a.key"}
    assert "opscale-tls-client-adam" in secrets


@pytest.mark.parametrize("name", SERVICES)
def test_pdbs_never_block_a_drain(name: str) -> None:
    """minAvailable 1 on a single replica would refuse every eviction."""
    docs = _base_docs()
    replicas = _one(docs, "Deployment", name)["spec"]["replicas"]
    pdb = _one(docs, "PodDisruptionBudget", name)["spec"]
    if "minAvailable" in pdb:
        assert pdb["minAvailable"] == 1 and replicas >= 2
    else:
        assert pdb["maxUnavailable"] >= 1


def test_every_service_runs_two_replicas() -> None:
    # Placement too: one leads by the lease, the other serves the API and takes over (leader.py).
    for name in ("ingest", "decision", "placement"):
        assert _one(_base_docs(), "Deployment", name)["spec"]["replicas"] == 2
    placement = _one(_base_docs(), "Deployment", "placement")
    assert placement["spec"].get("strategy", {}).get("type", "RollingUpdate") == "RollingUpdate"


def test_every_pod_is_non_root_and_unprivileged_and_without_service_links() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    uid = int(re.findall(r"^USER (\d+)", dockerfile, re.MULTILINE)[-1])
    for workload, pod in _pod_specs(_base_docs()):
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == uid, name
        # A Service named opscale-* would otherwise inject OPSCALE_*_PORT=tcp://... into the settings.
        assert pod["enableServiceLinks"] is False, name
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["serviceAccountName"] == "opscale", name
        for container in _containers(pod):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name


def test_services_wait_for_the_schema_the_migration_job_creates(tmp_path: Path) -> None:
    docs = _base_docs()
    job = _one(docs, "Job", "opscale-migrate-image")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    marker = "(up to date)"
    for name in SERVICES:
        pod = _one(docs, "Deployment", name)["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        script = " ".join(init["command"])
        assert "opscale db current" in script and f"grep -q '{marker}'" in script, script
    # ... and `opscale db current` really prints that marker once the schema is at head (and not before).
    url = f"sqlite:///{tmp_path / 'x.db'}"
    before = CliRunner().invoke(app, ["db", "current", "--database-url", url])
    assert before.exit_code == 0 and marker not in before.output
    assert CliRunner().invoke(app, ["db", "upgrade", "--database-url", url]).exit_code == 0
    after = CliRunner().invoke(app, ["db", "current", "--database-url", url])
    assert after.exit_code == 0 and marker in after.output, after.output


@pytest.mark.parametrize("directory", [BASE, DEV, ROOT / "deploy" / "k8s" / "overlays" / "keda"])
def test_the_migration_job_is_named_after_the_image_tag(directory: Path) -> None:
    """A Job's template is immutable: one Job per image tag lets a new image's migration be applied."""
    assert yaml.safe_load((directory / "kustomization.yaml").read_text())["replacements"] == _REPLACEMENTS
    docs = _render(directory)
    (job,) = [d for d in docs if d["kind"] == "Job"]
    image = job["spec"]["template"]["spec"]["containers"][0]["image"]
    tag = yaml.safe_load((BASE / "kustomization.yaml").read_text())["images"][0]["newTag"]
    assert job["metadata"]["name"] == f"opscale-migrate-{tag}"
    if _kustomize_binary() is not None:  # the Python renderer does not apply `images:`
        assert image.endswith(f"opscale:{tag}")


def test_an_overlay_that_sets_its_own_image_gets_a_new_migration_job(tmp_path: Path) -> None:
    """What deploy/README tells an operator to do: an overlay naming <registry>/opscale:<tag>, here with
    a registry port (a second ':' in the image) and a tag with a '-'; the Job follows the new tag."""
    binary = _kustomize_binary()
    if binary is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    overlay = {
        "resources": [os.path.relpath(DEV, tmp_path)],
        "images": [{"name": "opscale", "newName": "localhost:5000/team/opscale", "newTag": "0.2.0-rc1"}],
        "replacements": _REPLACEMENTS,
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    result = subprocess.run([*binary, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert job["metadata"]["name"] == "opscale-migrate-0.2.0-rc1"
    assert (
        job["spec"]["template"]["spec"]["containers"][0]["image"] == "localhost:5000/team/opscale:0.2.0-rc1"
    )
    _validate([job], "overlay with its own image")


def test_every_workload_keeps_the_images_entrypoint_so_tini_is_pid_1() -> None:
    """`command:` would replace the image's ENTRYPOINT (tini -- opscale) and make opscale PID 1, with no
    one to reap the agent's orphaned children: workloads set only `args:`."""
    for doc, pod in _pod_specs(_base_docs()):
        for container in pod["containers"]:
            assert "command" not in container and container["args"], f"{doc['metadata']['name']}"


def test_the_agent_runs_on_gpu_nodes_and_owns_their_gpus() -> None:
    daemonset = _one(_base_docs(), "DaemonSet", "agent")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["hostPID"] is False
    (container,) = pod["containers"]
    args = container["args"]
    assert args[0] == "agent" and "--fake-gpus" not in args  # real GPUs through NVML
    state_dir = args[args.index("--state-dir") + 1]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[state_dir]]
    # The agent hands out the node's GPUs itself, so it asks the device plugin for all of them: the
    # scheduler counts them as taken and the plugin (not an env override) decides what it sees.
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    env = {v["name"]: v for v in container["env"]}
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    assert env["OPSCALE_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert pod["terminationGracePeriodSeconds"] > Settings.model_fields["drain_grace_s"].default


def test_the_dev_overlay_runs_one_replica_and_a_fake_gpu_agent_anywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = _render(DEV)
    for name in SERVICES:
        assert _one(docs, "Deployment", name)["spec"]["replicas"] == 1
        assert _one(docs, "PodDisruptionBudget", name)["spec"] == {
            "maxUnavailable": 1,
            "selector": _one(docs, "PodDisruptionBudget", name)["spec"]["selector"],
        }
    pod = _one(docs, "DaemonSet", "agent")["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod
    (container,) = pod["containers"]
    env = {v["name"] for v in container["env"]}
    assert not any(name.startswith("NVIDIA_") for name in env)
    assert "nvidia.com/gpu" not in str(container["resources"])
    cfg = _load(_environment(docs, container), monkeypatch)
    assert cfg.fake_gpus == "8xH100"
    assert cfg.log_level.value == "debug"


@pytest.mark.parametrize("directory", [BASE, DEV], ids=["base", "dev"])
def test_the_python_renderer_agrees_with_kustomize(directory: Path) -> None:
    binary = _kustomize_binary()
    if binary is None:
        pytest.skip("neither kustomize nor kubectl is installed: the overlay used the Python renderer")

    def strip(docs: list[Doc]) -> dict[tuple[str, str], Doc]:
        out = {}
        for doc in copy.deepcopy(docs):
            doc["metadata"].get("labels", {}).pop("app.kubernetes.io/part-of", None)
            if not doc["metadata"].get("labels"):
                doc["metadata"].pop("labels", None)
            for _, pod in _pod_specs([doc]):
                for container in _containers(pod):
                    container["image"] = "opscale"
            out[doc["kind"], doc["metadata"]["name"]] = doc
        return out

    assert strip(_render_in_python(directory)) == strip(_render(directory))
