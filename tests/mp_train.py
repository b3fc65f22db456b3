"""Run by tests/test_multiprocess.py under `accelerate launch` with 2 processes (gloo, CPU), and imported by it for the
one-process runs: trains the tiny policy with `rlhf_ref.train.Trainer` and DPO, then saves the final parameters (main
process) and the prompts each process collated at each micro-step (one JSON file per process) in each run's folder.

    accelerate launch ... mp_train.py OUT RUN [RUN ...]    RUN = name:batch_size:grad_accum[:MODE]

MODE `stopK` asks the trainer to stop (as Ctrl-C does: checkpoint, then `KeyboardInterrupt`) during optimizer step K
on every process, `stopK@0` on process 0 alone (the loop must still stop every process at the same step), `resume`
continues the run from its newest checkpoint. Runs are made one after the other in the same processes."""
import json, sys
from pathlib import Path
import torch
from rlhf_ref.data import PreferenceCollator, preference_dataset
from rlhf_ref.dpo import DPO
from rlhf_ref.models import frozen_copy, tiny_policy
from rlhf_ref.train import TrainConfig, Trainer

ROWS = [dict(prompt=f"Review {i}: the film" + " really" * (i % 3),
             chosen=" was warm and funny." if i % 2 else " moved me.",
             rejected=" was dull." if i % 3 else " dragged on and on for hours.") for i in range(16)]


class StopAt(DPO):
    "DPO that asks its trainer to stop (like Ctrl-C) during its `at`-th micro-step."
    at, calls, trainer = None, 0, None
    def loss(self, batch, policy, ref):
        self.calls += 1
        if self.calls == self.at: self.trainer.request_stop()
        return super().loss(batch, policy, ref)


def run(out_root: Path, spec: str, tok, data) -> Trainer:
    "Train the run described by `spec` (see the module's docstring) and save what the test compares."
    name, bs, ga, *mode = spec.split(":")
    bs, ga, mode = int(bs), int(ga), (mode or [""])[0]
    model, _ = tiny_policy(seed=3)
    algo, seen, collate = StopAt(beta=0.5), [], PreferenceCollator(tok.pad_token_id)
    def record(examples):
        seen.append([tok.decode(e["prompt_ids"]) for e in examples])
        return collate(examples)
    cfg = TrainConfig(out_dir=str(out_root / name), max_steps=4, batch_size=bs, grad_accum=ga, lr=5e-3, save_every=2,
                      progress=False)
    t = algo.trainer = Trainer(algo, model, frozen_copy(model), data, record, cfg)
    if mode.startswith("stop"):
        step, _, only = mode[4:].partition("@")
        if not only or int(only) == t.acc.process_index: algo.at = int(step) * ga  # the step's last micro-step
    try: t.train(resume=mode == "resume")
    except KeyboardInterrupt: pass
    suffix = "-resumed" if mode == "resume" else ""
    record = dict(num_processes=t.acc.num_processes, seen=seen, step=t.step)
    (t.out / f"seen-{t.acc.process_index}{suffix}.json").write_text(json.dumps(record))
    if t.acc.is_main_process:
        params = {n: p.detach().cpu() for n, p in t.acc.unwrap_model(t.policy).named_parameters()}
        torch.save(params, t.out / "final.pt")
    t.acc.wait_for_everyone()
    return t


if __name__ == "__main__":
    torch.set_num_threads(1)  # two processes on two cores
    _, tok = tiny_policy()
    data = preference_dataset(ROWS, tok)
    for spec in sys.argv[2:]: run(Path(sys.argv[1]), spec, tok, data)
