"""Launch templates: which processes this agent may start, as argv lists with ``{placeholders}``.

The agent's own config (a YAML file) is the allow-list: placement can only name a template, never send a
command line, so a compromised or buggy control plane cannot run arbitrary programs on a GPU host.
Templates are argv lists executed without a shell; each element is formatted with plain ``{name}``
fields only (no attribute or index access), from the replica's identity and the command's arguments.

File format::

    templates:
      vllm:
        argv: ["vllm", "serve", "{model}", "--port", "{port}", "--tensor-parallel-size", "{gpus_per_replica}",
               "--max-num-seqs", "{batch_size}"]   # the plan's batch is the replica's running cap
        readiness: {http: "http://127.0.0.1:{port}/health"}   # or {tcp: true}, or omitted (alive = ready)
        drain: none                                           # or worker (gRPC Drain), or {http: url}
        env: {VLLM_LOGGING_LEVEL: INFO}

The built-in ``worker`` template (the reference operator worker) is always allowed unless the file
redefines it.
"""

from __future__ import annotations

import string
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opscale.errors import ConfigError, InvalidArgument
from opscale.yamlio import YamlError, load

#: Placeholders the agent fills itself; a command's args may not override them.
BUILTIN_FIELDS = frozenset(
    {"replica_id", "generation", "port", "deployment", "stage", "operator", "gpu_indices", "node", "python"}
)


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    argv: tuple[str, ...]
    readiness: Mapping[str, Any] = field(default_factory=dict)  # {} | {"tcp": True} | {"http": url}
    drain: str | Mapping[str, Any] = "none"  # "none" | "worker" | {"http": url}
    env: Mapping[str, str] = field(default_factory=dict)

    def fields(self) -> set[str]:
        found: set[str] = set()
        for part in (*self.argv, *self.env.values(), *_urls(self.readiness), *_urls(self.drain)):
            for _literal, name, _spec, _conv in string.Formatter().parse(part):
                if name is not None:
                    found.add(name)
        return found

    def render(self, values: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        """argv and extra env with every placeholder filled; ``InvalidArgument`` names a missing one."""
        missing = sorted(self.fields() - set(values))
        if missing:
            raise InvalidArgument(
                f"template '{self.name}' needs {', '.join(missing)}, which the command does not give",
                field="start.args",
            )
        return [part.format_map(values) for part in self.argv], {
            k: v.format_map(values) for k, v in self.env.items()
        }

    def url(self, hook: str | Mapping[str, Any], values: Mapping[str, str]) -> str:
        return str(hook["http"]).format_map(values) if isinstance(hook, Mapping) and "http" in hook else ""


def _urls(hook: object) -> list[str]:
    return [str(hook["http"])] if isinstance(hook, Mapping) and "http" in hook else []


WORKER = Template(
    name="worker",
    argv=(
        "{python}",
        "-m",
        "opscale.worker",
        "--replica-id",
        "{replica_id}",
        "--port",
        "{port}",
        "--deployment",
        "{deployment}",
        "--stage",
        "{stage}",
        "--operator",
        "{operator}",
        "--model",
        "{model}",
        "--gpu-type",
        "{gpu_type}",
        "--gpus",
        "{gpus_per_replica}",
        "--gpu-share",
        "{gpu_share}",
    ),
    readiness={"tcp": True},
    drain="worker",
)


def _check_field_names(name: str, template: Template) -> None:
    for part in (*template.argv, *template.env.values()):
        try:
            parsed = list(string.Formatter().parse(part))
        except ValueError as exc:
            raise ConfigError(f"template '{name}': bad placeholder in {part!r}: {exc}") from None
        for _literal, field_name, spec, conversion in parsed:
            if field_name is None:
                continue
            if not field_name.isidentifier() or spec or conversion:
                raise ConfigError(
                    f"template '{name}': placeholder {{{field_name}}} in {part!r} must be a plain name "
                    "like {replica_id}, without attribute, index, format spec or conversion"
                )


def parse_templates(doc: Any, source: str) -> dict[str, Template]:
    if not isinstance(doc, Mapping) or not isinstance(doc.get("templates", {}), Mapping):
        raise ConfigError(f"{source}: must be a mapping with a 'templates' mapping of name -> template")
    out = {WORKER.name: WORKER}
    for name, body in dict(doc.get("templates") or {}).items():
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(f"{source}: template name {name!r} must be letters, digits, '-', '_' or '.'")
        if isinstance(body, list):
            body = {"argv": body}
        if not isinstance(body, Mapping):
            raise ConfigError(f"{source}: template '{name}' must be an argv list or a mapping with argv")
        argv = body.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str | int | float) for a in argv):
            raise ConfigError(
                f"{source}: template '{name}'.argv must be a non-empty list of strings (never a shell "
                "string: the agent runs no shell)"
            )
        readiness = body.get("readiness") or {}
        if not isinstance(readiness, Mapping) or not set(readiness) <= {"tcp", "http"}:
            raise ConfigError(f"{source}: template '{name}'.readiness must be {{tcp: true}} or {{http: url}}")
        drain = body.get("drain", "none")
        if not (drain in ("none", "worker") or (isinstance(drain, Mapping) and set(drain) == {"http"})):
            raise ConfigError(f"{source}: template '{name}'.drain must be none, worker or {{http: url}}")
        env = body.get("env") or {}
        if not isinstance(env, Mapping):
            raise ConfigError(f"{source}: template '{name}'.env must be a mapping")
        template = Template(
            name=name,
            argv=tuple(str(a) for a in argv),
            readiness=dict(readiness),
            drain=drain if isinstance(drain, str) else dict(drain),
            env={str(k): str(v) for k, v in env.items()},
        )
        _check_field_names(name, template)
        out[name] = template
    return out


def load_templates(path: Path | None) -> dict[str, Template]:
    if path is None:
        return {WORKER.name: WORKER}
    try:
        doc = load(path.read_text())
    except (OSError, YamlError) as exc:
        raise ConfigError(f"agent templates file {path}: {exc}") from None
    return parse_templates(doc or {}, str(path))


def placeholder_values(
    *,
    replica_id: str,
    generation: int,
    port: int,
    deployment: str,
    stage: str,
    operator: str,
    gpu_indices: tuple[int, ...],
    node: str,
    args: Mapping[str, str],
) -> dict[str, str]:
    values = {str(k): str(v) for k, v in args.items() if k not in BUILTIN_FIELDS}
    values |= {
        "replica_id": replica_id,
        "generation": str(generation),
        "port": str(port),
        "deployment": deployment,
        "stage": stage,
        "operator": operator,
        "gpu_indices": ",".join(str(i) for i in gpu_indices),
        "node": node,
        "python": sys.executable,
    }
    values.setdefault("gpu_share", "1")  # a start from a placement that predates GPU shares
    return values


def sharing_env(values: Mapping[str, str]) -> dict[str, str]:
    """A replica on a share of a GPU runs under CUDA MPS limited to that share of the SMs.

    ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` is the MPS client's limit on active threads (NVIDIA's
    Multi-Process Service guide, "Active Thread Percentage"); a whole-GPU replica gets nothing."""
    raw = values.get("gpu_share", "1")
    try:
        share = float(raw)
    except ValueError:
        share = float("nan")
    if not 0.0 < share <= 1.0:
        raise InvalidArgument(f"start.args.gpu_share must be in (0, 1]; got {raw!r}", field="start.args")
    return {} if share == 1.0 else {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(max(1, round(100 * share)))}
