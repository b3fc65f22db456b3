"""Time one SimPO and one CPO optimizer step: rlhf_ref against TRL's CPOTrainer on the same batch, and their peak memory.

Same model (by default the embedded SmolLM2-135M-Instruct; `--arch` a random SmolLM2 shape as in `dpo_step.py`), same
preference pairs (`dpo_step.make_rows`: `--pairs`, `--resp-tokens`), same hyperparameters, fp32 on CPU, bf16 on
CUDA. Neither method has a reference model, so a step is one policy forward and backward over the stacked chosen and
rejected rows. Contenders, run interleaved in a fresh random order every round after warm-up steps, medians reported:
- rlhf_ref_simpo: `rlhf_ref.simpo.SimPO(beta=2.0, gamma_beta_ratio=0.5)` stepped as `rlhf_ref.train.Trainer` steps it
  (loss, backward, clip, fused AdamW); log-probs are token means.
- rlhf_ref_cpo: `rlhf_ref.simpo.CPO(beta=0.1, lambda_=1.0)`: the preference term on summed log-probs plus the NLL of
  the chosen responses.
- trl_simpo, trl_cpo: TRL's `CPOTrainer` (`trl.experimental.cpo` in TRL 1.x) with `loss_type="simpo"`,
  `cpo_alpha=0.0`, `beta=2.0`, `simpo_gamma=1.0` (TRL's gamma is absolute: 0.5 x 2.0), and with `loss_type="sigmoid"`,
  `cpo_alpha=1.0`, `beta=0.1`; `bf16=False`, otherwise TRL's defaults (so activation checkpointing on), stepped as its
  `Trainer._inner_training_loop` does (training_step, clip, optimizer and scheduler step).
- trl_simpo_no_ckpt, trl_cpo_no_ckpt: the same with activation checkpointing off.
Peak memory is measured for each contender in a fresh process (VmHWM on CPU, max_memory_allocated on CUDA).
Prints one JSON object with the ratios of rlhf_ref to TRL's faster configuration for each method, and each contender's
loss at its first step (before any update, from the same weights: the two implementations of a method should agree).

Usage: python benchmarks/simpo_step.py [--pairs 4] [--resp-tokens 128] [--arch 135m] [--rounds 5] [--warmup 2]
       [--contenders rlhf_ref_simpo,trl_simpo,...] [--no-memory]
"""
from __future__ import annotations
import argparse, json, subprocess, sys, tempfile
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).parent))
from dpo_step import (ARCHS, LR, algo_step, interleaved_times, load_models, make_batch, make_rows,  # the DPO benchmark's batch,
                      peak_memory, trl_step)  # set-up and measurement helpers

ALL = ["rlhf_ref_simpo", "rlhf_ref_cpo", "trl_simpo", "trl_simpo_no_ckpt", "trl_cpo", "trl_cpo_no_ckpt"]
SIMPO = dict(beta=2.0, gamma_beta_ratio=0.5)
CPO = dict(beta=0.1, lambda_=1.0)


def setup(name, device, args):
    "Build contender `name`; returns a function that performs one optimizer step."
    policy, tok = load_models(args.arch, device)
    if name.startswith("trl"):
        try: from trl.experimental.cpo import CPOConfig, CPOTrainer
        except ImportError: from trl import CPOConfig, CPOTrainer  # TRL < 1.0
        from datasets import Dataset
        kw = (dict(loss_type="simpo", cpo_alpha=0.0, beta=SIMPO["beta"], simpo_gamma=SIMPO["gamma_beta_ratio"] * SIMPO["beta"])
              if "simpo" in name else dict(loss_type="sigmoid", cpo_alpha=CPO["lambda_"], beta=CPO["beta"]))
        targs = CPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.pairs, learning_rate=LR, bf16=False,
                          use_cpu=device == "cpu", max_steps=1000, report_to=[], save_strategy="no", disable_tqdm=True,
                          max_length=4096, activation_checkpointing=not name.endswith("no_ckpt"), logging_steps=10**9, **kw)
        rows = make_rows(tok, args.pairs, args.resp_tokens)
        return trl_step(CPOTrainer(model=policy, args=targs, train_dataset=Dataset.from_list(rows), processing_class=tok))
    from rlhf_ref.simpo import CPO as CPOAlgo, SimPO as SimPOAlgo
    _, batch = make_batch(tok, args)
    batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
    algo = SimPOAlgo(**SIMPO) if name == "rlhf_ref_simpo" else CPOAlgo(**CPO)
    opt = torch.optim.AdamW(policy.parameters(), lr=LR, fused=True)
    policy.train()
    return algo_step(algo, batch, policy, None, opt)


def memory_probe(name, device, args):
    "Run in a child process: peak memory of 3 steps of one contender, and its baseline after set-up."
    print(json.dumps(peak_memory(setup(name, device, args), device, 3)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--resp-tokens", type=int, default=128)
    ap.add_argument("--arch", choices=sorted(ARCHS), default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--contenders", default=",".join(ALL), help=f"comma-separated, from {ALL}")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.prompt_tokens = 0  # make_batch reads it (dpo_step.py's --prompt-tokens)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.probe: return memory_probe(args.probe, device, args)
    names = args.contenders.split(",")
    unknown = set(names) - set(ALL)
    if unknown: ap.error(f"unknown contenders {sorted(unknown)}; choose from {ALL}")
    steps = {n: setup(n, device, args) for n in names} if args.rounds else {}
    first_loss = {}  # the loss of the first step, before any update: the same objective gives the same number
    for n in steps:
        for i in range(args.warmup):
            loss = steps[n]()
            if i == 0: first_loss[n] = float(loss)
    times, med = interleaved_times(steps, args.rounds, device)
    out = {"device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
           "torch": torch.__version__, "arch": args.arch or "embedded SmolLM2-135M-Instruct", "pairs": args.pairs,
           "resp_tokens": args.resp_tokens, "rounds": args.rounds, "median_step_s": med, "all_step_s": times, "ratios": {},
           "first_step_loss": first_loss}
    for m in ("simpo", "cpo"):
        trl = [med[n] for n in (f"trl_{m}", f"trl_{m}_no_ckpt") if n in med]
        if f"rlhf_ref_{m}" in med and trl: out["ratios"][f"rlhf_ref_{m}/trl_{m} (faster configuration)"] = med[f"rlhf_ref_{m}"] / min(trl)
    if not args.no_memory:
        out["memory"] = {}
        fwd = ["--pairs", str(args.pairs), "--resp-tokens", str(args.resp_tokens)] + (["--arch", args.arch] if args.arch else [])
        for n in names:
            res = subprocess.run([sys.executable, __file__, "--probe", n, *fwd], capture_output=True, text=True)
            lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
            out["memory"][n] = json.loads(lines[-1]) if lines else {"error": res.stderr.strip().splitlines()[-1:]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
