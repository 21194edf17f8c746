#!/usr/bin/env bash
# The full profile on one offline GPU machine, from the repository root, after gpu_prepare.sh:
#   bash benchmarks/gpu_run.sh [OUT_DIR [PYTEST_ARGS...]]   (OUT_DIR default: $OUT, else reports/gpu)
# Installs the carried wheels, measures every cell on the GPU -- step time on same-shaped synthetic
# 300x300 batches made there (timing does not depend on pixel values), accuracy on the carried real
# 64x64 archive -- and writes OUT_DIR/gpu-<profile>.json; copy it to reports/published/ to publish.
# XF_PROFILE, XF_DEVICES and XF_IMPLS override the profile (default full), devices (gpu) and impls
# (default: every registered one; those whose framework the image lacks are skipped, with the reason).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-reports/gpu}}
shift $(( $# > 0 ? 1 : 0 ))
profile=${XF_PROFILE:-full}
mkdir -p "$out"
site=$(mktemp -d /tmp/xf-site.XXXX)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
[ -f .carry/hoh-64.npz ] || { echo "gpu_run: .carry/hoh-64.npz is missing; run benchmarks/gpu_prepare.sh first" >&2; exit 2; }
nvidia-smi -L 2>/dev/null || echo "gpu_run: nvidia-smi sees no GPU"
set +e
# only our two plugins: xfbench is not pip-installed there, and the image's other plugins stay out
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 timeout "${XF_TIMEOUT:-570}" \
  python3 -m pytest -p pytest_benchmark.plugin -p benchmarks.plugin benchmarks/test_matrix.py --benchmark-only -q \
  --xf-profile="$profile" --xf-devices="${XF_DEVICES:-gpu}" ${XF_IMPLS:+--xf-impls="$XF_IMPLS"} \
  --xf-source=archive --xf-data-dir=.carry/hoh-64.npz --xf-step-source=synthetic \
  --xf-home=/tmp/xf-home --xf-report="$out/index.html" \
  --benchmark-storage="file://$out/history" --benchmark-json="$out/gpu-$profile.json" "$@" 2>&1 | tee "$out/gpu-$profile.log"
rc=${PIPESTATUS[0]}
set -e
# an interrupted run still leaves its finished cells: keep the run folder beside the JSON
tar -C /tmp/xf-home -czf "$out/runs.tgz" runs 2>/dev/null || true
echo "gpu_run: pytest exit $rc; results in $out"
exit "$rc"
