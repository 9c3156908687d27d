#!/usr/bin/env bash
# Install wildedge in ./.venv, pull the default detector, and run it over a folder of photos.
# Usage: bash scripts/quickstart.sh PHOTOS_DIR [RESULTS.json]
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: bash scripts/quickstart.sh PHOTOS_DIR [RESULTS.json]" >&2
  exit 2
fi
photos=$1
results=${2:-results.json}
here="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-python3}
# --system-site-packages lets a Raspberry Pi use the apt-installed picamera2.
[ -x "$here/.venv/bin/wildedge" ] || {
  "$PYTHON" -m venv --system-site-packages "$here/.venv"
  "$here/.venv/bin/python" -m pip install -q --disable-pip-version-check "$here"
}
"$here/.venv/bin/wildedge" model pull yolox-nano
"$here/.venv/bin/wildedge" detect "$photos" -m yolox-nano -o "$results"
