#!/usr/bin/env bash
# The device check (issue 14, item 3): run detectors on the device's CPU -- a Debian bookworm arm64 root
# under qemu-user, a Pi 4 CPU by default -- and compare with this machine. Not part of the test suite.
#
# The root is built once with debootstrap (foreign stage, then the second stage through binfmt_misc +
# qemu-aarch64-static) and cached in --root. Each run installs wildedge from this checkout (a wheel built
# from the working tree) with aarch64 wheels of its device dependencies from PyPI, pinned to the host
# venv's versions, runs the models on the same photos on both CPUs (scripts/arm64_eval.py detect: the
# device pipeline at the mAP threshold, as `wildedge export verify` runs it), and scores both on the host
# with the project's evaluator. The device side needs no torch or pycocotools: it only does inference.
# Nothing is mounted into the root (no /proc, /sys or bind mounts); files are copied in and out.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/arm64_check.sh --photos DIR [options] MODEL.onnx [MODEL.onnx ...]

Run stamped ONNX models on this machine and in a Debian bookworm arm64 root under qemu-user, score both
on labelled photos, print mAP@0.5 host vs arm64 and the share of host detections (score > 0.3) that an
arm64 box of the same class matches at IoU > 0.9, and write a JSON report. Needs root (debootstrap,
chroot, binfmt_misc) and network access to the Debian mirror and PyPI on the first run.

  --photos DIR        labelled photos: a set folder with images/ and labels_coco_json/*.json (or
                      labels_yolo/), e.g. ../shared/assets/voc2007_labeled, or a folder of photos
                      with --labels
  --labels PATH       ground truth: COCO json, or YOLO labels folder with its class names file
  --limit N           only the first N photos (sorted by name); default: all
  --class-map MAP     label renaming for scoring: voc2coco (default), none, or a JSON file
  --root DIR          the arm64 root, built on first use (default ~/.cache/wildedge/arm64-root)
  --cpu NAME          QEMU_CPU for the runs (default cortex-a72, the Pi 4's; cortex-a76: Pi 5)
  --threads N         onnxruntime threads on both sides (default 2)
  --out FILE          JSON report (default ~/.cache/wildedge/arm64-check-report.json); the raw
                      detections of both sides go beside it (FILE minus .json + .host-detections.json
                      and .arm64-detections.json)
  --mirror URL        Debian mirror (default http://deb.debian.org/debian)
  --host-python PY    Python with this checkout and pycocotools (default .venv/bin/python)
  --rebuild           delete and rebuild the root (only a root this script built)
  --no-install        never apt-get install the missing tools; fail instead
  --no-pixels         skip the preprocessing hashes (tests/golden/preprocess_sha256.json, computed
                      in the root from the shared assets, $WILDEDGE_ASSETS or ../shared/assets)
  -h, --help          this text

Exit status: 0 done, 1 a step failed, 2 usage or environment error (not root, tools missing,
binfmt_misc unavailable).
EOF
}

die() { printf 'arm64_check: %s\n' "$1" >&2; exit "${2:-2}"; }
say() { printf 'arm64_check: %s\n' "$*" >&2; }

HERE=${BASH_SOURCE[0]%/*}
[[ $HERE == "${BASH_SOURCE[0]}" ]] && HERE=.
REPO=$(cd "$HERE/.." && pwd)
ROOT=${HOME:-/root}/.cache/wildedge/arm64-root
PHOTOS="" LABELS="" LIMIT="" CLASS_MAP=voc2coco CPU=cortex-a72 THREADS=2
OUT=${HOME:-/root}/.cache/wildedge/arm64-check-report.json
MIRROR=http://deb.debian.org/debian
HOST_PY="" REBUILD=0 NO_INSTALL=0 PIXELS=1
MODELS=()
need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --photos) need_value "$@"; PHOTOS=$2; shift 2 ;;
    --labels) need_value "$@"; LABELS=$2; shift 2 ;;
    --limit) need_value "$@"; LIMIT=$2; shift 2 ;;
    --class-map) need_value "$@"; CLASS_MAP=$2; shift 2 ;;
    --root) need_value "$@"; ROOT=$2; shift 2 ;;
    --cpu) need_value "$@"; CPU=$2; shift 2 ;;
    --threads) need_value "$@"; THREADS=$2; shift 2 ;;
    --out) need_value "$@"; OUT=$2; shift 2 ;;
    --mirror) need_value "$@"; MIRROR=$2; shift 2 ;;
    --host-python) need_value "$@"; HOST_PY=$2; shift 2 ;;
    --rebuild) REBUILD=1; shift ;;
    --no-install) NO_INSTALL=1; shift ;;
    --no-pixels) PIXELS=0; shift ;;
    --) shift; MODELS+=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) MODELS+=("$1"); shift ;;
  esac
done

# -- arguments (bash builtins only, so these checks run anywhere) -------------------------------------
[[ ${#MODELS[@]} -gt 0 ]] || die "no model given: scripts/arm64_check.sh --photos DIR MODEL.onnx ... (see --help)"
[[ -n $PHOTOS ]] || die "--photos DIR is required (labelled photos, e.g. ../shared/assets/voc2007_labeled)"
[[ -d $PHOTOS ]] || die "--photos: not a folder: $PHOTOS"
[[ -z $LIMIT || $LIMIT =~ ^[1-9][0-9]*$ ]] || die "--limit must be a positive integer, got '$LIMIT'"
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "--threads must be a positive integer, got '$THREADS'"
declare -A SEEN=()
for m in "${MODELS[@]}"; do
  [[ -f $m ]] || die "model not found: $m"
  b=${m##*/}
  [[ -z ${SEEN[$b]:-} ]] || die "two models named $b: give them different file names"
  SEEN[$b]=1
done
IMAGES=$PHOTOS
if [[ -d $PHOTOS/images ]]; then
  IMAGES=$PHOTOS/images
  if [[ -z $LABELS ]]; then
    shopt -s nullglob
    jsons=("$PHOTOS"/labels_coco_json/*.json)
    shopt -u nullglob
    if [[ ${#jsons[@]} -eq 1 ]]; then LABELS=${jsons[0]}
    elif [[ -d $PHOTOS/labels_yolo ]]; then LABELS=$PHOTOS/labels_yolo
    fi
  fi
fi
[[ -n $LABELS ]] || die "no labels for $PHOTOS: pass --labels (COCO json or YOLO labels folder)"
[[ -e $LABELS ]] || die "--labels: not found: $LABELS"

# -- environment: root, tools, binfmt_misc -------------------------------------------------------------
[[ ${EUID:-$(id -u)} -eq 0 ]] || die "must run as root (debootstrap, chroot and binfmt_misc need it): sudo $0 ..."
NATIVE=0
[[ ${HOSTTYPE:-} == aarch64 ]] && NATIVE=1
missing=()
for tool in debootstrap chroot; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [[ $NATIVE -eq 0 ]]; then
  for tool in qemu-aarch64-static update-binfmts; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
fi
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $NO_INSTALL -eq 1 ]] || ! command -v apt-get >/dev/null 2>&1; then
    die "missing ${missing[*]}: apt-get install qemu-user-static binfmt-support debootstrap"
  fi
  say "installing qemu-user-static binfmt-support debootstrap (missing: ${missing[*]})"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support \
      debootstrap >/dev/null; } || die "apt-get install qemu-user-static binfmt-support debootstrap failed"
fi
if [[ -z $HOST_PY ]]; then
  if [[ -x $REPO/.venv/bin/python ]]; then HOST_PY=$REPO/.venv/bin/python; else HOST_PY=python3; fi
elif [[ $HOST_PY == */* ]]; then
  HOST_PY=$(cd "$(dirname "$HOST_PY")" && pwd)/$(basename "$HOST_PY")  # the script changes folder later
fi
"$HOST_PY" -c 'import edge, export.evaluate, pycocotools' 2>/dev/null \
  || die "$HOST_PY cannot import wildedge and pycocotools: pip install -e '.[export]' (or --host-python)"

BINFMT=/proc/sys/fs/binfmt_misc
if [[ $NATIVE -eq 0 ]]; then
  # A container may start without binfmt_misc mounted; the registration is the kernel's (global to it).
  [[ -e $BINFMT/register ]] || mount -t binfmt_misc binfmt_misc "$BINFMT" 2>/dev/null || true
  if ! grep -qx enabled "$BINFMT/qemu-aarch64" 2>/dev/null; then
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  fi
  grep -qx enabled "$BINFMT/qemu-aarch64" 2>/dev/null || die "binfmt_misc has no qemu-aarch64 entry and \
cannot register one here ($( [[ -e $BINFMT/register ]] && echo "update-binfmts --enable qemu-aarch64 failed" \
|| echo "mount -t binfmt_misc failed: the container needs --privileged" )): chroot cannot run arm64 programs"
fi

# -- the root --------------------------------------------------------------------------------------------
MARK=$ROOT/.wildedge-arm64-root
if [[ $REBUILD -eq 1 && -e $ROOT ]]; then
  [[ -e $MARK || -d $ROOT/debootstrap ]] || die "--rebuild: $ROOT was not built by this script; not deleting it"
  say "deleting $ROOT"
  rm -rf --one-file-system -- "$ROOT"
fi
if [[ $NATIVE -eq 0 ]]; then
  # Without the F flag (binfmt-support before Debian 12) the kernel opens the interpreter inside the chroot.
  if ! grep -q '^flags:.*F' "$BINFMT/qemu-aarch64"; then
    interp=$(sed -n 's/^interpreter //p' "$BINFMT/qemu-aarch64")
    mkdir -p "$ROOT${interp%/*}" && cp -L "$interp" "$ROOT$interp"
  fi
fi
in_root() {  # in_root ENV=VALUE... -- COMMAND...: a clean environment inside the root, QEMU_CPU set
  nice -n 10 chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    QEMU_CPU="$CPU" "$@"
}
T_ROOT=0
if [[ ! -e $MARK ]]; then
  started=$SECONDS
  if [[ -e $ROOT && ! -d $ROOT/debootstrap ]] && [[ -n $(ls -A "$ROOT" 2>/dev/null) ]]; then
    die "$ROOT exists and is not a root this script started: choose another --root"
  fi
  if [[ ! -d $ROOT/debootstrap ]]; then
    say "debootstrap, foreign stage: Debian bookworm arm64 into $ROOT"
    mkdir -p "$ROOT"
    nice -n 10 debootstrap --arch=arm64 --foreign --variant=minbase \
      --include=python3,python3-venv,ca-certificates bookworm "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
      || die "debootstrap --foreign failed (log: $ROOT.debootstrap.log): $(tail -n 1 "$ROOT.debootstrap.log")" 1
  fi
  say "debootstrap, second stage under qemu-aarch64 (a few minutes)"
  nice -n 10 chroot "$ROOT" /debootstrap/debootstrap --second-stage >>"$ROOT.debootstrap.log" 2>&1 \
    || die "debootstrap --second-stage failed (log: $ROOT.debootstrap.log): $(tail -n 1 "$ROOT.debootstrap.log")" 1
  date -u +%FT%TZ >"$MARK"
  T_ROOT=$((SECONDS - started))
  say "root ready in ${T_ROOT} s"
fi
if [[ ! -x $ROOT/opt/arm64-check/venv/bin/python ]]; then  # a new root, or one from an older script
  in_root python3 -m venv /opt/arm64-check/venv || die "python3 -m venv failed in the root" 1
  rm -f "$ROOT/opt/arm64-check/deps.sha256"  # a new venv has none of the dependencies yet
fi

# -- wildedge in the root: this checkout as a wheel, device dependencies pinned to the host's ---------------
started=$SECONDS
STAGE=$ROOT/opt/arm64-check
mkdir -p "$STAGE"
HOSTWORK=$(mktemp -d "${TMPDIR:-/tmp}/wildedge-arm64-check.XXXXXX")
trap 'rm -rf -- "$HOSTWORK"' EXIT
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
# The host's trust store: behind a TLS-inspecting proxy, PyPI's certificate is signed by a local CA.
for ca in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
  [[ -n $ca && -f $ca ]] && { cp "$ca" "$STAGE/host-ca.crt"; break; }
done
"$HOST_PY" -m pip freeze --exclude-editable 2>/dev/null | grep -v -E '^(#|-e )| @ ' >"$HOSTWORK/constraints.txt" || true
mkdir -p "$HOSTWORK/src" "$HOSTWORK/wheel"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [[ -f $f ]] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf - | tar -xf - -C "$HOSTWORK/src") || die "cannot copy the checkout $REPO" 1
"$HOST_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$HOSTWORK/wheel" "$HOSTWORK/src" >/dev/null 2>&1 \
  || "$HOST_PY" -m pip wheel -q --no-deps -w "$HOSTWORK/wheel" "$HOSTWORK/src" >/dev/null \
  || die "cannot build the wildedge wheel from $REPO" 1
rm -f "$STAGE"/wildedge-*.whl
cp "$HOSTWORK"/wheel/wildedge-*.whl "$HOSTWORK/constraints.txt" "$REPO/scripts/arm64_eval.py" "$STAGE/"
WHEEL=/opt/arm64-check/$(basename "$HOSTWORK"/wheel/wildedge-*.whl)
PIP=(/opt/arm64-check/venv/bin/python -m pip install -q --disable-pip-version-check --only-binary=:all:)
[[ -f $STAGE/host-ca.crt ]] && PIP+=(--cert /opt/arm64-check/host-ca.crt)
deps_key=$(sha256sum "$HOSTWORK/constraints.txt" | cut -c1-64)
if [[ $(cat "$STAGE/deps.sha256" 2>/dev/null) == "$deps_key" ]]; then
  in_root "${PIP[@]}" --no-deps --force-reinstall "$WHEEL" || die "pip install of the wildedge wheel failed in the root" 1
else
  say "pip install in the root: wildedge + aarch64 wheels pinned to $HOST_PY's versions (a minute or two)"
  rm -f "$STAGE/deps.sha256"
  if ! in_root "${PIP[@]}" -c /opt/arm64-check/constraints.txt "$WHEEL"; then
    say "some pinned version has no aarch64 wheel: installing unpinned (the report records the versions)"
    in_root "${PIP[@]}" "$WHEEL" || die "pip install in the root failed" 1
  fi
  in_root /opt/arm64-check/venv/bin/python -m pip install -q --disable-pip-version-check --force-reinstall --no-deps \
    "$WHEEL" || die "pip install of the wildedge wheel failed in the root" 1
  echo "$deps_key" >"$STAGE/deps.sha256"
fi
T_PIP=$((SECONDS - started))

# -- detections on both CPUs, scored on the host ------------------------------------------------------------
RUN=$STAGE/run
rm -rf -- "$RUN"
mkdir -p "$RUN/photos" "$RUN/models"
LIMIT_ARGS=()
[[ -n $LIMIT ]] && LIMIT_ARGS=(--limit "$LIMIT")
started=$SECONDS
say "host (${HOSTTYPE:-host}): ${#MODELS[@]} model(s)"
nice -n 10 "$HOST_PY" "$REPO/scripts/arm64_eval.py" detect --photos "$IMAGES" "${LIMIT_ARGS[@]}" \
  --threads "$THREADS" --out "$HOSTWORK/host.json" "${MODELS[@]}" || die "detection on the host failed" 1
T_HOST=$((SECONDS - started))
"$HOST_PY" -c 'import json, sys; print("\0".join(json.load(open(sys.argv[1]))["photos"]), end="")' \
  "$HOSTWORK/host.json" | (cd "$IMAGES" && tar --null -T - -cf -) | tar -xf - -C "$RUN/photos"
ROOT_MODELS=()
for m in "${MODELS[@]}"; do cp "$m" "$RUN/models/"; ROOT_MODELS+=("/opt/arm64-check/run/models/${m##*/}"); done
started=$SECONDS
say "arm64 under qemu (QEMU_CPU=$CPU): ${#MODELS[@]} model(s)"
# onnxruntime's cpuinfo cannot read /sys in the root and says so on every start; it falls back to the
# auxiliary vector (the CPU features qemu gives QEMU_CPU), which the report records.
in_root /opt/arm64-check/venv/bin/python /opt/arm64-check/arm64_eval.py detect --photos /opt/arm64-check/run/photos \
  --threads "$THREADS" --out /opt/arm64-check/run/arm64.json "${ROOT_MODELS[@]}" 2>"$HOSTWORK/arm64.err" \
  || { grep -v -i cpuinfo "$HOSTWORK/arm64.err" >&2 || true; die "detection in the arm64 root failed" 1; }
grep -v -i cpuinfo "$HOSTWORK/arm64.err" >&2 || true
cp "$RUN/arm64.json" "$HOSTWORK/arm64.json"
# The pinned preprocessing hashes (tests/test_preprocess_exact.py, tests/golden/preprocess_sha256.json),
# computed in the root: the same pixels and tensors on arm64, reduced JPEG decodes included.
PIXEL_ARGS=()
GOLDEN=$REPO/tests/golden/preprocess_sha256.json
ASSETS=${WILDEDGE_ASSETS:-$REPO/../shared/assets}
if [[ $PIXELS -eq 1 && -f $REPO/tests/test_preprocess_exact.py && -f $GOLDEN && -d $ASSETS ]]; then
  mkdir -p "$RUN/assets"
  (cd "$REPO/tests" && "$HOST_PY" -c 'import test_preprocess_exact as t; print("\0".join(t.PHOTOS.values()), end="")') \
    | (cd "$ASSETS" && tar --null -T - -cf -) | tar -xf - -C "$RUN/assets"
  cp "$REPO/tests/test_preprocess_exact.py" "$RUN/preprocess_exact.py"
  say "arm64: preprocessing hashes of tests/golden/preprocess_sha256.json"
  in_root WILDEDGE_ASSETS=/opt/arm64-check/run/assets /opt/arm64-check/venv/bin/python \
    /opt/arm64-check/run/preprocess_exact.py >"$HOSTWORK/pixels.json" 2>"$HOSTWORK/pixels.err" \
    || { grep -v -i cpuinfo "$HOSTWORK/pixels.err" >&2 || true; die "the preprocessing hashes failed in the root" 1; }
  PIXEL_ARGS=(--golden "$GOLDEN" --pixels "$HOSTWORK/pixels.json")
fi
T_ARM=$((SECONDS - started))
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z $(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null) ]] || COMMIT+="+uncommitted changes"
printf '{"checkout": "%s", "timings_s": {"root_build": %d, "install": %d, "host_detect": %d, "arm64_detect": %d}}\n' \
  "$COMMIT" "$T_ROOT" "$T_PIP" "$T_HOST" "$T_ARM" >"$HOSTWORK/meta.json"
mkdir -p "$(dirname "$OUT")"
"$HOST_PY" "$REPO/scripts/arm64_eval.py" compare --host "$HOSTWORK/host.json" --arm64 "$HOSTWORK/arm64.json" \
  --labels "$LABELS" --photos "$IMAGES" --class-map "$CLASS_MAP" --meta "$HOSTWORK/meta.json" "${PIXEL_ARGS[@]}" \
  --out "$OUT" \
  || die "scoring failed" 1
DETS=${OUT%.json}
cp "$HOSTWORK/host.json" "$DETS.host-detections.json"
cp "$HOSTWORK/arm64.json" "$DETS.arm64-detections.json"
say "detections (every box, full precision): $DETS.host-detections.json, $DETS.arm64-detections.json"
say "timings: root build ${T_ROOT} s (0: cached), install ${T_PIP} s, host ${T_HOST} s, arm64 ${T_ARM} s"
