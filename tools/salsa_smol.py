"""SALSA (PPO from, and KL-penalised towards, a soup of two SFTs) against PPO from a single SFT, on the embedded SmolLM2
and the sentiment task: held-out gold reward, KL to the initial model, KL to each run's own reference.

For each seed, two SFTs of SmolLM2 (`sft_steps` steps of 4 demonstrations, lr 1e-5) on the same demonstrations in two
orders (seeds `seed` and `seed + 1`): the best of 4 base samples by gold reward of each of the first `--sft-prompts`
train prompts (64: the samples shipped in `data/samples/`, so no sampling is needed), drawn with seed 0 and shared by
all seeds (`SALSA.sft_data_seed`), so the seeds vary the SFTs' order and everything after.
Then, before any RL, the held-out gold reward of the soups `alpha * SFT1 + (1 - alpha) * SFT2` for alpha in 0, .25,
.5, .75, 1 (row `soups`), and two PPO runs with the budget of `online_smol.py`'s `ppo` arm (12 iterations of 8
prompts x 1 response, lr 1e-5, `kl_coef` 0.05, 4 epochs of one minibatch, 32 new tokens):

- `salsa`: SALSA, PPO from the soup (alpha 0.5) with the soup as its KL reference;
- `sft1` (the control): alpha 1, PPO from SFT1 with SFT1 as its reference -- the usual single-SFT pipeline.

Both evaluate fresh samples on the first `--n-eval` held-out prompts every `--eval-every` iterations against the
initial SmolLM2 (`eval/kl` is the KL to SmolLM2, the same yardstick for both) and log, on every rollout, the KL to
their own reference (`objective/kl`) and to SFT1 and SFT2 (`objective/kl_sft1|2`). Results in
`data/runs/salsa_smol.json`, read by `nbs/44_salsa.ipynb`.

    OMP_NUM_THREADS=1 python tools/salsa_smol.py --seeds 0
"""
import argparse, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))  # online_smol's train_arm, also when run by runpy
from online_smol import base_config, common_args, pending, train_arm
from rlhf_ref.evaluate import Evaluator
from rlhf_ref.experiments import RunStore, run_folder
from rlhf_ref.salsa import SALSA, soup
from rlhf_ref.tasks import get_task

ARMS = {"salsa": 0.5, "sft1": 1.0}  # arm -> alpha, the weight of SFT1 in the soup RL starts from and is held to
SOUPS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the soups evaluated before RL
OUT = Path(__file__).resolve().parents[1] / "data" / "runs" / "salsa_smol.json"


def run(arms, seeds, steps=12, n_eval=32, eval_every=4, lr=1e-5, max_new_tokens=32, sft_steps=20, sft_prompts=64,
        out=OUT, model=None, redo=False):
    """For each seed: the soups' evaluation and each arm not yet in `out` (all with `redo`); rows merged into `out`.
    `sft_prompts`: demonstrations from the first n train prompts (None: all 260, whose 4 samples each are
    drawn first unless cached; 64 reads the shipped samples)."""
    task = get_task("sentiment")
    make = lambda alpha: SALSA(alpha=alpha, sft_steps=sft_steps, sft_data_seed=0, sft_keep_unfinished=model == "tiny")
    config = base_config(model, steps, lr, max_new_tokens, n_eval, eval_every, prompts_per_iteration=8, sft_prompts=sft_prompts,
                         soup_alphas=list(SOUPS), arms={a: repr(make(alpha)) for a, alpha in ARMS.items()})
    store = RunStore(out, config, key=("arm", "seed"))
    for seed, todo, base, tok in pending(store, ("soups", *arms), seeds, redo, model):
        evaluator = Evaluator(task, tok, ref=base, prompts=task.eval_prompts[:n_eval], max_new_tokens=max_new_tokens,
                              seed=seed)
        with run_folder() as sft_dir:  # this seed's two SFTs (trained by the first `prepare`, loaded by the next)
            for arm in [a for a in ARMS if a in todo] or [next(iter(ARMS))]:  # the soups alone still need the SFTs
                algo, t0 = make(ARMS[arm]), time.time()
                start = algo.prepare(base, tok, task, task.train_prompts[:sft_prompts], out_dir=sft_dir, seed=seed,
                                     resume=True, quiet=True)
                if "soups" in todo:
                    todo.remove("soups")
                    sft_seconds = round(time.time() - t0, 1)
                    evals = {str(a): {k: v for k, v in evaluator.evaluate(soup(*algo.sfts, a)).items()
                                      if isinstance(v, (int, float))} for a in SOUPS}
                    store.add(dict(arm="soups", seed=seed, evals=evals, sft_seconds=sft_seconds))
                    print(f"soups seed {seed} (SFTs {sft_seconds:.0f} s): reward "
                          + ", ".join(f"{a}: {e['reward']:.3f}" for a, e in evals.items()), flush=True)
                if arm in todo:
                    train_arm(store, arm, seed, algo, 8, start["policy"], start["ref"], tok, task.train_prompts,
                              task.reward, evaluator, steps, lr, max_new_tokens, eval_every)
    return store.load()


if __name__ == "__main__":
    p = common_args(argparse.ArgumentParser(), OUT, ARMS)
    p.add_argument("--sft-steps", type=int, default=20, help="optimizer steps of each SFT")
    p.add_argument("--sft-prompts", type=int, default=64, help="demonstrations from the first n train prompts")
    a = p.parse_args()
    run(a.arms, a.seeds, a.steps, a.n_eval, a.eval_every, sft_steps=a.sft_steps, sft_prompts=a.sft_prompts,
        out=a.out, model=a.model, redo=a.redo)
