#!/usr/bin/env bash
# CUDA parity and GPU benchmarks, for a GPU machine that cannot download anything (the device tool's H100/H200; see
# /work/shared/ENVIRONMENT.md), in one call of under ten minutes. Prepare HERE first with `bash tools/gpu_prepare.sh`,
# which fills build/gpu_carry/:
#   model/   config.json, tokenizer.json, tokenizer_config.json, chat_template.jinja, generation_config.json of the
#            embedded SmolLM2-135M-Instruct (from the folder rlhf_ref.models.embedded_model_dir() returns)
#   wheels/  the pinned packages the GPU image lacks (trl, datasets, plotly, vaderSentiment, pyphen, fastcore, nbdev
#            and what nbdev-test needs to run notebooks) or has at another version (transformers, tokenizers)
# then run, with the device tool:  run(command="bash tools/gpu_check.sh", carry=["build/gpu_carry"], timeout_s=600)
# What it does there:
#   0. installs the wheels into a temporary --target folder put on PYTHONPATH (nothing is installed system-wide) and
#      builds a random-weight checkpoint of the embedded model's exact architecture into a fresh $RLHF_REF_CACHE, where
#      load_policy() finds it (tools/random_checkpoint.py; weights do not change a step's cost or code paths);
#   1. timings, alone on the GPU: benchmarks/dpo_step.py at 135M x 32 pairs x 512 tokens and at the 1.7B shape x 16
#      pairs x 512 tokens (contenders interleaved in one process where the card holds them all, else one process
#      each, one after the other), benchmarks/head_logps.py at 1.7B's width, tdpo_step.py and lora_step.py (timings),
#      generate.py (rollout sampling vs raw generate) and grpo_step.py (one GRPO iteration vs TRL; 135M and 1.7B shapes);
#   2. then, side by side (none of it is a timing): the pytest suite and every notebook's lesson cells (nbdev-test, one
#      process per notebook) with RLHF_REF_DEVICE=cuda, the benchmarks' peak-memory probes (one fresh process per
#      contender, torch.cuda.max_memory_allocated: unaffected by the neighbours), and an FSDP smoke test: the Trainer
#      under `accelerate launch --config_file configs/fsdp.yaml --num_processes 1` against the same run without FSDP.
#      Tests that need the real weights or the MiniLM wheel (too big for the carry) skip with that reason
#      (tests/conftest.py); notebooks that need them fail, and say so.
#   3. writes env.txt, bench.txt, memory.txt, pytest.txt, notebooks.txt, fsdp.txt, summary.txt (and profile.txt) to
#      $OUT (default build/gpu_check_out). Every step has its own time limit, so the files come back even when one
#      runs over.
# Knobs: RLHF_REF_DEVICE (default cuda; cpu rehearses the script here), TESTS (default "tests"), PYTEST_ARGS (default
# "-n 7 --ignore=tests/test_docs.py": building the site needs Node.js for MathJax, absent there, and uses no device),
# NB (notebooks, default nbs/*.ipynb), NB_JOBS (default 7), SKIP_TESTS=1, SKIP_NBS=1, SKIP_BENCH=1, SKIP_FSDP=1, SKIP_ONLINE=1,
# BENCH_135M / BENCH_17B (dpo_step.py's size arguments), SKIP_MEMORY (default SKIP_BENCH), MEM_135M / MEM_17B (the
# contenders whose peak memory is probed at each size; - for none), MEM_STEPS=0 (no TDPO / LoRA probes), DEADLINE
# (default 565: step 2 gets what is left of that many seconds from the start, at least 60; PHASE2_S sets its limit
# directly), PROFILE_ARGS (arguments of benchmarks/profile_step.py, run after step 1 when set, or in step 2 with
# SKIP_BENCH=1: profile.txt), GPU_CARRY (default build/gpu_carry), PY, CONTENDERS_135M (step 1's 135M contenders),
# BENCH_LONG_PROMPT (dpo_step.py's size arguments for the long-prompt run; - skips it; BENCH_17B=- too), HEAD_ARGS,
# SKIP_SMALL=1 (no TDPO/LoRA/SimPO timings), GPU_SITE (a folder under the repository, e.g. build/gpu_site: the wheels
# and the checkpoint are kept there and reused by the next call on the same machine).
# A first run on an H200 (2026-11-27) took 555 s in all: set-up 52 s, step 1 153 s, step 2 350 s (pytest 137 s).
# Later that day, on an H200: step 1 alone with SKIP_SMALL=1 took 158 s with set-up; the tests and notebooks side by
# side did not finish pytest in 400 s, nor did pytest alone at -n 14 in 150 s: give pytest alone about 500 s.
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
PY=${PY:-python3}
CARRY=${GPU_CARRY:-build/gpu_carry}
OUT=${OUT:-build/gpu_check_out}
mkdir -p "$OUT"
[ -d "$CARRY/model" ] && ls "$CARRY"/wheels/*.whl >/dev/null 2>&1 || { echo "gpu_check: $CARRY is incomplete: run tools/gpu_prepare.sh here first" >&2; exit 2; }
# GPU_SITE=build/gpu_site keeps the installed wheels (and the random checkpoint, in build/gpu_site/cache) for the next
# call on the same warm machine, whose ignored build outputs stay: a second call then skips the set-up (about 50 s)
SITE=${GPU_SITE:-$(mktemp -d /tmp/rlhf_ref_site.XXXXXX)}
WORK=$(mktemp -d /tmp/rlhf_ref_gpu.XXXXXX)
if [ ! -f "$SITE/.installed" ]; then
  mkdir -p "$SITE"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$CARRY"/wheels/*.whl \
    || { echo "gpu_check: installing the carried wheels failed" >&2; exit 2; }
  [ -n "${GPU_SITE:-}" ] && touch "$SITE/.installed"
fi
export PATH="$SITE/bin:$PATH" PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false RLHF_REF_DEVICE=${RLHF_REF_DEVICE:-cuda} PYTHONUNBUFFERED=1
if [ -n "${GPU_SITE:-}" ]; then export RLHF_REF_CACHE=${RLHF_REF_CACHE:-$PWD/$SITE/cache}
else export RLHF_REF_CACHE=${RLHF_REF_CACHE:-$(mktemp -d /tmp/rlhf_ref_cache.XXXXXX)}; fi
if [ ! -f "$RLHF_REF_CACHE/.random_checkpoint" ]; then
  $PY tools/random_checkpoint.py "$CARRY/model" --force || { echo "gpu_check: building the random checkpoint failed" >&2; exit 2; }
  [ -n "${GPU_SITE:-}" ] && touch "$RLHF_REF_CACHE/.random_checkpoint"
fi
elapsed() { echo "$(( $(date +%s) - T0 )) s"; }

{ date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; echo "RLHF_REF_DEVICE=$RLHF_REF_DEVICE"
  $PY - <<'PYEOF'
import platform, torch, transformers, accelerate, trl, datasets, peft
from rlhf_ref.core import default_device, default_dtype
from rlhf_ref.models import load_policy
print("python", platform.python_version(), "torch", torch.__version__, "transformers", transformers.__version__,
      "accelerate", accelerate.__version__, "trl", trl.__version__, "datasets", datasets.__version__, "peft", peft.__version__)
d = default_device()
print("default device", d, default_dtype(d), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
if torch.cuda.is_available(): print("GPU memory GiB", round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
m, _ = load_policy()
print("embedded stand-in:", type(m).__name__, sum(p.numel() for p in m.parameters()), "parameters", m.dtype, m.device)
PYEOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
GPU_GB=$($PY -c "import torch; print(int(torch.cuda.get_device_properties(0).total_memory / 2**30) if torch.cuda.is_available() else 0)")

# ---- 1. timings, alone on the GPU -------------------------------------------------------------------------------
BENCH_135M=${BENCH_135M:---arch 135m --pairs 32 --resp-tokens 512}
BENCH_17B=${BENCH_17B:---arch 1.7b --pairs 16 --resp-tokens 512}
bench() {  # bench LIMIT_S LABEL CMD...: run one benchmark command under a time limit, appending to bench.txt
  local limit=$1 label=$2; shift 2
  echo "== [$(elapsed)] $label: $*" | tee -a "$OUT/bench.txt"
  timeout "$limit" "$@" >>"$OUT/bench.txt" 2>"$WORK/bench.err"; local rc=$?
  [ $rc = 0 ] || { echo "exit status $rc"; tail -n 15 "$WORK/bench.err"; } | tee -a "$OUT/bench.txt"
  bench_rcs="${bench_rcs:-} $rc"
}
BENCH_LONG_PROMPT=${BENCH_LONG_PROMPT:---arch 135m --pairs 32 --resp-tokens 128 --prompt-tokens 512}
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  bench 120 "DPO step, 135M" $PY benchmarks/dpo_step.py $BENCH_135M --rounds 5 --warmup 2 --no-memory \
    --contenders ${CONTENDERS_135M:-rlhf_ref,rlhf_ref_shared,rlhf_ref_precomputed,rlhf_ref_ckpt,trl,trl_no_ckpt,floor}
  # prompts longer than the responses: where "auto" shares the prompt on a GPU; both choices forced, beside the others
  [ "$BENCH_LONG_PROMPT" = - ] || bench 120 "DPO step, 135M, long prompts" $PY benchmarks/dpo_step.py $BENCH_LONG_PROMPT \
    --rounds 5 --warmup 2 --no-memory --contenders rlhf_ref_shared,rlhf_ref_unshared,trl_no_ckpt,floor
  # at 1.7B each contender holds ~17 GB of weights, gradients and AdamW state, and a step's activations reach ~45 GB:
  # three interleaved fit a 139 GB card, not an 80 GB one, where each runs in its own process instead
  if [ "$BENCH_17B" = - ]; then :  # skipped
  elif [ "$GPU_GB" -ge 120 ] || [ "$RLHF_REF_DEVICE" = cpu ]; then
    bench 120 "DPO step, 1.7B shape (interleaved)" $PY benchmarks/dpo_step.py $BENCH_17B --rounds 5 --warmup 2 --no-memory \
      --contenders rlhf_ref,trl_no_ckpt,floor
  else
    for c in rlhf_ref trl_no_ckpt floor; do
      bench 50 "DPO step, 1.7B shape ($c alone: the card cannot hold three)" $PY benchmarks/dpo_step.py $BENCH_17B \
        --rounds 5 --warmup 2 --no-memory --contenders $c
    done
  fi
  bench 45 "LM head log-probs, ${HEAD_ARGS:=--n 16384 --d 2048}" $PY benchmarks/head_logps.py $HEAD_ARGS
  if [ "${SKIP_SMALL:-0}" != 1 ]; then  # SKIP_SMALL=1: not the 4-pair TDPO, LoRA and SimPO/CPO timings
    bench 45 "TDPO step against DPO (timings)" $PY benchmarks/tdpo_step.py --rounds 5 --no-memory
    bench 45 "LoRA DPO against full DPO (timings)" $PY benchmarks/lora_step.py --rounds 5 --no-memory
    bench 60 "SimPO and CPO against TRL's CPOTrainer (timings)" $PY benchmarks/simpo_step.py --rounds 5 --no-memory
  fi
  if [ "${SKIP_ONLINE:-0}" != 1 ]; then  # SKIP_ONLINE=1: not the rollout-generation and GRPO-iteration timings
    bench 60 "Rollout generation against raw generate, 135M" $PY benchmarks/generate.py --arch 135m --prompts 32 --n 4 \
      --max-new-tokens 128 --rounds 5
    bench 150 "GRPO iteration against TRL, 135M" $PY benchmarks/grpo_step.py --arch 135m --prompts 8 --group 8 \
      --max-new-tokens 256 --rounds 3 --contenders rlhf_ref,rlhf_ref_shared,trl,trl_no_ckpt
    [ "$BENCH_17B" = - ] || bench 240 "GRPO iteration against TRL, 1.7B shape" $PY benchmarks/grpo_step.py --arch 1.7b \
      --prompts 4 --group 8 --max-new-tokens 256 --rounds 3 --contenders rlhf_ref,trl_no_ckpt
  fi
fi

profile() {  # operator-level profile of one step (benchmarks/profile_step.py): profile.txt
  # shellcheck disable=SC2086
  timeout "$1" $PY benchmarks/profile_step.py $PROFILE_ARGS >"$OUT/profile.txt" 2>"$WORK/profile.err" \
    || { echo "profile_step.py failed:"; tail -n 15 "$WORK/profile.err"; } >>"$OUT/profile.txt"
}
# alone on the GPU after the timings; with SKIP_BENCH=1, beside step 2's tests (its kernel times are then contended)
[ -n "${PROFILE_ARGS:-}" ] && [ "${SKIP_BENCH:-0}" != 1 ] && { echo "== [$(elapsed)] profile_step.py $PROFILE_ARGS"; profile 120; }

# ---- 2. tests, notebooks, memory probes, FSDP, side by side ------------------------------------------------------
PHASE2_S=${PHASE2_S:-$(( ${DEADLINE:-565} - $(date +%s) + T0 ))}  # what is left of DEADLINE seconds from the start
[ "$PHASE2_S" -ge 60 ] || PHASE2_S=60
END=$(( $(date +%s) + PHASE2_S ))
tl() {  # tl CAP: seconds left of step 2, at most CAP (at least 1)
  local l=$(( END - $(date +%s) )); [ "$l" -gt "$1" ] && l=$1; [ "$l" -ge 1 ] && echo "$l" || echo 1
}
echo "== [$(elapsed)] step 2 (limit ${PHASE2_S} s)"
pids=()
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  # tests/test_cli.py runs the `rlhf-ref` entry point beside the interpreter, which pip would write on installing the
  # package; the package is only on PYTHONPATH here, so write that script the way pip does
  BIN=$($PY -c "import sys, pathlib; print(pathlib.Path(sys.executable).parent)")
  [ -e "$BIN/rlhf-ref" ] || { printf '#!%s\nimport sys\nfrom rlhf_ref.cli import main\nsys.exit(main())\n' \
    "$($PY -c 'import sys; print(sys.executable)')" >"$BIN/rlhf-ref" && chmod +x "$BIN/rlhf-ref"; } \
    || echo "gpu_check: could not write $BIN/rlhf-ref: tests/test_cli.py will fail" >&2
  TO=""; $PY -c "import pytest_timeout" 2>/dev/null && TO="--timeout 240"
  # shellcheck disable=SC2086
  # -v: one line per test as it ends (PASSED / FAILED / ERROR with its name), so the names survive the time limit,
  # which cuts off pytest's closing summary (a -q run that ran out of time left only dots)
  ( timeout "$PHASE2_S" $PY -m pytest -v -p no:cacheprovider ${PYTEST_ARGS:--n 7 --ignore=tests/test_docs.py} $TO -ra ${TESTS:-tests} >"$OUT/pytest.txt" 2>&1
    echo "pytest exit status: $?" >>"$OUT/pytest.txt" ) &
  pids+=($!)
fi
if [ "${SKIP_NBS:-0}" != 1 ]; then
  mkdir -p "$WORK/nb"
  # longest first (by size), NB_JOBS at a time; each notebook's verdict and the tail of its failure go to notebooks.txt
  ( ls -S ${NB:-nbs/*.ipynb} | timeout "$PHASE2_S" xargs -P "${NB_JOBS:-7}" -I{} sh -c \
      'n=$(basename {} .ipynb); s=$(date +%s); nbdev-test {} >"'"$WORK"'/nb/$n.log" 2>&1; rc=$?;
       echo "$n rc=$rc $(( $(date +%s) - s ))s" >>"'"$WORK"'/nb/verdicts"' ) &
  pids+=($!)
fi
if [ "${SKIP_MEMORY:-${SKIP_BENCH:-0}}" != 1 ]; then
  ( for args in "$BENCH_135M --contenders ${MEM_135M:-rlhf_ref,rlhf_ref_precomputed,rlhf_ref_ckpt,trl,trl_no_ckpt,floor}" \
                "$BENCH_17B --contenders ${MEM_17B:-rlhf_ref,trl_no_ckpt,floor}"; do
      case "$args" in *"--contenders -"*) continue;; esac  # MEM_135M=- or MEM_17B=- skips that size
      echo "== dpo_step.py --memory-only --probe-steps 2 $args"
      # shellcheck disable=SC2086
      timeout "$(tl 150)" $PY benchmarks/dpo_step.py --memory-only --probe-steps 2 $args 2>>"$WORK/memory.err"
    done
    if [ "${MEM_STEPS:-1}" = 1 ]; then
      echo "== tdpo_step.py / lora_step.py peak memory (rounds 0: the probes only)"
      timeout "$(tl 60)" $PY benchmarks/tdpo_step.py --rounds 0 --warmup 0 2>>"$WORK/memory.err"
      timeout "$(tl 60)" $PY benchmarks/lora_step.py --rounds 0 --warmup 0 2>>"$WORK/memory.err"
      timeout "$(tl 90)" $PY benchmarks/simpo_step.py --rounds 0 --warmup 0 2>>"$WORK/memory.err"
    fi ) >"$OUT/memory.txt" 2>&1 &
  pids+=($!)
fi
if [ "${SKIP_FSDP:-0}" != 1 ]; then
  ( echo "== FSDP2 (configs/fsdp.yaml), one process, tests/mp_train.py: a 4-step run, and a run stopped at step 3 then resumed"
    timeout "$(tl 150)" $PY -m accelerate.commands.launch --config_file configs/fsdp.yaml --num_processes 1 tests/mp_train.py \
      "$WORK/fsdp" full:4:1 s:4:1:stop3 s:4:1:resume 2>&1 | tail -n 25; echo "fsdp exit status: ${PIPESTATUS[0]}"
    echo "== the same 4-step run without accelerate launch"
    timeout "$(tl 100)" $PY tests/mp_train.py "$WORK/plain" full:4:1 2>&1 | tail -n 5
    $PY - "$WORK" <<'PYEOF'
import sys, torch
from pathlib import Path
w = Path(sys.argv[1])
def load(p):
    d = torch.load(p, weights_only=False)
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).float().cpu() for k, v in d.items()}
try:
    a, b, r = load(w / "plain/full/final.pt"), load(w / "fsdp/full/final.pt"), load(w / "fsdp/s/final.pt")
    print("max |FSDP - plain| after 4 steps:", max((a[k] - b[k]).abs().max().item() for k in a))
    print("max |FSDP stopped at 3 and resumed - FSDP straight| after 4 steps:", max((b[k] - r[k]).abs().max().item() for k in b))
except Exception as e: print("comparison failed:", type(e).__name__, e)
PYEOF
  ) >"$OUT/fsdp.txt" 2>&1 &
  pids+=($!)
fi
if [ -n "${PROFILE_ARGS:-}" ] && [ "${SKIP_BENCH:-0}" = 1 ]; then ( profile "$(tl 120)" ) & pids+=($!); fi
for p in "${pids[@]}"; do wait "$p"; done
echo "== [$(elapsed)] step 2 done"

if [ -d "$WORK/nb" ]; then
  { echo "notebooks: $(grep -c 'rc=0' "$WORK/nb/verdicts" 2>/dev/null) passed, $(grep -vc 'rc=0' "$WORK/nb/verdicts" 2>/dev/null) failed, of $(ls ${NB:-nbs/*.ipynb} | wc -l) (the rest not reached within the limit)"
    sort "$WORK/nb/verdicts" 2>/dev/null
    for f in "$WORK"/nb/*.log; do
      n=$(basename "$f" .log); grep -q "^$n rc=0" "$WORK/nb/verdicts" 2>/dev/null && continue
      echo "---- $n"; grep -m1 -A12 "While Executing Cell" "$f"; echo "[...]"; tail -n 30 "$f"
    done; } >"$OUT/notebooks.txt" 2>&1
fi
{ echo "device: $(grep -m1 -E '^GPU|default device' "$OUT/env.txt")"
  echo "benchmark exit statuses:${bench_rcs:- skipped}"
  echo "pytest: $(grep -E '[0-9]+ (passed|failed)' "$OUT/pytest.txt" 2>/dev/null | tail -n 1); $(grep 'pytest exit status' "$OUT/pytest.txt" 2>/dev/null)"
  echo "pytest so far: $(grep -c ' PASSED' "$OUT/pytest.txt" 2>/dev/null) passed, $(grep -c ' SKIPPED' "$OUT/pytest.txt" 2>/dev/null) skipped, $(grep -cE ' (FAILED|ERROR)' "$OUT/pytest.txt" 2>/dev/null) failed or errors"
  grep -E ' (FAILED|ERROR) ' "$OUT/pytest.txt" 2>/dev/null | sed -E 's/^\[gw[0-9]+\] \[ *[0-9]+%\] //' | sort -u | head -n 40
  head -n 1 "$OUT/notebooks.txt" 2>/dev/null
  grep -E "exit status|max \|" "$OUT/fsdp.txt" 2>/dev/null
  echo "total $(elapsed)"; } | tee "$OUT/summary.txt"
[ -n "${GPU_SITE:-}" ] || rm -rf "$SITE"
grep -q "pytest exit status: 0" "$OUT/pytest.txt" 2>/dev/null || [ "${SKIP_TESTS:-0}" = 1 ]
