#!/usr/bin/env bash
# Install wildedge in ./.venv, pull the default detector, and run it over a folder of photos.
# Usage: bash scripts/quickstart.sh PHOTOS_DIR [RESULTS.json] [yolox_nano.onnx]
# Offline, give the third argument: a copy of the published YOLOX-Nano file fetched by other means
# (its URL is in edge/data/models.toml); it is checked against the pinned sha256 and used by name.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 3 ]; then
  echo "usage: bash scripts/quickstart.sh PHOTOS_DIR [RESULTS.json] [yolox_nano.onnx]" >&2
  exit 2
fi
photos=$1
results=${2:-results.json}
local_model=${3:-}
here="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-python3}
# --system-site-packages lets a Raspberry Pi use the apt-installed picamera2.
[ -x "$here/.venv/bin/wildedge" ] || {
  "$PYTHON" -m venv --system-site-packages "$here/.venv"
  "$here/.venv/bin/python" -m pip install -q --disable-pip-version-check "$here"
}
if [ -n "$local_model" ]; then
  "$here/.venv/bin/wildedge" model pull yolox-nano --from "$local_model"
else
  "$here/.venv/bin/wildedge" model pull yolox-nano
fi
"$here/.venv/bin/wildedge" detect "$photos" -m yolox-nano -o "$results"
