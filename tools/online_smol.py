"""PPO, PPO without its KL penalty, GRPO and RLOO on the embedded SmolLM2 and the sentiment task: held-out gold reward,
KL to the initial model, entropy, clipfrac and the time each piece of an iteration took.

Every (arm, seed) run trains a fresh SmolLM2 for `--steps` iterations on its own samples of the task's train prompts,
8 responses an iteration in every arm (PPO: 8 prompts x 1; GRPO: 2 prompts x 4; RLOO and P3O: 4 prompts x 2), 4 epochs of one
minibatch over each batch (TRL's `num_ppo_epochs`), responses and evaluations cut at `--max-new-tokens`, and evaluates
fresh samples on the first `--n-eval` held-out prompts every `--eval-every` iterations; the seed changes the prompt
order, the sampling and the evaluation's sampling. The arms:

- `ppo`: PPO with TRL's per-token k1 KL penalty (`kl_coef` 0.05), GAE, a value head on the policy's trunk;
- `ppo-kl0` (the KL penalty's control): the same with `kl_coef` 0, where the papers expect reward hacking;
- `grpo`: GRPO with the paper's beta 0.04 (k3 KL in the loss), group of 4, DAPO's token-level loss;
- `rloo`: RLOO (k = 2, beta 0.05 of k1 summed over the response, subtracted from the reward);
- `p3o`: P3O (two samples a prompt, `kl_coef` 0.05 like PPO's, joint clip, rewards over their running std).

Results are merged into `data/runs/online_smol.json`, which `nbs/40_ppo.ipynb`, `nbs/41_grpo.ipynb` and
`nbs/45_p3o.ipynb` read. A run
took 17 to 24 minutes with three runs sharing the 2-core machine; several processes with different `--arms` or
`--seeds` can share the cores (`rlhf_ref.experiments.RunStore` merges their rows under a lock), but then the times
they record are shared-machine times: compare arms' times only between runs that ran side by side.

    OMP_NUM_THREADS=1 python tools/online_smol.py --arms ppo --seeds 0 1 2

`--rm` runs the over-optimisation experiment instead (`run_overopt`, results in `data/runs/online_smol_rm.json`, read
by `nbs/40_ppo.ipynb`): PPO without a KL penalty trained against a learned reward model (a linear Bradley-Terry head on
the frozen SmolLM2's last-token features, fitted on the 673 shipped sentiment pairs: the proxy) and, as the control,
the same PPO trained on the gold reward (VADER). Both record the gold and the proxy reward of every rollout and of every
evaluation, so the two curves sit side by side; the control says whether a fall of the gold reward comes from the
proxy or from training itself (the learning rate, the missing penalty). With the three seeds as three processes (each
running `ppo-rm`, then `ppo-gold`), a `ppo-rm` run took about 57 minutes and a `ppo-gold` run about 47.

    OMP_NUM_THREADS=1 python tools/online_smol.py --rm --arms ppo-rm --seeds 0

`--rm --proxy block15` runs the same experiment against a stronger, climbable proxy (results in
`data/runs/online_smol_rm15.json`): the one `tools/pf_ppo_smol.py` uses, a linear Bradley-Terry head on the mean of the
response tokens' states at block 15, fitted on every gold-ordered pair of 16 cached samples a train prompt (`proxy_rows`;
it orders about 0.72 of held-out pairs as VADER does, against about 0.56 for the last-token head). With the three seeds
as three processes a `ppo-rm` run took about 41 minutes and a `ppo-gold` run about 37.

    OMP_NUM_THREADS=1 python tools/online_smol.py --rm --proxy block15 --seeds 0
"""
import argparse, dataclasses, statistics, time
from pathlib import Path
import torch
from rlhf_ref.evaluate import Evaluator
from rlhf_ref.experiments import RunStore, metric_rows, run_folder
from rlhf_ref.grpo import GRPO, RLOO
from rlhf_ref.models import frozen_copy, load_policy
from rlhf_ref.p3o import P3O
from rlhf_ref.ppo import PPO
from rlhf_ref.prefdata import onpolicy_preferences, sampled_pairs, scored_samples
from rlhf_ref.reward_model import (RewardModel, as_reward_fn, feature_pairs, fit_linear_bt, gold_accuracy, pair_rewards,
                                   prompt_split, spearman)
from rlhf_ref.rollout import OnlineConfig, OnlineTrainer
from rlhf_ref.tasks import get_task

# arm -> (algorithm, prompts an iteration); every arm samples 8 responses an iteration
ARMS = {"ppo": (lambda: PPO(kl_coef=0.05), 8), "ppo-kl0": (lambda: PPO(kl_coef=0.0), 8),
        "grpo": (lambda: GRPO(num_generations=4, beta=0.04), 2),
        "rloo": (lambda: RLOO(num_generations=2, beta=0.05), 4),
        "p3o": (lambda: P3O(kl_coef=0.05), 4)}
OUT = Path(__file__).resolve().parents[1] / "data" / "runs" / "online_smol.json"
# the over-optimisation experiment: arm -> what it trains on; both are PPO(kl_coef=0), 8 prompts x 1 an iteration
RM_ARMS = {"ppo-rm": "the learned reward model (proxy)", "ppo-gold": "the gold reward, VADER (control)"}
RM_OUT = OUT.with_name("online_smol_rm.json")
SAMPLE_SEEDS = (1, 2, 3, 4)  # the block-15 proxy's training samples: 4 cached runs of 4 a train prompt
# proxy name -> (features, output file, the description stored in the config)
PROXIES = {"last": (dict(pooling="last", layer=-1), RM_OUT,
                    "linear Bradley-Terry head (weight decay 1) on the frozen initial model's last-token features, "
                    "all pairs of 4 samples a train prompt"),
           "block15": (dict(pooling="mean", layer=15), OUT.with_name("online_smol_rm15.json"),
                       "linear Bradley-Terry head (weight decay 1) on the frozen initial model's mean-pooled states of "
                       "block 15, all pairs of 16 samples a train prompt (seeds 1-4)")}


def base_config(model, steps, lr, max_new_tokens, n_eval, eval_every, **more) -> dict:
    "The settings every SmolLM2 online experiment stores in its config (task, model, PPO's budget, evaluation), and `more`."
    return dict(task="sentiment", model=model or "smollm2 (embedded)", steps=steps, lr=lr, num_epochs=4, num_mini_batches=1,
                max_new_tokens=max_new_tokens, temperature=1.0, n_eval_prompts=n_eval, eval_every=eval_every, **more)


def pending(store, arms, seeds, redo, model):
    """For each seed that has (arm, seed) runs not yet in `store` (all of them with `redo`): the seed, those arms, and the
    initial model (frozen: every evaluation's KL reference) with its tokenizer, loaded afresh."""
    done = store.done()
    for seed in seeds:
        todo = [a for a in arms if redo or (a, seed) not in done]
        if not todo: continue
        base, tok = load_policy(model)
        yield seed, todo, frozen_copy(base), tok


def train_arm(store, arm, seed, algo, n_prompts, policy, ref, tok, prompts, reward_fn, evaluator, steps, lr,
              max_new_tokens, eval_every, gold_fn=None, extra=None, names=None):
    "Train one (arm, seed) run in a temporary folder, store its metric history and seconds, print its evaluations."
    t0 = time.time()
    with run_folder() as out_dir:  # the final checkpoint: 2 GB a run, removed even if training fails; metrics are kept
        cfg = OnlineConfig(out_dir=out_dir, max_steps=steps, batch_size=n_prompts, lr=lr, num_epochs=4,
                           num_mini_batches=1, max_new_tokens=max_new_tokens, temperature=1.0, seed=seed,
                           eval_every=eval_every, progress=False)
        hist = OnlineTrainer(algo, policy, ref, tok, prompts, reward_fn, cfg, eval_fn=evaluator, gold_fn=gold_fn).train()
    # `names` renames metrics, e.g. to say which reward `objective/scores` was
    row = dict(arm=arm, seed=seed, history=metric_rows(hist, names), seconds=round(time.time() - t0, 1), **(extra or {}))
    store.add(row)  # merged with what other processes stored meanwhile
    evals = [r for r in hist if r.get("split") == "eval"]
    proxy = lambda e: f"/{e['eval/proxy']:.2f}" if "eval/proxy" in e else ""  # gold/proxy where both are evaluated
    print(f"{arm} seed {seed}: reward " + " -> ".join(f"{e['eval/reward']:.3f}{proxy(e)}@{e['step']}" for e in evals)
          + f", kl {evals[-1]['eval/kl']:.2f} ({row['seconds']:.0f} s)", flush=True)
    return row


def run(arms, seeds, steps=12, n_eval=32, eval_every=4, lr=1e-5, max_new_tokens=32, out=OUT, model=None, redo=False):
    "Train and evaluate each arm for each seed not yet in `out` (every one with `redo`); merge the rows into `out`."
    task = get_task("sentiment")
    config = base_config(model, steps, lr, max_new_tokens, n_eval, eval_every,
                         arms={a: f"{ARMS[a][0]()!r}, {ARMS[a][1]} prompts" for a in ARMS})
    store = RunStore(out, config, key=("arm", "seed"))  # refuses a file of another configuration
    for seed, todo, base, tok in pending(store, arms, seeds, redo, model):
        # one evaluator a seed: it evaluates the arms' shared starting point once
        evaluator = Evaluator(task, tok, ref=base, prompts=task.eval_prompts[:n_eval], max_new_tokens=max_new_tokens,
                              seed=seed)
        for arm in todo:
            make, n_prompts = ARMS[arm]
            policy, _ = load_policy(model)
            train_arm(store, arm, seed, make(), n_prompts, policy, base, tok, task.train_prompts, task.reward, evaluator,
                      steps, lr, max_new_tokens, eval_every)
    return store.load()


def proxy_reward_model(base, tok, weight_decay: float = 1.0, rows: list[dict] | None = None, pooling: str = "last",
                       layer: int = -1):
    """The proxy: a linear Bradley-Terry head on `base`'s frozen features (the backbone shared, not copied; by default
    the last token's final state, or `pooling` of block `layer`'s states, see `RewardModel`), fitted on all preference
    pairs of 4 samples a train prompt (for SmolLM2 the 673 shipped pairs) with L2 penalty `weight_decay` (the value
    `11_reward_model`'s inner selection chose most often). Also fitted on 3/4 of the prompts and judged on the rest, to
    say how good a proxy it is. `rows`: other preference rows with their gold rewards. Returns `(reward_model, report)`."""
    if rows is None: rows = onpolicy_preferences(base, tok, get_task("sentiment"), pairing="all", progress=False)
    if len(rows) < 8: raise ValueError(f"the proxy needs at least 8 preference pairs to fit and judge, got {len(rows)}")
    rm = RewardModel.from_policy(base, frozen=True, copy_weights=False, pooling=pooling, layer=layer)
    fp = feature_pairs(rm, tok, rows)
    def fit(pairs):  # standardized features, the scaling folded back into the head's weights
        x = torch.stack([r[k] for r in pairs for k in ("chosen_features", "rejected_features")])
        mu, sd = x.mean(0), x.std(0) + 1e-6
        head = fit_linear_bt([dict(chosen_features=(r["chosen_features"] - mu) / sd,
                                   rejected_features=(r["rejected_features"] - mu) / sd) for r in pairs], weight_decay)
        with torch.no_grad(): head.linear.weight.div_(sd)  # w . (f - mu) / sd = (w / sd) . f - const: the same differences
        return head
    at = {id(r): f for r, f in zip(rows, fp)}
    train, test = prompt_split(rows, 0.25, seed=0)
    c, r = pair_rewards(fit([at[id(x)] for x in train]), [at[id(x)] for x in test])
    gold = lambda rs, side: [x[f"{side}_reward"] for x in rs]
    report = dict(pairs=len(rows), heldout_pairs=len(test), weight_decay=weight_decay,
                  heldout_gold_accuracy=gold_accuracy(c, r, gold(test, "chosen"), gold(test, "rejected")),
                  heldout_spearman=spearman(torch.cat([c, r]).numpy(), gold(test, "chosen") + gold(test, "rejected")))
    rm.head = fit(fp).to(next(base.parameters()).device)
    c, r = pair_rewards(rm.head, fp)
    report["train_gold_accuracy"] = gold_accuracy(c, r, gold(rows, "chosen"), gold(rows, "rejected"))
    return rm, report


def proxy_rows(base, tok, task):
    "Every gold-ordered pair of finished samples among 16 a train prompt (cached sampling runs, seeds 1-4)."
    samples = sorted((s for seed in SAMPLE_SEEDS for s in scored_samples(base, tok, task, k=4, seed=seed, progress=False)),
                     key=lambda s: s["prompt_index"])  # a stable sort: each prompt's samples together
    return sampled_pairs(samples)


def run_overopt(arms, seeds, steps=24, n_eval=32, eval_every=4, lr=2e-5, max_new_tokens=32, out=None, model=None,
                redo=False, rm_rows=None, proxy="last"):
    """PPO(kl_coef=0) on the proxy reward model (`ppo-rm`) and on the gold reward (`ppo-gold`), both recording both
    rewards. `proxy`: a key of `PROXIES` (the features and, unless `rm_rows` are given, the pairs it is fitted on);
    `out` defaults to that proxy's file."""
    if proxy not in PROXIES: raise ValueError(f"proxy must be one of {sorted(PROXIES)}, got {proxy!r}")
    features, default_out, described = PROXIES[proxy]
    task = get_task("sentiment")
    config = base_config(model, steps, lr, max_new_tokens, n_eval, eval_every, algo=repr(PPO(kl_coef=0.0)),
                         prompts_per_iteration=8, arms=RM_ARMS,
                         proxy=described if rm_rows is None else f"{len(rm_rows)} given pairs")
    if proxy != "last": config["proxy_features"] = features  # the stored `last` configuration stays as it was
    store = RunStore(out or default_out, config, key=("arm", "seed"))
    for seed, todo, base, tok in pending(store, arms, seeds, redo, model):
        t0 = time.time()
        rows = rm_rows if rm_rows is not None or proxy == "last" else proxy_rows(base, tok, task)
        rm, report = proxy_reward_model(base, tok, rows=rows, **features)
        if proxy != "last": report["seconds"] = round(time.time() - t0, 1)
        print("proxy:", {k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}, flush=True)
        proxy_fn = as_reward_fn(rm, tok)  # not `proxy`: that names the kind, read again for the next seed
        scored = dataclasses.replace(task, metrics=lambda p, c: {"proxy": statistics.fmean(proxy_fn(p, c))})
        evaluator = Evaluator(scored, tok, ref=base, prompts=task.eval_prompts[:n_eval], max_new_tokens=max_new_tokens,
                              seed=seed)
        for arm in todo:
            policy, _ = load_policy(model)
            # every rollout records both rewards: `objective/proxy` and `objective/gold`, whichever is trained on
            reward_fn, gold_fn = (proxy_fn, task.reward) if arm == "ppo-rm" else (task.reward, proxy_fn)
            names = ({"objective/scores": "objective/proxy"} if arm == "ppo-rm"
                     else {"objective/scores": "objective/gold", "objective/gold": "objective/proxy"})
            train_arm(store, arm, seed, PPO(kl_coef=0.0), 8, policy, base, tok, task.train_prompts, reward_fn,
                      evaluator, steps, lr, max_new_tokens, eval_every, gold_fn=gold_fn, extra=dict(proxy=report),
                      names=names)
    return store.load()


def positive_int(text: str) -> int:
    "An argparse type: an integer of at least 1 (a usage error naming the value otherwise)."
    value = int(text)
    if value < 1: raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def common_args(p: argparse.ArgumentParser, out, arms=None, steps_help: str = "PPO iterations of each arm"
                ) -> argparse.ArgumentParser:
    """Add the arguments every SmolLM2 online experiment script takes: seeds, evaluation, model, output file, redo; with
    `arms` (the script's arm names), also `--arms` (default: all, in that order) and `--steps` (default 12)."""
    if arms is not None:
        p.add_argument("--arms", nargs="+", default=list(arms), choices=list(arms))
        p.add_argument("--steps", type=positive_int, default=12, help=steps_help)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--n-eval", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=4)
    p.add_argument("--model", default=None, help="None: the embedded SmolLM2; tiny: a smoke test")
    p.add_argument("--out", type=Path, default=out)
    p.add_argument("--redo", action="store_true", help="re-run (arm, seed) pairs already stored in --out")
    return p


if __name__ == "__main__":
    p = common_args(argparse.ArgumentParser(), None)
    p.add_argument("--rm", action="store_true", help="the over-optimisation experiment (arms ppo-rm, ppo-gold)")
    p.add_argument("--arms", nargs="+", default=None, choices=[*ARMS, *RM_ARMS])
    p.add_argument("--steps", type=positive_int, default=None, help="iterations (default 12; 24 with --rm)")
    p.add_argument("--proxy", choices=list(PROXIES), default="last",
                   help="with --rm: the learned reward model trained on (block15: the stronger one, its own output file)")
    a = p.parse_args()
    table = RM_ARMS if a.rm else ARMS
    if a.arms and set(a.arms) - set(table): p.error(f"--arms {sorted(set(a.arms) - set(table))} belong to the other experiment ({'without' if a.rm else 'with'} --rm)")
    if a.proxy != "last" and not a.rm: p.error("--proxy belongs to the over-optimisation experiment (--rm)")
    if a.rm:
        run_overopt(a.arms or list(RM_ARMS), a.seeds, a.steps or 24, a.n_eval, a.eval_every, out=a.out, model=a.model,
                    redo=a.redo, proxy=a.proxy)
    else:
        run(a.arms or list(ARMS), a.seeds, a.steps or 12, a.n_eval, a.eval_every, out=a.out or OUT, model=a.model, redo=a.redo)
