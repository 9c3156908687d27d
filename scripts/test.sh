#!/usr/bin/env bash
# Set up a virtualenv with the export, ultralytics, mlflow, collector and test extras and run the whole test suite.
# Run as root on Debian, it also installs the system services the tests use (mosquitto).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    # The tests start their own broker on a free port; the packaged service is not needed.
    systemctl disable --now mosquitto >/dev/null 2>&1 || true
  fi
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[export,ultralytics,mlflow,collector,test]'
exec .venv/bin/python -m pytest "$@"
