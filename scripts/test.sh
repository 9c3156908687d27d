#!/usr/bin/env bash
# Set up a virtualenv with the export, ultralytics, mlflow, collector and test extras and run the whole test suite.
# Run as root on Debian, it also installs the system programs the tests use: mosquitto (MQTT broker), the
# PostgreSQL server (the tests start their own throwaway cluster; the packaged one is not needed), chromium
# (the collector's web page test), systemd-container (the units started under a real systemd in a container) and
# qemu-user-static (an x86 CPU without VNNI, emulated, for the INT8 arithmetic test).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
  command -v chromium >/dev/null || need+=(chromium)
  # systemd-nspawn: tests/test_deploy.py boots a real systemd in a container to start the units.
  command -v systemd-nspawn >/dev/null || need+=(systemd-container)
  # qemu-x86_64 -cpu Haswell: tests/test_cpu_arithmetic.py runs an INT8 file on an x86 without VNNI.
  command -v qemu-x86_64-static >/dev/null || need+=(qemu-user-static)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    # The tests start their own broker on a free port and their own PostgreSQL on a Unix socket in a temp
    # folder; the packaged services are not needed (without systemd these lines do nothing, which is fine).
    systemctl disable --now mosquitto >/dev/null 2>&1 || true
    if [[ " ${need[*]} " == *" postgresql "* ]]; then
      systemctl disable --now postgresql >/dev/null 2>&1 || true
      if command -v pg_lsclusters >/dev/null; then  # started by the package's postinst without systemd
        pg_lsclusters --no-header 2>/dev/null | while read -r version cluster _; do
          pg_ctlcluster "$version" "$cluster" stop >/dev/null 2>&1 || true
        done || true
      fi
    fi
  fi
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[export,ultralytics,mlflow,collector,test]'
# The megadetector package checks our MegaDetector files with its own validator; its full dependency set
# downloads at build time, so it comes without dependencies (what its validator imports is in the test extra).
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps 'megadetector>=10'
exec .venv/bin/python -m pytest "$@"
