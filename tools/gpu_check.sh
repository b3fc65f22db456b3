#!/usr/bin/env bash
# CUDA parity check, for a GPU machine that cannot download anything (the device tool's H100/H200; see
# /work/shared/ENVIRONMENT.md). Prepare HERE first with `bash tools/gpu_prepare.sh`, which fills build/gpu_carry/:
#   model/   config.json, tokenizer.json, tokenizer_config.json, chat_template.jinja, generation_config.json of the
#            embedded SmolLM2-135M-Instruct (from the folder rlhf_ref.models.embedded_model_dir() returns)
#   wheels/  the pinned packages the GPU image lacks (trl, datasets, dill, multiprocess, plotly, vaderSentiment, pyphen,
#            fastcore) or has at another version (transformers, tokenizers)
# then run, with the device tool:  run(command="bash tools/gpu_check.sh", carry=["build/gpu_carry"], timeout_s=600)
# What it does there:
#   1. installs the wheels into a temporary --target folder put on PYTHONPATH (nothing is installed system-wide);
#   2. builds a random-weight checkpoint of the embedded model's exact architecture into a fresh $RLHF_REF_CACHE,
#      where load_policy() finds it (tools/random_checkpoint.py; weights do not change a step's cost or code paths);
#   3. runs the pytest suite with RLHF_REF_DEVICE=cuda (tests that need the real weights or the MiniLM wheel, which
#      does not fit the carry, skip with that reason: tests/conftest.py), then benchmarks/dpo_step.py;
#   4. writes env.txt, pytest.txt, pytest.xml, bench.txt and summary.txt to $OUT (default build/gpu_check_out).
# Knobs: RLHF_REF_DEVICE (default cuda; cpu rehearses the script here), TESTS (default "tests"), PYTEST_ARGS
# (default "-n 4"), BENCH_ARGS (passed to the benchmark), SKIP_TESTS=1, SKIP_BENCH=1, GPU_CARRY (default build/gpu_carry), PY.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
CARRY=${GPU_CARRY:-build/gpu_carry}
OUT=${OUT:-build/gpu_check_out}
mkdir -p "$OUT"
[ -d "$CARRY/model" ] && ls "$CARRY"/wheels/*.whl >/dev/null 2>&1 || { echo "gpu_check: $CARRY is incomplete: run tools/gpu_prepare.sh here first" >&2; exit 2; }
SITE=$(mktemp -d /tmp/rlhf_ref_site.XXXXXX)
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$CARRY"/wheels/*.whl \
  || { echo "gpu_check: installing the carried wheels failed" >&2; exit 2; }
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export RLHF_REF_DEVICE=${RLHF_REF_DEVICE:-cuda} RLHF_REF_CACHE=${RLHF_REF_CACHE:-$(mktemp -d /tmp/rlhf_ref_cache.XXXXXX)}
export PYTHONUNBUFFERED=1
$PY tools/random_checkpoint.py "$CARRY/model" --force || { echo "gpu_check: building the random checkpoint failed" >&2; exit 2; }

{ date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; echo "RLHF_REF_DEVICE=$RLHF_REF_DEVICE"
  $PY - <<'PYEOF'
import platform, torch, transformers, accelerate, trl, datasets
from rlhf_ref.core import default_device, default_dtype
from rlhf_ref.models import load_policy
print("python", platform.python_version(), "torch", torch.__version__, "transformers", transformers.__version__,
      "accelerate", accelerate.__version__, "trl", trl.__version__, "datasets", datasets.__version__)
d = default_device()
print("default device", d, default_dtype(d), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
m, _ = load_policy()
print("embedded stand-in:", type(m).__name__, sum(p.numel() for p in m.parameters()), "parameters", m.dtype, m.device)
PYEOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

test_rc=skipped
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  echo "== pytest (${TESTS:-tests})"
  # shellcheck disable=SC2086
  $PY -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:--n 4} -ra --junitxml="$OUT/pytest.xml" ${TESTS:-tests} 2>&1 | tee "$OUT/pytest.txt"
  test_rc=${PIPESTATUS[0]}
fi

bench_rc=skipped
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  echo "== benchmarks/dpo_step.py ${BENCH_ARGS:-}"
  # shellcheck disable=SC2086
  $PY benchmarks/dpo_step.py ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.txt"
  bench_rc=${PIPESTATUS[0]}
fi
{ echo "device: $(grep -m1 '^GPU' "$OUT/env.txt" || echo "$RLHF_REF_DEVICE")"
  echo "pytest exit status: $test_rc; $(grep -E '[0-9]+ (passed|failed|skipped)' "$OUT/pytest.txt" 2>/dev/null | tail -n 1)"
  echo "benchmark exit status: $bench_rc"; } | tee "$OUT/summary.txt"
rm -rf "$SITE"
{ [ "$test_rc" = 0 ] || [ "$test_rc" = skipped ]; } && { [ "$bench_rc" = 0 ] || [ "$bench_rc" = skipped ]; }
