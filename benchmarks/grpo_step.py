"""Time one GRPO iteration (generation + scoring + update): rlhf_ref against TRL's GRPOTrainer, in one run.

Same model (the embedded SmolLM2-135M-Instruct, or with `--arch 135m|360m|1.7b` a random initialisation of that SmolLM2
shape from benchmarks/dpo_step.py), fp32 on CPU, bf16 on CUDA; the same `--prompts` sentiment-task train prompts through
the chat template, `--group` responses each, at most `--max-new-tokens` tokens, temperature 1 and top_k 0, the reward
the task's gold reward (VADER), beta 0.04 (the paper's k3 KL to a frozen reference, so both compute the reference's
log-probs), the DAPO token-level loss, clip 0.2, one optimizer step per generation (TRL's `num_iterations=1`; rlhf_ref's
`num_epochs=1`), AdamW at the same rate. The reference is a frozen copy of the policy in both (TRL would reload it from
the policy's path; it is handed the copy instead, so random-weight shapes run too).

Contenders, run interleaved in a fresh random order every round after a warm-up iteration; medians reported:
- rlhf_ref: one iteration of `rlhf_ref.rollout.OnlineTrainer` with `rlhf_ref.grpo.GRPO` (`_optimizer_step`: rollout
  with the reference's scoring pass, group advantages, the update), exactly as `OnlineTrainer.train` runs it; with one
  update an iteration it skips the policy's scoring pass (the update's forward gives the sampling log-probs, as TRL's
  does with `num_iterations=1`);
- rlhf_ref_scored: the same with the policy's scoring pass kept (what every iteration did before that change);
- rlhf_ref_unshared, rlhf_ref_shared (not run by default): rlhf_ref with each group's prompt run once per response, as
  TRL runs it, or always once per group (`share_prompt="auto"` overridden in the reference's scoring pass and the
  update; "auto" shares always on the CPU and on other devices only where prompts are at least as long as responses),
  to measure what running each distinct prompt once saves (on the CPU: unshared; on a GPU: shared);
- trl: `trl.GRPOTrainer` with its defaults (activation checkpointing on), stepped as its `Trainer` loop steps it
  (`training_step`, which generates, then clip, optimizer and scheduler step);
- trl_no_ckpt: the same with activation checkpointing off;
- ppo_head, ppo_value_model (not run by default; `--contenders` names them): the cost-per-step side of the claim that
  GRPO is cheaper than PPO: one iteration of rlhf_ref's PPO (`kl_coef` 0.05, GAE) on the same number of responses
  (`--prompts` x `--group` prompts, one response each) with the same single update, its critic a value head on the
  policy's trunk (the default here) or a separate value model (a copy of the policy's trunk with its own head, the
  usual set-up at scale, and what the claim's saving is about). PPO cannot skip the policy's scoring pass: it needs the
  values (and the old log-probs for its clipped ratio and its KL reward) before the update.

Sampled lengths differ between contenders and rounds (each samples with its own RNG stream and stops at EOS), so the
script also prints the mean response length each produced and the time per generated token. The breakdown: rlhf_ref's
own `time/generate`, `time/score`, `time/update`; TRL's `_generate` (sampling) and `_generate_and_score_completions`
(sampling, rewards and the reference's log-probs), the rest of its step being the update. Prints one JSON object.

Usage: python benchmarks/grpo_step.py [--prompts 2] [--group 4] [--max-new-tokens 48] [--rounds 3] [--arch 135m]
       [--contenders rlhf_ref,rlhf_ref_scored,trl,trl_no_ckpt,rlhf_ref_unshared,rlhf_ref_shared,ppo_head,
       ppo_value_model]
"""
from __future__ import annotations
import argparse, json, random, statistics, sys, tempfile, time
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dpo_step import ARCHS, load_models, sync  # one place for the SmolLM2 shapes and the model loading

BETA, LR = 0.04, 1e-6
DEFAULT = ["rlhf_ref", "rlhf_ref_scored", "trl", "trl_no_ckpt"]
EXTRA = ["rlhf_ref_unshared", "rlhf_ref_shared",  # the prompt-sharing rule overridden
         "ppo_head", "ppo_value_model"]  # rlhf_ref's PPO on as many responses: GRPO's cost per step against PPO's


def timed(obj, name, log):
    "Wrap method `name` of `obj` so that each call's seconds are appended to `log[name]`."
    f = getattr(obj, name)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try: return f(*a, **k)
        finally: log.setdefault(name, []).append(time.perf_counter() - t)
    setattr(obj, name, wrapper)


def trl_step(trainer):
    """One optimizer step of TRL's GRPOTrainer on its first batch, as `Trainer._inner_training_loop` takes it
    (`training_step`, which generates; clip; optimizer and scheduler step), after the set-up `Trainer.train()` does."""
    targs, model = trainer.args, trainer.model
    if targs.gradient_checkpointing:  # what Trainer.train() does before its loop
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=targs.gradient_checkpointing_kwargs)
    trainer.create_optimizer_and_scheduler(num_training_steps=targs.max_steps)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train()'s loop
    batch = next(iter(trainer.get_train_dataloader()))
    def step():
        model.train()
        trainer.training_step(model, batch, None)
        trainer.accelerator.clip_grad_norm_(model.parameters(), targs.max_grad_norm)
        trainer.optimizer.step(); trainer.lr_scheduler.step(); model.zero_grad(set_to_none=True)
    return step


def setup(name, device, args, task):
    "Build contender `name`; returns (step function, dict of per-step details filled by each call)."
    from rlhf_ref.models import frozen_copy
    policy, tok = load_models(args.arch, device)
    ref, prompts, info = frozen_copy(policy), task.train_prompts[:args.prompts], {}
    if name.startswith(("rlhf_ref", "ppo")):
        from unittest.mock import patch
        from rlhf_ref import logprobs
        from rlhf_ref.grpo import GRPO
        from rlhf_ref.ppo import PPO
        from rlhf_ref.rollout import OnlineConfig, OnlineTrainer
        ppo = name.startswith("ppo")  # as many responses: prompts x group prompts, one response each
        if ppo: prompts = task.train_prompts[:args.prompts * args.group]
        cfg = OnlineConfig(out_dir=tempfile.mkdtemp(), max_steps=10**6, batch_size=len(prompts), lr=LR, num_epochs=1,
                           num_mini_batches=1, max_new_tokens=args.max_new_tokens, temperature=1.0, warmup_steps=0,
                           progress=False, max_grad_norm=1.0, eval_every=0)
        algo = PPO(kl_coef=0.05) if ppo else GRPO(num_generations=args.group, beta=BETA, epsilon=0.2, loss_type="dapo")
        if name == "rlhf_ref_scored": algo.needs_sampling_logps = True  # keep the policy's scoring pass (to measure it)
        trainer = OnlineTrainer(algo, policy, ref, tok, prompts, task.reward, cfg,
                                value_model="model" if name == "ppo_value_model" else "head")
        def step():
            ratio = {"rlhf_ref_unshared": float("inf"), "rlhf_ref_shared": 0.0}.get(name)  # "auto": never, always
            with patch.dict(logprobs.SHARE_PROMPT_MIN_RATIO, {} if ratio is None else {device: ratio}):
                m = trainer._optimizer_step()
            for k in ("time/generate", "time/score", "time/update", "objective/length"):
                info.setdefault(k, []).append(m[k])
        return step, info
    import trl.trainer.grpo_trainer as G
    from trl import GRPOConfig, GRPOTrainer
    from datasets import Dataset
    G.create_model_from_path = lambda *a, **k: ref  # TRL's reference: the same frozen copy, not a reload from disk

    def reward(prompts, completions, **kw):  # TRL passes conversational completions as message lists
        return task.reward(prompts, [c[-1]["content"] if isinstance(c, list) else c for c in completions])
    targs = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.prompts * args.group,
                       num_generations=args.group, max_completion_length=args.max_new_tokens, beta=BETA, epsilon=0.2,
                       loss_type="dapo", num_iterations=1, learning_rate=LR, temperature=1.0, top_k=0, top_p=1.0,
                       bf16=device == "cuda", use_cpu=device == "cpu", max_steps=10**6, report_to=[],
                       save_strategy="no",
                       disable_tqdm=True, logging_steps=10**9, gradient_checkpointing=name == "trl", max_grad_norm=1.0)
    trainer = GRPOTrainer(model=policy, reward_funcs=reward, args=targs, processing_class=tok,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]))
    log = {}
    timed(trainer, "_generate", log); timed(trainer, "_generate_and_score_completions", log)
    inner = trl_step(trainer)
    def step():
        n = len(log.get("_generate", []))
        t = time.perf_counter(); inner(); total = time.perf_counter() - t
        gen, gs = log["_generate"][n], log["_generate_and_score_completions"][n]
        lengths = trainer._metrics["train"]["completions/mean_length"]
        for k, v in (("time/generate", gen), ("time/score", gs - gen), ("time/update", total - gs),
                     ("objective/length", lengths[-1])): info.setdefault(k, []).append(v)
    return step, info


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=2, help="prompts per iteration")
    ap.add_argument("--group", type=int, default=4, help="responses per prompt (num_generations)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--contenders", default=",".join(DEFAULT), help=f"comma-separated, from {DEFAULT + EXTRA}")
    ap.add_argument("--arch", choices=sorted(ARCHS), default=None,
                    help="random SmolLM2 shape (default: the embedded model)")
    args = ap.parse_args()
    unknown = sorted(set(args.contenders.split(",")) - set(DEFAULT + EXTRA))
    if unknown: ap.error(f"unknown contenders {unknown}; choose from {DEFAULT + EXTRA}")
    from rlhf_ref.core import set_seed
    from rlhf_ref.tasks import get_task
    device, task = "cuda" if torch.cuda.is_available() else "cpu", get_task("sentiment")
    steps, infos = {}, {}
    for n in args.contenders.split(","):
        set_seed(0); steps[n], infos[n] = setup(n, device, args, task)
        for _ in range(args.warmup): steps[n]()
        for v in infos[n].values(): v.clear()  # report the timed rounds only
    times, rng = {n: [] for n in steps}, random.Random(0)
    for _ in range(args.rounds):
        for n in rng.sample(list(steps), len(steps)):
            sync(device); t = time.perf_counter(); steps[n](); sync(device)
            times[n].append(time.perf_counter() - t)
    med = {n: statistics.median(v) for n, v in times.items()}
    breakdown = {n: {k: statistics.median(v) for k, v in infos[n].items()} for n in steps}
    rows = args.prompts * args.group
    out = dict(device=torch.cuda.get_device_name() if device == "cuda" else "cpu", threads=torch.get_num_threads(),
               model=args.arch or "smollm2-135m (embedded)", prompts=args.prompts, group=args.group,
               max_new_tokens=args.max_new_tokens, times=times, median_s=med, breakdown_median_s=breakdown,
               s_per_generated_token={n: med[n] / (rows * breakdown[n]["objective/length"]) for n in steps})
    trls = [(med[n], n) for n in steps if n.startswith("trl")]
    trl_best = min(trls) if trls else None
    if "rlhf_ref" in med and trl_best:
        out["rlhf_ref_vs_trl"] = dict(against=trl_best[1], ratio=med["rlhf_ref"] / trl_best[0],
                                      per_token_ratio=out["s_per_generated_token"]["rlhf_ref"]
                                      / out["s_per_generated_token"][trl_best[1]])
    if "rlhf_ref" in med:  # GRPO's iteration against PPO's on as many responses (cost per step)
        out["rlhf_ref_vs_ppo"] = {n: med["rlhf_ref"] / med[n] for n in ("ppo_head", "ppo_value_model") if n in med}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
