"""Measured operator profiles as frozen values, and the loader for our packaged ones.

Packaged profiles live in ``opscale/model/data/profiles/<gpu_type>/<model>.json`` (see the README
there) and are read through ``importlib.resources``; a profile elsewhere is read only from a path the
caller passes explicitly (``load_profile_file``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Any

from pydantic import ValidationError

from opscale.errors import InvalidArgument
from opscale.model.operators import (
    OperatorKind,
    Stage,
    attention_weights_bytes_per_layer,
    mlp_weights_bytes_per_layer,
    operator_kinds,
    vocab_weights_bytes,
)
from opscale.model.profile_schema import ProfileDoc
from opscale.model.shapes import ModelShape


@dataclass(frozen=True, slots=True)
class ProfilePoint:
    """One measurement: ``latency_ms`` for ``x`` tokens (one layer for per-layer operators)."""

    x: float
    latency_ms: float
    watts: float | None = None
    batch: int | None = None
    seq_len: int | None = None  # prefill attention
    kv_len: int | None = None  # decode attention
    parts_ms: tuple[tuple[str, float], ...] = ()
    extrapolated: bool = False


@dataclass(frozen=True, slots=True)
class OperatorProfile:
    stage: Stage
    kind: OperatorKind
    points: tuple[ProfilePoint, ...]


@dataclass(frozen=True, slots=True)
class ReferenceLayer:
    """A whole decoder layer measured in one piece, to check that our operators add up to it."""

    stage: Stage
    batch: int
    length: int  # seq_len in prefill, kv_len in decode
    latency_ms: float


@dataclass(frozen=True, slots=True)
class Provenance:
    source_file: str
    source_sha256: str
    gpu_name: str
    torch: str
    converted_on: str
    converter: str
    composition: str
    # How this profile was obtained from a measured one, e.g. "roofline h100 -> h200"; None if measured.
    derived: str | None = None


@dataclass(frozen=True, slots=True)
class ModelProfile:
    model: str
    gpu_type: str
    shape: ModelShape
    operators: tuple[OperatorProfile, ...]
    reference_layers: tuple[ReferenceLayer, ...]
    provenance: Provenance

    def operator(self, stage: Stage, kind: OperatorKind) -> OperatorProfile:
        for op in self.operators:
            if op.stage is stage and op.kind is kind:
                return op
        raise InvalidArgument(
            f"profile {self.model}@{self.gpu_type} has no {stage.value} {kind.value} operator",
            field="operator",
        )

    def with_operators(self, operators: tuple[OperatorProfile, ...], derived: str) -> ModelProfile:
        return replace(self, operators=operators, provenance=replace(self.provenance, derived=derived))


def _check_bytes(doc: ProfileDoc, shape: ModelShape, origin: str) -> None:
    """The file's byte counts must be what the shape implies: a mismatch means a wrong shape block."""
    mlp = OperatorKind.EXPERTS if shape.is_moe else OperatorKind.FFN
    mlp_key = f"weights_bytes_per_layer.{mlp.value}"
    per_layer, whole = doc.weights_bytes_per_layer, doc.weights_bytes_whole
    expected: list[tuple[str, int, int | None]] = [
        (
            "weights_bytes_per_layer.attention",
            attention_weights_bytes_per_layer(shape),
            per_layer.get("attention"),
        ),
        (mlp_key, mlp_weights_bytes_per_layer(shape), per_layer.get(mlp.value)),
        ("weights_bytes_whole.embedding", vocab_weights_bytes(shape), whole.get("embedding")),
        ("weights_bytes_whole.lm_head", vocab_weights_bytes(shape), whole.get("lm_head")),
        (
            "kv_bytes_per_token_per_layer",
            shape.kv_bytes_per_token_per_layer,
            doc.kv_bytes_per_token_per_layer,
        ),
        ("activation_bytes_per_token", shape.activation_bytes_per_token, doc.activation_bytes_per_token),
    ]
    for field, want, got in expected:
        if want != got:
            raise InvalidArgument(
                f"profile {origin}: {field} is {got}, but the shape implies {want}", field=field
            )


def parse_profile(data: Mapping[str, Any], *, origin: str) -> ModelProfile:
    """Validate a profile document (already parsed JSON); ``origin`` names it in error messages."""
    try:
        doc = ProfileDoc.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise InvalidArgument(f"profile {origin}: {loc}: {first['msg']}", field=loc) from None
    shape = ModelShape(**doc.shape.model_dump())
    _check_bytes(doc, shape, origin)
    kinds = {k.value for k in operator_kinds(shape)}
    operators = []
    for stage in Stage:
        ops = doc.stages.get(stage.value)
        if ops is None or set(ops) != kinds:
            raise InvalidArgument(
                f"profile {origin}: stage {stage.value!r} must have exactly the operators "
                f"{sorted(kinds)}, has {sorted(ops or {})}",
                field=f"stages.{stage.value}",
            )
        for kind_name, points in ops.items():
            operators.append(
                OperatorProfile(
                    stage=stage,
                    kind=OperatorKind(kind_name),
                    points=tuple(
                        ProfilePoint(
                            x=p.x,
                            latency_ms=p.latency_ms,
                            watts=p.watts,
                            batch=p.batch,
                            seq_len=p.seq_len,
                            kv_len=p.kv_len,
                            parts_ms=tuple(sorted((p.parts_ms or {}).items())),
                            extrapolated=p.extrapolated,
                        )
                        for p in points
                    ),
                )
            )
    refs = tuple(
        ReferenceLayer(
            stage=Stage(r.stage),
            batch=r.batch,
            length=_length(r.seq_len if r.stage == "prefill" else r.kv_len, origin),
            latency_ms=r.latency_ms,
        )
        for r in doc.reference_layers
    )
    prov = doc.provenance
    return ModelProfile(
        model=doc.model,
        gpu_type=doc.gpu_type,
        shape=shape,
        operators=tuple(operators),
        reference_layers=refs,
        provenance=Provenance(
            source_file=prov.source_file,
            source_sha256=prov.source_sha256,
            gpu_name=prov.gpu_name,
            torch=prov.torch,
            converted_on=prov.converted_on,
            converter=prov.converter,
            composition=prov.composition,
        ),
    )


def _length(value: int | None, origin: str) -> int:
    if value is None:
        raise InvalidArgument(
            f"profile {origin}: reference layers need seq_len (prefill) or kv_len (decode)",
            field="reference_layers",
        )
    return value


def load_profile_file(path: str | os.PathLike[str]) -> ModelProfile:
    """A profile from a path the caller chose (e.g. one our profiler just wrote)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"cannot read profile {os.fspath(path)!r}: {exc}", field="path") from None
    return parse_profile(data, origin=os.fspath(path))


@lru_cache(maxsize=1)
def packaged_profiles() -> tuple[ModelProfile, ...]:
    """Every profile shipped in ``opscale/model/data/profiles/<gpu_type>/``, parsed once per process."""
    root = resources.files("opscale.model").joinpath("data", "profiles")
    found = []
    for gpu_dir in sorted(root.iterdir(), key=lambda p: p.name):
        if not gpu_dir.is_dir():
            continue
        for entry in sorted(gpu_dir.iterdir(), key=lambda p: p.name):
            if entry.name.endswith(".json"):
                origin = f"opscale/model/data/profiles/{gpu_dir.name}/{entry.name}"
                found.append(parse_profile(json.loads(entry.read_text(encoding="utf-8")), origin=origin))
    return tuple(found)


def load_profile(model: str, gpu_type: str) -> ModelProfile:
    """The packaged profile of ``model`` measured on ``gpu_type`` (catalog key, e.g. ``h100``)."""
    for profile in packaged_profiles():
        if profile.model == model and profile.gpu_type == gpu_type:
            return profile
    have = ", ".join(f"{p.model}@{p.gpu_type}" for p in packaged_profiles())
    raise InvalidArgument(
        f"no packaged profile for {model!r} on {gpu_type!r}; packaged: {have}", field="model"
    )
