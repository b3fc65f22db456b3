#!/usr/bin/env bash
# Run HERE (a machine with the package registry and the embedded model's cache) before tools/gpu_check.sh runs on a
# GPU machine that cannot download anything. Fills build/gpu_carry/ (ignored by git: build/ is in .gitignore):
#   build/gpu_carry/model/   the embedded SmolLM2's config and tokenizer files (no weights: gpu_check.sh builds a
#                            random-weight checkpoint of the same architecture there)
#   build/gpu_carry/wheels/  the packages the GPU image lacks, or has at another version, pinned by constraints.txt
# Then, with the device tool: run(command="bash tools/gpu_check.sh", carry=["build/gpu_carry"]).
# The carried folder must stay well under the tool's 64 MiB (it prints its size). Knobs: GPU_CARRY, GPU_PYTHON, PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DEST=${GPU_CARRY:-build/gpu_carry}
PYVER=${GPU_PYTHON:-3.12}  # the GPU image's Python; GPU_PYTHON=3.11 GPU_CARRY=... makes a set to rehearse gpu_check here
rm -rf "$DEST"; mkdir -p "$DEST/model" "$DEST/wheels"

# 1. Tokenizer and config of the embedded model (de-quantised into the cache on first use: about 20 s).
src=$($PY -c "from rlhf_ref.models import embedded_model_dir; print(embedded_model_dir())")
for f in config.json tokenizer.json tokenizer_config.json chat_template.jinja generation_config.json; do
  cp "$src/$f" "$DEST/model/"
done

# 2. Wheels, at the versions constraints.txt pins (what CI passes with). The GPU image (Python 3.12, torch 2.11+cu130,
#    see /work/.library/device/KINDS.md) has accelerate, peft, pyarrow, pandas, fsspec, xxhash, safetensors, tokenizers,
#    sentence-transformers, pytest, hypothesis, scipy, sacrebleu; it lacks trl, datasets (+ dill, multiprocess), plotly,
#    vaderSentiment, pyphen, fastcore, and has transformers 5.17 (5.24 renamed the KV-cache argument: carry the pinned
#    one). Its huggingface_hub 1.33 satisfies transformers 5.24 (>= 1.31); the pinned 2.x would need httpx2, absent there.
#    Not carried: the MiniLM wheel (88 MB) and the GGUF wheel (93 MB), too big for one call.
#    The second and third lines: nbdev-test and what it needs to run notebooks (execnb on IPython; nbformat for plotly's
#    fig.show()), none of it in the image.
PKGS="transformers trl datasets dill multiprocess plotly vaderSentiment pyphen fastcore tokenizers
      nbdev astunparse fastgit ghapi watchdog execnb ipython ipython_pygments_lexers jedi parso matplotlib-inline pexpect
      ptyprocess prompt_toolkit wcwidth stack-data asttokens executing pure_eval traitlets
      nbformat fastjsonschema jsonschema jupyter_core jsonschema-specifications referencing rpds-py platformdirs"
pins=()
for p in $PKGS; do
  pin=$(grep -i "^${p}==" constraints.txt || true)
  [ -n "$pin" ] || { echo "gpu_prepare: $p is not pinned in constraints.txt" >&2; exit 1; }
  pins+=("$pin")
done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d "$DEST/wheels" "${pins[@]}"

echo "gpu_prepare: $(ls "$DEST/wheels" | wc -l) wheels, model files: $(ls "$DEST/model" | tr '\n' ' ')"
du -sh "$DEST"
