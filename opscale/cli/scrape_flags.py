"""`opscale serve ingest`'s scrape flags: engine endpoints (--scrape … --deployment … --role …
[--model-name …]), a file_sd targets file, the longest scrape gap, and Prometheus as a source."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from opscale.cli.common import fail
from opscale.cli.exit_codes import ExitCode
from opscale.config import PrometheusSource, ScrapeTarget, Settings, check_http_url, check_scrape_targets

ScrapeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--scrape",
        help="ingest: an engine's /metrics URL to poll (repeatable; pairs in order with --deployment, "
        "--role and, when given, --model-name)",
        show_default=False,
    ),
]
ScrapeDeploymentOpt = Annotated[
    list[str] | None,
    typer.Option("--deployment", help="ingest: the deployment of the matching --scrape", show_default=False),
]
ScrapeRoleOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--role", help="ingest: prefill, decode or serving, for the matching --scrape", show_default=False
    ),
]
ModelNameOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model-name",
        help="ingest: the model_name label whose series go to the matching --deployment (one per --scrape; "
        "needed when an endpoint serves several models, which are never added together)",
        show_default=False,
    ),
]
TargetsFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--targets-file",
        help="ingest: Prometheus file_sd file (JSON/YAML) of more targets, re-read when it changes",
        show_default=False,
    ),
]
MaxGapOpt = Annotated[
    float | None,
    typer.Option(
        "--max-gap", help="ingest: longest gap (s) between scrapes that still gives rates", show_default=False
    ),
]
PrometheusUrlOpt = Annotated[
    str | None,
    typer.Option("--prometheus-url", help="ingest: Prometheus server to read --prometheus-source from"),
]
PrometheusSourceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--prometheus-source",
        help="ingest: DEPLOYMENT:ROLE:ENGINE:SELECTOR read with PromQL, e.g. "
        '\'chat:decode:vllm:{job="vllm",model_name="llama"}\' (repeatable)',
        show_default=False,
    ),
]


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def _targets(
    urls: list[str], deployments: list[str], roles: list[str], models: list[str]
) -> list[ScrapeTarget]:
    if not len(urls) == len(deployments) == len(roles) or (models and len(models) != len(urls)):
        raise fail(
            f"--scrape, --deployment, --role (and --model-name, if used) pair up in order; got {len(urls)} "
            f"--scrape, {len(deployments)} --deployment, {len(roles)} --role and {len(models)} --model-name",
            ExitCode.USAGE,
        )
    out = []
    for i, (url, name, role) in enumerate(zip(urls, deployments, roles, strict=True)):
        raw: dict[str, Any] = {"url": url, "deployment": name, "role": role}
        if models:
            raw["model_name"] = models[i]
        try:
            out.append(ScrapeTarget.model_validate(raw))
        except ValidationError as exc:
            raise fail(f"--scrape #{i + 1} ({url}): {_errors(exc)}", ExitCode.USAGE) from None
    return out


def _sources(specs: list[str]) -> list[PrometheusSource]:
    out = []
    for i, spec in enumerate(specs):
        parts = spec.split(":", 3)
        if len(parts) != 4:
            raise fail(
                f"--prometheus-source #{i + 1} ({spec!r}): expected DEPLOYMENT:ROLE:ENGINE:SELECTOR",
                ExitCode.USAGE,
            )
        raw = dict(zip(("deployment", "role", "engine", "selector"), parts, strict=True))
        try:
            out.append(PrometheusSource.model_validate(raw))
        except ValidationError as exc:
            raise fail(f"--prometheus-source #{i + 1} ({spec!r}): {_errors(exc)}", ExitCode.USAGE) from None
    return out


def with_scrape_flags(
    cfg: Settings,
    *,
    ingest: bool,
    urls: list[str],
    deployments: list[str],
    roles: list[str],
    models: list[str],
    targets_file: Path | None,
    max_gap_s: float | None,
    prometheus_url: str | None,
    prometheus_sources: list[str],
) -> Settings:
    """``cfg`` with the flags' targets and sources appended to the configured ones."""
    given = urls or deployments or roles or models or targets_file or max_gap_s is not None
    if not (given or prometheus_url or prometheus_sources):
        return cfg
    if not ingest:
        raise fail("scrape and Prometheus flags apply to `opscale serve ingest` only", ExitCode.USAGE)
    if targets_file is not None and not targets_file.is_file():
        raise fail(f"--targets-file {targets_file}: no such file", ExitCode.USAGE)
    if max_gap_s is not None and not 0 < max_gap_s <= 3600:
        raise fail(f"--max-gap must be in (0, 3600] seconds, got {max_gap_s:g}", ExitCode.USAGE)
    url = prometheus_url or cfg.prometheus_url
    sources = [*cfg.prometheus_sources, *_sources(prometheus_sources)]
    if sources and url is None:
        raise fail(
            "--prometheus-source needs --prometheus-url (or prometheus_url in the config)", ExitCode.USAGE
        )
    targets = [*cfg.scrape_targets, *_targets(urls, deployments, roles, models)]
    try:
        check_scrape_targets(targets, cfg.scrape_interval_s)
        update: dict[str, Any] = {"scrape_targets": targets, "prometheus_sources": sources}
        if prometheus_url is not None:
            update["prometheus_url"] = check_http_url(prometheus_url)
    except ValueError as exc:
        raise fail(str(exc).removeprefix("Value error, "), ExitCode.USAGE) from None
    if targets_file is not None:
        update["scrape_targets_file"] = targets_file
    if max_gap_s is not None:
        update["scrape_max_gap_s"] = max_gap_s
    return cfg.model_copy(update=update)
