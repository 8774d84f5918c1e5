#!/usr/bin/env bash
# The GPU check on a machine with an NVIDIA GPU and torch: unpacks what scripts/gpu-bundle.sh packed into
# .gpu/ (when present), sets up headless EGL rendering, and runs scripts/gpu_check.py, writing
# gpu-check.json and gpu-check.md to $OUT (or ./gpu-check). Extra arguments go to gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
if [ -d .gpu/gl ] && ls .gpu/gl/*.deb >/dev/null 2>&1; then
  for f in .gpu/gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if [ -f .gpu/site.tar.gz ]; then
  mkdir -p /tmp/gpu-site && tar -C /tmp/gpu-site -xzf .gpu/site.tar.gz
  export PYTHONPATH=/tmp/gpu-site/site${PYTHONPATH:+:$PYTHONPATH}
fi
export MUJOCO_GL=${MUJOCO_GL:-egl} PYTHONUNBUFFERED=1
vendor=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
[ -f "$vendor" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=${__EGL_VENDOR_LIBRARY_FILENAMES:-$vendor}
exec python3 scripts/gpu_check.py --out "$OUT" "$@"
