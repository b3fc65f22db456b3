#!/usr/bin/env bash
# Opt-in: try the newest releases of every dependency. Builds .venv-latest without constraints.txt, runs the whole
# suite in it, and on success rewrites constraints.txt from it and shows what changed, so that an upgrade is a
# deliberate commit (review the diff, then commit constraints.txt). Nothing in .venv is touched.
#   bash tools/try_latest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV=.venv-latest CONSTRAINTS=none
rm -f "$VENV/.rlhf_ref-setup"
bash tools/setup.sh
echo "== newest versions installed:"; "$VENV/bin/python" -m pip list --outdated 2>/dev/null | head -20 || true
bash tools/test.sh
bash tools/lock.sh "$VENV"
echo "== the suite passed with the newest releases; constraints.txt now pins them:"
git --no-pager diff --stat constraints.txt; git --no-pager diff -U0 constraints.txt | grep '^[-+][^-+#]' || echo "(no change)"
