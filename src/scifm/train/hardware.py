"""Peak dense FLOP/s of the accelerators scifm runs on, and model FLOPs utilisation (MFU).

MFU = achieved model FLOP/s / (peak FLOP/s of one device x devices). The achieved figure
comes from `scifm.model.flops_per_token` (6N + attention, no recomputation counted), the
peak from the vendor's datasheet for the dtype the matmuls run in. Every figure below is
the DENSE rate: NVIDIA and AMD print the tensor-core rate "with sparsity" (2:4 structured
sparsity, twice the dense rate) in their headline tables; those are halved here and the
comment on each row says which printed number it comes from.

Devices are recognised from the name torch reports (`torch.cuda.get_device_name`, which is
also what ROCm builds answer for AMD GPUs; `torch.xpu.get_device_name` for Intel). An
unknown device, or the CPU, has no peak: the trainer then reports achieved FLOP/s only.

dtype -> column: bfloat16 and float16 read `bf16` (the same rate on every device here);
float32 reads `tf32` when torch lets float32 matmuls use TF32 / XF32 (matmul precision
"high" or "medium"), else `fp32` (the non-tensor-core vector rate on NVIDIA and Intel, the
FP32 matrix-core rate on AMD, which runs float32 GEMMs on its matrix cores).

Per what unit:

- AMD MI250X is two dies (GCDs) in one package and ROCm shows each GCD as its own torch
  device, so the row holds the per-GCD figure (half the package figure AMD prints).
- Intel Data Center GPU Max 1550 (Aurora) is two stacks (tiles) in one package. Intel's
  figures are per package (128 Xe cores, 1024 vector/matrix engines at 1.6 GHz). Level
  Zero shows each stack as its own device by default (ZE_FLAT_DEVICE_HIERARCHY=FLAT, the
  usual Aurora setting with 12 ranks per node) and the whole package with COMPOSITE, yet
  `torch.xpu.get_device_name` reads "Intel(R) Data Center GPU Max 1550" either way. The
  device's EU count (`torch.xpu.get_device_properties().gpu_eu_count`: 512 per stack on a
  full part, 448 active per stack on Aurora's parts, twice that in COMPOSITE mode) tells
  them apart, so the package figure is scaled by eu_count / 1024. Without the count the
  FLAT default (one stack, half the package) is assumed unless ZE_FLAT_DEVICE_HIERARCHY
  says COMPOSITE.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

TERA = 1e12


@dataclass(frozen=True)
class Peak:
    """Dense peak FLOP/s of one torch device, per matmul dtype (None: not supported)."""

    device: str
    pattern: str
    bf16: float
    tf32: float | None
    fp32: float
    full_eu_count: int | None = None
    """Intel only: EUs of the part the figures are for; the device's own count scales them."""


# First match wins: variants (PCIe, NVL, GH200, MI250X) come before the names they contain.
PEAKS: tuple[Peak, ...] = (
    # NVIDIA H100 datasheet (nvidia.com/en-us/data-center/h100): H100 NVL, "BF16 Tensor Core
    # 1,671 TFLOPS*", "TF32 835 TFLOPS*" (* with sparsity), FP32 60 TFLOPS.
    Peak("NVIDIA H100 NVL", r"\bH100\b.*\bNVL\b", 835.5 * TERA, 417.5 * TERA, 60 * TERA),
    # Same datasheet, H100 PCIe: BF16 1,513 TFLOPS*, TF32 756 TFLOPS*, FP32 51 TFLOPS.
    Peak("NVIDIA H100 PCIe", r"\bH100\b.*\bPCIe\b", 756.5 * TERA, 378 * TERA, 51 * TERA),
    # Same datasheet, H100 SXM: BF16 1,979 TFLOPS*, TF32 989 TFLOPS*, FP32 67 TFLOPS.
    # torch reads "NVIDIA H100 80GB HBM3" (also "NVIDIA H100 SXM5 ..." on some systems).
    Peak("NVIDIA H100 SXM", r"\bH100\b", 989.5 * TERA, 494.5 * TERA, 67 * TERA),
    # NVIDIA GH200 Grace Hopper Superchip datasheet: the Hopper GPU's FP16/BF16 1,979
    # TFLOPS*, TF32 989 TFLOPS*, FP32 67 TFLOPS (the same GPU as H100 SXM).
    Peak("NVIDIA GH200", r"\bGH200\b", 989.5 * TERA, 494.5 * TERA, 67 * TERA),
    # NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200): H200 NVL, BF16 1,671
    # TFLOPS*, TF32 835 TFLOPS*, FP32 60 TFLOPS.
    Peak("NVIDIA H200 NVL", r"\bH200\b.*\bNVL\b", 835.5 * TERA, 417.5 * TERA, 60 * TERA),
    # Same datasheet, H200 SXM: BF16 1,979 TFLOPS*, TF32 989 TFLOPS*, FP32 67 TFLOPS.
    Peak("NVIDIA H200", r"\bH200\b", 989.5 * TERA, 494.5 * TERA, 67 * TERA),
    # NVIDIA A100 datasheet: BF16 312 TFLOPS (624 with sparsity), TF32 156 TFLOPS (312),
    # FP32 19.5 TFLOPS; the same for SXM4 (Polaris: "NVIDIA A100-SXM4-40GB") and PCIe.
    Peak("NVIDIA A100", r"\bA100\b", 312 * TERA, 156 * TERA, 19.5 * TERA),
    # NVIDIA HGX B200 specifications (8 GPUs, tensor rows with sparsity): FP16/BF16 36
    # PFLOPS, TF32 18 PFLOPS, FP32 600 TFLOPS -> per GPU dense 2.25 PF, 1.125 PF, 75 TF.
    Peak("NVIDIA B200", r"\bB200\b", 2250 * TERA, 1125 * TERA, 75 * TERA),
    # AMD Instinct MI250X datasheet (per OAM package, two GCDs, dense: AMD lists no sparse
    # rate for CDNA2): FP16/BF16 383 TFLOPS, FP32 matrix 95.7 TFLOPS; no TF32. Per GCD: half.
    Peak("AMD Instinct MI250X (per GCD)", r"\bMI250X\b", 191.5 * TERA, None, 47.85 * TERA),
    # AMD Instinct MI300X datasheet: BF16 1,307.4 TFLOPS (2,614.9 with sparsity), TF32
    # 653.7 TFLOPS (1,307.4), FP32 matrix 163.4 TFLOPS. "AMD Instinct MI300X VF" when virtual.
    Peak("AMD Instinct MI300X", r"\bMI300X\b", 1307.4 * TERA, 653.7 * TERA, 163.4 * TERA),
    # Intel Data Center GPU Max 1550 product brief (per package, 2 stacks, no sparsity):
    # BF16 XMX 838.9 TFLOPS (1024 matrix engines x 512 FLOP/clock x 1.6 GHz), TF32 XMX 419.4
    # TFLOPS, FP32 vector 52.4 TFLOPS. Scaled to the device's EUs (module docstring).
    Peak(
        "Intel Data Center GPU Max 1550",
        r"\bMax 1550\b",
        838.9 * TERA,
        419.4 * TERA,
        52.4 * TERA,
        full_eu_count=1024,
    ),
)


def find_peak(device_name: str) -> Peak | None:
    """The table row for a device name as torch reports it; None when it is not listed."""
    for row in PEAKS:
        if re.search(row.pattern, device_name, flags=re.IGNORECASE):
            return row
    return None


def _column(peak: Peak, dtype: torch.dtype, tf32: bool) -> float | None:
    if dtype in (torch.bfloat16, torch.float16):
        return peak.bf16
    if dtype == torch.float32:
        return peak.tf32 if tf32 and peak.tf32 is not None else peak.fp32
    return None


def lookup_peak(
    device_name: str, dtype: torch.dtype, *, tf32: bool = False, eu_count: int | None = None
) -> float | None:
    """Peak dense FLOP/s of one device named `device_name`, computing in `dtype`.

    `tf32`: float32 matmuls may use TF32 / XF32 tensor cores. `eu_count`: the device's EUs
    (Intel only: one stack or a whole package, see the module docstring).
    """
    peak = find_peak(device_name)
    if peak is None:
        return None
    value = _column(peak, dtype, tf32)
    if value is None or peak.full_eu_count is None:
        return value
    if eu_count is None:
        composite = os.environ.get("ZE_FLAT_DEVICE_HIERARCHY", "FLAT").upper() == "COMPOSITE"
        eu_count = peak.full_eu_count if composite else peak.full_eu_count // 2
    return value * eu_count / peak.full_eu_count


def device_name(device: torch.device) -> str | None:
    """What torch calls an accelerator (None for the CPU and unknown kinds)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "xpu":
        return torch.xpu.get_device_name(device)
    return None


def _xpu_eu_count(device: torch.device) -> int | None:
    count = getattr(torch.xpu.get_device_properties(device), "gpu_eu_count", None)
    return int(count) if count else None


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Peak dense FLOP/s of `device` for matmuls in `dtype`; None on CPU or unknown devices."""
    name = device_name(device)
    if name is None:
        return None
    tf32 = torch.get_float32_matmul_precision() != "highest"
    eu_count = _xpu_eu_count(device) if device.type == "xpu" else None
    return lookup_peak(name, dtype, tf32=tf32, eu_count=eu_count)


def mfu(achieved_flops_per_s: float, peak: float | None, num_devices: int = 1) -> float | None:
    """Model FLOPs utilisation in [0, 1]: achieved FLOP/s over `num_devices` x `peak`.

    `achieved_flops_per_s` is the job's total (all ranks) when `num_devices` is the world
    size, or one device's share with num_devices=1. None when the peak is unknown.
    """
    if peak is None or peak <= 0 or num_devices <= 0:
        return None
    return achieved_flops_per_s / (peak * num_devices)
