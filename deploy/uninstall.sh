#!/bin/sh
# Remove edge-agent. Keeps /etc/edge-agent (config, token), /var/lib/edge-agent (tasks, outbox)
# and the edge-agent user unless --purge, so a later install.sh picks up where this one left off.
#
#   sudo deploy/uninstall.sh [--purge]
#   deploy/uninstall.sh --root /tmp/stage [--purge]    # a staged install; host untouched
set -eu

SERVICE=edge-agent
SERVICE_USER=edge-agent

say() { printf 'uninstall: %s\n' "$*"; }
die() { printf 'uninstall: error: %s\n' "$*" >&2; exit 1; }

ROOT=
PURGE=no
while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#*=}; shift ;;
        --purge) PURGE=yes; shift ;;
        -h|--help) echo "usage: $0 [--root DIR] [--purge]"; exit 0 ;;
        *) die "unknown option: $1" ;;
    esac
done

if [ -n "$ROOT" ]; then
    [ -d "$ROOT" ] || die "no such directory: $ROOT"
    ROOT=$(CDPATH='' cd -- "$ROOT" && pwd)
    [ "$ROOT" != / ] || ROOT=
fi
[ -n "$ROOT" ] || [ "$(id -u)" -eq 0 ] || die "run as root (or use --root DIR for a staged install)"

UNIT="$ROOT/etc/systemd/system/$SERVICE.service"
SYSTEMD=no
if [ -z "$ROOT" ] && [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    SYSTEMD=yes
fi

if [ "$SYSTEMD" = yes ]; then
    systemctl disable --now "$SERVICE" 2>/dev/null || true
    say "unit stopped and disabled"
elif [ -z "$ROOT" ]; then
    say "systemd is not PID 1 here: nothing to stop"
fi

rm -f "$UNIT"
# Drop-ins from `systemctl edit` are the operator's; they go only with --purge.
[ "$PURGE" = no ] || rm -rf "$UNIT.d"
[ "$SYSTEMD" = no ] || systemctl daemon-reload
rm -rf "$ROOT/opt/$SERVICE"
# Only our own wrapper: an edge-agent command installed some other way is not ours to remove.
WRAPPER="$ROOT/usr/local/bin/$SERVICE"
if [ -f "$WRAPPER" ] && grep -q "written by deploy/install.sh" "$WRAPPER"; then
    rm -f "$WRAPPER"
fi
say "removed $UNIT and $ROOT/opt/$SERVICE"

if [ "$PURGE" = no ]; then
    say "kept $ROOT/etc/$SERVICE and $ROOT/var/lib/$SERVICE (use --purge to remove them)"
    exit 0
fi

# StateDirectory= may have moved state below /var/lib/private if the unit ever ran with
# DynamicUser=yes from a drop-in; remove that copy too.
rm -rf "$ROOT/etc/${SERVICE:?}" "$ROOT/var/lib/${SERVICE:?}" "$ROOT/var/lib/private/${SERVICE:?}"
say "purged $ROOT/etc/$SERVICE and $ROOT/var/lib/$SERVICE"
if [ -z "$ROOT" ] && getent passwd "$SERVICE_USER" >/dev/null; then
    userdel "$SERVICE_USER"
    say "user $SERVICE_USER removed"
fi
