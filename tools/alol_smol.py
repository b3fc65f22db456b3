"""A-LoL against its baselines on the embedded SmolLM2 and the shipped scored sentiment set: held-out reward by step.

Every (arm, seed) run trains a fresh SmolLM2 for `--steps` steps on the same scored rows (`data/scored/`, 64 prompts,
data seed 0, built by `rlhf_ref.alol.alol_data` exactly as `rlhf-ref train --algo alol` builds them: V_ref fitted on the
last 13 prompts' greedy answers, advantages A = R - V on the other 51 prompts' rows) and evaluates fresh samples on the
first `--n-eval` held-out prompts every `--eval-every` steps; the seed changes the priority draws, the batch order and
the evaluation's sampling. The arms:

- `a-lol`: A-LoL (priority draws in proportion to A+, clipped detached ratio), the paper's main variant;
- `nll`, `wbc`, `r-lol`: the baselines on every row, uniformly (NLL = behaviour cloning; R-weighted; ratio x R);
- `nll-kept` (control): NLL on the rows with A > 0 only, uniformly: what filtering alone gives, without A's weights.

Results are merged into `data/runs/alol_smol.json`, which `nbs/30_alol.ipynb` reads and shows. 7 to 13 minutes a run
on one CPU thread (the scored set and V_ref are rebuilt by `alol_data` for every arm, as the CLI builds them); two
processes with different `--arms` can share the two cores (`rlhf_ref.experiments.RunStore` merges their rows under a
lock):

    OMP_NUM_THREADS=1 python tools/alol_smol.py --arms a-lol nll --seeds 0 1 2
"""
import argparse, time
import datasets
from pathlib import Path
from rlhf_ref.alol import ALoL, alol_data
from rlhf_ref.evaluate import Evaluator
from rlhf_ref.experiments import RunStore, metric_rows, run_folder
from rlhf_ref.models import frozen_copy, load_policy
from rlhf_ref.tasks import get_task
from rlhf_ref.train import TrainConfig, Trainer

ARMS = {"a-lol": ("a-lol", False), "nll": ("nll", False), "wbc": ("wbc", False), "r-lol": ("r-lol", False),
        "nll-kept": ("nll", True)}  # arm -> (ALoL variant, train only on rows with A > 0)
datasets.disable_progress_bars()  # a filter of a few hundred rows needs no bar
OUT = Path(__file__).resolve().parents[1] / "data" / "runs" / "alol_smol.json"


def run(arms, seeds, steps=30, n_eval=32, eval_every=10, lr=2e-5, batch_size=4, out=OUT, model=None, redo=False):
    "Train and evaluate each arm for each seed not yet in `out` (every one with `redo`); merge the rows into `out`."
    # tiny: a seconds-long check of this script
    smoke = dict(n_prompts=12, require_finished=False) if model == "tiny" else dict(n_prompts=64)
    task = get_task("sentiment")
    config = dict(task="sentiment", model=model or "smollm2 (embedded)", data=f"scored, k=4, data seed 0, {smoke}",
                  steps=steps, batch_size=batch_size, lr=lr, warmup_steps=3, max_grad_norm=10.0, n_eval_prompts=n_eval,
                  eval_every=eval_every,
                  arms={a: list(ARMS[a]) for a in ARMS})
    store = RunStore(out, config, key=("arm", "seed"))  # refuses a file of another configuration
    done = store.done()
    for seed in seeds:
        todo = [a for a in arms if redo or (a, seed) not in done]
        if not todo: continue
        ref, tok = load_policy(model)
        ref = frozen_copy(ref)
        # one evaluator a seed: it evaluates the arms' shared starting point (the reference) once
        evaluator = Evaluator(task, tok, ref=ref, prompts=task.eval_prompts[:n_eval], seed=seed)
        for arm in todo:
            t0, (variant, kept_only) = time.time(), ARMS[arm]
            algo = ALoL(variant)
            ds, collate, info = alol_data(algo, ref, tok, task, k=4, seed=0, train_seed=seed, draws=steps * batch_size,
                                          progress=False, **smoke)
            if kept_only: ds = ds.filter(lambda a: a > 0, input_columns="advantage")
            policy, _ = load_policy(model)
            with run_folder() as out_dir:  # the final checkpoint: 2 GB a run, removed; only the metrics are kept
                cfg = TrainConfig(out_dir=out_dir, max_steps=steps, batch_size=batch_size, lr=lr, warmup_steps=3,
                                  max_grad_norm=10.0, eval_every=eval_every, seed=seed, progress=False)
                hist = Trainer(algo, policy, ref, ds, collate, cfg, eval_fn=evaluator).train()
            info = {k: v for k, v in info.items() if k != "summary"}
            row = dict(arm=arm, seed=seed, rows=len(ds), data=info, history=metric_rows(hist),
                       seconds=round(time.time() - t0, 1))
            store.add(row)  # merged with what other processes stored meanwhile
            evals = [r for r in hist if r.get("split") == "eval"]
            print(f"{arm} seed {seed}: reward " + " -> ".join(f"{e['eval/reward']:.3f}@{e['step']}" for e in evals)
                  + f", kl {evals[-1]['eval/kl']:.2f}, {len(ds)} rows ({row['seconds']:.0f} s)", flush=True)
    return store.load()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--n-eval", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--model", default=None, help="None: the embedded SmolLM2; tiny: a smoke test")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--redo", action="store_true", help="re-run (arm, seed) pairs already stored in --out")
    a = p.parse_args()
    run(a.arms, a.seeds, a.steps, a.n_eval, a.eval_every, out=a.out, model=a.model, redo=a.redo)
