#!/bin/sh
# Install or upgrade edge-agent on a Debian/Ubuntu box. Idempotent: run it again to upgrade.
#
#   sudo deploy/install.sh                       # from this source tree
#   sudo deploy/install.sh --wheel edge_agent-0.2.0-py3-none-any.whl
#   deploy/install.sh --root /tmp/stage --skip-apt   # into a staging root, host untouched
#
# What it does (docs/operations.md has the details):
#   apt: python3, python3-venv, ca-certificates (PyAV and OpenCV wheels bundle FFmpeg: no ffmpeg libs)
#   user edge-agent (system, no login, no home)
#   /opt/edge-agent/venv        the package and its dependencies (replaced on upgrade)
#   /usr/local/bin/edge-agent   the venv's command, with /etc/edge-agent/agent.toml as default config
#   /etc/edge-agent/agent.toml  from deploy/agent.toml (or --config) only when absent: never overwritten
#   /etc/edge-agent/token       API token, generated once, 0600 edge-agent
#   /var/lib/edge-agent         state (tasks, outbox), 0700 edge-agent
#   /etc/systemd/system/edge-agent.service, enabled and (re)started when systemd is PID 1
set -eu

SERVICE=edge-agent
SERVICE_USER=edge-agent
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)

usage() {
    cat <<EOF
usage: $0 [options]
  --root DIR       install below DIR (every path prefixed); no apt, useradd, chown or systemctl on
                   the host: what was skipped is written to DIR/opt/edge-agent/INSTALL-NOTE.txt
  --skip-apt       do not install Debian packages (they must be present)
  --source DIR     source tree to install (default: $(dirname "$SCRIPT_DIR"))
  --wheel FILE     install this wheel instead of a source tree
  --config FILE    config to install when /etc/edge-agent/agent.toml is absent
                   (default: $SCRIPT_DIR/agent.toml)
  --python PATH    interpreter for the venv (default: /usr/bin/python3; >= 3.10)
  --pip-arg ARG    extra argument for pip install, repeatable (e.g. --pip-arg=--index-url=URL)
  --no-start       enable the unit but do not start or restart it
EOF
}

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

ROOT=
SKIP_APT=no
SOURCE=
WHEEL=
CONFIG_TEMPLATE="$SCRIPT_DIR/agent.toml"
PYTHON=/usr/bin/python3
PIP_ARGS=
START=yes

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#*=}; shift ;;
        --skip-apt) SKIP_APT=yes; shift ;;
        --source) [ $# -ge 2 ] || die "--source needs a directory"; SOURCE=$2; shift 2 ;;
        --source=*) SOURCE=${1#*=}; shift ;;
        --wheel) [ $# -ge 2 ] || die "--wheel needs a file"; WHEEL=$2; shift 2 ;;
        --wheel=*) WHEEL=${1#*=}; shift ;;
        --config) [ $# -ge 2 ] || die "--config needs a file"; CONFIG_TEMPLATE=$2; shift 2 ;;
        --config=*) CONFIG_TEMPLATE=${1#*=}; shift ;;
        --python) [ $# -ge 2 ] || die "--python needs a path"; PYTHON=$2; shift 2 ;;
        --python=*) PYTHON=${1#*=}; shift ;;
        --pip-arg) [ $# -ge 2 ] || die "--pip-arg needs a value"; PIP_ARGS="$PIP_ARGS $2"; shift 2 ;;
        --pip-arg=*) PIP_ARGS="$PIP_ARGS ${1#*=}"; shift ;;
        --no-start) START=no; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT=$(CDPATH='' cd -- "$ROOT" && pwd)
    [ "$ROOT" != / ] || ROOT=
fi
[ -n "$ROOT" ] || [ "$(id -u)" -eq 0 ] || die "run as root (or use --root DIR to stage an install)"
if [ -n "$WHEEL" ] && [ -n "$SOURCE" ]; then die "give --source or --wheel, not both"; fi
if [ -z "$WHEEL" ]; then
    SOURCE=${SOURCE:-$(dirname "$SCRIPT_DIR")}
    [ -f "$SOURCE/pyproject.toml" ] || die "no pyproject.toml in source tree $SOURCE"
else
    [ -f "$WHEEL" ] || die "wheel not found: $WHEEL"
fi
[ -f "$CONFIG_TEMPLATE" ] || die "config template not found: $CONFIG_TEMPLATE"
UNIT_SOURCE="$SCRIPT_DIR/../systemd/$SERVICE.service"
[ -f "$UNIT_SOURCE" ] || die "unit file not found: $UNIT_SOURCE"

OPT="$ROOT/opt/$SERVICE"
VENV="$OPT/venv"
ETC="$ROOT/etc/$SERVICE"
STATE="$ROOT/var/lib/$SERVICE"
UNIT="$ROOT/etc/systemd/system/$SERVICE.service"
NOTES=

note() {
    # Host actions skipped under --root: said now and written down for whoever finishes the job.
    say "skipped: $*"
    NOTES="$NOTES- $*
"
}

# --- Debian packages --------------------------------------------------------------------------
if [ "$SKIP_APT" = yes ]; then
    say "apt: skipped (--skip-apt)"
elif [ -n "$ROOT" ]; then
    note "apt-get install python3 python3-venv ca-certificates (not run against the host under --root)"
else
    missing=
    for package in python3 python3-venv ca-certificates; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing="$missing $package"
    done
    if [ -n "$missing" ]; then
        say "apt: installing$missing"
        apt-get update -q
        # shellcheck disable=SC2086  # word splitting of the package list is intended
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
    else
        say "apt: python3, python3-venv, ca-certificates present"
    fi
fi

command -v "$PYTHON" >/dev/null || die "no Python interpreter at $PYTHON (install python3, or pass --python)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "$PYTHON is older than Python 3.10"

# --- Service user -----------------------------------------------------------------------------
if [ -n "$ROOT" ]; then
    note "useradd --system $SERVICE_USER; chown of $STATE and $ETC/token to it"
elif getent passwd "$SERVICE_USER" >/dev/null; then
    say "user $SERVICE_USER exists"
else
    useradd --system --user-group --home-dir "/var/lib/$SERVICE" --no-create-home \
        --shell /usr/sbin/nologin --comment "edge-agent service" "$SERVICE_USER"
    say "user $SERVICE_USER created"
fi

own() {
    # own OWNER:GROUP MODE PATH — ownership only on a real install (the user exists there).
    [ -n "$ROOT" ] || chown "$1" "$3"
    chmod "$2" "$3"
}

# --- Directories ------------------------------------------------------------------------------
mkdir -p "$OPT" "$ETC" "$STATE" "$(dirname "$UNIT")"
own root:root 0755 "$OPT"
# Matches ConfigurationDirectoryMode=0755: the files inside carry their own, stricter modes.
own root:root 0755 "$ETC"
own "$SERVICE_USER:$SERVICE_USER" 0700 "$STATE"

# --- Virtual environment and package ----------------------------------------------------------
VERSION_OF='import sys; print("%d.%d" % sys.version_info[:2])'
WANTED=$("$PYTHON" -c "$VERSION_OF")
if [ ! -e "$VENV/bin/python" ] && [ ! -L "$VENV/bin/python" ]; then
    say "creating venv $VENV (Python $WANTED)"
    "$PYTHON" -m venv "$VENV"
elif [ "$("$VENV/bin/python" -c "$VERSION_OF" 2>/dev/null || true)" != "$WANTED" ]; then
    # A distribution upgrade replaced the interpreter under the venv: its packages are for the old one.
    say "recreating venv $VENV for Python $WANTED"
    "$PYTHON" -m venv --clear "$VENV"
else
    say "reusing venv $VENV"
fi

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
trap 'exit 130' INT TERM
if [ -n "$WHEEL" ]; then
    TARGET=$WHEEL
else
    # Build from a copy: pip writes build/ and *.egg-info into the tree it builds, and the source
    # may be read-only media or someone's checkout.
    TARGET="$STAGE/src"
    mkdir -p "$TARGET"
    for item in pyproject.toml setup.cfg setup.py README.md LICENSE agent; do
        [ ! -e "$SOURCE/$item" ] || cp -R "$SOURCE/$item" "$TARGET/"
    done
    find "$TARGET" -name __pycache__ -type d -prune -exec rm -rf {} +
fi
# Both OpenCV wheels install the cv2 package: an agent installed before the switch to the contrib wheel
# must lose the plain one first, or the upgrade leaves a cv2 that either uninstall would break.
if "$VENV/bin/python" -m pip show -q opencv-python-headless >/dev/null 2>&1; then
    say "removing opencv-python-headless (replaced by opencv-contrib-python-headless)"
    "$VENV/bin/python" -m pip uninstall -y -q opencv-python-headless opencv-contrib-python-headless
fi
say "installing $(basename "$TARGET") into $VENV"
# A local tree or wheel is always reinstalled, so re-running the script upgrades the agent.
# shellcheck disable=SC2086  # PIP_ARGS holds separate arguments
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade $PIP_ARGS "$TARGET"
"$VENV/bin/$SERVICE" version >/dev/null || die "$VENV/bin/$SERVICE does not run"
say "installed: $("$VENV/bin/$SERVICE" version)"

# On PATH for operators, with the installed config as the default, so `sudo edge-agent diag` and
# `edge-agent task list` work as typed (--config and $EDGE_AGENT_CONFIG still win).
mkdir -p "$ROOT/usr/local/bin"
cat > "$ROOT/usr/local/bin/$SERVICE.new" <<WRAPPER
#!/bin/sh
# $SERVICE command wrapper, written by deploy/install.sh (uninstall.sh removes it).
: "\${EDGE_AGENT_CONFIG:=/etc/$SERVICE/agent.toml}"
export EDGE_AGENT_CONFIG
exec /opt/$SERVICE/venv/bin/$SERVICE "\$@"
WRAPPER
chmod 0755 "$ROOT/usr/local/bin/$SERVICE.new"
mv -f "$ROOT/usr/local/bin/$SERVICE.new" "$ROOT/usr/local/bin/$SERVICE"

if [ -d "$SCRIPT_DIR/../docs" ]; then
    mkdir -p "$OPT/docs"
    for doc in "$SCRIPT_DIR"/../docs/*.md; do
        [ ! -f "$doc" ] || install -m 0644 "$doc" "$OPT/docs/"
    done
fi

# --- Configuration (never overwritten) ---------------------------------------------------------
if [ -e "$ETC/agent.toml" ]; then
    say "config $ETC/agent.toml kept"
else
    install -m 0640 "$CONFIG_TEMPLATE" "$ETC/agent.toml"
    say "config $ETC/agent.toml installed from $CONFIG_TEMPLATE"
fi
# It may hold broker passwords: readable by root and the service group only.
own "root:$SERVICE_USER" 0640 "$ETC/agent.toml"
grep -Eq '^[[:space:]]*token(_file)?[[:space:]]*=' "$ETC/agent.toml" \
    || say "warning: $ETC/agent.toml sets no [api] token_file; add token_file = \"/etc/$SERVICE/token\""

# --- API token (generated once) ----------------------------------------------------------------
if [ -s "$ETC/token" ]; then
    say "token $ETC/token kept"
else
    (
        umask 077
        "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$ETC/token.new"
    )
    mv -f "$ETC/token.new" "$ETC/token"
    say "token $ETC/token generated"
fi
own "$SERVICE_USER:$SERVICE_USER" 0600 "$ETC/token"

# --- systemd unit -----------------------------------------------------------------------------
install -m 0644 "$UNIT_SOURCE" "$UNIT"
say "unit $UNIT installed"

if [ -n "$ROOT" ]; then
    note "systemctl daemon-reload && systemctl enable --now $SERVICE"
elif [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    systemctl daemon-reload
    if [ "$START" = no ]; then
        systemctl enable "$SERVICE"
        say "unit enabled (not started: --no-start)"
    elif systemctl is-active --quiet "$SERVICE"; then
        systemctl enable "$SERVICE"
        systemctl restart "$SERVICE"
        say "unit enabled and restarted on the new version"
    else
        systemctl enable --now "$SERVICE"
        say "unit enabled and started"
    fi
else
    say "systemd is not PID 1 here: unit not enabled; run: systemctl enable --now $SERVICE"
fi

if [ -n "$NOTES" ]; then
    {
        printf 'Staged by deploy/install.sh --root %s on %s.\n' "$ROOT" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        printf 'These host actions were skipped; do them on the target system:\n%s' "$NOTES"
        printf 'The venv was built for this path; move it only by re-running install.sh there.\n'
    } > "$OPT/INSTALL-NOTE.txt"
    say "notes written to $OPT/INSTALL-NOTE.txt"
fi
say "done"
