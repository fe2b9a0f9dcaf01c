"""From a deployment spec and one pool's plan (ApplyDesired) to what placing one replica needs.

The result is stored as the pool target's ``demand`` document, so a later re-placement (lost node,
failed replica) needs neither the spec nor the decision that produced it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opscale.actuation import ResizePool
from opscale.errors import InvalidArgument
from opscale.model import perf_model
from opscale.model.memory import replica_memory
from opscale.placement import PoolDemand
from opscale.spec import STAGES_FOR_MODE, DeploymentSpec, OperatorKind, Stage

DEFAULT_TEMPLATE = "worker"
MAX_REPLICAS_PER_POOL = 10_000


def replica_memory_per_gpu(spec: DeploymentSpec, request: ResizePool, gpu_type: str) -> int:
    """Bytes placement reserves on each GPU of one replica, under the one memory model the planners
    and the simulator use (``opscale.model.memory``): an attention replica claims its GPUs' usable
    memory for its KV pool; any other replica its weights + one pass's activations, split evenly.

    A ``model`` pool (a whole model replica of one stage) holds every operator of that stage; a colocated
    (serving) replica is sized as decode (the same weights, and the KV of decode). A replica on a share of
    one GPU holds that share of its memory.
    """
    shape = spec.model.shape()
    stage = Stage.DECODE if request.pool.stage == Stage.SERVING else Stage(request.pool.stage)
    perf = perf_model(shape, gpu_type)
    if request.pool.operator == OperatorKind.MODEL:
        ops = tuple(op.kind.value for op in perf.operators(stage.value))
    else:
        ops = (str(request.pool.operator),)
    batch = max(1, request.batch_size or 1)
    gpus = request.gpu_share if request.gpu_share < 1.0 else request.gpus_per_replica
    mem = replica_memory(shape, perf.gpu, stage.value, ops, batch, gpus)
    return mem.per_gpu_bytes


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
    if request.gpu_share < 1.0 and pool.operator == OperatorKind.MODEL:
        raise InvalidArgument(
            f"{field}.gpu_share: a whole-model replica takes whole GPUs; shares are for operator pools",
            field=f"{field}.gpu_share",
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
        # a share of one GPU: placement packs shares onto one GPU (at most 1 in all), the agent limits
        # the process to it (opscale.model.sharing)
        "compute_fraction": min(1.0, request.gpu_share),
        "micro_batches": request.micro_batches,
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
