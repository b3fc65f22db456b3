"""MPO against DPO alone and PPO alone, with and without swapped labels, on the embedded SmolLM2 and the sentiment task:
held-out gold reward and KL to the initial model.

Every arm starts from the same preference pairs: best against worst of 4 SmolLM2 samples on each train prompt, drawn
with seed 0 (`MPO.pair_seed`; for SmolLM2 the 221 pairs shipped in `data/preferences/`, so no sampling is needed),
gold-labelled by VADER; the `-noise` arms swap the labels of `--noise` of them (30%, chosen by the run's seed). The
arms, for each seed:

- `dpo`, `dpo-noise`: DPO alone on all the pairs (beta 0.1, 40 steps of 4 pairs, lr 2e-5: MPO's DPO stage);
- `mpo`, `mpo-noise`: MPO as the paper runs it: a Bradley-Terry reward model (a linear head on the frozen SmolLM2's
  last-token features, trained on all the pairs) splits them by its gap, the 70% with the largest gaps go to that DPO
  stage, and PPO starts from the DPO policy, is KL-penalised towards it, and trains on the reward model on the
  difficult pairs' prompts;
- `ppo` (PPO alone): MPO with `easy_fraction` 0, PPO from SmolLM2 on the same reward model and all the pairs' prompts.

PPO has the budget of `online_smol.py`'s `ppo` arm (12 iterations of 8 prompts x 1 response, lr 1e-5, `kl_coef` 0.05,
4 epochs of one minibatch, 32 new tokens). Every rollout records the gold reward beside the reward model's
(`objective/gold`, `objective/proxy`); every evaluation samples the first `--n-eval` held-out prompts and measures the
gold reward and the KL to the initial SmolLM2, the one axis all arms share. The MPO arms' evaluation at iteration 0 is
their DPO policy. Each row records the seconds of its stages (pairs, reward model and DPO: `prepare_seconds`; PPO:
`seconds`), so compute can be compared. Results in `data/runs/mpo_smol.json`, read by `nbs/43_mpo.ipynb`.

    OMP_NUM_THREADS=1 python tools/mpo_smol.py --seeds 0
"""
import argparse, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))  # online_smol's train_arm, also when run by runpy
from online_smol import base_config, common_args, pending, train_arm
from rlhf_ref.evaluate import Evaluator
from rlhf_ref.experiments import RunStore, metric_rows, run_folder
from rlhf_ref.models import load_policy
from rlhf_ref.mpo import MPO
from rlhf_ref.tasks import get_task

# arm -> (easy_fraction, whether labels are swapped); easy_fraction None: DPO alone on all pairs
ARMS = {"dpo": (None, False), "dpo-noise": (None, True), "mpo": (0.7, False), "ppo": (0.0, False), "mpo-noise": (0.7, True)}
OUT = Path(__file__).resolve().parents[1] / "data" / "runs" / "mpo_smol.json"
SPLIT_KEYS = ("pairs", "easy", "difficult", "rm_gold_accuracy", "rm_gold_accuracy_easy", "swapped_easy", "swapped_difficult")


def make(arm, noise, tiny=False):
    "The arm's MPO object (the DPO arms use only its pairs and its DPO stage)."
    easy_fraction, noisy = ARMS[arm]
    return MPO(kl_coef=0.05, easy_fraction=0.7 if easy_fraction is None else easy_fraction, dpo_beta=0.1, dpo_steps=40,
               dpo_lr=2e-5, dpo_batch_size=4, pair_label_noise=noise if noisy else 0.0, pair_seed=0,
               pair_require_finished=not tiny)


def run(arms, seeds, steps=12, n_eval=32, eval_every=4, lr=1e-5, max_new_tokens=32, noise=0.3, n_prompts=None, out=OUT,
        model=None, redo=False):
    """Train and evaluate each arm for each seed not yet in `out` (every one with `redo`); merge the rows into `out`.
    `n_prompts`: pairs from the first n train prompts (None: all 260, whose pairs ship for SmolLM2)."""
    task, tiny = get_task("sentiment"), model == "tiny"
    prompts = task.train_prompts[:n_prompts] if n_prompts else task.train_prompts
    arm_config = {a: ("DPO alone on all pairs, the DPO stage of " if ARMS[a][0] is None else "") + repr(make(a, noise, tiny))
                  for a in ARMS}
    config = base_config(model, steps, lr, max_new_tokens, n_eval, eval_every, prompts_per_iteration=8,
                         pair_prompts=len(prompts), noise=noise, arms=arm_config)
    store = RunStore(out, config, key=("arm", "seed"))  # refuses a file of another configuration
    for seed, todo, base, tok in pending(store, arms, seeds, redo, model):
        evaluator = Evaluator(task, tok, ref=base, prompts=task.eval_prompts[:n_eval], max_new_tokens=max_new_tokens,
                              seed=seed)
        for arm in todo:
            algo, (easy_fraction, _), t0 = make(arm, noise, tiny), ARMS[arm], time.time()
            policy, _ = load_policy(model)
            if easy_fraction is None:  # DPO alone: MPO's pairs and DPO stage, on all the pairs
                rows = algo.preference_rows(base, tok, task, prompts, seed=seed, quiet=True)
                with run_folder() as out_dir:
                    policy, hist = algo.dpo_stage(policy, tok, rows, out_dir=out_dir, seed=seed, quiet=True)
                ev = {k: v for k, v in evaluator.evaluate(policy).items() if isinstance(v, (int, float))}
                store.add(dict(arm=arm, seed=seed, final_eval=ev, history=metric_rows(hist), pairs=len(rows),
                               swapped=sum(r.get("flipped", False) for r in rows), seconds=round(time.time() - t0, 1)))
                print(f"{arm} seed {seed}: reward {ev['reward']:.3f}, kl {ev['kl']:.2f} ({time.time() - t0:.0f} s)", flush=True)
                continue
            with run_folder() as prep_dir:
                prep = algo.prepare(policy, tok, task, prompts, out_dir=prep_dir, seed=seed, quiet=True)
            split = {k: algo.split[k] for k in SPLIT_KEYS} | dict(gaps=[round(g, 4) for g in algo.split["gaps"]])
            start = prep.get("policy", policy)  # MPO: the DPO policy, also its reference; PPO alone: SmolLM2 and base
            ref = prep.get("ref", base)
            extra = dict(split=split, prepare_seconds=round(time.time() - t0, 1))
            print(f"{arm} seed {seed}: split {split['easy']} easy / {split['difficult']} difficult, reward model orders "
                  f"{split['rm_gold_accuracy']:.3f} of the pairs as VADER ({extra['prepare_seconds']:.0f} s)", flush=True)
            train_arm(store, arm, seed, algo, min(8, len(prep["prompts"])), start, ref, tok, prep["prompts"], prep["reward_fn"],
                      evaluator, steps, lr, max_new_tokens, eval_every, gold_fn=task.reward, extra=extra,
                      names={"objective/scores": "objective/proxy"})
    return store.load()


if __name__ == "__main__":
    p = common_args(argparse.ArgumentParser(), OUT, ARMS, steps_help="PPO iterations of the MPO and PPO arms")
    p.add_argument("--noise", type=float, default=0.3, help="share of swapped labels in the -noise arms")
    p.add_argument("--n-prompts", type=int, default=None, help="pairs from the first n train prompts (default: all)")
    a = p.parse_args()
    if not 0 <= a.noise <= 1: p.error(f"--noise must be in [0, 1], got {a.noise}")
    if a.n_prompts is not None and a.n_prompts < 2: p.error(f"--n-prompts must be at least 2, got {a.n_prompts}")
    run(a.arms, a.seeds, a.steps, a.n_eval, a.eval_every, noise=a.noise, n_prompts=a.n_prompts, out=a.out, model=a.model,
        redo=a.redo)
