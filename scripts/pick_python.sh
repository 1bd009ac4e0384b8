#!/usr/bin/env bash
# Print the Python that `make` installs npuyolo into and runs it with:
#  - the active virtual environment, if any;
#  - else $PY (default python3), unless that interpreter is "externally managed" (PEP 668: Debian/Ubuntu system
#    Pythons refuse `pip install`), in which case a project venv .venv is created once with
#    --system-site-packages (so an installed torch is reused, not downloaded again) and used instead.
set -euo pipefail
if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then echo "$VIRTUAL_ENV/bin/python"; exit 0; fi
PY=${PY:-python3}
if "$PY" -c 'import os, sys, sysconfig; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) and sys.prefix == sys.base_prefix else 1)'; then
  VENV=${VENV:-.venv}
  if [ ! -x "$VENV/bin/python" ]; then
    echo "pick_python: $PY is externally managed (PEP 668); creating $VENV" >&2
    "$PY" -m venv --system-site-packages "$VENV" >&2
  fi
  echo "$VENV/bin/python"
else
  echo "$PY"
fi
