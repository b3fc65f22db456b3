"""Time one DPO optimizer step and measure its peak memory: full fine-tuning against LoRA, in one run.

Same model (the embedded SmolLM2-135M-Instruct, fp32 on CPU, bf16 on CUDA), same 4 preference pairs as
`benchmarks/dpo_step.py` (its `make_rows`), same beta and learning rate. Both contenders are driven exactly as
`rlhf_ref.train.Trainer` drives `rlhf_ref.dpo.DPO` (loss, backward, clip, fused AdamW over the trainable parameters),
with the reference forward in every step (no precomputed reference log-probs), so that the reference's memory counts.

Contenders:
- full: every weight trains; the reference is a frozen copy (`rlhf_ref.models.frozen_copy`).
- lora: rank-16 LoRA (alpha 32, no dropout) on every attention and MLP projection (q, k, v, o, gate, up, down), set up
  by the trainer's own code (`TrainConfig(lora=...)`); the reference is the same model with its adapters switched off
  (`rlhf_ref.train.AdaptersOff`), no copy.

Contenders are run interleaved, in a fresh random order every round, after warm-up steps; medians are reported. Peak
memory is read from VmHWM of a fresh process per contender (on CUDA: peak allocated). Prints one JSON object.

Usage: python benchmarks/lora_step.py [--rounds 3] [--warmup 1] [--rank 16] [--no-memory]
"""
from __future__ import annotations
import argparse, json, random, statistics, subprocess, sys, time
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dpo_step import BETA, LR, algo_step, make_rows, peak_memory, sync  # the same pairs and settings as the DPO benchmark

ALL = ["full", "lora"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def setup(name, device, rank=16):
    "Build contender `name`; returns `(step function, trainable parameters)`."
    from rlhf_ref.data import preference_dataset, PreferenceCollator
    from rlhf_ref.dpo import DPO
    from rlhf_ref.models import frozen_copy, load_policy
    from rlhf_ref.train import _add_lora
    policy, tok = load_policy(device=device)
    if name == "full": ref = frozen_copy(policy)
    else: policy, ref, _ = _add_lora(policy, None, dict(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=TARGETS))
    ds = preference_dataset(make_rows(tok), tok, max_length=1024, max_prompt_length=512)
    batch = {k: v.to(device) for k, v in PreferenceCollator(tok.pad_token_id)(list(ds)).items() if torch.is_tensor(v)}
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, fused=True)
    algo = DPO(beta=BETA)
    policy.train()
    return algo_step(algo, batch, policy, ref, opt), sum(p.numel() for p in params)


def memory_probe(name, device, rank, steps=3):
    "Run in a child process: peak memory of `steps` steps of one contender, and its baseline after set-up."
    print(json.dumps(peak_memory(setup(name, device, rank)[0], device, steps)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.probe: return memory_probe(args.probe, device, args.rank)
    built = {n: setup(n, device, args.rank) for n in ALL} if args.rounds else {}  # --rounds 0: peak memory only
    for n in built:
        for _ in range(args.warmup): built[n][0]()
    times, rng = {n: [] for n in ALL}, random.Random(0)
    for _ in range(args.rounds):
        for n in rng.sample(ALL, len(ALL)):
            sync(device); t = time.perf_counter(); built[n][0](); sync(device)
            times[n].append(time.perf_counter() - t)
    out = {"device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
           "rank": args.rank, "trainable": {n: b[1] for n, b in built.items()},
           "median_s": {n: round(statistics.median(v), 3) for n, v in times.items() if v},
           "times_s": {n: [round(t, 3) for t in v] for n, v in times.items()}}
    if out["median_s"]: out["lora/full time"] = round(out["median_s"]["lora"] / out["median_s"]["full"], 3)
    del built
    if not args.no_memory:
        mem = {}
        for n in ALL:
            res = subprocess.run([sys.executable, __file__, "--probe", n, "--rank", str(args.rank)], capture_output=True, text=True)
            if res.returncode: raise RuntimeError(f"memory probe {n} failed:\n{res.stderr[-2000:]}")
            mem[n] = {k: round(v, 3) for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items()}
        out["memory_gb"] = mem
        out["lora/full peak memory"] = round(mem["lora"]["peak_gb"] / mem["full"]["peak_gb"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
