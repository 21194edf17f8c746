#!/usr/bin/env bash
# One GPU call, from the repository root, after gpu_prepare.sh:
#   bash benchmarks/gpu_run.sh [OUT_DIR [PYTEST_ARGS...]]   (OUT_DIR default: $OUT, else reports/gpu)
# Installs the carried wheels and measures the `gpu` profile on the GPU, most wanted cells first (its
# tiers), under a deadline: step time on same-shaped synthetic 300x300 batches made there (timing does
# not depend on pixel values), accuracy on the carried real 64x64 images. Writes OUT_DIR/gpu-<profile>.json,
# its log and the run folder (runs.tgz); copy the JSON to reports/published/ to publish.
# A second call resumes the same run (same run id, finished configurations kept) when the first call's
# runs.tgz is put at .carry/runs.tgz.
# XF_PROFILE, XF_DEVICES, XF_IMPLS and XF_DEADLINE override the profile (default gpu), devices (gpu),
# impls (default: every registered one; those whose framework the image lacks are skipped, with the
# reason) and the deadline in seconds (default 450: no cell starts that would not end by then).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-reports/gpu}}
shift $(( $# > 0 ? 1 : 0 ))
profile=${XF_PROFILE:-gpu}
mkdir -p "$out"
site=$(mktemp -d /tmp/xf-site.XXXX)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
[ -f .carry/hoh-64.npz ] || { echo "gpu_run: .carry/hoh-64.npz is missing; run benchmarks/gpu_prepare.sh first" >&2; exit 2; }
home=$(mktemp -d /tmp/xf-home.XXXX)
if [ -f .carry/runs.tgz ]; then tar -C "$home" -xzf .carry/runs.tgz && echo "gpu_run: resuming from .carry/runs.tgz"; fi
nvidia-smi -L 2>/dev/null || echo "gpu_run: nvidia-smi sees no GPU"
set +e
# only our two plugins: xfbench is not pip-installed there, and the image's other plugins stay out
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 timeout "${XF_TIMEOUT:-570}" \
  python3 -m pytest -p pytest_benchmark.plugin -p benchmarks.plugin benchmarks/test_matrix.py --benchmark-only -q \
  --xf-profile="$profile" --xf-devices="${XF_DEVICES:-gpu}" ${XF_IMPLS:+--xf-impls="$XF_IMPLS"} \
  --xf-deadline="${XF_DEADLINE:-450}" \
  --xf-source=archive --xf-data-dir=.carry/hoh-64.npz --xf-step-source=synthetic \
  --xf-home="$home" --xf-report="$out/index.html" \
  --benchmark-storage="file://$out/history" --benchmark-json="$out/gpu-$profile.json" "$@" 2>&1 | tee "$out/gpu-$profile.log"
rc=${PIPESTATUS[0]}
set -e
# an interrupted run still leaves its finished cells: keep the run folder beside the JSON
tar -C "$home" -czf "$out/runs.tgz" runs 2>/dev/null || true
echo "gpu_run: pytest exit $rc; results in $out"
exit "$rc"
