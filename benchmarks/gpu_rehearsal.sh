#!/usr/bin/env bash
# The GPU run rehearsed on this machine's CPU, in an environment like the GPU image's, so that a change
# which breaks the GPU path fails here (`.ci/run` runs this) and not on the device:
#   1. a Python 3.12 venv with what the image has: jax and jaxlib 0.11.2 (CPU), numpy 2.5, its flax and
#      optax (whatever pip picks: the image's are unknown), pytest, pytest-benchmark, matplotlib, jinja2,
#      psutil and keras's other needs; no TensorFlow, no TFDS;
#   2. a copy of the working tree as it travels to the device, prepared by benchmarks/gpu_prepare.sh
#      (the carried wheels, the embedded 64 px images as .carry/hoh-64.npz);
#   3. benchmarks/gpu_run.sh, unchanged, on the CPU (XF_DEVICES=cpu) with the tiny `rehearsal` profile;
#   4. benchmarks/gpu_rehearsal.py checks what it wrote.
# Usage: bash benchmarks/gpu_rehearsal.sh [WORK_DIR]   (default: a new folder under /tmp; needs pip access)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "[rehearsal $(date +%T)] $*"; }
py=""  # the first candidate that runs as 3.12 (a pyenv shim on PATH may not)
for candidate in "$(command -v python3.12 || true)" $(ls -d "$HOME"/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | sort -rV); do
  if [ -n "$candidate" ] && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
    py=$candidate; break
  fi
done
if [ -z "$py" ]; then
  echo "gpu_rehearsal: no Python 3.12 (the GPU image's): looked for python3.12 on PATH and under" \
       "$HOME/.pyenv/versions/3.12*; install one (e.g. pyenv install 3.12) and run again" >&2
  exit 2
fi
work=$(realpath "${1:-$(mktemp -d /tmp/xf-rehearsal.XXXX)}")
mkdir -p "$work"
say "Python $("$py" -c 'import platform; print(platform.python_version())') ($py); work folder $work"

say "the image: jax/jaxlib 0.11.2 (CPU), numpy 2.5 and the image's other packages"
rm -rf "$work/image"
"$py" -m venv "$work/image"
"$work/image/bin/python" -m pip install -q --disable-pip-version-check jax==0.11.2 jaxlib==0.11.2 "numpy==2.5.*" \
  flax optax pytest pytest-benchmark matplotlib jinja2 psutil rich h5py absl-py ml-dtypes
if "$work/image/bin/python" -c 'import tensorflow' 2>/dev/null || "$work/image/bin/python" -c 'import tensorflow_datasets' 2>/dev/null; then
  echo "gpu_rehearsal: TensorFlow or TFDS got into the image venv; the GPU image has neither" >&2
  exit 1
fi

say "the working tree as it travels (tracked and untracked, not ignored), prepared"
rm -rf "$work/tree" "$work/out" && mkdir -p "$work/tree"
git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -cf - -T - | tar -xf - -C "$work/tree"
(cd "$work/tree" && bash benchmarks/gpu_prepare.sh)

say "benchmarks/gpu_run.sh, unchanged, on the CPU"
set +e
(cd "$work/tree" && PATH="$work/image/bin:$PATH" XF_PROFILE=rehearsal XF_DEVICES=cpu XF_TIMEOUT=480 \
  bash benchmarks/gpu_run.sh "$work/out")
rc=$?
set -e
[ "$rc" -eq 0 ] || { echo "gpu_rehearsal: gpu_run.sh exited $rc (log: $work/out/gpu-rehearsal.log)" >&2; exit 1; }

say "checking what it wrote"
(cd "$work/tree" && PYTHONPATH="$work/tree" "$work/image/bin/python" -m benchmarks.gpu_rehearsal \
  "$work/out/gpu-rehearsal.json" .whl "$work/out/merged.html")
say "passed"
