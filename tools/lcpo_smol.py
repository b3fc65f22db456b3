"""RE-DPO (LCPO around DPO) against plain DPO on the embedded SmolLM2, with 0%, 20% and 40% of the labels flipped.

Every (arm, flip rate, seed) run trains a fresh SmolLM2 for `--steps` steps on the shipped on-policy sentiment pairs
(best vs worst of 4 samples by VADER, data seed 0: the pairs of `20_dpo`), with round(rate x n) of them swapped at
random (`inject_noise`, the seed's own flips; both arms see the same ones), and evaluates fresh samples on the first
`--n-eval` held-out prompts before and after training. For RE-DPO it also records where its reliability estimate eta
ended and, with one no-grad pass over the training pairs, each pair's posterior w under the final policy and eta:
the AUROC of 1 - w as a detector of the flipped pairs and the share of flipped and of clean pairs below w = 1/2.
Neither arm is told the rate. Results are merged into `data/runs/lcpo_smol.json`, which `nbs/24_lcpo.ipynb` reads.
About 15 minutes a run on one CPU thread (25 with other jobs sharing the two cores):

    OMP_NUM_THREADS=1 python tools/lcpo_smol.py --rates 0.0 0.2 0.4 --seeds 0 1 2
"""
import argparse, time
from pathlib import Path
import torch
from rlhf_ref.core import to_device
from rlhf_ref.data import PreferenceCollator, precompute_ref_logps, preference_dataset
from rlhf_ref.dpo import DPO
from rlhf_ref.evaluate import Evaluator
from rlhf_ref.experiments import RunStore, run_folder
from rlhf_ref.lcpo import REDPO, annotator_index, flip_auroc, posterior_correct
from rlhf_ref.models import frozen_copy, load_policy
from rlhf_ref.prefdata import inject_noise, onpolicy_preferences
from rlhf_ref.tasks import get_task
from rlhf_ref.train import TrainConfig, Trainer

ARMS = {"re-dpo": lambda: REDPO(beta=0.1), "dpo": lambda: DPO(beta=0.1)}
OUT = Path(__file__).resolve().parents[1] / "data" / "runs" / "lcpo_smol.json"


@torch.no_grad()
def pair_weights(algo: REDPO, policy, ref, data, pad_token_id: int, batch_size: int = 8) -> torch.Tensor:
    "Each training pair's posterior w = P(label right) under the trained policy and the final eta: (N,), on the CPU."
    collate, out = PreferenceCollator(pad_token_id), []
    policy.eval()
    for i in range(0, len(data), batch_size):
        batch = to_device(collate(list(data.select(range(i, min(i + batch_size, len(data)))))), policy)
        _, fwd, swp, _ = algo._pair_losses(batch, policy, ref)
        out.append(posterior_correct(swp - fwd, algo.eta[batch["annotator"].long().cpu()].to(fwd)).cpu())
    return torch.cat(out)


def run(rates, seeds, arms=tuple(ARMS), steps=60, n_eval=32, lr=2e-5, batch_size=4, out=OUT, model=None, redo=False):
    "Train and evaluate each (arm, rate) for each seed not yet in `out` (every one with `redo`); merge rows into `out`."
    smoke = dict(n_prompts=8, require_finished=False) if model == "tiny" else {}  # tiny: a seconds-long check
    task = get_task("sentiment")
    config = dict(task="sentiment", model=model or "smollm2 (embedded)", pairs="shipped best-vs-worst, k=4, seed 0",
                  steps=steps,
                  batch_size=batch_size, lr=lr, warmup_steps=5, max_grad_norm=10.0, n_eval_prompts=n_eval,
                  arms={a: repr(ARMS[a]()) for a in ARMS})
    store = RunStore(out, config, key=("arm", "rate", "seed"))  # refuses a file of another configuration
    done = store.done()
    for seed in seeds:
        todo = [(a, rate) for rate in rates for a in arms if redo or (a, rate, seed) not in done]
        if not todo: continue
        ref, tok = load_policy(model)
        ref = frozen_copy(ref)
        clean = onpolicy_preferences(ref, tok, task, k=4, seed=0, progress=False, **smoke)
        # one evaluator a seed: it evaluates the arms' shared starting point (the reference) once
        evaluator = Evaluator(task, tok, ref=ref, prompts=task.eval_prompts[:n_eval], seed=seed)
        noisy = {}  # flip rate -> the flipped pairs with the reference's log-probs: made once, shared by the arms
        for arm, rate in todo:
            t0, algo = time.time(), ARMS[arm]()
            if rate not in noisy:
                rows = annotator_index(inject_noise(clean, rate, seed=seed))
                noisy[rate] = precompute_ref_logps(preference_dataset(rows, tok, max_length=256, max_prompt_length=128),
                                                   ref, tok.pad_token_id)
            data = noisy[rate]
            policy, _ = load_policy(model)
            collate = PreferenceCollator(tok.pad_token_id)
            with run_folder() as out_dir:  # the final checkpoint: 2 GB a run, removed; only the metrics are kept
                cfg = TrainConfig(out_dir=out_dir, max_steps=steps, batch_size=batch_size, lr=lr, warmup_steps=5,
                                  max_grad_norm=10.0, eval_every=0, seed=seed, progress=False)
                hist = Trainer(algo, policy, ref, data, collate, cfg, eval_fn=evaluator).train()
            evals = [r for r in hist if r.get("split") == "eval"]
            numbers = lambda r: {k: v for k, v in r.items() if isinstance(v, (int, float))}
            train = [numbers(r) for r in hist if r.get("split") != "eval"]
            row = dict(arm=arm, rate=rate, seed=seed, pairs=len(data), flips=sum(data["flipped"]), first=evals[0],
                       final=evals[-1], train=train)
            if arm == "re-dpo":
                w, flipped = pair_weights(algo, policy, ref, data, tok.pad_token_id), torch.tensor(data["flipped"])
                row.update(eta=algo.eta.tolist()[0], w_clean=w[~flipped].mean().item(),
                           below_half_clean=(w[~flipped] < 0.5).double().mean().item())
                if flipped.any():
                    row.update(auroc=flip_auroc(w, flipped), w_flipped=w[flipped].mean().item(),
                               below_half_flipped=(w[flipped] < 0.5).double().mean().item())
            row["seconds"] = round(time.time() - t0, 1)
            store.add(row)  # merged with what other processes stored meanwhile
            extra = "" if arm != "re-dpo" else f", eta {row['eta']:.3f}"
            extra += f", AUROC {row['auroc']:.3f}" if "auroc" in row else ""
            print(f"{arm} flips {rate:.0%} seed {seed}: reward {evals[0]['eval/reward']:.3f} -> "
                  f"{evals[-1]['eval/reward']:.3f}, "
                  f"kl {evals[-1]['eval/kl']:.2f}{extra} ({row['seconds']:.0f} s)", flush=True)
    return store.load()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rates", nargs="+", type=float, default=[0.0, 0.2, 0.4])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--n-eval", type=int, default=32)
    p.add_argument("--model", default=None, help="None: the embedded SmolLM2; tiny: a smoke test")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--redo", action="store_true", help="re-run (arm, rate, seed) triples already stored in --out")
    a = p.parse_args()
    run(a.rates, a.seeds, a.arms, a.steps, a.n_eval, out=a.out, model=a.model, redo=a.redo)
