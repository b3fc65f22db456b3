#!/usr/bin/env bash
# Serve the docs site on http://127.0.0.1:${PORT:-8000}/ (building it first when _site/ has none):
#   bash tools/serve_docs.sh            # or: bash tools/serve_docs.sh 8080
#   bash tools/serve_docs.sh --rebuild  # build again (only changed notebooks are re-processed), then serve
# Ctrl-C stops it. Set HOST=0.0.0.0 to reach it from another machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
port=${PORT:-8000}; rebuild=0
for a in "$@"; do case "$a" in --rebuild) rebuild=1 ;; *) port=$a ;; esac; done
if [ "$rebuild" = 1 ] || [ ! -f _site/index.html ]; then "$PY" tools/build_docs.py; fi
echo "serving _site/ on http://${HOST:-127.0.0.1}:$port/ (Ctrl-C stops)"
exec "$PY" -m http.server "$port" --bind "${HOST:-127.0.0.1}" --directory _site
