#!/usr/bin/env bash
# Sets up the agent in a venv on Debian 12 and runs `edge-agent demo`: a synthetic camera, an intrusion
# task created through the agent's own API, events printed live as they are delivered. No broker needed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    echo "scripts/demo.sh: python3-venv is missing (apt-get install python3-venv)" >&2
    exit 1
  fi
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
# Both OpenCV wheels install the cv2 package: a venv made before the switch to the contrib wheel must
# lose the plain one first, or removing either later breaks cv2.
if .venv/bin/python -m pip show -q opencv-python-headless >/dev/null 2>&1; then
  .venv/bin/python -m pip uninstall -y -q opencv-python-headless opencv-contrib-python-headless
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/edge-agent demo "$@"
