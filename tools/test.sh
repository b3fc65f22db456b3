#!/usr/bin/env bash
# Set everything up, then run the whole test suite: every notebook's cells (nbdev-test; `slow` and `cuda` cells are
# skipped, their outputs are stored) and the pytest files in tests/. Ends with pytest's summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
export PATH="$PWD/${VENV:-.venv}/bin:$PATH" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -c "from rlhf_ref.models import embedded_model_dir; embedded_model_dir()"  # de-quantise once, before workers race
echo "== nbdev-test (notebooks)"
nbdev-test --n-workers 2 --timing
echo "== pytest (tests/)"
python -m pytest -n 2 -q tests
