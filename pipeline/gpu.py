"""The GPU a benchmark ran on, for its record and its roofline: `gpu_info()` asks `nvidia-smi` (name, driver,
memory) and the driver library (its CUDA version); `gpu_peak_gflops(name, precision)` is that GPU's dense peak
for a precision, from NVIDIA's data sheets, so a GPU cell's share of peak is of the GPU, never of the CPU.
"""

from __future__ import annotations

import shutil
import subprocess

__all__ = ["gpu_info", "gpu_peak_gflops"]

# Dense (no structured sparsity) tensor-core peaks in GFLOP/s (int8: GOP/s), from NVIDIA's data sheets. fp32 is
# the TF32 rate: cuDNN and cuBLAS run fp32 convolutions and matmuls as TF32 on these chips unless told not to
# (onnxruntime's CUDA provider: use_tf32), so it is the bound an fp32 cell can reach. First match in order wins.
_PEAKS = (
    ("H200", {"fp32": 494_700, "fp16": 989_400, "int8": 1_978_900}),
    ("H100 PCIe", {"fp32": 378_000, "fp16": 756_000, "int8": 1_513_000}),
    ("H100", {"fp32": 494_700, "fp16": 989_400, "int8": 1_978_900}),
    ("A100", {"fp32": 156_000, "fp16": 312_000, "int8": 624_000}),
    ("L40S", {"fp32": 183_000, "fp16": 362_000, "int8": 733_000}),
    ("L4", {"fp32": 60_000, "fp16": 121_000, "int8": 242_000}),
    ("A10", {"fp32": 62_500, "fp16": 125_000, "int8": 250_000}),
    ("T4", {"fp32": 8_100, "fp16": 65_000, "int8": 130_000}),  # Turing: no TF32, fp32 on CUDA cores
)


def gpu_peak_gflops(name: str | None, precision: str) -> float | None:
    """The dense peak of the GPU called `name` (as nvidia-smi or torch name it) for `precision` (fp32, fp16,
    int8; int8-dynamic counts as int8), or None for a GPU not in the table (pass the figure to bench instead)."""
    if not name:
        return None
    kind = "int8" if precision.startswith("int8") else precision
    for key, peaks in _PEAKS:
        if key.lower() in name.lower():
            return float(peaks[kind]) if kind in peaks else None
    return None


def gpu_info() -> dict | None:
    """{"name", "driver", "memory_mib", "cuda_driver"} of the first NVIDIA GPU, or None where `nvidia-smi` is
    missing or answers nothing (no GPU, no driver)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        return None
    fields = [field.strip() for field in lines[0].split(",")]
    if len(fields) != 3:
        return None
    from edgepipe.runtime.providers import library_versions

    memory = int(fields[2]) if fields[2].isdigit() else None
    return {"name": fields[0], "driver": fields[1], "memory_mib": memory, "count": len(lines),
            "cuda_driver": library_versions()["cuda_driver"]}
