"""Peak FLOP/s table: real device-name strings map to the right row, dtype and unit."""

from __future__ import annotations

import pytest
import torch

from scifm.train import hardware
from scifm.train.hardware import PEAKS, find_peak, lookup_peak, mfu, peak_flops

T = 1e12

# (name as torch reports it, table row, bf16 peak, tf32 peak, fp32 peak)
NAMES = [
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM", 989.5 * T, 494.5 * T, 67 * T),
    ("NVIDIA H100 SXM5 64GB", "NVIDIA H100 SXM", 989.5 * T, 494.5 * T, 67 * T),
    ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe", 756.5 * T, 378 * T, 51 * T),
    ("NVIDIA H100 NVL", "NVIDIA H100 NVL", 835.5 * T, 417.5 * T, 60 * T),
    ("NVIDIA H200", "NVIDIA H200", 989.5 * T, 494.5 * T, 67 * T),
    ("NVIDIA H200 NVL", "NVIDIA H200 NVL", 835.5 * T, 417.5 * T, 60 * T),
    ("NVIDIA GH200 480GB", "NVIDIA GH200", 989.5 * T, 494.5 * T, 67 * T),
    ("NVIDIA GH200 144G HBM3e", "NVIDIA GH200", 989.5 * T, 494.5 * T, 67 * T),
    ("NVIDIA A100-SXM4-40GB", "NVIDIA A100", 312 * T, 156 * T, 19.5 * T),
    ("NVIDIA A100-SXM4-80GB", "NVIDIA A100", 312 * T, 156 * T, 19.5 * T),
    ("NVIDIA A100-PCIE-40GB", "NVIDIA A100", 312 * T, 156 * T, 19.5 * T),
    ("NVIDIA A100 80GB PCIe", "NVIDIA A100", 312 * T, 156 * T, 19.5 * T),
    ("NVIDIA B200", "NVIDIA B200", 2250 * T, 1125 * T, 75 * T),
    ("AMD Instinct MI250X", "AMD Instinct MI250X (per GCD)", 191.5 * T, None, 47.85 * T),
    ("AMD Instinct MI250X/MI250", "AMD Instinct MI250X (per GCD)", 191.5 * T, None, 47.85 * T),
    ("AMD Instinct MI300X", "AMD Instinct MI300X", 1307.4 * T, 653.7 * T, 163.4 * T),
    ("AMD Instinct MI300X VF", "AMD Instinct MI300X", 1307.4 * T, 653.7 * T, 163.4 * T),
]
UNKNOWN = [
    "NVIDIA GeForce RTX 4090",
    "Tesla V100-SXM2-16GB",
    "NVIDIA GB200",
    "AMD Instinct MI210",
    "Intel(R) Data Center GPU Max 1100",
    "NVIDIA L40S",
    "cpu",
    "",
]


@pytest.mark.parametrize(("name", "row", "bf16", "tf32", "fp32"), NAMES)
def test_device_names_map_to_their_row(name, row, bf16, tf32, fp32) -> None:
    peak = find_peak(name)
    assert peak is not None and peak.device == row
    assert lookup_peak(name, torch.bfloat16) == pytest.approx(bf16)
    assert lookup_peak(name, torch.float16) == pytest.approx(bf16)  # same rate everywhere here
    assert lookup_peak(name, torch.float32) == pytest.approx(fp32)
    assert lookup_peak(name, torch.float32, tf32=True) == pytest.approx(tf32 or fp32)
    assert lookup_peak(name, torch.float64) is None
    assert lookup_peak(name.lower(), torch.bfloat16) == pytest.approx(bf16)


@pytest.mark.parametrize("name", UNKNOWN)
def test_unlisted_devices_have_no_peak(name) -> None:
    assert find_peak(name) is None and lookup_peak(name, torch.bfloat16) is None


def test_every_row_is_dense_and_ordered_sensibly() -> None:
    for row in PEAKS:
        assert row.fp32 < row.bf16 and (row.tf32 is None or row.fp32 < row.tf32 < row.bf16)
        assert find_peak(row.device) is row, f"{row.device} is shadowed by an earlier row"


MAX_1550 = "Intel(R) Data Center GPU Max 1550"


def test_intel_max_1550_is_per_package_scaled_to_the_device(monkeypatch) -> None:
    package = 838.9 * T
    # COMPOSITE: torch sees the whole package (2 stacks x 512 EUs on a full part)
    assert lookup_peak(MAX_1550, torch.bfloat16, eu_count=1024) == pytest.approx(package)
    # FLAT (Aurora's default, one rank per stack): one stack; Aurora's parts have 448 EUs on
    assert lookup_peak(MAX_1550, torch.bfloat16, eu_count=512) == pytest.approx(package / 2)
    aurora_stack = lookup_peak(MAX_1550, torch.bfloat16, eu_count=448)
    assert aurora_stack == pytest.approx(package * 448 / 1024)
    stack_tf32 = lookup_peak(MAX_1550, torch.float32, tf32=True, eu_count=512)
    assert stack_tf32 == pytest.approx(419.4 * T / 2)
    # no EU count: the Level Zero hierarchy decides, FLAT by default
    monkeypatch.delenv("ZE_FLAT_DEVICE_HIERARCHY", raising=False)
    assert lookup_peak(MAX_1550, torch.bfloat16) == pytest.approx(package / 2)
    monkeypatch.setenv("ZE_FLAT_DEVICE_HIERARCHY", "COMPOSITE")
    assert lookup_peak(MAX_1550, torch.bfloat16) == pytest.approx(package)


def test_peak_flops_reads_the_device_and_matmul_precision(monkeypatch) -> None:
    assert peak_flops(torch.device("cpu"), torch.bfloat16) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    cuda = torch.device("cuda", 0)
    assert peak_flops(cuda, torch.bfloat16) == pytest.approx(756.5 * T)
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert peak_flops(cuda, torch.float32) == pytest.approx(51 * T)
        torch.set_float32_matmul_precision("high")
        assert peak_flops(cuda, torch.float32) == pytest.approx(378 * T)
    finally:
        torch.set_float32_matmul_precision(previous)
    monkeypatch.setattr(torch.xpu, "get_device_name", lambda device=None: MAX_1550)
    monkeypatch.setattr(hardware, "_xpu_eu_count", lambda device: 448)
    aurora_stack = peak_flops(torch.device("xpu", 0), torch.bfloat16)
    assert aurora_stack == pytest.approx(838.9 * T * 448 / 1024)


def test_mfu() -> None:
    assert mfu(400 * T, 800 * T) == pytest.approx(0.5)
    assert mfu(8 * 400 * T, 800 * T, num_devices=8) == pytest.approx(0.5)
    assert mfu(1e9, None) is None and mfu(1e9, 0.0) is None
