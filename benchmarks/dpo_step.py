"""Time one DPO optimizer step: rlhf_ref against TRL's DPOTrainer and a plain-PyTorch floor, in one run.

Same model (the embedded SmolLM2-135M-Instruct, fp32 on CPU, bf16 on CUDA), same 4 preference pairs (prompt about 60
tokens, responses about 128 tokens a side), same beta and optimizer family. Contenders are run interleaved, in a fresh
random order every round, after warm-up steps (the first AdamW step allocates its state); the medians are reported.
Peak memory is measured for each contender in a separate process. Prints one JSON object.

Contenders:
- rlhf_ref: `rlhf_ref.dpo.DPO` driven exactly as `rlhf_ref.train.Trainer` drives it (loss, backward, clip, fused AdamW);
  the reference forward runs every step, as in TRL's default. Each prompt runs once for its two responses
  (`rlhf_ref.logprobs.concatenated_forward`, the default), in the policy and in the reference.
- rlhf_ref_precomputed: the same with reference log-probs precomputed once per dataset (what the pipeline does); the
  step no longer contains a reference forward.
- trl: `trl.DPOTrainer` (bf16=False, otherwise TRL's defaults, so activation checkpointing on), stepped as its
  `Trainer._inner_training_loop` does: `training_step` (forward, backward), gradient clipping, optimizer and scheduler step.
- trl_no_ckpt: the same with activation checkpointing off.
- floor: plain PyTorch: full-sequence logits from `model(...)`, `log_softmax` + `gather`, masked sums, the DPO loss,
  backward, fused AdamW; reference forward under no_grad. No library around it.

Usage: python benchmarks/dpo_step.py [--rounds 5] [--warmup 2] [--contenders rlhf_ref,trl,...] [--no-memory | --memory-only]
"""
from __future__ import annotations
import argparse, json, os, random, resource, statistics, subprocess, sys, tempfile, time
import torch
import torch.nn.functional as F

BETA, LR, PAIRS = 0.1, 5e-6, 4
ALL = ["rlhf_ref", "rlhf_ref_precomputed", "trl", "trl_no_ckpt", "floor"]


def make_rows(tok, n=PAIRS, resp_tokens=128):
    "4 standard-format pairs: a movie-review prompt and two responses of about `resp_tokens` tokens."
    from rlhf_ref.core import data_dir, read_jsonl
    prompts = [r["prompt"] for r in read_jsonl(data_dir() / "sentiment_prompts.jsonl")][:n]
    text = " ".join(r["original"] for r in read_jsonl(data_dir() / "simplify.jsonl"))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    cut = lambda start, k: tok.decode(ids[start:start + k])
    prompt = lambda p: tok.apply_chat_template([{"role": "user", "content": "Write a long review that begins: " + p}],
                                               add_generation_prompt=True, tokenize=False)
    return [dict(prompt=prompt(p), chosen=cut(400 * i, resp_tokens + 4 * i), rejected=cut(400 * i + 200, resp_tokens - 4 * i))
            for i, p in enumerate(prompts)]


def setup(name, device):
    "Build contender `name`; returns a function that performs one optimizer step."
    from rlhf_ref.models import load_policy, frozen_copy
    from rlhf_ref.data import preference_dataset, PreferenceCollator, precompute_ref_logps
    policy, tok = load_policy(device=device)
    ref = frozen_copy(policy)
    rows = make_rows(tok)
    if name.startswith("trl"):
        from trl import DPOConfig, DPOTrainer
        from datasets import Dataset
        args = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=PAIRS, learning_rate=LR, beta=BETA,
                         bf16=False, use_cpu=device == "cpu", max_steps=1000, report_to=[], save_strategy="no",
                         disable_tqdm=True, activation_checkpointing=name == "trl", logging_steps=10**9)
        trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
        if args.activation_checkpointing:  # what Trainer.train() does before its loop
            trainer.model.activation_checkpointing_enable(activation_checkpointing_kwargs=args.activation_checkpointing_kwargs)
        trainer.create_optimizer_and_scheduler(num_training_steps=args.max_steps)
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train()'s loop
        batch = next(iter(trainer.get_train_dataloader()))
        model = trainer.model
        def step():
            model.train()
            trainer.training_step(model, batch)
            trainer.accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            trainer.optimizer.step(); trainer.lr_scheduler.step(); model.zero_grad(set_to_none=True)
        return step
    ds = preference_dataset(rows, tok, max_length=1024, max_prompt_length=512)
    if name == "rlhf_ref_precomputed": ds = precompute_ref_logps(ds, ref, tok.pad_token_id)
    batch = {k: v.to(device) for k, v in PreferenceCollator(tok.pad_token_id)(list(ds)).items() if torch.is_tensor(v)}
    opt = torch.optim.AdamW(policy.parameters(), lr=LR, fused=True)
    policy.train()
    if name.startswith("rlhf_ref"):
        from rlhf_ref.dpo import DPO
        algo = DPO(beta=BETA)
        def step():
            loss, _ = algo.loss(batch, policy, ref)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
            opt.step(); opt.zero_grad(set_to_none=True)
        return step
    # the plain-PyTorch floor
    ids, attn, resp = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    R = resp.shape[1]
    def seq_logps(model):
        logits = model(input_ids=ids, attention_mask=attn).logits[:, -R - 1:-1]
        return (logits.log_softmax(-1).gather(-1, ids[:, -R:, None]).squeeze(-1) * resp).sum(-1)
    def step():
        with torch.no_grad(): ref_lp = seq_logps(ref)
        lp = seq_logps(policy)
        h = (lp[:PAIRS] - ref_lp[:PAIRS]) - (lp[PAIRS:] - ref_lp[PAIRS:])
        (-F.logsigmoid(BETA * h)).mean().backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        opt.step(); opt.zero_grad(set_to_none=True)
    return step


def sync(device):
    if device == "cuda": torch.cuda.synchronize()


def _peak_rss() -> int:
    """This process's peak resident memory in bytes. Read from VmHWM, which starts afresh at exec; ru_maxrss does not on
    Linux (a child started from a large parent would report the parent's size)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_probe(name, device, steps=3):
    "Run in a child process: peak memory of `steps` steps of one contender, and its baseline after set-up."
    step = setup(name, device)
    if device == "cuda": torch.cuda.synchronize(); base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
    else: base = _peak_rss()
    for _ in range(steps): step()
    sync(device)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else _peak_rss()
    print(json.dumps({"baseline_gb": base / 2**30, "peak_gb": peak / 2**30}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--contenders", default=",".join(ALL))
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-only", action="store_true", help="skip the timing rounds; measure peak memory only")
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.probe: return memory_probe(args.probe, device)
    names = args.contenders.split(",")
    unknown = set(names) - set(ALL)
    if unknown: ap.error(f"unknown contenders {sorted(unknown)}; choose from {ALL}")
    if args.memory_only: args.rounds, args.warmup = 0, 0
    steps = {n: setup(n, device) for n in names} if args.rounds else {}
    for n in names:
        for _ in range(args.warmup): steps[n]()
    times = {n: [] for n in names}
    rng = random.Random(0)
    for _ in range(args.rounds):
        for n in rng.sample(names, len(names)):
            sync(device); t = time.perf_counter(); steps[n](); sync(device)
            times[n].append(time.perf_counter() - t)
    med = {n: statistics.median(v) for n, v in times.items() if v}
    out = {"device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
           "torch": torch.__version__, "pairs": PAIRS, "rounds": args.rounds, "median_step_s": med,
           "all_step_s": times, "ratios": {}}
    for a in ("rlhf_ref", "rlhf_ref_precomputed"):
        for b in ("trl", "trl_no_ckpt", "floor"):
            if a in med and b in med: out["ratios"][f"{a}/{b}"] = med[a] / med[b]
    if not args.no_memory:
        out["memory"] = {}
        for n in names:
            res = subprocess.run([sys.executable, __file__, "--probe", n], capture_output=True, text=True)
            lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
            out["memory"][n] = json.loads(lines[-1]) if lines else {"error": res.stderr.strip().splitlines()[-1:]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
