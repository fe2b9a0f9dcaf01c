"""GPU catalog: measured H100 ceilings, datasheet ratios, aliases."""

from __future__ import annotations

import pytest

from opscale.errors import InvalidArgument
from opscale.model.gpus import CATALOG, GpuSpec, get_gpu
from opscale.model.profiles import packaged_profiles

REQUIRED = ("h100", "h200", "a100-80g", "h20", "l40s", "b200")


def test_required_types_present() -> None:
    assert set(REQUIRED) <= set(CATALOG)


@pytest.mark.parametrize(
    "alias", ["h100", "H100", "H100-SXM", "h100_sxm5", "NVIDIA H100 80GB HBM3", " h100-80gb ", "nvidia-h100"]
)
def test_h100_aliases(alias: str) -> None:
    assert get_gpu(alias).key == "h100"


@pytest.mark.parametrize(
    ("alias", "key"),
    [
        ("A100-SXM4-80GB", "a100-80g"),
        ("NVIDIA A100-SXM4-80GB", "a100-80g"),
        ("L40S", "l40s"),
        ("HGX-B200", "b200"),
    ],
)
def test_other_aliases(alias: str, key: str) -> None:
    assert get_gpu(alias).key == key


def test_unknown_gpu_lists_known_types() -> None:
    with pytest.raises(InvalidArgument) as info:
        get_gpu("tpu-v5")
    for key in REQUIRED:
        assert key in str(info.value)
    assert info.value.field == "gpu_type"


def test_h100_uses_the_measured_ceilings() -> None:
    # ../shared/profiles/h100/gpu.json, as recorded in every packaged profile's gpu_measured block.
    h100 = get_gpu("h100")
    assert (h100.idle_watts, h100.bf16_flops, h100.memory_bytes_s) == (127.929, 779e12, 2415.4e9)
    assert h100.memory_bytes == 85_520_809_984 and h100.max_watts == 700.0 and h100.measured
    assert all(p.provenance.gpu_name == "NVIDIA H100 80GB HBM3" for p in packaged_profiles())


@pytest.mark.parametrize(
    ("key", "dense_tflops", "tb_s"),
    [
        ("h200", 989.5, 4.8),
        ("a100-80g", 312, 2.039),
        ("h20", 148, 4.0),
        ("l40s", 362.05, 0.864),
        ("b200", 2250, 8.0),
    ],
)
def test_ratios_to_h100_are_datasheet_ratios(key: str, dense_tflops: float, tb_s: float) -> None:
    # H100 SXM datasheet: 989.5 dense bf16 TFLOPS (1,979 sparse, halved) and 3.35 TB/s.
    h100, gpu = get_gpu("h100"), get_gpu(key)
    assert gpu.bf16_flops / h100.bf16_flops == pytest.approx(dense_tflops / 989.5)
    assert gpu.memory_bytes_s / h100.memory_bytes_s == pytest.approx(tb_s / 3.35)
    assert not gpu.measured


def test_power_figures() -> None:
    assert {k: g.max_watts for k, g in CATALOG.items()} == {
        "h100": 700, "h200": 700, "a100-80g": 400, "h20": 400, "l40s": 350, "b200": 1000,
    }  # fmt: skip
    for gpu in CATALOG.values():
        # Estimated idle: the H100's measured 127.929 W / 700 W share of the limit.
        assert gpu.idle_watts / gpu.max_watts == pytest.approx(127.929 / 700)


def test_only_l40s_lacks_nvlink() -> None:
    assert [g.key for g in CATALOG.values() if not g.nvlink] == ["l40s"]


def test_ridge_point() -> None:
    # 779e12 / 2415.4e9 = 322.5 FLOP/B on the measured H100.
    assert get_gpu("h100").ridge_flops_per_byte == pytest.approx(322.5, abs=0.1)
    assert isinstance(get_gpu("h200"), GpuSpec)
