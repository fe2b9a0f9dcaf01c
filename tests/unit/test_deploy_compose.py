"""docker-compose.yml and the OTel collector config it mounts, checked without a Docker engine.

The structural checks parse the YAML and hold it to what the services actually need: every command is
a real ``opscale`` command, every ``OPSCALE_*`` variable is a real setting, and each container's
environment loads as a valid ``Settings`` (so a typo'd port or URL scheme fails here, not at ``up``).
``docker-compose config`` runs in addition when a compose binary is installed; only that part skips.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from opscale.cli.main import app
from opscale.cli.serve import ServiceName
from opscale.config import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SECRETS_ENV = ROOT / "deploy" / "compose" / "secrets.env"
OPSCALE_SERVICES = {"ingest", "decision", "placement"}
EXPECTED = {"postgres", "redis", "otel-collector", "certs", "migrate", *OPSCALE_SERVICES, "agent"}
CERTS_DIR = "/var/lib/opscale/certs"


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def _env_file_paths(service: dict[str, Any]) -> list[Path]:
    files = service.get("env_file") or []
    files = [files] if isinstance(files, str) else files
    # ${OPSCALE_SECRETS_ENV:-default}: the default is the file in the repository.
    resolved = [re.sub(r"\$\{[A-Z_]+:-([^}]+)\}", r"\1", f) for f in files]
    return [ROOT / f for f in resolved]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for path in _env_file_paths(service):
        env.update(_env_file(path))
    inline = service.get("environment") or {}
    if isinstance(inline, list):
        inline = dict(item.split("=", 1) for item in inline)
    env.update({k: str(v) for k, v in inline.items()})
    return env


def _is_opscale(service: dict[str, Any]) -> bool:
    return "build" in service or str(service.get("image", "")).startswith("opscale")


def test_every_expected_service_is_there_with_an_image_or_a_build() -> None:
    services = _services()
    assert set(services) == EXPECTED
    for name, service in services.items():
        assert "image" in service or "build" in service, f"{name} has neither image nor build"
    images = {s["image"] for s in services.values() if _is_opscale(s)}
    assert len(images) == 1, f"every opscale container runs the one image, got {images}"
    build = services["migrate"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_depends_on_targets_exist_and_healthy_conditions_have_healthchecks() -> None:
    services = _services()
    allowed = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert spec["condition"] in allowed, f"{name} -> {target}: {spec['condition']}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} healthy: no check"


def test_services_start_only_after_the_migration_and_their_stores() -> None:
    services = _services()
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["restart"] == "no"  # a one-shot job, not a loop
    assert services["migrate"]["depends_on"]["certs"] == {"condition": "service_completed_successfully"}
    for name in OPSCALE_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["migrate"] == {"condition": "service_completed_successfully"}, name
        assert deps["certs"] == {"condition": "service_completed_successfully"}, name
        assert deps["postgres"] == {"condition": "service_healthy"}, name
        assert deps["redis"] == {"condition": "service_healthy"}, name
    assert services["agent"]["depends_on"]["placement"] == {"condition": "service_healthy"}


def test_long_running_servers_have_healthchecks_that_ask_their_own_port() -> None:
    services = _services()
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "REDISCLI_AUTH" in services["redis"]["healthcheck"]["test"][-1]  # it has a password
    for name in OPSCALE_SERVICES:
        assert services[name]["command"] == ["serve", name]
        port = Settings.model_fields[f"{name}_port"].default
        # `opscale health` speaks the service's mTLS with the container's own settings.
        test = services[name]["healthcheck"]["test"]
        assert test == ["CMD", "opscale", "health", f"127.0.0.1:{port}"], f"{name}: {test}"
        assert CliRunner().invoke(app, [*test[2:], "--help"]).exit_code == 0


def test_opscale_containers_keep_the_images_entrypoint_so_tini_is_pid_1() -> None:
    for name, service in _services().items():
        if _is_opscale(service):
            assert "entrypoint" not in service, f"{name}: an entrypoint would replace tini"


def test_published_ports_are_on_loopback_only() -> None:
    for name, service in _services().items():
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_every_grpc_server_serves_mtls_from_the_certs_job() -> None:
    services = _services()
    command = services["certs"]["command"]
    assert command[:2] == ["certs", "init"] and "--if-missing" in command
    assert command[command.index("--out") + 1] == CERTS_DIR
    assert CliRunner().invoke(app, [*command[:2], "--help"]).exit_code == 0
    for name in (*OPSCALE_SERVICES, "agent"):
        env = _environment(services[name])
        assert any(v.startswith(f"certs:{CERTS_DIR}") for v in services[name]["volumes"]), name
        for key in ("CERT", "KEY", "CA"):
            assert env[f"OPSCALE_TLS_{key}_FILE"].startswith(f"{CERTS_DIR}/"), (name, key)
    agent = _environment(services["agent"])
    node = agent["OPSCALE_NODE_NAME"]
    assert agent["OPSCALE_TLS_CERT_FILE"] == f"{CERTS_DIR}/agent-{node}.crt"  # CN = its node: bound to it
    assert command[command.index("--agent") + 1] == node


def test_every_opscale_variable_is_a_real_setting() -> None:
    fields = set(Settings.model_fields)
    for name, service in _services().items():
        for key in _environment(service):
            if key.startswith(ENV_PREFIX):
                assert key.removeprefix(ENV_PREFIX).lower() in fields, f"{name}: {key} is not a setting"


@pytest.mark.parametrize("name", sorted(OPSCALE_SERVICES | {"migrate", "agent"}))
def test_each_container_environment_loads_as_valid_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    env = _environment(_services()[name])
    for key, value in env.items():
        if key.startswith(ENV_PREFIX):
            monkeypatch.setenv(key, value)
    cfg = load_settings()
    assert cfg.listen_host == "0.0.0.0"  # reachable from the other containers
    if name != "agent":
        assert cfg.database_url.startswith("postgresql://") and "@postgres:5432/" in cfg.database_url
        assert cfg.counters_url.startswith("redis://:") and cfg.counters_url.endswith("@redis:6379/0")
        assert cfg.tls_cert_file is not None and cfg.tls_ca_file is not None
    assert cfg.address_of("placement") == "placement:50063"


@pytest.mark.parametrize("name", sorted(OPSCALE_SERVICES | {"migrate", "agent", "certs"}))
def test_each_command_is_a_real_opscale_command(name: str) -> None:
    command = _services()[name]["command"]
    if command[0] == "serve":  # --help is eager: click would not check the argument's value
        assert command[1] in {s.value for s in ServiceName}, command
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, f"opscale {' '.join(command)}: {result.output}"


def test_the_agent_runs_fake_gpus_with_a_persistent_state_dir() -> None:
    agent = _services()["agent"]
    command = agent["command"]
    assert command[0] == "agent"
    fake = command[command.index("--fake-gpus") + 1]
    assert load_settings(fake_gpus=fake).fake_gpus == fake
    state_dir = command[command.index("--state-dir") + 1]
    assert any(v.split(":")[1] == state_dir for v in agent["volumes"]), "state dir is not on a volume"
    assert not _env_file_paths(agent), "the agent needs no database secret"


def test_the_secrets_file_agrees_with_itself() -> None:
    env = _env_file(SECRETS_ENV)
    url = env["OPSCALE_DATABASE_URL"]
    expected = (
        f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@postgres:5432/{env['POSTGRES_DB']}"
    )
    assert url == expected, "the password (and user, db) must match between postgres and opscale"
    counters = f"redis://:{env['REDIS_PASSWORD']}@redis:6379/0"
    assert env["OPSCALE_COUNTERS_URL"] == counters, "the Redis password must match between redis and opscale"


def test_the_collector_config_is_wired_and_scrapes_every_service() -> None:
    services = _services()
    mount = next(v for v in services["otel-collector"]["volumes"] if "otel-collector.yaml" in v)
    source, target = mount.split(":")[:2]
    assert target in " ".join(services["otel-collector"]["command"])
    config = yaml.safe_load((ROOT / source).read_text())
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"pipeline uses undefined {kind[:-1]} {component}"
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    assert {"debug", "prometheus"} <= set(config["exporters"])
    scrape = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    targets = {t for job in scrape for group in job["static_configs"] for t in group["targets"]}
    metrics_port = Settings.model_fields["metrics_port"].default
    assert targets == {f"{name}:{metrics_port}" for name in OPSCALE_SERVICES}
    env = _environment(services["ingest"])
    assert env["OPSCALE_OTLP_ENDPOINT"] == "http://otel-collector:4317"


def _compose_binary() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    binary = _compose_binary()
    if binary is None:
        pytest.skip(
            "neither docker-compose nor `docker compose` is installed; the structural checks above "
            "still ran (install: apt-get install -y docker-compose)"
        )
    result = subprocess.run(
        [*binary, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
