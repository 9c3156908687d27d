#!/usr/bin/env bash
# Install wildedge as a systemd service: the service account, a virtual environment that sees the
# apt-installed picamera2, a starter config, the units; idempotent, and undone by --uninstall.
# Usage and every option: systemd/install.sh --help. Tests: tests/test_deploy.py.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
readonly PREFIX=/opt/wildedge
readonly VENV=$PREFIX/venv
readonly MANIFEST=$PREFIX/install-manifest
readonly UNIT_DIR=/etc/systemd/system
readonly CONF_DIR=/etc/wildedge
readonly CREDSTORE=/etc/credstore
readonly STATE_DIR=/var/lib/wildedge
readonly SERVICE_USER=wildedge
readonly DEVICE_UNITS=(wildedge.service wildedge-session.service wildedge-session.timer)
readonly SERVER_UNITS=(wildedge-collector.service wildedge-web.service)
# Data: kept by --uninstall --keep-data, removed by a plain --uninstall.
readonly DATA_PATHS=("$STATE_DIR" /var/lib/wildedge-collector /var/cache/wildedge /var/cache/wildedge-collector
                     "$CONF_DIR" "$CREDSTORE/wildedge.mqtt-password" "$CREDSTORE/wildedge.command-key")

usage() {
    cat <<'EOF'
Usage: sudo systemd/install.sh [OPTIONS]          install or update (a second run changes nothing)
       sudo systemd/install.sh --uninstall [--keep-data]

Where and what:
  --root DIR            install into DIR (a staging root or a mounted image); the running system
                        is never touched (no systemctl start, no daemon-reload)
  --server              the collector (wildedge-collector.service) instead of the device daemon
  --web                 with --server: also the web page (wildedge-web.service, 127.0.0.1:8080)
  --mode daemon|session device: the long-running daemon (default) or one `wildedge run --once`
                        session every 10 minutes (wildedge-session.timer, duty-cycled traps)
  --no-enable           install the units without enabling them
  --no-start            enable without starting now (always the case with --root)

The package (default: the checkout this script is in):
  --checkout DIR        pip install from a source checkout
  --wheel FILE          pip install from a wheel
  --from-index          pip install from the package index (with --version V: that version)
  --python PATH         the interpreter for the venv (default /usr/bin/python3, which sees
                        python3-picamera2 from apt)
  --pip-args "ARGS"     extra pip arguments, e.g. "--no-deps --no-index" offline
  --no-venv             no venv and no package: units, config and account only

The starter config (first install only; an existing file is never rewritten). Asked for on a
terminal when missing, else defaults are used:
  --device-id ID        this trap's name (default: the host name)
  --profile NAME        a device profile, e.g. pi4-imx708 (firmware_configs/profiles/): camera size,
                        threads and the recommended model for the board and camera
  --camera KIND         picamera2 (default), opencv[:SOURCE] (USB camera 0 or a URL) or folder:PATH
  --trigger KIND        motion (default) or timelapse:INTERVAL (e.g. timelapse:10m)
  --model M             a stamped .onnx file (copied to /var/lib/wildedge/models/) or a published
                        model name (pulled there; default yolox-nano)
  --broker URL          mqtt://HOST[:PORT] or mqtts://...; leave out to keep results on the card
  --username NAME       broker user name
  --password-file FILE  the broker password (stored as /etc/credstore/wildedge.mqtt-password;
                        asked for on a terminal when --username is given without it)
  --command-key-file F  the command signing key (stored as /etc/credstore/wildedge.command-key)
  --db URL              with --server: the collector database (default SQLite in
                        /var/lib/wildedge-collector)

  --uninstall           remove everything this script installed
  --keep-data           with --uninstall: keep results, photos, models, config, secrets and the
                        account that owns them
  -h, --help            this text
EOF
}

ROOT=""
SERVER=0 WEB=0 MODE=daemon ENABLE=1 START=1 UNINSTALL=0 KEEP_DATA=0 NO_VENV=0
SOURCE_KIND="" SOURCE="" VERSION="" PYTHON=/usr/bin/python3 PIP_ARGS=""
MODEL_PATH="" UNITS_CHANGED=0
PROFILE="" DEVICE_ID="" CAMERA="" TRIGGER="" MODEL="" BROKER="" USERNAME="" PASSWORD_FILE="" KEY_FILE="" DB=""
CHANGES=0
MANIFEST_LINES=()

log() { printf 'wildedge install: %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }
changed() { CHANGES=$((CHANGES + 1)); log "$*"; }
need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"; }
record() { MANIFEST_LINES+=("$1"); }

parse_args() {
    while [[ $# -gt 0 ]]; do
        case $1 in
            --root) need_value "$@"; ROOT=$(realpath -m "$2"); shift ;;
            --server) SERVER=1 ;;
            --web) WEB=1 ;;
            --mode) need_value "$@"; MODE=$2; shift ;;
            --no-enable) ENABLE=0 ;;
            --no-start) START=0 ;;
            --checkout) need_value "$@"; SOURCE_KIND=checkout SOURCE=$2; shift ;;
            --wheel) need_value "$@"; SOURCE_KIND=wheel SOURCE=$2; shift ;;
            --from-index) SOURCE_KIND=index ;;
            --version) need_value "$@"; VERSION=$2; shift ;;
            --python) need_value "$@"; PYTHON=$2; shift ;;
            --pip-args) need_value "$@"; PIP_ARGS=$2; shift ;;
            --no-venv) NO_VENV=1 ;;
            --device-id) need_value "$@"; DEVICE_ID=$2; shift ;;
            --profile) need_value "$@"; PROFILE=$2; shift ;;
            --camera) need_value "$@"; CAMERA=$2; shift ;;
            --trigger) need_value "$@"; TRIGGER=$2; shift ;;
            --model) need_value "$@"; MODEL=$2; shift ;;
            --broker) need_value "$@"; BROKER=$2; shift ;;
            --username) need_value "$@"; USERNAME=$2; shift ;;
            --password-file) need_value "$@"; PASSWORD_FILE=$2; shift ;;
            --command-key-file) need_value "$@"; KEY_FILE=$2; shift ;;
            --db) need_value "$@"; DB=$2; shift ;;
            --uninstall) UNINSTALL=1 ;;
            --keep-data) KEEP_DATA=1 ;;
            -h|--help) usage; exit 0 ;;
            *) die "unknown option $1 (see --help)" ;;
        esac
        shift
    done
    [[ $MODE == daemon || $MODE == session ]] || die "--mode: daemon or session, not '$MODE'"
    [[ $KEEP_DATA -eq 0 || $UNINSTALL -eq 1 ]] || die "--keep-data goes with --uninstall"
    [[ $WEB -eq 0 || $SERVER -eq 1 ]] || die "--web goes with --server"
    [[ $EUID -eq 0 ]] || die "run as root: sudo $0 ..."
    if [[ -n $VERSION && $SOURCE_KIND != index ]]; then die "--version goes with --from-index"; fi
    for file in "$PASSWORD_FILE" "$KEY_FILE"; do
        [[ -z $file || -r $file ]] || die "cannot read $file"
    done
    check_answers  # the values given; those asked for later are checked again
    check_profile
    if [[ -n $BROKER && ! $BROKER =~ ^mqtts?://[^/@]+$ ]]; then
        die "--broker: mqtt://HOST[:PORT] or mqtts://HOST[:PORT], not '$BROKER' (credentials go in --username and --password-file)"
    fi
}

# -- paths and accounts inside the target root ------------------------------------------------------
target() { printf '%s%s' "$ROOT" "$1"; }
systemd_running() { [[ -z $ROOT && -d /run/systemd/system ]]; }
# systemctl on the unit files of the target root (offline with --root: only enable/disable/is-enabled).
unitctl() { if [[ -n $ROOT ]]; then systemctl --root="$ROOT" "$@"; else systemctl "$@"; fi; }

account_id() {  # account_id passwd|group NAME: the numeric id in the target root, or nothing
    awk -F: -v name="$2" '$1 == name { print $3 }' "$(target "/etc/$1")" 2>/dev/null || true
}

# -- idempotent writes: each says what it changed, and is recorded for --uninstall ------------------
make_dirs() {  # make_dirs PATH: create PATH and missing parents (0755), recording each for --uninstall
    local missing=() dir=$1
    while [[ ! -e $(target "$dir") ]]; do missing=("$dir" "${missing[@]}"); dir=$(dirname "$dir"); done
    for dir in "${missing[@]}"; do
        mkdir -m 0755 "$(target "$dir")"
        record "dir $dir"
    done
    if [[ ${#missing[@]} -gt 0 ]]; then changed "created $1"; fi
}

ensure_dir() {  # ensure_dir PATH MODE [OWNER:GROUP]: a directory of ours, with this mode and owner
    make_dirs "$1"
    set_mode "$@"
}

set_mode() {  # set_mode PATH MODE [OWNER:GROUP]
    local path; path=$(target "$1")
    if [[ $(stat -c %a "$path") != "${2#0}" ]]; then chmod "$2" "$path"; changed "mode $2 on $1"; fi
    if [[ -n ${3:-} ]]; then
        local user=${3%:*} group=${3#*:} uid gid
        uid=$(account_id passwd "$user"); gid=$(account_id group "$group")
        [[ -n $uid && -n $gid ]] || die "no account $3 in $(target /etc/passwd)"
        if [[ $(stat -c %u:%g "$path") != "$uid:$gid" ]]; then chown "$uid:$gid" "$path"; changed "owner $3 on $1"; fi
    fi
}

put_file() {  # put_file SOURCE DEST MODE [OWNER:GROUP]: copy when the content differs
    local src=$1 dest=$2
    make_dirs "$(dirname "$dest")"
    if ! cmp -s "$src" "$(target "$dest")"; then
        install -m "$3" "$src" "$(target "$dest")"
        changed "wrote $dest"
    fi
    set_mode "$dest" "$3" "${4:-}"
    record "file $dest"
}

put_text() {  # put_text TEXT DEST MODE [OWNER:GROUP]; never in a pipeline (a subshell loses the record)
    local tmp; tmp=$(mktemp)
    printf '%s\n' "$1" > "$tmp"
    shift
    put_file "$tmp" "$@"
    rm -f "$tmp"
}

put_link() {  # put_link TARGET LINK; a file of someone else's at LINK is left alone
    make_dirs "$(dirname "$2")"
    if [[ -e $(target "$2") && ! -L $(target "$2") ]]; then
        log "$2 exists and is not ours: left as it is (run $1)"
        return
    fi
    if [[ $(readlink "$(target "$2")" 2>/dev/null) != "$1" ]]; then
        ln -sfn "$1" "$(target "$2")"
        changed "linked $2 -> $1"
    fi
    record "file $2"
}

# -- steps ------------------------------------------------------------------------------------------
install_account() {
    put_file "$SCRIPT_DIR/wildedge.sysusers" /etc/sysusers.d/wildedge.conf 0644
    local name kind
    for name in "passwd $SERVICE_USER" "group $SERVICE_USER" "group video" "group gpio"; do
        kind=${name% *}
        if [[ -z $(account_id "$kind" "${name#* }") ]]; then record "created-$kind ${name#* }"; fi
    done
    local before after
    before=$(cat "$(target /etc/passwd)" "$(target /etc/group)" 2>/dev/null || true)
    local out
    out=$(systemd-sysusers ${ROOT:+--root="$ROOT"} "$(target /etc/sysusers.d/wildedge.conf)" 2>&1) \
        || die "systemd-sysusers failed: $out"
    after=$(cat "$(target /etc/passwd)" "$(target /etc/group)")
    [[ $before == "$after" ]] || changed "created the $SERVICE_USER account (and any missing video, gpio group)"
}

source_identity() {  # what would be installed; the venv is rebuilt only when this changes
    case $SOURCE_KIND in
        wheel) printf 'wheel %s sha256:%s' "$(basename "$SOURCE")" "$(sha256sum < "$SOURCE" | cut -d' ' -f1)" ;;
        checkout)
            if git -C "$SOURCE" rev-parse HEAD >/dev/null 2>&1; then
                printf 'checkout %s %s diff:%s' "$SOURCE" "$(git -C "$SOURCE" rev-parse HEAD)" \
                    "$( { git -C "$SOURCE" diff HEAD; git -C "$SOURCE" ls-files --others --exclude-standard; } \
                        | sha256sum | cut -d' ' -f1)"
            else
                printf 'checkout %s mtime:%s' "$SOURCE" "$(find "$SOURCE" -newer "$(target "$VENV/.wildedge-source")" \
                    -not -path '*/.*' -print -quit 2>/dev/null)"
            fi ;;
        index) printf 'index wildedge%s' "${VERSION:+==$VERSION}" ;;
    esac
    printf ' python:%s extras:%s pip-args:%s\n' "$PYTHON" "$(extras)" "$PIP_ARGS"
}

extras() {  # the collector's extra for --server, and kept once installed (device and server on one machine)
    if [[ $SERVER -eq 1 ]] || grep -qF 'extras:[collector]' "$(target "$VENV/.wildedge-source")" 2>/dev/null; then
        printf '[collector]'
    fi
}

pip_target() {
    case $SOURCE_KIND in
        wheel|checkout) printf '%s%s' "$SOURCE" "$(extras)" ;;
        index) printf 'wildedge%s%s' "$(extras)" "${VERSION:+==$VERSION}" ;;
    esac
}

install_venv() {
    if [[ $NO_VENV -eq 1 ]]; then log "--no-venv: no virtual environment, no package"; return; fi
    local venv stamp want
    venv=$(target "$VENV"); stamp=$venv/.wildedge-source; want=$(source_identity)
    if [[ -x $venv/bin/wildedge && -f $stamp && $(cat "$stamp") == "$want" ]]; then
        record "file $VENV"
        return
    fi
    make_dirs "$PREFIX"
    if [[ ! -x $venv/bin/python ]]; then
        # --system-site-packages: python3-picamera2 (and gpiozero) come from apt, not from PyPI.
        "$PYTHON" -m venv --system-site-packages "$venv" || die "cannot create the venv with $PYTHON (sudo apt install python3-venv)"
        changed "created the venv $VENV"
    fi
    record "file $VENV"
    log "pip install $(pip_target) (this takes a few minutes on a Pi)"
    local what build=""
    what=$(pip_target)
    if [[ $SOURCE_KIND == checkout ]]; then
        # pip builds in the source tree (build/, *.egg-info): build in a copy, not in the user's checkout.
        build=$(mktemp -d)
        tar -C "$SOURCE" --exclude=./.git --exclude='./.venv*' --exclude=./build --exclude=./dist -cf - . \
            | tar -C "$build" -xf -
        what=$build$(extras)
    fi
    # shellcheck disable=SC2086  # PIP_ARGS is a list of words
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check --quiet $PIP_ARGS "$what"; then
        if [[ -n $build ]]; then rm -rf "$build"; fi
        die "pip install $(pip_target) failed (see above)"
    fi
    if [[ -n $build ]]; then rm -rf "$build"; fi
    if [[ -n $ROOT ]]; then
        # A venv is not relocatable: its scripts name their interpreter by absolute path. Name the
        # path the venv has once the staging root is the system's root.
        local file
        while read -r file; do
            sed -i "s|$venv|$VENV|g" "$file"
        done < <(grep -rlF -- "$venv" "$venv/bin" "$venv/pyvenv.cfg" || true)
    fi
    printf '%s\n' "$want" > "$stamp"
    changed "installed wildedge into $VENV ($SOURCE_KIND)"
}

default_source() {
    if [[ -n $SOURCE_KIND ]]; then
        [[ $SOURCE_KIND == index || -e $SOURCE ]] || die "--$SOURCE_KIND: $SOURCE does not exist"
        if [[ $SOURCE_KIND != index ]]; then SOURCE=$(realpath "$SOURCE"); fi
        return
    fi
    if [[ -f $SCRIPT_DIR/../pyproject.toml ]] && grep -q '^name = "wildedge"' "$SCRIPT_DIR/../pyproject.toml"; then
        SOURCE_KIND=checkout SOURCE=$(realpath "$SCRIPT_DIR/..")
    else
        SOURCE_KIND=index
    fi
}

ask() {  # ask VAR "question" DEFAULT: on a terminal when VAR is empty, else the default
    local -n var=$1
    [[ -z $var ]] || return 0
    if [[ -t 0 && -t 1 ]]; then
        read -r -p "$2 [$3]: " var
    fi
    var=${var:-$3}
}

toml_string() { local s=${1//\\/\\\\}; printf '"%s"' "${s//\"/\\\"}"; }

device_config() {
    local conf=$CONF_DIR/wildedge.toml
    ensure_dir "$CONF_DIR" 0755
    if [[ -e $(target "$conf") ]]; then
        if [[ -n $DEVICE_ID$PROFILE$CAMERA$TRIGGER$MODEL$BROKER$USERNAME ]]; then
            log "$conf exists and is left as it is: edit it (every key: docs/config.md) or remove it to start over"
        fi
        record "data $conf"
        return
    fi
    local host=""
    host=$(cat "$(target /etc/hostname)" 2>/dev/null || true)
    ask DEVICE_ID "Device id (letters, digits, - _ .)" "${host:-trap-01}"
    ask CAMERA "Camera: picamera2, opencv[:SOURCE] or folder:PATH" picamera2
    ask TRIGGER "Trigger: motion or timelapse:INTERVAL" motion
    local recommended
    recommended=$(profile_model)
    ask MODEL "Detector: a stamped .onnx file or a published model name" "${recommended:-yolox-nano}"
    if [[ -z $BROKER && -t 0 && -t 1 ]]; then
        read -r -p "Broker URL, e.g. mqtt://server:1883 (empty: keep results on the card) []: " BROKER
    fi
    check_answers
    install_model
    local text
    text=$(
        printf '# Written by systemd/install.sh. Every key is described in docs/config.md; check a change with\n'
        printf '#   sudo wildedge check --config %s\n\n' "$conf"
        printf '[device]\nid = %s\nstate_dir = "%s"\n' "$(toml_string "$DEVICE_ID")" "$STATE_DIR"
        if [[ -n $PROFILE ]]; then printf 'profile = %s  # camera size, threads: firmware_configs/profiles/\n' \
            "$(toml_string "$PROFILE")"; fi
        printf '\n'
        case $CAMERA in
            picamera2) printf '[camera]\ntype = "picamera2"\n\n' ;;
            opencv) printf '[camera]\ntype = "opencv"\nsource = 0\n\n' ;;
            opencv:[0-9]*) printf '[camera]\ntype = "opencv"\nsource = %s\n\n' "${CAMERA#opencv:}" ;;
            opencv:*) printf '[camera]\ntype = "opencv"\nsource = %s\n\n' "$(toml_string "${CAMERA#opencv:}")" ;;
            folder:/*) printf '[camera]\ntype = "folder"\npath = %s\nmode = "watch"\n\n' "$(toml_string "${CAMERA#folder:}")" ;;
        esac
        if [[ $CAMERA != folder:* ]]; then
            case $TRIGGER in
                motion) printf '[trigger]\ntype = "motion"\nburst = 3\n\n' ;;
                timelapse:?*) printf '[trigger]\ntype = "timelapse"\ninterval = %s\n\n' "$(toml_string "${TRIGGER#timelapse:}")" ;;
            esac
        fi
        printf '[detector]\nmodel = %s\n' "$(toml_string "$MODEL_PATH")"
        if [[ -n $BROKER ]]; then
            printf '\n[mqtt]\nurl = %s\n' "$(toml_string "$BROKER")"
            if [[ -n $USERNAME ]]; then printf 'username = %s\n' "$(toml_string "$USERNAME")"; fi
            printf '# The password: /etc/credstore/wildedge.mqtt-password (install.sh --password-file),\n'
            printf '# handed to the daemon as the systemd credential mqtt-password.\n'
        fi
    )
    put_text "$text" "$conf" 0644
    record "data $conf"
}

check_answers() {  # the device values given so far (an empty one is asked for or defaulted later)
    [[ -z $DEVICE_ID || $DEVICE_ID =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]] \
        || die "--device-id: 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit, not '$DEVICE_ID'"
    [[ -z $CAMERA || $CAMERA =~ ^(picamera2|opencv(:.+)?|folder:/.*)$ ]] \
        || die "--camera: picamera2, opencv[:SOURCE] or folder:/ABSOLUTE/PATH, not '$CAMERA'"
    [[ -z $TRIGGER || $TRIGGER =~ ^(motion|timelapse:[0-9].*)$ ]] \
        || die "--trigger: motion or timelapse:INTERVAL (e.g. timelapse:10m), not '$TRIGGER'"
}

check_profile() {  # against the checkout's profiles when there are any (else `wildedge check` tells)
    [[ -n $PROFILE ]] || return 0
    [[ $PROFILE =~ ^[a-z0-9][a-z0-9_-]*$ ]] || die "--profile: lower-case letters, digits, '-' and '_', not '$PROFILE'"
    local dir=$SCRIPT_DIR/../firmware_configs/profiles
    if [[ -d $dir && ! -f $dir/$PROFILE.toml ]]; then
        local known=("$dir"/*.toml)
        known=("${known[@]##*/}")
        die "--profile: unknown profile '$PROFILE' (known: ${known[*]%.toml})"
    fi
}

profile_model() {  # the profile's recommended published model, when the checkout has the profile
    local file=$SCRIPT_DIR/../firmware_configs/profiles/$PROFILE.toml
    if [[ -n $PROFILE && -f $file ]]; then sed -n 's/^model = "\([^"]*\)".*/\1/p' "$file" | head -n 1; fi
}

install_model() {  # sets MODEL_PATH, the model's path on the device
    local models=$STATE_DIR/models
    ensure_dir "$STATE_DIR" 0700 "$SERVICE_USER:$SERVICE_USER"
    ensure_dir "$models" 0700 "$SERVICE_USER:$SERVICE_USER"
    if [[ -f $MODEL ]]; then
        put_file "$MODEL" "$models/$(basename "$MODEL")" 0600 "$SERVICE_USER:$SERVICE_USER"
        MODEL_PATH=$models/$(basename "$MODEL")
    elif [[ $MODEL == */* || $MODEL == *.onnx ]]; then
        die "--model: no file $MODEL"
    elif [[ $NO_VENV -eq 1 ]]; then
        die "--model $MODEL: pulling a published model needs the venv; give a stamped .onnx file with --no-venv"
    else
        MODEL_PATH=$models/$MODEL.onnx
        if [[ ! -f $(target "$MODEL_PATH") ]]; then
            log "pulling the published model $MODEL into $models"
            # The script through its interpreter: under --root its #! names the device's path.
            "$(target "$VENV")/bin/python" "$(target "$VENV")/bin/wildedge" model pull "$MODEL" \
                --cache-dir "$(target "$STATE_DIR")" \
                >/dev/null || die "cannot pull $MODEL; offline, fetch the file elsewhere and give it with --model FILE.onnx"
            chown -R "$(account_id passwd "$SERVICE_USER"):$(account_id group "$SERVICE_USER")" "$(target "$STATE_DIR")"
            changed "pulled $MODEL"
        fi
    fi
}

server_config() {
    local env=$CONF_DIR/collector.env
    ensure_dir "$CONF_DIR" 0755
    if [[ -e $(target "$env") ]]; then
        if [[ -n $BROKER$DB ]]; then log "$env exists and is left as it is: edit it or remove it to start over"; fi
    else
        local text
        text=$(
            printf '# Read by wildedge-collector.service and wildedge-web.service (written by systemd/install.sh).\n'
            printf '# A database URL with a password makes this file a secret: keep it 0600.\n'
            printf 'COLLECTOR_BROKER=%s\n' "${BROKER:-mqtt://localhost:1883}"
            printf 'COLLECTOR_DB=%s\n' "${DB:-sqlite:////var/lib/wildedge-collector/collector.db}"
            printf "# More \`wildedge collect run\` options, e.g. --username collector --share collectors\n"
            printf 'COLLECTOR_ARGS=%s\n' "${USERNAME:+--username $USERNAME}"
            printf "# \`wildedge collect serve\` options; --host 0.0.0.0 shows the page to the whole network\n"
            printf 'WEB_ARGS=--host 127.0.0.1 --port 8080\n'
        )
        put_text "$text" "$env" 0600
    fi
    record "data $env"
    ensure_dir /var/lib/wildedge-collector 0700 "$SERVICE_USER:$SERVICE_USER"
}

install_secrets() {
    local password=""
    if [[ -z $PASSWORD_FILE && -n $USERNAME && -t 0 && -t 1 && ! -e $(target "$CREDSTORE/wildedge.mqtt-password") ]]; then
        read -r -s -p "Broker password for $USERNAME (empty: none): " password
        printf '\n'
    fi
    if [[ -z $PASSWORD_FILE && -z $KEY_FILE && -z $password ]]; then return; fi
    # systemd reads them (as root) and hands the service a private copy: $CREDENTIALS_DIRECTORY.
    ensure_dir "$CREDSTORE" 0700
    if [[ -n $PASSWORD_FILE ]]; then put_file "$PASSWORD_FILE" "$CREDSTORE/wildedge.mqtt-password" 0600; fi
    if [[ -n $password ]]; then put_text "$password" "$CREDSTORE/wildedge.mqtt-password" 0600; fi
    if [[ -n $KEY_FILE ]]; then put_file "$KEY_FILE" "$CREDSTORE/wildedge.command-key" 0600; fi
}

wanted_units() {  # the units to enable in this mode
    if [[ $SERVER -eq 1 ]]; then
        printf '%s\n' wildedge-collector.service
        if [[ $WEB -eq 1 ]]; then printf '%s\n' wildedge-web.service; fi
    elif [[ $MODE == session ]]; then
        printf '%s\n' wildedge-session.timer
    else
        printf '%s\n' wildedge.service
    fi
}

install_units() {
    local unit units=()
    if [[ $SERVER -eq 1 ]]; then units=("${SERVER_UNITS[@]}"); else units=("${DEVICE_UNITS[@]}"); fi
    local before=$CHANGES
    for unit in "${units[@]}"; do put_file "$SCRIPT_DIR/$unit" "$UNIT_DIR/$unit" 0644; done
    UNITS_CHANGED=$((CHANGES - before))
    if systemd_running && [[ $UNITS_CHANGED -gt 0 ]]; then systemctl daemon-reload; fi
    [[ $ENABLE -eq 1 ]] || return 0
    local wanted; wanted=$(wanted_units)
    for unit in "${units[@]}"; do
        if grep -qx "$unit" <<< "$wanted"; then
            # The .wants directory is recorded when it is created, so --uninstall removes it again.
            make_dirs "$UNIT_DIR/$(sed -n 's/^WantedBy=//p' "$SCRIPT_DIR/$unit").wants"
            if [[ $(unitctl is-enabled "$unit" 2>/dev/null) != enabled ]]; then
                unitctl --quiet enable "$unit"
                changed "enabled $unit"
            fi
            record "unit $unit"
        elif [[ $(unitctl is-enabled "$unit" 2>/dev/null) == enabled ]]; then
            unitctl --quiet disable "$unit"
            if systemd_running; then systemctl stop "$unit"; fi
            changed "disabled $unit (another --mode)"
        fi
    done
}

start_units() {
    if ! systemd_running || [[ $ENABLE -eq 0 || $START -eq 0 ]]; then
        if [[ -n $ROOT ]]; then log "--root: nothing started"; elif ! systemd_running; then log "systemd is not running here: nothing started"; fi
        return
    fi
    local unit
    for unit in $(wanted_units); do
        if [[ $CHANGES -gt 0 ]] && systemctl --quiet is-active "$unit"; then
            systemctl restart "$unit"; log "restarted $unit"
        elif ! systemctl --quiet is-active "$unit"; then
            if systemctl start "$unit"; then log "started $unit"
            else log "$unit did not start: see journalctl -u ${unit%.*} -e"; fi
        fi
    done
}

write_manifest() {
    local old=()
    if [[ -f $(target "$MANIFEST") ]]; then mapfile -t old < "$(target "$MANIFEST")"; fi
    make_dirs "$PREFIX"
    record "file $MANIFEST"
    # The union with the previous runs' entries: a --server run after a device run keeps both.
    local text
    text=$(printf '%s\n' "${old[@]}" "${MANIFEST_LINES[@]}" | grep -v '^$' | LC_ALL=C sort -u)
    put_text "$text" "$MANIFEST" 0644
}

install_all() {
    default_source
    log "installing into ${ROOT:-/} from $SOURCE_KIND${SOURCE:+ $SOURCE}"
    install_account
    install_venv
    put_link "$VENV/bin/wildedge" /usr/local/bin/wildedge
    if [[ $SERVER -eq 1 ]]; then server_config; else device_config; fi
    install_secrets
    install_units
    write_manifest
    start_units
    if [[ $CHANGES -eq 0 ]]; then
        log "nothing to change: already installed"
    else
        log "done: $CHANGES changes"
        if [[ $SERVER -eq 0 ]]; then
            local check="wildedge check --config $CONF_DIR/wildedge.toml"
            if [[ -e $(target "$CREDSTORE/wildedge.mqtt-password") ]]; then
                # The check needs the broker password the service gets as a credential.
                check="systemd-run --quiet --wait --pipe -p LoadCredential=mqtt-password:wildedge.mqtt-password $VENV/bin/$check"
            fi
            log "next: sudo $check"
        fi
    fi
}

# -- uninstall --------------------------------------------------------------------------------------
is_data() {
    local path=$1 data
    for data in "${DATA_PATHS[@]}"; do
        if [[ $path == "$data" || $path == "$data"/* ]]; then return 0; fi
    done
    return 1
}

uninstall_all() {
    local manifest; manifest=$(target "$MANIFEST")
    if [[ ! -f $manifest ]]; then log "nothing to uninstall: no $MANIFEST in ${ROOT:-/}"; return; fi
    local lines kind path
    mapfile -t lines < "$manifest"
    for line in "${lines[@]}"; do
        kind=${line%% *} path=${line#* }
        # Every path this script writes has "wildedge" in it: a damaged manifest cannot name /usr.
        if [[ $kind == file && $path != *wildedge* ]]; then die "$MANIFEST: refusing to remove $path"; fi
    done
    for line in "${lines[@]}"; do
        kind=${line%% *} path=${line#* }
        if [[ $kind == unit ]]; then
            if systemd_running; then systemctl --quiet disable --now "$path" || true
            else unitctl --quiet disable "$path" || true; fi
            changed "disabled $path"
        fi
    done
    for line in "${lines[@]}"; do
        kind=${line%% *} path=${line#* }
        if [[ $path == "$MANIFEST" ]] || { [[ $KEEP_DATA -eq 1 ]] && is_data "$path"; }; then continue; fi
        if [[ $kind == file ]] && [[ -e $(target "$path") || -L $(target "$path") ]]; then
            rm -rf "$(target "$path")"; changed "removed $path"
        fi
    done
    if systemd_running; then systemctl daemon-reload; fi
    if [[ $KEEP_DATA -eq 0 ]]; then
        for path in "${DATA_PATHS[@]}"; do
            if [[ -e $(target "$path") ]]; then rm -rf "$(target "$path")"; changed "removed $path (data)"; fi
        done
        # Accounts last: the files they owned are gone. The group named like the user goes with it.
        for line in "${lines[@]}"; do
            kind=${line%% *} path=${line#* }
            if [[ $kind == created-passwd && -n $(account_id passwd "$path") ]]; then
                userdel ${ROOT:+--root "$ROOT"} "$path"; changed "removed the account $path"
            fi
        done
        for line in "${lines[@]}"; do
            kind=${line%% *} path=${line#* }
            if [[ $kind == created-group && -n $(account_id group "$path") ]]; then
                groupdel ${ROOT:+--root "$ROOT"} "$path"; changed "removed the group $path"
            fi
        done
    else
        log "kept (--keep-data): $STATE_DIR, $CONF_DIR, the secrets in $CREDSTORE and the $SERVICE_USER account"
    fi
    rm -f "$manifest"  # last but the directories: an interrupted --uninstall can be run again
    # Directories this script created, deepest first, when nothing else has been put in them.
    local dirs=()
    for line in "${lines[@]}"; do
        kind=${line%% *} path=${line#* }
        if [[ $kind == dir ]] && ! { [[ $KEEP_DATA -eq 1 ]] && is_data "$path"; }; then dirs+=("$path"); fi
    done
    if [[ ${#dirs[@]} -gt 0 ]]; then
        while read -r path; do
            if [[ -d $(target "$path") ]]; then rmdir --ignore-fail-on-non-empty "$(target "$path")"; fi
        done < <(printf '%s\n' "${dirs[@]}" | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-)
    fi
    log "uninstalled ($CHANGES changes)"
}

main() {
    parse_args "$@"
    if [[ -n $ROOT ]]; then [[ -d $ROOT ]] || die "--root: $ROOT is not a directory"; fi
    if [[ $UNINSTALL -eq 1 ]]; then uninstall_all; else install_all; fi
}

main "$@"
