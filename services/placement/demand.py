"""From a deployment spec and one pool's plan (ApplyDesired) to what placing one replica needs.

The result is stored as the pool target's ``demand`` document, so a later re-placement (lost node,
failed replica) needs neither the spec nor the decision that produced it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from opscale.actuation import ResizePool
from opscale.errors import InvalidArgument
from opscale.model import perf_model
from opscale.placement import PoolDemand
from opscale.spec import STAGES_FOR_MODE, DeploymentSpec, OperatorKind, Stage

#: Context the KV cache of a decode/serving attention replica is sized for when the plan does not say.
#: 4,096 tokens covers the median request of the shipped traces (ServeGen, Azure conversation).
DEFAULT_CONTEXT_TOKENS = 4096
DEFAULT_TEMPLATE = "worker"
MAX_REPLICAS_PER_POOL = 10_000


def replica_memory_per_gpu(spec: DeploymentSpec, request: ResizePool, gpu_type: str) -> int:
    """Bytes each GPU of one replica holds: the replica's weights, KV and activations split evenly.

    A ``model`` pool (a whole model replica of one stage) holds every operator of that stage.
    """
    perf = perf_model(spec.model.shape(), gpu_type)
    # Profiles exist per prefill and decode; a colocated (serving) replica holds the same weights and the
    # decode-side KV cache, so it is sized as decode.
    stage = Stage.DECODE if request.pool.stage == Stage.SERVING else request.pool.stage
    batch = max(1, request.batch_size or 1)
    kinds: list[Any]
    if request.pool.operator == OperatorKind.MODEL:
        kinds = [op.kind for op in perf.operators(stage)]
    else:
        kinds = [request.pool.operator]
    total = sum(perf.replica_memory_bytes(stage, kind, batch, DEFAULT_CONTEXT_TOKENS) for kind in kinds)
    return math.ceil(total / request.gpus_per_replica)


def build_demand(spec: DeploymentSpec, request: ResizePool, field: str) -> dict[str, Any]:
    """The pool target's demand document; raises ``InvalidArgument`` naming ``field`` if the pool cannot
    exist in this deployment (stage outside its mode, operator its model does not have, …)."""
    pool = request.pool
    stages = STAGES_FOR_MODE[spec.mode]
    if pool.stage not in stages:
        allowed = ", ".join(s.value for s in stages)
        raise InvalidArgument(
            f"{field}.pool.stage: deployment '{spec.name}' is {spec.mode.value}, its stages are {allowed}; "
            f"got {pool.stage}",
            field=f"{field}.pool.stage",
        )
    if not 0 <= request.replicas <= MAX_REPLICAS_PER_POOL:
        raise InvalidArgument(
            f"{field}.replicas: must be in [0, {MAX_REPLICAS_PER_POOL}], got {request.replicas}",
            field=f"{field}.replicas",
        )
    if not 1 <= request.gpus_per_replica <= 64:
        raise InvalidArgument(
            f"{field}.gpus_per_replica: must be in [1, 64], got {request.gpus_per_replica}",
            field=f"{field}.gpus_per_replica",
        )
    allowed_types = tuple(spec.limits_for(pool).gpu_types)
    if request.gpu_type:
        gpu_types = (request.gpu_type, *(t for t in allowed_types if t != request.gpu_type))
    else:
        gpu_types = allowed_types or (spec.gpu_type,)
    try:
        memory = replica_memory_per_gpu(spec, request, gpu_types[0])
    except InvalidArgument as exc:
        raise InvalidArgument(f"{field}: {exc.message}", field=f"{field}.pool") from None
    launch = next((ref for ref in spec.launch if ref.pool == pool), None)
    return {
        "gpus_per_replica": request.gpus_per_replica,
        "memory_bytes_per_gpu": memory,
        "compute_fraction": 1.0,
        "gpu_types": list(gpu_types),
        "batch_size": max(1, request.batch_size or 1),
        "template": launch.template if launch else DEFAULT_TEMPLATE,
        "args": dict(launch.args) if launch else {},
        "model": spec.model.preset or spec.model.display_name,
    }


def pool_demand(
    deployment: str, stage: str, operator: str, replicas: int, doc: Mapping[str, Any]
) -> PoolDemand:
    return PoolDemand(
        deployment=deployment,
        stage=stage,
        operator=operator,
        replicas=replicas,
        gpus_per_replica=int(doc["gpus_per_replica"]),
        memory_bytes_per_gpu=int(doc["memory_bytes_per_gpu"]),
        compute_fraction=float(doc.get("compute_fraction", 1.0)),
        gpu_types=tuple(doc.get("gpu_types", ())),
        group=deployment,
    )
