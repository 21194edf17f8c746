#!/usr/bin/env bash
# Prepare, on a machine with pip access, what benchmarks/gpu_run.sh carries to an offline GPU box:
#   .whl/   wheels for what its image lacks or has in another version: keras and the two packages it
#           needs beyond the image, and flax and optax (pure Python) at known versions, so that only
#           jax, jaxlib and numpy come from the image. optax is the project's pin; flax is not: the
#           pin (0.12.8, the last for Python 3.11) fails on the image's jax 0.11.2 (flax-nnx: jax's
#           hijax API moved; the rehearsal showed it), so the GPU carries flax 0.12.12, which needs
#           Python 3.12 and jax >= 0.11.1
#   .carry/ the real images at 64 px: the repository's embedded copy (byte-exact, fingerprinted)
# Usage: bash benchmarks/gpu_prepare.sh [PYTHON_VERSION]   (default 3.12, the GPU image's Python)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-3.12}
# the GPU image has jax, flax, optax, jinja2, psutil, rich, h5py, absl-py, ml-dtypes, pytest-benchmark,
# matplotlib; not keras, tensorflow or tfds. keras-tf cells are skipped there (no TensorFlow).
wheels=(keras==3.15.1 namex==0.1.0 optree==0.20.0 flax==0.12.12 optax==0.2.8)
rm -rf .whl .carry && mkdir -p .whl .carry
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${wheels[@]}"
cp shared_data/embedded/horses_or_humans-64px.npz .carry/hoh-64.npz
if exclude=$(git rev-parse --git-path info/exclude 2>/dev/null); then  # a checkout: keep both out of git
  for ignored in /.whl/ /.carry/; do
    grep -qxF "$ignored" "$exclude" 2>/dev/null || echo "$ignored" >>"$exclude"
  done
fi
du -sh .whl .carry
