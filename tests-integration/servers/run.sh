#!/usr/bin/env bash
# Install / start / stop the bspump integration-test servers.
#   bash tests-integration/servers/run.sh ACTION [NAME...]
#   ACTION: install | start | stop | restart | status
#   NAME:   postgresql mosquitto kafka ferretdb secantusdb elasticsearch | all (default)
# See README.md beside this file.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The harness is stdlib-only Python >= 3.11; prefer an explicit interpreter, then python3.
py="${BSPUMP_SERVERS_PYTHON:-}"
if [[ -z "$py" ]]; then
    for candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            py="$candidate"
            break
        fi
    done
fi
if [[ -z "$py" ]]; then
    echo "run.sh: no Python >= 3.11 found (set BSPUMP_SERVERS_PYTHON)" >&2
    exit 2
fi
exec "$py" "$here/harness.py" "$@"
