#!/usr/bin/env bash
# Set everything up, then run the main job: DPO on the sentiment task with the embedded SmolLM2-135M-Instruct.
# Extra arguments go to `rlhf-ref train` (e.g. --steps 40). The run folder and its report are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/rlhf-ref train --algo dpo --task sentiment --heldout-pairs 40 --steps 40 --out runs/dpo-sentiment --overwrite "$@"
