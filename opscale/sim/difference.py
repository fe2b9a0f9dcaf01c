"""Where operator-level's difference from model-level comes from, in the run's own numbers.

Energy is allocated GPUs at idle power plus each busy replica's draw above it (``opscale.sim.engine``),
so a difference in energy is one of three things, each read from the run:

* **GPUs allocated**: mean GPUs, and GPUs per replica (placed GPUs over replicas: smaller replicas, or
  several sharing a GPU, give less than a whole-model replica's);
* **busy fraction**: the mean draw of an allocated GPU — the closer to its busy power, the busier it ran
  (a GPU held idle draws only the idle power);
* **GPUs released**: the energy a run saved by giving GPUs back, against keeping every GPU it ever held
  powered at idle.

And the forms the hybrid ran (``opscale.policy.hybrid``): the share of the time each stage held operator
pools. Where it held whole-model replicas throughout, granularity did not enter: the sentence says so,
with the sizes that decide it — the fewest GPUs a whole replica fits on against the fewest the model's
largest operator needs alone (``opscale.model.memory.min_gpus``); when they are equal, a split frees at
most the other operators' share of a replica.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from opscale.model import get_preset, perf_model
from opscale.model.memory import min_gpus
from opscale.model.operators import OperatorKind, weights_bytes
from opscale.sim.run import SimResult

STAGES = ("prefill", "decode")
WHOLE_THROUGHOUT = 0.01  # a stage whose operator pools held replicas less than this share of the time


def breakdown(res: SimResult) -> dict[str, Any]:
    """The run's numbers that ``sentence`` reads (JSON-ready)."""
    gpu_s = float(res.gpus.sum())
    replica_s = float(sum(v.sum() for v in res.replicas.values()))
    share: dict[str, float] = {}
    for st in STAGES:
        pools = [(k, v) for k, v in res.replicas.items() if k.startswith(f"{st}/")]
        if not pools:
            continue
        ops = sum((v for k, v in pools if not k.endswith("/model")), np.zeros(len(res.gpus)))
        held = sum((v for _, v in pools), np.zeros(len(res.gpus))) > 0
        share[st] = float((ops[held] > 0).mean()) if held.any() else 0.0
    return {
        "operator_share": share,
        "watts_per_gpu": float(res.watts.sum()) / gpu_s if gpu_s else 0.0,
        "idle_watts_per_gpu": float(res.idle_watts_per_gpu),
        "gpus_per_replica": gpu_s / replica_s if replica_s else 0.0,
        "gpu_type": res.gpu_type,
    }


def sizes(model: str, gpu_type: str) -> tuple[int | None, str, int | None]:
    """(fewest GPUs a whole replica fits on, the largest operator, the fewest GPUs it needs alone) at
    pass size 1 and no KV (the decode stage's operators; prefill's are the same)."""
    perf = perf_model(get_preset(model), gpu_type)
    ops = tuple(spec.kind.value for spec in perf.operators("decode"))
    each = {op: min_gpus(perf.shape, perf.gpu, "decode", (op,), 1) for op in ops}
    # the most GPUs alone, and of those the most weights
    largest = max(ops, key=lambda op: (each[op] or 1 << 30, weights_bytes(perf.shape, OperatorKind(op))))
    return min_gpus(perf.shape, perf.gpu, "decode", ops, 1), largest, each[largest]


def sentence(
    op: Mapping[str, Any], op_b: Mapping[str, Any], ref: Mapping[str, Any], ref_b: Mapping[str, Any]
) -> str:
    """Where operator-level's GPU-hours and energy differ from model-level's (``op``/``ref``: the runs'
    metrics; ``op_b``/``ref_b``: their ``breakdown``)."""
    share = op_b["operator_share"]
    saved_op = op["energy_kwh_idle"] - op["energy_kwh_released"]
    saved_ref = ref["energy_kwh_idle"] - ref["energy_kwh_released"]
    text = (
        f"Where it comes from: {op['mean_gpus']:.1f} vs {ref['mean_gpus']:.1f} GPUs allocated on average, "
        f"{op_b['gpus_per_replica']:.2f} vs {ref_b['gpus_per_replica']:.2f} GPUs per replica; busy fraction: "
        f"an allocated GPU drew {op_b['watts_per_gpu']:.0f} W vs {ref_b['watts_per_gpu']:.0f} W on average "
        f"(idle {op_b['idle_watts_per_gpu']:.0f} W; higher is busier); GPUs released: giving back GPUs saved "
        f"{saved_op:.2f} kWh vs {saved_ref:.2f} kWh; forms: operator-level held operator pools "
        + ", ".join(f"{100 * share[st]:.0f}% of the time in {st}" for st in STAGES if st in share)
        + "."
    )
    if share and all(v < WHOLE_THROUGHOUT for v in share.values()):
        whole, largest, alone = sizes(op["model"], op_b["gpu_type"])
        same = (
            ", so splitting frees at most the other operators' share of a replica" if whole == alone else ""
        )
        text += (
            f" Operator-level ran whole-model replicas throughout: its hybrid never found operator pools "
            f"with fewer GPUs. A whole {op['model']} replica fits on {whole} GPU(s) and its largest "
            f"operator, {largest}, alone needs {alone}{same}; the difference is how the two sized and "
            f"timed whole replicas, not granularity."
        )
    return text
