"""PF-PPO's filters on the embedded SmolLM2 and the sentiment task: PPO trained on a learned reward model (the proxy)
with each filter, the held-out gold reward (VADER) and proxy reward, and the KL to the initial model.

The proxy is the best reward model `11_reward_model` found: a linear Bradley-Terry head on the mean of the response
tokens' states at block 15 of the frozen SmolLM2, fitted (weight decay 1) on every gold-ordered pair of 16 samples a
train prompt (4 cached sampling runs of 4, seeds 1-4, the draws `11_reward_model` studies: finished responses of up
to 48 tokens, while PPO here samples 32-token ones; about 13700 pairs). Its report (held-out pairs and accuracy on a
quarter of the prompts) is stored with every row.

For each seed, first the filters' R^2 before training (`arm` "r2"): 4 samples on each of the first `--r2-prompts`
train prompts from the initial model, scored by the proxy and the gold reward (both stored), and the R^2 of gold on
proxy over the samples each filter keeps. Then the arms, each PPO with 4 samples a prompt on 2 prompts an iteration
(8 responses an iteration, as `online_smol.py`'s arms), trained on the proxy, with the gold reward recorded on every
rollout and every evaluation:

- `none`: PPO on all 4 samples a prompt (the comparison: PPO on the same samples, budget and seeds);
- `bon`, `br`, `bw`: PF-PPO, PPO on the best of the 4 by the proxy, the best and a random other, the best and the worst.

The settings are those of `40_ppo`'s over-optimisation control, which raised the gold reward within 12 iterations when
trained on the gold reward itself (`online_smol.py --rm`, arm `ppo-gold`: +0.24 at iteration 12): lr 2e-5, no KL
penalty (`kl_coef` 0), 12 iterations, 4 epochs of one minibatch, 32 new tokens; the seed changes the prompt order, the
sampling and the evaluation's sampling. Results in `data/runs/pf_ppo_smol.json`, read by `nbs/46_pf_ppo.ipynb`.

    OMP_NUM_THREADS=1 python tools/pf_ppo_smol.py --seeds 0
"""
import argparse, dataclasses, statistics, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parent))  # online_smol's helpers, also when run by runpy
from online_smol import base_config, common_args, pending, positive_int, proxy_reward_model, proxy_rows, train_arm
from rlhf_ref.evaluate import Evaluator
from rlhf_ref.experiments import RunStore
from rlhf_ref.models import load_policy
from rlhf_ref.pf_ppo import PFPPO, filter_r2
from rlhf_ref.reward_model import as_reward_fn
from rlhf_ref.rollout import rollout
from rlhf_ref.tasks import get_task

ARMS = ("none", "bon", "br", "bw")  # PFPPO's policy_filter
OUT = Path(__file__).resolve().parents[1] / "data" / "runs" / "pf_ppo_smol.json"


def make(arm, kl_coef=0.0):
    return PFPPO(num_samples=4, policy_filter=arm, kl_coef=kl_coef)


def run(arms, seeds, steps=12, n_eval=32, eval_every=6, lr=2e-5, max_new_tokens=32, kl_coef=0.0, r2_prompts=64,
        rm_pooling="mean", rm_layer=15, out=OUT, model=None, redo=False, rm_rows=None):
    """For each seed: the filters' R^2 on samples of the initial model, then each arm not yet in `out` (all with
    `redo`); rows merged into `out`. `rm_rows`: the proxy's preference rows (default: `proxy_rows`)."""
    task = get_task("sentiment")
    config = base_config(model, steps, lr, max_new_tokens, n_eval, eval_every, prompts_per_iteration=2, r2_prompts=r2_prompts,
                         arms={a: repr(make(a, kl_coef)) for a in ARMS},
                         proxy=f"linear Bradley-Terry head (weight decay 1) on the frozen initial model's {rm_pooling}-pooled "
                               f"states of block {rm_layer}, " + ("all pairs of 16 samples a train prompt (seeds 1-4)"
                                                                  if rm_rows is None else f"{len(rm_rows)} given pairs"))
    store = RunStore(out, config, key=("arm", "seed"))
    for seed, todo, base, tok in pending(store, ("r2", *arms), seeds, redo, model):
        t0 = time.time()
        rm, report = proxy_reward_model(base, tok, rows=rm_rows if rm_rows is not None else proxy_rows(base, tok, task),
                                        pooling=rm_pooling, layer=rm_layer)
        report["seconds"] = round(time.time() - t0, 1)
        print("proxy:", {k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}, flush=True)
        proxy = as_reward_fn(rm, tok)
        if "r2" in todo:  # before training: which filter keeps samples whose proxy reward says most about the gold one
            todo.remove("r2")
            torch.manual_seed(seed)
            ro = rollout(base, tok, task.train_prompts[:r2_prompts], proxy, n=4, max_new_tokens=max_new_tokens,
                         gold_fn=task.reward, score_policy=False)
            torch.manual_seed(seed)  # BR's random pick
            r2 = filter_r2(ro["scores"], ro["gold"], 4, ARMS)
            store.add(dict(arm="r2", seed=seed, r2=r2, proxy_scores=[round(x, 5) for x in ro["scores"].tolist()],
                           gold=[round(x, 5) for x in ro["gold"].tolist()],
                           length=ro["response_mask"].sum(1).tolist(), proxy_report=report))
            print(f"r2 seed {seed}: " + ", ".join(f"{f} {v:.3f}" for f, v in r2.items()), flush=True)
        scored = dataclasses.replace(task, metrics=lambda p, c: {"proxy": statistics.fmean(proxy(p, c))})
        evaluator = Evaluator(scored, tok, ref=base, prompts=task.eval_prompts[:n_eval], max_new_tokens=max_new_tokens,
                              seed=seed)
        for arm in todo:  # in the order asked for
            policy, _ = load_policy(model)
            train_arm(store, arm, seed, make(arm, kl_coef), 2, policy, base, tok, task.train_prompts, proxy, evaluator,
                      steps, lr, max_new_tokens, eval_every, gold_fn=task.reward, extra=dict(proxy=report),
                      names={"objective/scores": "objective/proxy"})
    return store.load()


if __name__ == "__main__":
    p = common_args(argparse.ArgumentParser(), OUT, ARMS)
    p.set_defaults(eval_every=6)
    p.add_argument("--r2-prompts", type=positive_int, default=64, help="train prompts (4 samples each) for the filters' R^2")
    a = p.parse_args()
    run(a.arms, a.seeds, a.steps, a.n_eval, a.eval_every, r2_prompts=a.r2_prompts, out=a.out, model=a.model, redo=a.redo)
