"""Time the generation inside a rollout against raw `model.generate` on the same prompts and settings, in one run.

Issue 11 asks that sampling inside `rlhf_ref.rollout.rollout` run at >= 0.95 x the throughput of a bare
`model.generate`. Both contenders continue the same token ids (the sentiment task's first `--prompts` train prompts
through the chat template, each repeated `--n` times, as a GRPO group would be) with the same model, `max_new_tokens`,
temperature and `top_k=0`, and the same seed in every round, so they sample the same tokens (checked: `same_tokens`)
and do the same work:

- rollout: `rlhf_ref.generation.sample_ids`, what `rollout` calls: left-pads the contexts itself, calls `generate`,
  cuts each row after its first EOS (what `rollout` records as `time_generate`);
- generate: the tokenizer's own left padding (`tokenizer.pad`) and one `model.generate` call, its output left as the
  padded tensor.

Contenders run interleaved, in a fresh random order every round, after a warm-up; medians are reported with the ratio
generate/rollout (throughput of rollout relative to raw generate: >= 0.95 is the target). The whole rollout (sampling
plus the scoring pass of the policy, the reference and the reward) is timed once more for the breakdown. Prints one
JSON object. fp32 on CPU, bf16 on CUDA; `--arch 135m|360m|1.7b` uses a random initialisation of that SmolLM2 shape
(benchmarks/dpo_step.py's configs), so it runs without a checkpoint.

Usage: python benchmarks/generate.py [--prompts 8] [--n 1] [--max-new-tokens 48] [--rounds 5] [--arch 135m]
"""
from __future__ import annotations
import argparse, json, random, statistics, sys, time
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dpo_step import ARCHS, load_models, sync  # one place for the SmolLM2 shapes and the model loading


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=1, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--arch", choices=sorted(ARCHS), default=None,
                    help="random SmolLM2 shape (default: the embedded model)")
    args = ap.parse_args()
    from rlhf_ref.core import set_seed
    from rlhf_ref.data import encode_prompt
    from rlhf_ref.generation import sample_ids
    from rlhf_ref.models import frozen_copy
    from rlhf_ref.rollout import rollout
    from rlhf_ref.tasks import get_task
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load_models(args.arch, device)
    model.eval()
    task = get_task("sentiment")
    prompts = task.train_prompts[:args.prompts]
    contexts = [encode_prompt(tok, p) for p in prompts for _ in range(args.n)]
    kw = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature)

    def ours():
        return [ids for ids, _ in sample_ids(model, tok, contexts, batch_size=len(contexts), **kw)]

    @torch.no_grad()
    def raw():
        batch = tok.pad({"input_ids": contexts}, padding_side="left", return_tensors="pt").to(device)
        return model.generate(**batch, do_sample=True, top_k=0, top_p=1.0, pad_token_id=tok.pad_token_id, **kw)

    steps, seed = {"rollout": ours, "generate": raw}, 1234
    outs = {}
    for name, f in steps.items():  # warm-up, and the check that both sample the same tokens
        for _ in range(args.warmup): set_seed(seed); outs[name] = f()
    width = len(outs["generate"][0]) - args.max_new_tokens
    raw_rows = [r[width:].tolist() for r in outs["generate"]]
    same = all(r[:len(o)] == o for r, o in zip(raw_rows, outs["rollout"]))
    times, rng = {n: [] for n in steps}, random.Random(0)
    for _ in range(args.rounds):
        for n in rng.sample(list(steps), len(steps)):
            set_seed(seed); sync(device); t = time.perf_counter(); steps[n](); sync(device)
            times[n].append(time.perf_counter() - t)
    med = {n: statistics.median(v) for n, v in times.items()}
    new_tokens = sum(len(o) for o in outs["rollout"])
    ref = frozen_copy(model)
    set_seed(seed); t = time.perf_counter()
    ro = rollout(model, tok, prompts, task.reward, ref=ref, n=args.n, batch_size=len(contexts), **kw)
    sync(device)
    print(json.dumps(dict(
        device=torch.cuda.get_device_name() if device == "cuda" else "cpu", threads=torch.get_num_threads(),
        model=args.arch or "smollm2-135m (embedded)", rows=len(contexts), max_new_tokens=args.max_new_tokens,
        new_tokens=new_tokens, same_tokens=same, times=times, median_s=med,
        tokens_per_s={n: new_tokens / m for n, m in med.items()},
        rollout_throughput_vs_generate=med["generate"] / med["rollout"],
        full_rollout_s=dict(total=time.perf_counter() - t, generate=ro["time_generate"], score=ro["time_score"])),
        indent=1))


if __name__ == "__main__":
    main()
