"""Operator graph: which operators, how often they are traversed, and their bytes."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from opscale.errors import InvalidArgument
from opscale.model.operators import (
    OperatorKind,
    Stage,
    activation_working_bytes,
    operator_kinds,
    operators_for,
    parse_kind,
    parse_stage,
    tokens_per_pass,
    weights_bytes,
)
from opscale.model.shapes import PRESETS, get_preset


def _packaged_json(model: str) -> dict[str, object]:
    path = resources.files("opscale.model").joinpath("data", "profiles", "h100", f"{model}.json")
    data: dict[str, object] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize("stage", list(Stage))
def test_dense_and_moe_operator_lists(stage: Stage) -> None:
    dense = [s.kind for s in operators_for(get_preset("llama3-8b"), stage)]
    moe = [s.kind for s in operators_for(get_preset("mixtral-8x7b"), stage)]
    assert dense == [OperatorKind.EMBEDDING, OperatorKind.ATTENTION, OperatorKind.FFN, OperatorKind.LM_HEAD]
    assert moe == [OperatorKind.EMBEDDING, OperatorKind.ATTENTION, OperatorKind.EXPERTS, OperatorKind.LM_HEAD]


def test_traversals_per_pass() -> None:
    # Attention and ffn once per layer (80 for llama3-70b); embedding and lm_head once per pass.
    specs = {s.kind: s for s in operators_for(get_preset("llama3-70b"), Stage.DECODE)}
    assert specs[OperatorKind.ATTENTION].layer_traversals == 80
    assert specs[OperatorKind.FFN].layer_traversals == 80
    assert specs[OperatorKind.EMBEDDING].layer_traversals == 1
    assert specs[OperatorKind.LM_HEAD].layer_traversals == 1


@pytest.mark.parametrize("model", sorted(PRESETS))
def test_kv_bytes_match_profiles(model: str) -> None:
    # K and V, kv_heads × head_dim each, bf16: llama/mixtral 2·8·128·2 = 4096 B, qwen2 2·4·128·2 = 2048 B.
    shape = get_preset(model)
    assert shape.kv_bytes_per_token_per_layer == _packaged_json(model)["kv_bytes_per_token_per_layer"]
    assert shape.kv_bytes_per_token == shape.kv_bytes_per_token_per_layer * shape.layers
    attention = next(s for s in operators_for(shape, Stage.DECODE) if s.kind is OperatorKind.ATTENTION)
    assert attention.kv_bytes_per_token == shape.kv_bytes_per_token


@pytest.mark.parametrize("model", sorted(PRESETS))
def test_weights_and_activation_bytes_match_profiles(model: str) -> None:
    shape = get_preset(model)
    doc = _packaged_json(model)
    per_layer = doc["weights_bytes_per_layer"]
    whole = doc["weights_bytes_whole"]
    assert isinstance(per_layer, dict) and isinstance(whole, dict)
    mlp = OperatorKind.EXPERTS if shape.is_moe else OperatorKind.FFN
    assert weights_bytes(shape, OperatorKind.ATTENTION) == per_layer["attention"] * shape.layers
    assert weights_bytes(shape, mlp) == per_layer[mlp.value] * shape.layers
    assert weights_bytes(shape, OperatorKind.EMBEDDING) == whole["embedding"]
    assert weights_bytes(shape, OperatorKind.LM_HEAD) == whole["lm_head"]
    assert shape.activation_bytes_per_token == doc["activation_bytes_per_token"]


def test_llama3_8b_total_weights() -> None:
    # 32 · (83,902,464 + 352,321,536) + 2 · 1,050,673,152 = 16,060,514,304 B ≈ 8.03 B params × 2 B.
    shape = get_preset("llama3-8b")
    assert sum(weights_bytes(shape, k) for k in operator_kinds(shape)) == 16_060_514_304


def test_boundaries_carry_the_residual_stream() -> None:
    specs = {s.kind: s for s in operators_for(get_preset("qwen2-7b"), Stage.PREFILL)}
    assert specs[OperatorKind.EMBEDDING].activation_bytes_in_per_token == 0
    assert specs[OperatorKind.EMBEDDING].activation_bytes_out_per_token == 3584 * 2
    assert specs[OperatorKind.ATTENTION].activation_bytes_in_per_token == 3584 * 2
    assert specs[OperatorKind.LM_HEAD].activation_bytes_out_per_token == 0


def test_tokens_per_pass() -> None:
    assert tokens_per_pass(Stage.PREFILL, OperatorKind.FFN, 4, 1000) == 4000
    # Prefill samples only the last position of each prompt.
    assert tokens_per_pass(Stage.PREFILL, OperatorKind.LM_HEAD, 4, 1000) == 4
    assert tokens_per_pass(Stage.DECODE, OperatorKind.ATTENTION, 4, 1000) == 4


def test_wrong_kind_for_model() -> None:
    with pytest.raises(InvalidArgument, match="experts"):
        weights_bytes(get_preset("llama3-8b"), OperatorKind.EXPERTS)


def test_activation_working_set() -> None:
    # llama3-8b ffn, 10 tokens: in + out 2·10·4096·2 = 163,840 plus gate and up 2·10·14336·2 = 573,440.
    assert activation_working_bytes(get_preset("llama3-8b"), OperatorKind.FFN, 10) == 737_280


def test_parse_errors_list_known_values() -> None:
    assert parse_stage("decode") is Stage.DECODE
    assert parse_kind("lm_head") is OperatorKind.LM_HEAD
    with pytest.raises(InvalidArgument, match="prefill, decode"):
        parse_stage("train")
    with pytest.raises(InvalidArgument, match="embedding, attention, ffn, experts, lm_head"):
        parse_kind("mlp")
