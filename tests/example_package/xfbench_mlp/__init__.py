"""An xfbench workload from an installed package: a two-layer MLP on the Horses or Humans images.

`WORKLOAD` is what the `xfbench.workloads` entry point in this package's pyproject.toml names:
its spec (`MLPSpec`: weight layout and FLOPs), and its implementation for each registered
framework name. xfbench adds this package's name, version and code to the reuse keys of its cells.
"""

from benchmarks.workloads import Workload
from xfbench_mlp.spec import MLPSpec

WORKLOAD = Workload(
    "mlp", "A two-layer MLP (example package)", MLPSpec, lambda size, stride: MLPSpec(size),
    impls={"flax": "xfbench_mlp.flax_impl:FlaxMLPImpl", "keras-jax": "xfbench_mlp.keras_impl:KerasMLPImpl",
           "keras-tf": "xfbench_mlp.keras_impl:KerasMLPImpl"},
    precisions=("float32",),
    description="flatten, dense 64 (He-normal), ReLU, dense 2 (LeCun-normal), zero biases")
