#!/usr/bin/env bash
# Sets up everything the test suite needs on Debian 12 (apt packages, a venv) and runs the whole suite.
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers the tests talk to: Mosquitto, GStreamer's RTSP server (driven by /usr/bin/python3 + gi),
# FFmpeg for clips and benchmarks, python3-venv for a fresh Debian's python3.
APT_PACKAGES=(
  mosquitto mosquitto-clients ffmpeg openssl python3-venv python3-gi
  gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  systemd-container  # systemd-nspawn boots the OS to run the shipped unit under a real PID-1 systemd
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: missing Debian packages (run as root to install): ${missing[*]}" >&2
    exit 1
  fi
  echo "Installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
# Both OpenCV wheels install the cv2 package: a venv made before the switch to the contrib wheel must
# lose the plain one first, or removing either later breaks cv2.
if .venv/bin/python -m pip show -q opencv-python-headless >/dev/null 2>&1; then
  .venv/bin/python -m pip uninstall -y -q opencv-python-headless opencv-contrib-python-headless
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
exec .venv/bin/python -m pytest "$@"
