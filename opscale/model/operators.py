"""The operator graph of a decoder-only transformer, per stage.

A *pass* is one forward step of a batch: in ``prefill`` one pass per request (its whole prompt), in
``decode`` one pass per generated token. Within a pass the request visits ``embedding`` once, then
``attention`` and ``ffn``/``experts`` once per layer (alternating), then ``lm_head`` once.

Operator boundaries (what an operator-disaggregated deployment ships between pools) carry the residual
stream: ``hidden × dtype_bytes`` per token. The only exception is the lm_head's output, a sampled token
id per sequence (a few bytes, ignored).

Our ``attention`` operator is rmsnorm + QKV projection + attention core + O projection + the
post-attention rmsnorm, i.e. everything in a layer except the MLP; ``ffn`` is the dense MLP (gate, up,
SiLU, down) and ``experts`` its MoE counterpart (router-selected experts plus any shared expert).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from opscale.errors import InvalidArgument
from opscale.model.shapes import ModelShape


class Stage(StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"


class OperatorKind(StrEnum):
    EMBEDDING = "embedding"
    ATTENTION = "attention"
    FFN = "ffn"
    EXPERTS = "experts"
    LM_HEAD = "lm_head"


# Operators traversed once per layer; the rest once per pass.
PER_LAYER_KINDS = frozenset({OperatorKind.ATTENTION, OperatorKind.FFN, OperatorKind.EXPERTS})


def parse_stage(value: str) -> Stage:
    try:
        return Stage(value)
    except ValueError:
        raise InvalidArgument(
            f"unknown stage {value!r}; known stages: {', '.join(s.value for s in Stage)}", field="stage"
        ) from None


def parse_kind(value: str) -> OperatorKind:
    try:
        return OperatorKind(value)
    except ValueError:
        raise InvalidArgument(
            f"unknown operator {value!r}; known operators: {', '.join(k.value for k in OperatorKind)}",
            field="operator",
        ) from None


@dataclass(frozen=True, slots=True)
class OperatorSpec:
    """One operator of one stage, for one model, holding all of its layers."""

    stage: Stage
    kind: OperatorKind
    layer_traversals: int  # visits per pass: layers for attention/ffn/experts, 1 for embedding/lm_head
    weights_bytes: int  # for all layers it holds (embedding/lm_head: the whole vocab matrix)
    kv_bytes_per_token: int  # KV cache per token of context, all layers (attention only, else 0)
    activation_bytes_in_per_token: int
    activation_bytes_out_per_token: int


def operator_kinds(shape: ModelShape) -> tuple[OperatorKind, ...]:
    mlp = OperatorKind.EXPERTS if shape.is_moe else OperatorKind.FFN
    return (OperatorKind.EMBEDDING, OperatorKind.ATTENTION, mlp, OperatorKind.LM_HEAD)


def check_kind(shape: ModelShape, kind: OperatorKind) -> None:
    if kind not in operator_kinds(shape):
        known = ", ".join(k.value for k in operator_kinds(shape))
        raise InvalidArgument(
            f"model {shape.name!r} has no {kind.value!r} operator; its operators: {known}", field="operator"
        )


def attention_weights_bytes_per_layer(shape: ModelShape) -> int:
    # QKV: hidden → (heads + 2·kv_heads)·head_dim; O: heads·head_dim → hidden; two rmsnorm gains of hidden.
    # llama3-8b: (4096·6144 + 4096·4096 + 2·4096)·2 B = 83,902,464 B = qkv_proj + o_proj + 2·rmsnorm rows.
    qkv = shape.hidden * (shape.q_dim + 2 * shape.kv_dim)
    o = shape.q_dim * shape.hidden
    return (qkv + o + 2 * shape.hidden) * shape.dtype_bytes


def mlp_weights_bytes_per_layer(shape: ModelShape) -> int:
    # Gate, up and down: three hidden × ffn matrices per expert (every expert held), plus the shared one.
    # mixtral-8x7b: 8 · 3 · 4096 · 14336 · 2 B = 2,818,572,288 B, the profile's `mlp` row.
    routed = max(shape.experts, 1) * 3 * shape.hidden * shape.ffn
    shared = 3 * shape.hidden * shape.shared_expert_ffn
    return (routed + shared) * shape.dtype_bytes


def vocab_weights_bytes(shape: ModelShape) -> int:
    # Embedding and lm_head each hold a vocab × hidden matrix (untied: a replica of either needs its own).
    return shape.vocab * shape.hidden * shape.dtype_bytes


def weights_bytes(shape: ModelShape, kind: OperatorKind) -> int:
    """Weights an operator replica holds: all layers for per-layer operators."""
    check_kind(shape, kind)
    if kind is OperatorKind.ATTENTION:
        return attention_weights_bytes_per_layer(shape) * shape.layers
    if kind in PER_LAYER_KINDS:
        return mlp_weights_bytes_per_layer(shape) * shape.layers
    return vocab_weights_bytes(shape)


def layer_traversals(shape: ModelShape, kind: OperatorKind) -> int:
    return shape.layers if kind in PER_LAYER_KINDS else 1


def tokens_per_pass(stage: Stage, kind: OperatorKind, batch: int, length: int) -> int:
    """Tokens an operator processes in one pass of ``batch`` sequences.

    ``length`` is the prompt length in prefill and the KV length in decode. Prefill runs every prompt
    token through embedding, attention and ffn, but the lm_head only on each sequence's last position
    (only the first output token is sampled). Decode processes one new token per sequence.
    """
    if stage is Stage.DECODE or kind is OperatorKind.LM_HEAD:
        return batch
    return batch * length


def operators_for(shape: ModelShape, stage: Stage) -> tuple[OperatorSpec, ...]:
    act = shape.activation_bytes_per_token
    specs = []
    for kind in operator_kinds(shape):
        specs.append(
            OperatorSpec(
                stage=stage,
                kind=kind,
                layer_traversals=layer_traversals(shape, kind),
                weights_bytes=weights_bytes(shape, kind),
                # Prefill attention writes the KV it computes, decode attention reads and appends it.
                kv_bytes_per_token=shape.kv_bytes_per_token if kind is OperatorKind.ATTENTION else 0,
                # Embedding takes token ids in (4 B each, ignored); lm_head emits a token id.
                activation_bytes_in_per_token=0 if kind is OperatorKind.EMBEDDING else act,
                activation_bytes_out_per_token=0 if kind is OperatorKind.LM_HEAD else act,
            )
        )
    return tuple(specs)


def activation_working_bytes(shape: ModelShape, kind: OperatorKind, tokens: int) -> int:
    """Peak activation memory of one traversal for ``tokens`` tokens (layers run one after another,
    so buffers are reused across layers and this is not multiplied by ``layers``).

    In and out residual buffers, plus the operator's widest intermediate: QKV output and attention
    output for attention (flash attention never materialises the score matrix), gate and up outputs for
    the MLP (each routed token copy for MoE), fp32 logits for the lm_head.
    """
    b = shape.dtype_bytes
    io = 2 * tokens * shape.hidden * b
    if kind is OperatorKind.EMBEDDING:
        inner = 0
    elif kind is OperatorKind.ATTENTION:
        inner = tokens * (2 * shape.q_dim + 2 * shape.kv_dim) * b
    elif kind is OperatorKind.FFN:
        inner = 2 * tokens * shape.ffn * b
    elif kind is OperatorKind.EXPERTS:
        inner = 2 * tokens * (shape.top_k * shape.ffn + shape.shared_expert_ffn) * b
    else:
        inner = tokens * shape.vocab * 4
    return io + inner
