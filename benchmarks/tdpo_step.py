"""Time one TDPO optimizer step against one DPO step on the same batch, and compare their peak memory.

Same model, same preference pairs and the same step as `rlhf_ref.train.Trainer` takes (loss, backward, clip, fused
AdamW); the batch and the helpers come from `benchmarks/dpo_step.py`. Contenders, run interleaved in a fresh random
order every round after warm-up steps, medians reported:
- dpo: `rlhf_ref.dpo.DPO` with a reference forward every step (the like-for-like baseline: TDPO cannot precompute);
- dpo_precomputed: DPO with reference log-probs computed once per dataset (what the pipeline does for DPO);
- tdpo: `rlhf_ref.tdpo.TDPO` (TDPO2, alpha 0.5): reference logits every step, full-vocabulary KL at every response token.
Peak memory is measured for each contender in a fresh process (VmHWM on CPU, max_memory_allocated on CUDA).
Prints one JSON object with the ratios tdpo/dpo and tdpo/dpo_precomputed.

Usage: python benchmarks/tdpo_step.py [--model tiny] [--pairs 4] [--resp-tokens 128] [--rounds 5] [--warmup 2] [--no-memory]
"""
from __future__ import annotations
import argparse, json, subprocess, sys
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).parent))
from dpo_step import algo_step, interleaved_times, make_rows, peak_memory  # the batch and the measurement helpers of the DPO benchmark

ALL = ["dpo", "dpo_precomputed", "tdpo"]


def setup(name, device, model=None, pairs=4, resp_tokens=128):
    "Build contender `name`; returns a function that performs one optimizer step."
    from rlhf_ref.data import PreferenceCollator, precompute_ref_logps, preference_dataset
    from rlhf_ref.dpo import DPO
    from rlhf_ref.models import frozen_copy, load_policy
    from rlhf_ref.tdpo import TDPO
    policy, tok = load_policy(model, device=device)
    ref = frozen_copy(policy)
    ds = preference_dataset(make_rows(tok, n=pairs, resp_tokens=resp_tokens), tok, max_length=1024, max_prompt_length=512)
    if name == "dpo_precomputed": ds = precompute_ref_logps(ds, ref, tok.pad_token_id)
    batch = {k: v.to(device) for k, v in PreferenceCollator(tok.pad_token_id)(list(ds)).items() if torch.is_tensor(v)}
    algo = TDPO(beta=0.1, alpha=0.5) if name == "tdpo" else DPO(beta=0.1)
    opt = torch.optim.AdamW(policy.parameters(), lr=5e-6, fused=True)
    policy.train()
    return algo_step(algo, batch, policy, None if name == "dpo_precomputed" else ref, opt)


def memory_probe(name, device, **kw):
    "Run in a child process: peak memory of 3 steps of one contender, and its baseline after set-up."
    print(json.dumps(peak_memory(setup(name, device, **kw), device, 3)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="None: the embedded SmolLM2; 'tiny': the tiny random model")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--resp-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kw = dict(model=args.model, pairs=args.pairs, resp_tokens=args.resp_tokens)
    if args.probe: return memory_probe(args.probe, device, **kw)
    steps = {n: setup(n, device, **kw) for n in ALL} if args.rounds else {}  # --rounds 0: peak memory only
    for n in steps:
        for _ in range(args.warmup): steps[n]()
    times, med = interleaved_times(steps, args.rounds, device) if steps else ({n: [] for n in ALL}, {})
    out = {"device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
           "torch": torch.__version__, "model": args.model or "smollm2", "pairs": args.pairs, "resp_tokens": args.resp_tokens,
           "rounds": args.rounds, "median_step_s": med, "all_step_s": times,
           "time_ratios": {"tdpo/dpo": med["tdpo"] / med["dpo"], "tdpo/dpo_precomputed": med["tdpo"] / med["dpo_precomputed"]}
                          if med else {}}
    if not args.no_memory:
        mem = {}
        for n in ALL:
            cmd = [sys.executable, __file__, "--probe", n, "--pairs", str(args.pairs), "--resp-tokens", str(args.resp_tokens)]
            res = subprocess.run(cmd + (["--model", args.model] if args.model else []), capture_output=True, text=True)
            lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
            mem[n] = json.loads(lines[-1]) if lines else {"error": res.stderr.strip().splitlines()[-1:]}
        out["memory"] = mem
        if all("peak_gb" in m for m in mem.values()):
            above = {n: m["peak_gb"] - m["baseline_gb"] for n, m in mem.items()}
            out["memory_ratios"] = {"peak tdpo/dpo": mem["tdpo"]["peak_gb"] / mem["dpo"]["peak_gb"],
                                    "above-baseline tdpo/dpo": above["tdpo"] / above["dpo"]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
