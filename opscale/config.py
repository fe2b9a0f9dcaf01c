"""The one validated configuration object of an opscale process.

Sources, highest precedence first: explicit overrides (CLI flags), environment variables
(``OPSCALE_<FIELD>``), a YAML file (``--config`` or ``OPSCALE_CONFIG``), then the defaults below, which
are the embedded default (SQLite file + in-process counters on localhost). Nothing else in opscale
reads ``os.environ``: the settings object is built once in ``main`` and passed down.

A bad value stops the process at start with a ``ConfigError`` naming the setting (as its environment
variable) and the allowed values.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from opscale.errors import ConfigError
from opscale.yamlio import YamlError, load

ENV_PREFIX = "OPSCALE_"
DEFAULT_DATABASE_URL = "sqlite:///.opscale/opscale.db"


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


Port = int


class Actuator(enum.StrEnum):
    AGENTS = "agents"
    KEDA = "keda"


class ScrapeRole(enum.StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"
    SERVING = "serving"


class ScrapeEngine(enum.StrEnum):
    AUTO = "auto"
    VLLM = "vllm"
    SGLANG = "sglang"


# opscale.spec.NAME_PATTERN, repeated: importing the spec here would load the model package.
_DEPLOYMENT_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


def check_http_url(value: str) -> str:
    """``value`` if it is an http(s) URL with a host; ValueError saying what is wrong otherwise."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, got {value!r}")
    return value


class ScrapeTarget(BaseModel):
    """One vLLM or SGLang ``/metrics`` endpoint (one model on it) that metrics-ingest polls for a
    deployment's pool. Several targets may share a URL, one per ``model_name``: the endpoint is
    fetched once and each model's series go to its own deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="http(s)://host:port/metrics of the engine")
    deployment: str = Field(pattern=_DEPLOYMENT_PATTERN, description="deployment name")
    role: ScrapeRole = Field(description="prefill, decode or serving: the pool the engine serves")
    engine: ScrapeEngine = Field(ScrapeEngine.AUTO, description="auto, vllm or sglang")
    model_name: str | None = Field(
        None,
        min_length=1,
        max_length=512,
        description="the endpoint's model_name label value for this deployment; none: the endpoint "
        "must serve exactly one model",
    )
    interval_s: float | None = Field(
        None, gt=0, le=3600, description="seconds between scrapes (default scrape_interval_s)"
    )
    timeout_s: float = Field(2.0, gt=0, le=60, description="seconds one scrape may take, in (0, 60]")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value)


def check_scrape_targets(targets: Sequence[ScrapeTarget], default_interval_s: float) -> None:
    """ValueError naming the URL unless the targets that share a URL can be one endpoint: fetched once
    (one engine, interval and timeout), each target a different model (one model, one deployment)."""
    by_url: dict[str, list[ScrapeTarget]] = {}
    for t in targets:
        by_url.setdefault(t.url, []).append(t)
    for url, group in by_url.items():
        seen: dict[str | None, str] = {}
        for t in group:
            if t.model_name in seen and seen[t.model_name] != t.deployment:
                model = f"model {t.model_name!r} on " if t.model_name else ""
                raise ValueError(
                    f"scrape_targets: {model}{url} is mapped to both {seen[t.model_name]!r} and "
                    f"{t.deployment!r}; one model's series go to one deployment"
                )
            seen[t.model_name] = t.deployment
        names = [t.model_name for t in group]
        if len(names) != len(set(names)) or (None in names and len(names) > 1):
            raise ValueError(
                f"scrape targets of {url}: each needs its own model_name when several share the URL"
            )
        if (
            len({t.engine for t in group} - {ScrapeEngine.AUTO}) > 1
            or len({t.interval_s or default_interval_s for t in group}) > 1
            or len({t.timeout_s for t in group}) > 1
        ):
            raise ValueError(
                f"scrape targets of {url} disagree on engine, interval_s or timeout_s; one endpoint is "
                "fetched once, with one setting of each"
            )


class PrometheusSource(BaseModel):
    """A deployment's engine signals read from a Prometheus server with PromQL instead of scraping the
    engines: ``selector`` picks the engine series (label matchers, e.g. ``{job="vllm",model_name="x"}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deployment: str = Field(pattern=_DEPLOYMENT_PATTERN, description="deployment name")
    role: ScrapeRole = Field(description="prefill, decode or serving: the pool the engines serve")
    engine: ScrapeEngine = Field(description="vllm or sglang (whose metric names to query)")
    selector: str = Field(
        "{}", max_length=2000, description='PromQL label matchers, e.g. {job="vllm",model_name="llama"}'
    )
    interval_s: float | None = Field(
        None, gt=0, le=3600, description="seconds between reads (default scrape_interval_s)"
    )

    @field_validator("engine")
    @classmethod
    def _named_engine(cls, value: ScrapeEngine) -> ScrapeEngine:
        if value is ScrapeEngine.AUTO:
            raise ValueError("must be vllm or sglang: the metric names to query depend on it")
        return value

    @field_validator("selector")
    @classmethod
    def _braces(cls, value: str) -> str:
        v = value.strip()
        if not (v.startswith("{") and v.endswith("}")):
            raise ValueError(f'must be label matchers in braces, e.g. {{job="vllm"}}, got {value!r}')
        return v


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, env_parse_none_str="null"
    )
    # Set per load by ``load_settings``; a class attribute so the YAML source can see it.
    _yaml_file: ClassVar[Path | None] = None

    database_url: str = Field(
        DEFAULT_DATABASE_URL, description="SQLAlchemy URL: sqlite:///path or postgresql://user@host/db"
    )
    counters_url: str = Field("memory://", description="memory:// (in-process) or redis://host:port/db")
    listen_host: str = Field("127.0.0.1", description="address the gRPC servers bind")
    ingest_port: Port = Field(50061, ge=0, le=65535, description="gRPC port of metrics-ingest (0: any free)")
    decision_port: Port = Field(50062, ge=0, le=65535, description="gRPC port of decision (0: any free)")
    placement_port: Port = Field(50063, ge=0, le=65535, description="gRPC port of placement (0: any free)")
    keda_port: Port = Field(
        50064, ge=0, le=65535, description="gRPC port of the KEDA external scaler (0: any free)"
    )
    actuator: Actuator = Field(
        Actuator.AGENTS,
        description="how decisions reach replicas: agents (placement + node agents, bare metal) or keda "
        "(Kubernetes: the HPA applies them through the KEDA external scaler)",
    )
    ingest_address: str = Field("", description="host:port other services use to reach ingest")
    decision_address: str = Field("", description="host:port other services use to reach decision")
    placement_address: str = Field("", description="host:port other services use to reach placement")
    metrics_port: Port | None = Field(
        9464, ge=0, le=65535, description="Prometheus /metrics port (0: any free; null: off)"
    )
    log_level: LogLevel = Field(LogLevel.INFO, description="debug, info, warning or error")
    log_format: LogFormat = Field(LogFormat.TEXT, description="text or json")
    otlp_endpoint: str | None = Field(None, description="OTLP/gRPC collector, e.g. http://otel:4317")
    shutdown_grace_s: float = Field(5.0, gt=0, le=300, description="seconds in-flight RPCs get on SIGTERM")
    lease_ttl_s: float = Field(
        3.0,
        ge=1,
        le=60,
        description="a leader that stops renewing (hung, stopped, cut off) loses its leases after this "
        "many seconds, in [1, 60]; another replica takes over on its next pass",
    )
    gc_thresholds: tuple[int, int, int] | None = Field(
        (50_000, 50, 100),
        description="CPython gc thresholds set after start-up, with the start-up heap frozen "
        "(null: CPython's defaults); each in [1, 1000000]",
    )
    node_name: str = Field("", description="identity of this host's agent (default: the hostname)")
    # Placement and node agent (issue 5). Heartbeat/lost defaults follow Kubernetes' node lease spirit:
    # a few missed beats, not one, mark a node lost.
    heartbeat_interval_s: float = Field(1.0, gt=0, le=60, description="agent heartbeat period, in (0, 60]")
    lost_timeout_s: float = Field(
        10.0, gt=0, le=3600, description="no heartbeat for this long marks a node lost, > 2 heartbeats"
    )
    agent_reconnect_max_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="cap of the agent's jittered reconnect back-off, (0, 600]; placement judges a node "
        "lost only after this plus lost_timeout_s without a heartbeat, and never sooner after it starts, "
        "takes over or its database returns",
    )
    placement_advertise_address: str = Field(
        "",
        description="host:port agents are sent to when this placement replica leads (empty: agents turned "
        "away by a follower retry through placement_address)",
    )
    placement_lease_renew_s: float = Field(
        1.0, gt=0, le=60, description="how often a placement replica renews or tries its lease, (0, 60]"
    )
    reconcile_interval_s: float = Field(1.0, gt=0, le=60, description="placement reconciler period, (0, 60]")
    command_resend_s: float = Field(
        5.0, gt=0, le=3600, description="an unacknowledged command is re-sent after this long, (0, 3600]"
    )
    drain_grace_s: float = Field(
        30.0, ge=0, le=3600, description="in-flight work a draining replica may finish, [0, 3600]"
    )
    stop_grace_s: float = Field(10.0, ge=0, le=600, description="SIGTERM to SIGKILL, seconds, [0, 600]")
    agent_templates_file: Path | None = Field(
        None, description="YAML launch templates the agent allows (name -> argv list); none: only 'worker'"
    )
    agent_state_dir: Path | None = Field(
        None,
        description="where the agent keeps the pids of the processes it started "
        "(default: .opscale/agent/<node name>, so agents of different nodes on one host never share one)",
    )
    fake_gpus: str = Field("", description="fake GPUs instead of NVML, e.g. 8xH100 or 2xH100,2xA100")
    node_labels: dict[str, str] = Field(
        default_factory=dict, description="topology labels of this node: zone, s2, s1, s0, nvlink_domain"
    )
    agent_max_restarts: int = Field(
        3, ge=0, le=1000, description="crashes of one replica before the agent reports it failed, [0, 1000]"
    )
    agent_restart_backoff_s: float = Field(
        1.0, gt=0, le=600, description="first restart delay; doubles per crash, (0, 600]"
    )
    agent_metrics_port: Port | None = Field(
        None, ge=0, le=65535, description="the node agent's Prometheus /metrics port (0: any free; null: off)"
    )
    scrape_targets: list[ScrapeTarget] = Field(
        default_factory=list,
        description="engine /metrics endpoints metrics-ingest polls (url, deployment, role)",
    )
    scrape_interval_s: float = Field(
        1.0, gt=0, le=3600, description="default seconds between scrapes, (0, 3600]"
    )
    scrape_max_gap_s: float = Field(
        300.0,
        gt=0,
        le=3600,
        description="longest time between two scrapes of a target whose counters still give rates; a "
        "longer gap re-baselines, (0, 3600]",
    )
    scrape_targets_file: Path | None = Field(
        None,
        description="Prometheus file_sd file (JSON or YAML) of more scrape targets, re-read when it "
        "changes; labels deployment and role (and model_name, engine) say where each target's series go",
    )
    prometheus_url: str | None = Field(
        None, description="Prometheus server to read prometheus_sources from, e.g. http://prometheus:9090"
    )
    prometheus_sources: list[PrometheusSource] = Field(
        default_factory=list,
        description="deployments whose engine signals are read from prometheus_url with PromQL "
        "(deployment, role, engine, selector)",
    )

    # Security (issue 13). Off by default: the embedded default runs on loopback with no set-up; a
    # server refuses to listen beyond loopback without TLS unless allow_insecure says so.
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate this process serves with (and presents as a client)"
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file")
    tls_ca_file: Path | None = Field(
        None,
        description="PEM CA bundle: servers then require and verify client certificates (mTLS); "
        "clients verify servers against it",
    )
    tls_server_name: str = Field(
        "", description="host name clients expect in the servers' certificates (default: the address's)"
    )
    allow_insecure: bool = Field(
        False,
        description="serve plaintext on a non-loopback listen_host (warned at start); never in production",
    )
    auth_tokens_file: Path | None = Field(
        None,
        description="YAML list of {token_sha256, subject, role} bearer tokens; with it (or tls_ca_file) "
        "every call needs credentials",
    )
    token: str = Field("", description="bearer token this process presents to the services it calls")
    agent_env_allowlist: list[str] = Field(
        default_factory=list,
        description="environment variables a start command may set on this agent's replicas (default: none)",
    )
    whatif_cpu_budget_s: float = Field(
        2.0, gt=0, le=600, description="CPU seconds one what-if may use before DEADLINE_EXCEEDED, (0, 600]"
    )
    whatif_workers: int = Field(
        1, ge=1, le=16, description="processes that run what-if planning beside the service, [1, 16]"
    )

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str) -> str:
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(f"scheme must be sqlite or postgresql, got {scheme!r}")
        return value

    @field_validator("counters_url")
    @classmethod
    def _counters_scheme(cls, value: str) -> str:
        if not (value.startswith("memory://") or value.startswith(("redis://", "rediss://"))):
            raise ValueError(f"must be memory:// or redis://host:port/db, got {value!r}")
        return value

    @field_validator("gc_thresholds")
    @classmethod
    def _gc_range(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if value is not None and not all(1 <= v <= 1_000_000 for v in value):
            raise ValueError(f"each threshold must be in [1, 1000000], got {list(value)}")
        return value

    @model_validator(mode="after")
    def _distinct_ports(self) -> Settings:
        seen: dict[int, str] = {}
        for name in ("ingest_port", "decision_port", "placement_port", "keda_port", "metrics_port"):
            port = getattr(self, name)
            if port in (None, 0):
                continue
            if port in seen:
                raise ValueError(
                    f"{seen[port]} and {name} are both {port}; each listener needs its own port (or 0)"
                )
            seen[port] = name
        return self

    @field_validator("prometheus_url")
    @classmethod
    def _prometheus_url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)

    @model_validator(mode="after")
    def _prometheus_sources_need_a_server(self) -> Settings:
        if self.prometheus_sources and self.prometheus_url is None:
            raise ValueError(
                "prometheus_sources are set but prometheus_url is not: where should they be read?"
            )
        return self

    @model_validator(mode="after")
    def _scrape_targets_group(self) -> Settings:
        check_scrape_targets(self.scrape_targets, self.scrape_interval_s)
        return self

    @model_validator(mode="after")
    def _lost_after_heartbeats(self) -> Settings:
        if self.lost_timeout_s <= 2 * self.heartbeat_interval_s:
            raise ValueError(
                f"lost_timeout_s ({self.lost_timeout_s}) must exceed two heartbeat intervals "
                f"(2 x heartbeat_interval_s = {2 * self.heartbeat_interval_s}), or one late beat marks a "
                "healthy node lost"
            )
        return self

    @field_validator("tls_cert_file", "tls_key_file", "tls_ca_file", "auth_tokens_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # An empty OPSCALE_TLS_CERT_FILE= (a compose file's unset variable) means "none", not ".".
        return None if value == "" else value

    @model_validator(mode="after")
    def _tls_pairs(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        return self

    @field_validator("agent_env_allowlist")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        import re

        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value

    @field_validator("fake_gpus")
    @classmethod
    def _fake_gpus_format(cls, value: str) -> str:
        import re

        if value and not re.fullmatch(r"\s*\d+x[A-Za-z0-9_.-]+(\s*,\s*\d+x[A-Za-z0-9_.-]+)*\s*", value):
            raise ValueError(f"must look like 8xH100 or 2xH100,2xA100, got {value!r}")
        return value

    def address_of(self, service: str) -> str:
        """host:port at which ``service`` is reached (explicit address, else localhost and its port)."""
        explicit: str = getattr(self, f"{service}_address")
        if explicit:
            return explicit
        host = "127.0.0.1" if self.listen_host in ("0.0.0.0", "::", "") else self.listen_host
        return f"{host}:{getattr(self, f'{service}_port')}"

    @property
    def is_embedded(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._yaml_file is not None:
            sources.append(_YamlSource(settings_cls, yaml_file=cls._yaml_file))
        return tuple(sources)


class _YamlSource(YamlConfigSettingsSource):
    """The settings file through ``opscale.yamlio`` (bad tags, deep nesting, aliases refused)."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        data = load(Path(file_path).read_text(encoding="utf-8"))
        if data is not None and not isinstance(data, dict):
            raise YamlError("a settings file is a mapping of setting names to values")
        return data or {}


def _describe(error: dict[str, Any]) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "configuration"
    setting = f"{ENV_PREFIX}{field.upper()}" if error["loc"] else field
    value = error.get("input")
    shown = "" if isinstance(value, dict) else f"={value!r}"
    description = Settings.model_fields[field].description if field in Settings.model_fields else None
    allowed = f" (allowed: {description})" if description else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"unknown setting {field!r}; known settings: {', '.join(sorted(Settings.model_fields))}"
    return f"invalid setting {setting}{shown}: {message}{allowed}"


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings; raises ``ConfigError`` naming every bad setting.

    ``config_file`` is a YAML mapping of the same field names (lower case, no prefix); the CLI takes it
    from ``--config`` or ``OPSCALE_CONFIG``. Overrides that are None are ignored (flags not given).
    """
    path = Path(config_file) if config_file else None
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist or is not a file")
    clean = {k: v for k, v in overrides.items() if v is not None}
    Settings._yaml_file = path
    try:
        return Settings(**clean)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(dict(e)) for e in exc.errors())) from None
    except (OSError, ValueError, yaml.YAMLError) as exc:  # unreadable or malformed YAML (YamlError)
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    finally:
        Settings._yaml_file = None


def redact_url(url: str) -> str:
    """A database or Redis URL safe to print: the password replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
