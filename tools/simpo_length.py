"""SimPO vs DPO (and a length-normalised DPO control) on the sentiment task: eval length, finished rate, reward, KL.

Each (algorithm, seed) run trains the embedded SmolLM2 for `--steps` steps on the same 221 shipped best-vs-worst pairs
(sampled once, seed 0) and evaluates fresh samples on the first `--n-eval` held-out prompts before and after training;
the seed changes the batch order and the evaluation's sampling. Results are merged into `data/runs/simpo_length.json`,
which `nbs/23_simpo.ipynb` reads and shows. Run under the heavy lock:

    flock /tmp/rlhf_heavy.lock python tools/simpo_length.py --algos dpo simpo --seeds 0 1
"""
import argparse, time
from pathlib import Path
from rlhf_ref.data import PreferenceCollator, precompute_ref_logps, preference_dataset
from rlhf_ref.dpo import DPO
from rlhf_ref.evaluate import Evaluator
from rlhf_ref.experiments import RunStore, run_folder
from rlhf_ref.models import frozen_copy, load_policy
from rlhf_ref.prefdata import onpolicy_preferences
from rlhf_ref.simpo import SimPO
from rlhf_ref.tasks import get_task
from rlhf_ref.train import TrainConfig, Trainer

ALGOS = {"dpo": lambda: DPO(beta=0.1),  # 20_dpo's run
         "simpo": lambda: SimPO(beta=2.0, gamma_beta_ratio=0.5),
         "dpo-mean": lambda: DPO(beta=2.0, average=True)}  # control: DPO's reference, SimPO's length normalisation and scale
OUT = Path(__file__).resolve().parents[1] / "data" / "runs" / "simpo_length.json"


def run(algos, seeds, steps=30, n_eval=32, lr=2e-5, batch_size=4, out=OUT, model=None, redo=False):
    "Train and evaluate each algorithm for each seed not yet in `out` (every one with `redo`); merge the rows into `out`."
    smoke = dict(n_prompts=8, require_finished=False) if model == "tiny" else {}  # a seconds-long check of this script
    task = get_task("sentiment")
    config = dict(task="sentiment", model=model or "smollm2 (embedded)", pairs="shipped best-vs-worst, k=4, seed 0", steps=steps,
                  batch_size=batch_size, lr=lr, warmup_steps=5, max_grad_norm=10.0, n_eval_prompts=n_eval,
                  algos={a: repr(ALGOS[a]()) for a in ALGOS})
    store = RunStore(out, config, key=("algo", "seed"))  # refuses a file of another configuration
    done = store.done()
    for seed in seeds:
        todo = [name for name in algos if redo or (name, seed) not in done]
        if not todo: continue
        ref0, tok = load_policy(model)
        ref = frozen_copy(ref0)
        rows = onpolicy_preferences(ref, tok, task, k=4, seed=0, progress=False, **smoke)
        ds = preference_dataset(rows, tok, max_length=256, max_prompt_length=128)
        # one evaluator a seed: it evaluates the arms' shared starting point (the reference) once
        evaluator = Evaluator(task, tok, ref=ref, prompts=task.eval_prompts[:n_eval], seed=seed)
        for name in todo:
            t0, algo = time.time(), ALGOS[name]()
            policy, _ = load_policy(model)
            data = precompute_ref_logps(ds, ref, tok.pad_token_id) if algo.precompute_ref else ds
            with run_folder() as out_dir:  # the final checkpoint: 2 GB a run, removed; only the metrics are kept
                cfg = TrainConfig(out_dir=out_dir, max_steps=steps, batch_size=batch_size, lr=lr, warmup_steps=5,
                                  max_grad_norm=10.0, eval_every=0, seed=seed, progress=False)
                hist = Trainer(algo, policy, ref, data, PreferenceCollator(tok.pad_token_id), cfg, eval_fn=evaluator).train()
            evals = [r for r in hist if r.get("split") == "eval"]
            train = [{k: v for k, v in r.items() if isinstance(v, (int, float))} for r in hist if r.get("split") != "eval"]
            row = dict(algo=name, seed=seed, pairs=len(ds), first=evals[0], final=evals[-1], train=train,
                       seconds=round(time.time() - t0, 1))
            store.add(row)
            print(f"{name} seed {seed}: length {evals[0]['eval/length']:.1f} -> {evals[-1]['eval/length']:.1f}, finished "
                  f"{evals[0]['eval/finished']:.2f} -> {evals[-1]['eval/finished']:.2f}, reward {evals[-1]['eval/reward']:.3f}, "
                  f"kl {evals[-1]['eval/kl']:.2f} ({row['seconds']:.0f} s)", flush=True)
    return store.load()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--algos", nargs="+", default=["dpo", "simpo"], choices=sorted(ALGOS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--n-eval", type=int, default=32)
    p.add_argument("--model", default=None, help="None: the embedded SmolLM2; tiny: a smoke test")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--redo", action="store_true", help="re-run (algorithm, seed) pairs already stored in --out")
    a = p.parse_args()
    run(a.algos, a.seeds, a.steps, a.n_eval, out=a.out, model=a.model, redo=a.redo)
