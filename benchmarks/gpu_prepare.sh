#!/usr/bin/env bash
# Prepare, on a machine with pip access, what benchmarks/gpu_run.sh carries to an offline GPU box:
#   .whl/   wheels for what its image lacks (keras and the two packages keras needs beyond it)
#   .carry/ the real images as a compact archive (64x64 uint8, compressed, fingerprinted)
# Usage: bash benchmarks/gpu_prepare.sh [PYTHON_VERSION]   (default 3.12, the GPU image's Python)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-3.12}
# the GPU image has jax, flax, optax, jinja2, psutil, rich, h5py, absl-py, ml-dtypes, pytest-benchmark,
# matplotlib; not keras, tensorflow or tfds. keras-tf cells are skipped there (no TensorFlow).
wheels=(keras==3.15.1 namex==0.1.0 optree==0.20.0)
rm -rf .whl && mkdir -p .whl .carry
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${wheels[@]}"
data_dir=${XFBENCH_DATA_DIR:-../shared/datasets/horse-or-human}
xfbench data --source folder --data-dir "$data_dir" --image-size 64 --export .carry/hoh-64.npz --json >/dev/null
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
grep -qxF '/.carry/' .git/info/exclude 2>/dev/null || echo '/.carry/' >>.git/info/exclude
du -sh .whl .carry
