#!/usr/bin/env bash
# Creates the virtualenv and installs the package with its test tools. Idempotent; pip's cache (~/.cache/pip) makes
# a second run fast. Usage: hack/bootstrap.sh PYTHON VENV
set -euo pipefail
source "$(dirname "$0")/lib.sh"
python=${1:-python3}
venv=${2:-.venv}

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "bootstrap: $python is missing or older than 3.11; install Python 3.11+ (e.g. apt-get install python3)" >&2
  exit 1
fi
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "bootstrap: installing python3-venv" >&2
  apt_install python3-venv
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
