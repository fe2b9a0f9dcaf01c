"""Where scrape targets come from, and how they group into endpoints.

Sources: ``scrape_targets`` (settings: flags, environment, config file) and ``scrape_targets_file``,
a Prometheus ``file_sd`` file (JSON, or YAML for ``.yml``/``.yaml``) re-read when it changes:

```json
[{"targets": ["10.0.0.5:8000", "10.0.0.6:8000"],
  "labels": {"deployment": "chat", "role": "decode", "model_name": "llama-3-8b", "engine": "vllm"}}]
```

Each address becomes ``<__scheme__>://<address><__metrics_path__>`` (defaults ``http`` and
``/metrics``, as Prometheus does); ``deployment`` and ``role`` are required, ``model_name``,
``engine``, ``interval_s`` and ``timeout_s`` optional. A file that does not parse or validate is
refused whole, naming the group and field, and the targets loaded before stay in force.

Grouping: targets with the same URL are one endpoint, fetched once per interval; each target is a
route (model → deployment). They must agree on engine, interval and timeout.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from opscale.config import ScrapeEngine, ScrapeTarget, check_scrape_targets
from opscale.errors import ConfigError
from opscale.services.ingest.scrape import EndpointSpec, Route

_META = ("__scheme__", "__metrics_path__")
_FIELDS = ("deployment", "role", "model_name", "engine", "interval_s", "timeout_s")


def group_targets(targets: Iterable[ScrapeTarget], default_interval_s: float) -> list[EndpointSpec]:
    """One ``EndpointSpec`` per URL; ``ConfigError`` when targets of one URL cannot be one endpoint."""
    targets = list(targets)
    try:
        check_scrape_targets(targets, default_interval_s)
    except ValueError as exc:
        raise ConfigError(str(exc), field="scrape_targets") from None
    by_url: dict[str, list[ScrapeTarget]] = {}
    for t in targets:
        by_url.setdefault(t.url, []).append(t)
    specs = []
    for url, group in by_url.items():
        engine = next((t.engine for t in group if t.engine is not ScrapeEngine.AUTO), ScrapeEngine.AUTO)
        routes = tuple(Route(t.deployment, t.role, t.model_name) for t in group)
        first = group[0]
        specs.append(
            EndpointSpec(url, engine, routes, first.interval_s or default_interval_s, first.timeout_s)
        )
    return specs


def _group_targets(i: int, group: Any) -> list[ScrapeTarget]:
    where = f"group {i}"
    if not isinstance(group, dict) or not isinstance(group.get("targets"), list):
        raise ConfigError(f"{where}: must be a mapping with a 'targets' list", field=where)
    labels = group.get("labels") or {}
    if not isinstance(labels, dict):
        raise ConfigError(f"{where}.labels: must be a mapping", field=f"{where}.labels")
    scheme = str(labels.get("__scheme__", "http"))
    path = str(labels.get("__metrics_path__", "/metrics"))
    fields = {k: labels[k] for k in _FIELDS if k in labels}
    out = []
    for j, address in enumerate(group["targets"]):
        try:
            out.append(ScrapeTarget.model_validate({"url": f"{scheme}://{address}{path}", **fields}))
        except ValidationError as exc:
            errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{where}.targets[{j}] ({address}): {errors}", field=where) from None
    return out


def parse_file_sd(text: str, *, yaml_format: bool) -> list[ScrapeTarget]:
    """Targets of a file_sd document; ``ConfigError`` naming the group and field when it is wrong."""
    try:
        raw = yaml.safe_load(text) if yaml_format else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"not {'YAML' if yaml_format else 'JSON'}: {exc}", field="scrape_targets_file"
        ) from None
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError("must be a list of target groups", field="scrape_targets_file")
    return [t for i, group in enumerate(raw) for t in _group_targets(i, group)]


class TargetsFile:
    """A file_sd file, re-read when its modification time or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[float, int] | None = None

    def changed(self) -> bool:
        try:
            st = self.path.stat()
        except OSError:
            return self._seen is not None
        return (st.st_mtime, st.st_size) != self._seen

    def load(self) -> list[ScrapeTarget]:
        """The file's targets; ``ConfigError`` when it is unreadable or wrong."""
        try:
            st = self.path.stat()
            text = self.path.read_text()
        except OSError as exc:
            raise ConfigError(
                f"cannot read {self.path}: {exc.strerror or exc}", field="scrape_targets_file"
            ) from None
        self._seen = (st.st_mtime, st.st_size)  # a wrong file is reported once, not at every poll
        return parse_file_sd(text, yaml_format=self.path.suffix in (".yml", ".yaml"))


def all_targets(static: Sequence[ScrapeTarget], from_file: Sequence[ScrapeTarget]) -> list[ScrapeTarget]:
    """Static targets first; a file target repeating a static (url, model) is dropped."""
    seen = {(t.url, t.model_name) for t in static}
    return [*static, *(t for t in from_file if (t.url, t.model_name) not in seen)]
