"""Time one DPO optimizer step: rlhf_ref against TRL's DPOTrainer and a plain-PyTorch floor, in one run.

Same model (by default the embedded SmolLM2-135M-Instruct; with `--arch 135m|360m|1.7b` a random initialisation of that
SmolLM2 shape, built from a config in this file, so no checkpoint is needed), fp32 on CPU, bf16 on CUDA; same
preference pairs (`--pairs`, default 4; prompt about 60 tokens, or about 60 + `--prompt-tokens`, responses about
`--resp-tokens` (default 128) tokens a side), same beta and optimizer family. Contenders are run interleaved, in a
fresh random order every round, after warm-up steps (the first AdamW step allocates its state); the medians are
reported. Peak memory is measured for each contender in a separate process. On CUDA, model-FLOPs utilisation is printed:
(6 x params x tokens for the policy's forward and backward + 2 x params x tokens for the reference forward, where there
is one) / median step time / the card's peak dense bf16 FLOP/s; tokens are the real (non-padding) tokens of the stacked
chosen and rejected rows, the same count for every contender. Prints one JSON object.

Contenders:
- rlhf_ref: `rlhf_ref.dpo.DPO` driven exactly as `rlhf_ref.train.Trainer` drives it (loss, backward, clip, fused AdamW);
  the reference forward runs every step, as in TRL's default. Each prompt runs once for its two responses
  (`rlhf_ref.logprobs.concatenated_forward`'s default, `share_prompt="auto"`) where that pays on the device: always on
  the CPU, on a GPU only when the prompt is at least as long as the responses; in the policy and in the reference.
- rlhf_ref_shared, rlhf_ref_unshared (not run by default): rlhf_ref with the prompt shared whatever the device and
  lengths (what "auto" does on the CPU), and never shared: to measure what sharing gains or costs at a shape.
- rlhf_ref_precomputed: the same with reference log-probs precomputed once per dataset (what the pipeline does); the
  step no longer contains a reference forward.
- trl: `trl.DPOTrainer` (bf16=False, otherwise TRL's defaults, so activation checkpointing on), stepped as its
  `Trainer._inner_training_loop` does: `training_step` (forward, backward), gradient clipping, optimizer and scheduler step.
- trl_no_ckpt: the same with activation checkpointing off.
- rlhf_ref_ckpt (not run by default): rlhf_ref with the policy's activation checkpointing on
  (`TrainConfig.activation_checkpointing`); the prompt is then not shared (transformers turns the cache off).
- floor: plain PyTorch: full-sequence logits from `model(...)`, `log_softmax` + `gather`, masked sums, the DPO loss,
  backward, fused AdamW; reference forward under no_grad. No library around it.

Usage: python benchmarks/dpo_step.py [--rounds 5] [--warmup 2] [--contenders rlhf_ref,trl,...] [--no-memory | --memory-only]
       [--pairs 4] [--resp-tokens 128] [--arch 135m|360m|1.7b] [--probe-steps 3] [--peak-tflops X]
"""
from __future__ import annotations
import argparse, json, os, random, resource, statistics, subprocess, sys, tempfile, time
import torch
import torch.nn.functional as F

BETA, LR = 0.1, 5e-6
DEFAULT = ["rlhf_ref", "rlhf_ref_precomputed", "trl", "trl_no_ckpt", "floor"]
ALL = DEFAULT + ["rlhf_ref_ckpt", "rlhf_ref_shared", "rlhf_ref_unshared"]
# SmolLM2 shapes (HuggingFaceTB/SmolLM2-{135M,360M,1.7B} config.json); 135m is the embedded model's config. All Llama,
# vocabulary 49152, tied embeddings, head_dim 64. rope_theta does not change a step's cost.
ARCHS = {"135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                      intermediate_size=1536, rope_theta=100000.0),
         "360m": dict(hidden_size=960, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
                      intermediate_size=2560, rope_theta=100000.0),
         "1.7b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
                      intermediate_size=8192, rope_theta=130000.0)}
# peak dense bf16 tensor-core FLOP/s by device-name substring, first match wins (vendor data sheets, no sparsity)
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12), ("A100", 312e12),
             ("L40S", 362e12), ("A10G", 70e12), ("L4", 121e12)]


def make_rows(tok, n=4, resp_tokens=128, prompt_tokens=0):
    """`n` standard-format pairs: a movie-review prompt (after a context of about `prompt_tokens` tokens, when given) and
    two responses of about `resp_tokens` tokens."""
    from rlhf_ref.core import data_dir, read_jsonl
    prompts = [r["prompt"] for r in read_jsonl(data_dir() / "sentiment_prompts.jsonl")][:n]
    assert len(prompts) == n, f"only {len(prompts)} prompts"
    text = " ".join(r["original"] for r in read_jsonl(data_dir() / "simplify.jsonl"))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    stride = max(400, 2 * resp_tokens)
    ids = ids * (1 + (stride * n + 2 * resp_tokens) // len(ids))  # long batches wrap around the text
    cut = lambda start, k: tok.decode(ids[start:start + k])
    context = lambda i: f"Context: {cut(len(ids) - prompt_tokens - 2 * i, prompt_tokens)}\n\n" if prompt_tokens else ""
    prompt = lambda i, p: tok.apply_chat_template(
        [{"role": "user", "content": context(i) + "Write a long review that begins: " + p}],
        add_generation_prompt=True, tokenize=False)
    d = lambda i: min(4 * (i % 8), resp_tokens // 2)  # lengths differ by a few tokens between rows and sides
    return [dict(prompt=prompt(i, p), chosen=cut(stride * i, resp_tokens + d(i)),
                 rejected=cut(stride * i + stride // 2, resp_tokens - d(i))) for i, p in enumerate(prompts)]


def load_models(arch, device):
    "`(policy, tokenizer)`: the embedded model, or a seeded random initialisation of SmolLM2 shape `arch`."
    from rlhf_ref.models import load_policy, load_tokenizer, disable_dropout
    from rlhf_ref.core import default_dtype, set_seed
    if arch is None: return load_policy(device=device)
    from transformers import LlamaConfig, LlamaForCausalLM
    tok = load_tokenizer()
    config = LlamaConfig(vocab_size=49152, head_dim=64, tie_word_embeddings=True, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, **ARCHS[arch])
    set_seed(0)
    with torch.device(device): model = LlamaForCausalLM(config)
    model = model.to(default_dtype(torch.device(device)))
    model.generation_config.pad_token_id = tok.pad_token_id
    return disable_dropout(model), tok


def make_batch(tok, args):
    "The collated rlhf_ref batch of the benchmark's pairs (on the CPU)."
    from rlhf_ref.data import preference_dataset, PreferenceCollator
    ds = preference_dataset(make_rows(tok, args.pairs, args.resp_tokens, args.prompt_tokens), tok, max_length=4096,
                            max_prompt_length=2048)
    return ds, PreferenceCollator(tok.pad_token_id)(list(ds))


def setup(name, device, args):
    "Build contender `name`; returns a function that performs one optimizer step."
    from rlhf_ref.models import frozen_copy
    from rlhf_ref.data import PreferenceCollator, precompute_ref_logps
    policy, tok = load_models(args.arch, device)
    ref = frozen_copy(policy)
    PAIRS = args.pairs
    if name.startswith("trl"):
        rows = make_rows(tok, args.pairs, args.resp_tokens, args.prompt_tokens)
        from trl import DPOConfig, DPOTrainer
        from datasets import Dataset
        targs = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=PAIRS, learning_rate=LR, beta=BETA,
                          bf16=False, use_cpu=device == "cpu", max_steps=1000, report_to=[], save_strategy="no",
                          disable_tqdm=True, max_length=4096,
                          activation_checkpointing=name == "trl", logging_steps=10**9)
        trainer = DPOTrainer(model=policy, ref_model=ref, args=targs, train_dataset=Dataset.from_list(rows), processing_class=tok)
        return trl_step(trainer)
    ds, _ = make_batch(tok, args)
    if name == "rlhf_ref_precomputed": ds = precompute_ref_logps(ds, ref, tok.pad_token_id)
    batch = {k: v.to(device) for k, v in PreferenceCollator(tok.pad_token_id)(list(ds)).items() if torch.is_tensor(v)}
    opt = torch.optim.AdamW(policy.parameters(), lr=LR, fused=True)
    policy.train()
    if name.startswith("rlhf_ref"):
        from rlhf_ref.dpo import DPO
        algo = DPO(beta=BETA)
        if name == "rlhf_ref_ckpt":  # as `Trainer` does for `TrainConfig(activation_checkpointing=True)`
            (getattr(policy, "activation_checkpointing_enable", None) or policy.gradient_checkpointing_enable)()
        step = algo_step(algo, batch, policy, ref, opt)
        if name not in ("rlhf_ref_shared", "rlhf_ref_unshared"): return step
        from rlhf_ref import logprobs
        def forced_step():  # "auto" with the sharing threshold at 0 or infinity for this step only (one process for all)
            old = logprobs.SHARE_PROMPT_MIN_RATIO.get(device)
            logprobs.SHARE_PROMPT_MIN_RATIO[device] = 0.0 if name == "rlhf_ref_shared" else float("inf")
            try: step()
            finally:
                if old is None: del logprobs.SHARE_PROMPT_MIN_RATIO[device]
                else: logprobs.SHARE_PROMPT_MIN_RATIO[device] = old
        return forced_step
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


def algo_step(algo, batch, policy, ref, opt):
    "One step of an rlhf_ref algorithm as `rlhf_ref.train.Trainer` takes it (loss, backward, clip at 10, the optimizer)."
    def step():
        loss, _ = algo.loss(batch, policy, ref)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        opt.step(); opt.zero_grad(set_to_none=True)
        return loss.detach()
    return step


def trl_step(trainer):
    """One optimizer step of a TRL trainer on its first batch, as `Trainer._inner_training_loop` takes it (training_step,
    clip, optimizer and scheduler step), after the set-up `Trainer.train()` does; returns the step function (which
    returns the detached loss)."""
    targs = trainer.args
    if targs.activation_checkpointing:  # what Trainer.train() does before its loop
        trainer.model.activation_checkpointing_enable(activation_checkpointing_kwargs=targs.activation_checkpointing_kwargs)
    trainer.create_optimizer_and_scheduler(num_training_steps=targs.max_steps)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train()'s loop
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    def step():
        model.train()
        loss = trainer.training_step(model, batch)
        trainer.accelerator.clip_grad_norm_(model.parameters(), targs.max_grad_norm)
        trainer.optimizer.step(); trainer.lr_scheduler.step(); model.zero_grad(set_to_none=True)
        return loss.detach()
    return step


def peak_memory(step, device, steps):
    "`{baseline_gb, peak_gb}` of `steps` calls of `step` in this process, after its set-up (for a fresh child process)."
    if device == "cuda": torch.cuda.synchronize(); base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
    else: base = _peak_rss()
    for _ in range(steps): step()
    sync(device)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else _peak_rss()
    return {"baseline_gb": base / 2**30, "peak_gb": peak / 2**30}


def interleaved_times(steps: dict, rounds: int, device) -> tuple[dict, dict]:
    "`(all step times, medians)` by contender: every round runs each step once, in a fresh random order (seeded)."
    times, rng = {n: [] for n in steps}, random.Random(0)
    for _ in range(rounds):
        for n in rng.sample(list(steps), len(steps)):
            sync(device); t = time.perf_counter(); steps[n](); sync(device)
            times[n].append(time.perf_counter() - t)
    return times, {n: statistics.median(v) for n, v in times.items() if v}


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


def memory_probe(name, device, args):
    "Run in a child process: peak memory of `args.probe_steps` steps of one contender, and its baseline after set-up."
    print(json.dumps(peak_memory(setup(name, device, args), device, args.probe_steps)))


def flops_per_step(name, n_params, tokens):
    "Model FLOPs of one step: 6 N T for the policy's forward and backward, plus 2 N T for a reference forward."
    return (6 + (0 if name == "rlhf_ref_precomputed" else 2)) * n_params * tokens


def peak_flops(device_name, override_tflops=None):
    if override_tflops: return override_tflops * 1e12
    return next((f for key, f in PEAK_BF16 if key in device_name), None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--contenders", default=",".join(DEFAULT), help=f"comma-separated, from {ALL}")
    ap.add_argument("--pairs", type=int, default=4, help="preference pairs per step")
    ap.add_argument("--resp-tokens", type=int, default=128, help="about this many tokens per response")
    ap.add_argument("--prompt-tokens", type=int, default=0, help="a context of about this many tokens before each prompt")
    ap.add_argument("--arch", choices=sorted(ARCHS), default=None,
                    help="random-initialised SmolLM2 shape instead of the embedded pretrained 135M model")
    ap.add_argument("--probe-steps", type=int, default=3, help="steps per memory probe")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the card's peak dense bf16 TFLOP/s (for MFU)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-only", action="store_true", help="skip the timing rounds; measure peak memory only")
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.probe: return memory_probe(args.probe, device, args)
    names = args.contenders.split(",")
    unknown = set(names) - set(ALL)
    if unknown: ap.error(f"unknown contenders {sorted(unknown)}; choose from {ALL}")
    if args.memory_only: args.rounds, args.warmup = 0, 0
    steps = {n: setup(n, device, args) for n in names} if args.rounds else {}
    for n in names:
        for _ in range(args.warmup): steps[n]()
    times, med = interleaved_times(steps, args.rounds, device) if steps else ({n: [] for n in names}, {})
    from rlhf_ref.models import load_tokenizer
    _, batch = make_batch(load_tokenizer(), args)
    tokens, resp = int(batch["attention_mask"].sum()), int(batch["response_mask"].sum())
    with torch.device("meta"): n_params = sum(p.numel() for p in load_models_meta(args.arch).parameters())
    dev_name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    out = {"device": dev_name, "torch": torch.__version__, "arch": args.arch or "embedded SmolLM2-135M-Instruct",
           "params": n_params, "pairs": args.pairs, "resp_tokens": args.resp_tokens, "prompt_tokens": args.prompt_tokens,
           "batch_shape": list(batch["input_ids"].shape), "real_tokens": tokens, "response_tokens": resp,
           "rounds": args.rounds, "median_step_s": med, "all_step_s": times, "ratios": {}}
    for a in ("rlhf_ref", "rlhf_ref_precomputed", "rlhf_ref_ckpt", "rlhf_ref_shared", "rlhf_ref_unshared"):
        for b in ("trl", "trl_no_ckpt", "floor"):
            if a in med and b in med: out["ratios"][f"{a}/{b}"] = med[a] / med[b]
    if device == "cuda" and args.rounds:  # exact for a contender that ran alone in this process (the 1.7B runs on 80 GB)
        out["this_process_peak_gb"] = {"contenders": names, "peak_gb": torch.cuda.max_memory_allocated() / 2**30}
    peak = peak_flops(dev_name, args.peak_tflops) if device == "cuda" or args.peak_tflops else None
    if peak and med:
        out["peak_bf16_flops"] = peak
        out["mfu"] = {n: flops_per_step(n, n_params, tokens) / t / peak for n, t in med.items()}
    if not args.no_memory:
        out["memory"] = {}
        fwd = ["--pairs", str(args.pairs), "--resp-tokens", str(args.resp_tokens), "--probe-steps", str(args.probe_steps),
               "--prompt-tokens", str(args.prompt_tokens)]
        if args.arch: fwd += ["--arch", args.arch]
        for n in names:
            res = subprocess.run([sys.executable, __file__, "--probe", n, *fwd], capture_output=True, text=True)
            lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
            out["memory"][n] = json.loads(lines[-1]) if lines else {"error": res.stderr.strip().splitlines()[-1:]}
    print(json.dumps(out, indent=1))


def load_models_meta(arch):
    "The model's structure without weights (to count parameters): the embedded config or SmolLM2 shape `arch`."
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig
    from rlhf_ref.models import resolve_model
    config = (LlamaConfig(vocab_size=49152, head_dim=64, tie_word_embeddings=True, **ARCHS[arch]) if arch
              else AutoConfig.from_pretrained(resolve_model(None)))
    return AutoModelForCausalLM.from_config(config)


if __name__ == "__main__":
    main()
