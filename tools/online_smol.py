"""PPO, PPO without its KL penalty, GRPO and RLOO on the embedded SmolLM2 and the sentiment task: held-out gold reward,
KL to the initial model, entropy, clipfrac and the time each piece of an iteration took.

Every (arm, seed) run trains a fresh SmolLM2 for `--steps` iterations on its own samples of the task's train prompts,
8 responses an iteration in every arm (PPO: 8 prompts x 1; GRPO: 2 prompts x 4; RLOO: 4 prompts x 2), 4 epochs of one
minibatch over each batch (TRL's `num_ppo_epochs`), responses and evaluations cut at `--max-new-tokens`, and evaluates
fresh samples on the first `--n-eval` held-out prompts every `--eval-every` iterations; the seed changes the prompt
order, the sampling and the evaluation's sampling. The arms:

- `ppo`: PPO with TRL's per-token k1 KL penalty (`kl_coef` 0.05), GAE, a value head on the policy's trunk;
- `ppo-kl0` (the KL penalty's control): the same with `kl_coef` 0, where the papers expect reward hacking;
- `grpo`: GRPO with the paper's beta 0.04 (k3 KL in the loss), group of 4, DAPO's token-level loss;
- `rloo`: RLOO (k = 2, beta 0.05 of k1 summed over the response, subtracted from the reward).

Results are merged into `data/runs/online_smol.json`, which `nbs/40_ppo.ipynb` and `nbs/41_grpo.ipynb` read. A run
took 17 to 24 minutes with three runs sharing the 2-core machine; several processes with different `--arms` or
`--seeds` can share the cores (`rlhf_ref.experiments.RunStore` merges their rows under a lock), but then the times
they record are shared-machine times: compare arms' times only between runs that ran side by side.

    OMP_NUM_THREADS=1 python tools/online_smol.py --arms ppo --seeds 0 1 2
"""
import argparse, shutil, tempfile, time
from pathlib import Path
from rlhf_ref.evaluate import Evaluator
from rlhf_ref.experiments import RunStore
from rlhf_ref.grpo import GRPO, RLOO
from rlhf_ref.models import frozen_copy, load_policy
from rlhf_ref.ppo import PPO
from rlhf_ref.rollout import OnlineConfig, OnlineTrainer
from rlhf_ref.tasks import get_task

# arm -> (algorithm, prompts an iteration); every arm samples 8 responses an iteration
ARMS = {"ppo": (lambda: PPO(kl_coef=0.05), 8), "ppo-kl0": (lambda: PPO(kl_coef=0.0), 8),
        "grpo": (lambda: GRPO(num_generations=4, beta=0.04), 2),
        "rloo": (lambda: RLOO(num_generations=2, beta=0.05), 4)}
OUT = Path(__file__).resolve().parents[1] / "data" / "runs" / "online_smol.json"


def run(arms, seeds, steps=12, n_eval=32, eval_every=4, lr=1e-5, max_new_tokens=32, out=OUT, model=None, redo=False):
    "Train and evaluate each arm for each seed not yet in `out` (every one with `redo`); merge the rows into `out`."
    task = get_task("sentiment")
    config = dict(task="sentiment", model=model or "smollm2 (embedded)", steps=steps, lr=lr, num_epochs=4,
                  num_mini_batches=1, max_new_tokens=max_new_tokens, temperature=1.0, n_eval_prompts=n_eval,
                  eval_every=eval_every, arms={a: f"{ARMS[a][0]()!r}, {ARMS[a][1]} prompts" for a in ARMS})
    store = RunStore(out, config, key=("arm", "seed"))  # refuses a file of another configuration
    done = store.done()
    for seed in seeds:
        todo = [a for a in arms if redo or (a, seed) not in done]
        if not todo: continue
        base, tok = load_policy(model)
        base = frozen_copy(base)  # the initial model: KL reference of every arm and the evaluation's reference
        # one evaluator a seed: it evaluates the arms' shared starting point once
        evaluator = Evaluator(task, tok, ref=base, prompts=task.eval_prompts[:n_eval], max_new_tokens=max_new_tokens,
                              seed=seed)
        for arm in todo:
            t0, (make, n_prompts) = time.time(), ARMS[arm]
            policy, _ = load_policy(model)
            cfg = OnlineConfig(out_dir=tempfile.mkdtemp(), max_steps=steps, batch_size=n_prompts, lr=lr, num_epochs=4,
                               num_mini_batches=1, max_new_tokens=max_new_tokens, temperature=1.0, seed=seed,
                               eval_every=eval_every, progress=False)
            trainer = OnlineTrainer(make(), policy, base, tok, task.train_prompts, task.reward, cfg, eval_fn=evaluator)
            hist = trainer.train()
            shutil.rmtree(cfg.out_dir)  # the final checkpoint: 2 GB a run, and only the metrics are kept
            keep = lambda r: {k: v for k, v in r.items() if isinstance(v, (int, float, str))}
            row = dict(arm=arm, seed=seed, history=[keep(r) for r in hist], seconds=round(time.time() - t0, 1))
            store.add(row)  # merged with what other processes stored meanwhile
            evals = [r for r in hist if r.get("split") == "eval"]
            print(f"{arm} seed {seed}: reward " + " -> ".join(f"{e['eval/reward']:.3f}@{e['step']}" for e in evals)
                  + f", kl {evals[-1]['eval/kl']:.2f} ({row['seconds']:.0f} s)", flush=True)
    return store.load()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--n-eval", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=4)
    p.add_argument("--model", default=None, help="None: the embedded SmolLM2; tiny: a smoke test")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--redo", action="store_true", help="re-run (arm, seed) pairs already stored in --out")
    a = p.parse_args()
    run(a.arms, a.seeds, a.steps, a.n_eval, a.eval_every, out=a.out, model=a.model, redo=a.redo)
