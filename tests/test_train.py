"""The training loop: bit-identical resume (after a crash and after a real Ctrl-C), non-finite losses, refusals."""
import json, os, signal, subprocess, sys, textwrap
import pytest
import torch
from rlhf_ref.core import NonFiniteLossError, read_jsonl
from rlhf_ref.data import PreferenceCollator, preference_dataset
from rlhf_ref.dpo import DPO
from rlhf_ref.models import frozen_copy, tiny_policy
from rlhf_ref.train import TrainConfig, Trainer, latest_checkpoint


class Crash(RuntimeError): pass


class CrashingDPO(DPO):
    "DPO that raises during micro-step `crash_at` (1-based), like a process dying mid-step."
    crash_at = None
    calls = 0
    def loss(self, batch, policy, ref):
        self.calls += 1
        if self.calls == self.crash_at: raise Crash
        return super().loss(batch, policy, ref)


def make(out, rows, tok, crash_at=None, **kw):
    model, _ = tiny_policy(seed=3)
    algo = CrashingDPO(beta=0.5)
    algo.crash_at = crash_at
    cfg = TrainConfig(out_dir=str(out), max_steps=8, batch_size=2, grad_accum=2, lr=5e-3, warmup_steps=2,
                      scheduler="cosine", save_every=3, progress=False, **kw)
    return Trainer(algo, model, frozen_copy(model), preference_dataset(rows, tok), PreferenceCollator(tok.pad_token_id), cfg)


def test_resume_after_a_crash_is_bit_identical(tiny, rows, tmp_path):
    _, tok = tiny
    straight = make(tmp_path / "a", rows, tok); straight.train()
    crashed = make(tmp_path / "b", rows, tok, crash_at=15)  # during step 8: checkpoints at 3 and 6 exist
    with pytest.raises(Crash): crashed.train()
    assert latest_checkpoint(tmp_path / "b").name == "step-000006"
    resumed = make(tmp_path / "b", rows, tok); resumed.train(resume=True)
    for a, b in zip(straight.policy.parameters(), resumed.policy.parameters()): assert torch.equal(a, b)
    assert [r["loss"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl")] == [r["loss"] for r in straight.history]


def test_resume_keeps_the_evaluation_at_the_checkpoint_step_and_never_evaluates_twice(tiny, rows, tmp_path):
    "A checkpoint saved right after an evaluation (step 6 here) keeps that row; resuming a finished run adds none."
    _, tok = tiny
    evals = lambda path: [r["step"] for r in read_jsonl(path / "metrics.jsonl") if r["split"] == "eval"]
    score = lambda m: {"norm": float(sum(p.float().norm() for p in m.parameters()))}
    straight = make(tmp_path / "a", rows, tok, eval_every=6); straight.eval_fn = score; straight.train()
    assert evals(tmp_path / "a") == [0, 6, 8]
    crashed = make(tmp_path / "b", rows, tok, crash_at=15, eval_every=6); crashed.eval_fn = score
    with pytest.raises(Crash): crashed.train()
    resumed = make(tmp_path / "b", rows, tok, eval_every=6); resumed.eval_fn = score; resumed.train(resume=True)
    assert evals(tmp_path / "b") == [0, 6, 8]
    assert [r.get("eval/norm") for r in read_jsonl(tmp_path / "b" / "metrics.jsonl")] == [r.get("eval/norm") for r in straight.history]
    again = make(tmp_path / "b", rows, tok, eval_every=6); again.eval_fn = score; again.train(resume=True)
    assert evals(tmp_path / "b") == [0, 6, 8]


def test_resume_needs_a_checkpoint_and_a_run_is_not_overwritten(tiny, rows, tmp_path):
    _, tok = tiny
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"): make(tmp_path, rows, tok).train(resume=True)
    make(tmp_path, rows, tok).train()
    with pytest.raises(FileExistsError, match="already holds a run"): make(tmp_path, rows, tok).train()
    make(tmp_path, rows, tok).train(overwrite=True)


def test_an_unfinished_checkpoint_is_ignored(tiny, rows, tmp_path):
    _, tok = tiny
    make(tmp_path, rows, tok).train()
    (tmp_path / "checkpoints" / ".tmp-step-000099").mkdir()  # a save interrupted half-way
    (tmp_path / "checkpoints" / "step-000099").mkdir()  # no trainer_state.json: incomplete
    assert latest_checkpoint(tmp_path).name == "step-000008"


class NanAt(DPO):
    at = 3
    calls = 0
    def loss(self, batch, policy, ref):
        self.calls += 1
        loss, m = super().loss(batch, policy, ref)
        return (loss * float("inf") if self.calls == self.at else loss), m


def test_non_finite_loss_stops_before_the_update_and_keeps_checkpoints(tiny, rows, tmp_path):
    _, tok = tiny
    model, _ = tiny_policy(seed=3)
    cfg = TrainConfig(out_dir=str(tmp_path), max_steps=6, batch_size=2, lr=1e-3, save_every=2, progress=False)
    t = Trainer(NanAt(), model, frozen_copy(model), preference_dataset(rows, tok), PreferenceCollator(tok.pad_token_id), cfg)
    with pytest.raises(NonFiniteLossError, match="at step 3"): t.train()
    assert t.step == 2 and latest_checkpoint(tmp_path).name == "step-000002"
    saved = latest_checkpoint(tmp_path)
    from safetensors.torch import load_file
    weights = load_file(str(saved / "model.safetensors"))
    for name, p in model.named_parameters():
        if name in weights: assert torch.equal(weights[name], p.detach().cpu())  # the checkpoint holds the last good weights


def test_bad_config():
    with pytest.raises(ValueError, match="grad_accum"): TrainConfig(grad_accum=0)
    with pytest.raises(ValueError, match="mixed_precision"): TrainConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match="max_grad_norm"): TrainConfig(max_grad_norm=-1.0)


def test_dataset_smaller_than_a_batch(tiny, rows, tmp_path):
    _, tok = tiny
    model, _ = tiny_policy()
    with pytest.raises(ValueError, match="fewer than one global batch"):
        Trainer(DPO(), model, model, preference_dataset(rows[:3], tok), PreferenceCollator(tok.pad_token_id),
                TrainConfig(out_dir=str(tmp_path), batch_size=4))


SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from rlhf_ref.data import PreferenceCollator, preference_dataset
    from rlhf_ref.dpo import DPO
    from rlhf_ref.models import frozen_copy, tiny_policy
    from rlhf_ref.train import TrainConfig, Trainer
    out, resume = sys.argv[1], sys.argv[2] == "resume"
    model, tok = tiny_policy(seed=3)
    rows = [{"prompt": f"Review {i}:", "chosen": " warm and funny.", "rejected": " dull."} for i in range(8)]
    class CtrlCAt(DPO):
        calls = 0
        def loss(self, batch, policy, ref):
            self.calls += 1
            if not resume and self.calls == 4: os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, during step 4
            return super().loss(batch, policy, ref)
    t = Trainer(CtrlCAt(beta=0.5), model, frozen_copy(model), preference_dataset(rows, tok), PreferenceCollator(tok.pad_token_id),
                TrainConfig(out_dir=out, max_steps=7, batch_size=2, lr=5e-3, progress=False))
    t.train(resume=resume)
    import torch; torch.save({n: p.detach() for n, p in model.named_parameters()}, out + "/final.pt")
""")


def test_real_ctrl_c_saves_then_resume_matches(tmp_path):
    "A real SIGINT during step 4: the step finishes, a checkpoint is saved, and resuming ends where a plain run ends."
    script = tmp_path / "run.py"; script.write_text(SCRIPT)
    run = lambda path, out, mode: subprocess.run([sys.executable, str(path), str(out), mode], capture_output=True, text=True, timeout=300)
    r = run(script, tmp_path / "interrupted", "fresh")
    assert r.returncode != 0 and "KeyboardInterrupt" in r.stderr and "checkpoint saved to" in r.stderr
    assert latest_checkpoint(tmp_path / "interrupted").name == "step-000004"
    r = run(script, tmp_path / "interrupted", "resume"); assert r.returncode == 0, r.stderr
    plain = tmp_path / "plain.py"; plain.write_text(SCRIPT.replace("if not resume and self.calls == 4", "if False"))
    r = run(plain, tmp_path / "plain", "fresh"); assert r.returncode == 0, r.stderr
    a, b = torch.load(tmp_path / "interrupted" / "final.pt"), torch.load(tmp_path / "plain" / "final.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_activation_checkpointing_trains_the_same(tiny, rows, tmp_path):
    "`TrainConfig(activation_checkpointing=True)` turns it on for the policy and gives the same parameters after a few steps."
    _, tok = tiny
    runs = {}
    for ckpt in (False, True):
        model, _ = tiny_policy(seed=3)
        cfg = TrainConfig(out_dir=str(tmp_path / str(ckpt)), max_steps=3, batch_size=2, lr=5e-3, progress=False,
                          activation_checkpointing=ckpt)
        t = Trainer(DPO(beta=0.5), model, frozen_copy(model), preference_dataset(rows, tok), PreferenceCollator(tok.pad_token_id), cfg)
        flag = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else "is_gradient_checkpointing"
        assert getattr(model, flag) is ckpt
        t.train(); runs[ckpt] = t
    init = tiny_policy(seed=3)[0].named_parameters()
    for (n, p0), p, q in zip(init, runs[True].policy.parameters(), runs[False].policy.parameters()):
        # Adam divides by the gradient's scale, so compare the two updates by norm, not elementwise
        update = (q - p0).norm()
        assert update > 0 and (p - q).norm() < 1e-3 * update, f"{n}: {(p - q).norm():.2e} vs update {update:.2e}"
