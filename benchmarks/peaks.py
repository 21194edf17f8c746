"""Datasheet peak rates, the second denominator of MFU beside the measured matmul rate.

Dense figures: NVIDIA's datasheets give the Tensor Core rates with 2:4 sparsity, twice the dense
ones, which no cell here uses; the dense rate is half the datasheet's starred figure.
"""

from __future__ import annotations

H100_SXM = "https://www.nvidia.com/en-us/data-center/h100/ (H100 SXM)"
H200 = "https://www.nvidia.com/en-us/data-center/h200/ (H200 SXM)"
# device -> (what device names contain, {rated precision: dense FLOP/s}, source)
DATASHEET = {
    "H200": (("H200",), {"float32": 67e12, "tf32": 989e12 / 2, "bf16": 1979e12 / 2}, H200),
    "H100 SXM": (("H100 80GB HBM3", "H100 SXM"), {"float32": 67e12, "tf32": 989e12 / 2, "bf16": 1979e12 / 2},
                 H100_SXM),
}


def rated_precision(device: str, precision: str) -> str:
    """What a cell's matmuls run at: bf16 as asked; float32 at the frameworks' default precision, which
    is TF32 on NVIDIA GPUs since Ampere (JAX's DEFAULT, TensorFlow's enabled TF32) and full float32 on
    a CPU."""
    if precision == "bf16":
        return "bf16"
    return "float32" if device == "cpu" else "tf32"


def datasheet_peak(device_name: str, rated: str) -> tuple[float, str] | None:
    """(dense FLOP/s, source) of the device at `rated` precision, for the devices listed; else None."""
    for names, peaks, source in DATASHEET.values():
        if any(n in device_name for n in names) and rated in peaks:
            return peaks[rated], source
    return None
