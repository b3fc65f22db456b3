"""LoRA through `TrainConfig(lora=...)`: only the adapters train, the reference is the base model with them switched off,
resume is bit-identical, saved adapters load back (merged and not), and the CLI's --lora-r end to end."""
import contextlib, io, json, math
import pytest
import torch
from rlhf_ref.core import fingerprint, read_jsonl
from rlhf_ref.data import PreferenceCollator, preference_dataset
from rlhf_ref.dpo import DPO
from rlhf_ref.logprobs import concatenated_forward
from rlhf_ref.models import frozen_copy, load_policy, tiny_policy
from rlhf_ref.train import AdaptersOff, TrainConfig, Trainer, latest_checkpoint

LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


class Crash(RuntimeError): pass


class CrashingDPO(DPO):
    "DPO that raises during micro-step `crash_at` (1-based), like a process dying mid-step."
    crash_at, calls = None, 0
    def loss(self, batch, policy, ref):
        self.calls += 1
        if self.calls == self.crash_at: raise Crash
        return super().loss(batch, policy, ref)


def make(out, rows, tok, crash_at=None, lora=LORA, seed=3, **kw):
    model, _ = tiny_policy(seed=seed)
    algo = CrashingDPO(beta=0.5)
    algo.crash_at = crash_at
    cfg = TrainConfig(out_dir=str(out), max_steps=6, batch_size=2, grad_accum=2, lr=1e-2, warmup_steps=1,
                      scheduler="cosine", save_every=2, progress=False, lora=lora, **kw)
    return Trainer(algo, model, None, preference_dataset(rows, tok), PreferenceCollator(tok.pad_token_id), cfg)


def logps(model, batch):
    with torch.no_grad():
        out = concatenated_forward(model, batch)
    return torch.cat([out["chosen_logps"], out["rejected_logps"]])


def probe(rows, tok):
    return PreferenceCollator(tok.pad_token_id)(list(preference_dataset(rows, tok)))


def test_only_adapters_train_and_the_reference_is_the_frozen_base(tiny, rows, tmp_path):
    _, tok = tiny
    trainer, batch = make(tmp_path, rows, tok), probe(rows, tok)
    before = frozen_copy(tiny_policy(seed=3)[0])
    assert isinstance(trainer.ref, AdaptersOff) and fingerprint(trainer.ref) != fingerprint(trainer.policy)
    trainable = {n for n, p in trainer.policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert not any(p.requires_grad for p in trainer.ref.parameters())
    # step 0: B = 0, so the policy, the adapters-off reference and the frozen base agree exactly
    assert torch.equal(logps(trainer.policy, batch), logps(before, batch))
    assert torch.equal(logps(trainer.ref, batch), logps(before, batch))
    start = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    trainer.train()
    moved = {n for n, p in trainer.policy.named_parameters() if not torch.equal(p, start[n])}
    assert moved and moved <= trainable and any("lora_B" in n for n in moved)
    base_now = {n.replace(".base_layer", ""): p for n, p in trainer.ref.named_parameters()}
    assert base_now.keys() == dict(before.named_parameters()).keys()
    for n, p in before.named_parameters(): assert torch.equal(base_now[n], p), n
    assert torch.equal(logps(trainer.ref, batch), logps(before, batch))  # the reference is still the base model
    assert not torch.allclose(logps(trainer.policy, batch), logps(before, batch))  # while the policy moved


def test_an_explicit_reference_wins(tiny, rows, tmp_path):
    _, tok = tiny
    model, _ = tiny_policy(seed=3)
    ref = frozen_copy(model)
    cfg = TrainConfig(out_dir=str(tmp_path), max_steps=1, batch_size=2, progress=False, lora=LORA)
    trainer = Trainer(DPO(), model, ref, preference_dataset(rows, tok), PreferenceCollator(tok.pad_token_id), cfg)
    assert trainer.ref is ref


def test_resume_under_lora_is_bit_identical(tiny, rows, tmp_path):
    _, tok = tiny
    straight = make(tmp_path / "a", rows, tok); straight.train()
    crashed = make(tmp_path / "b", rows, tok, crash_at=11)  # during step 6: checkpoints at 2 and 4 exist
    with pytest.raises(Crash): crashed.train()
    assert latest_checkpoint(tmp_path / "b").name == "step-000004"
    resumed = make(tmp_path / "b", rows, tok); resumed.train(resume=True)
    for (n, a), b in zip(straight.policy.named_parameters(), resumed.policy.parameters()): assert torch.equal(a, b), n
    assert [r["loss"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl")] == [r["loss"] for r in straight.history]
    state = json.loads((latest_checkpoint(tmp_path / "b") / "trainer_state.json").read_text())
    assert state["config"]["lora"] == LORA
    with pytest.raises(ValueError, match="lora"): make(tmp_path / "b", rows, tok, lora=None).train(resume=True)


def test_saved_adapter_loads_back_merged_and_not(tiny, rows, tmp_path):
    _, tok = tiny
    trainer, batch = make(tmp_path / "run", rows, tok, seed=0), probe(rows, tok)  # seed 0: the model "tiny" names
    trainer.train()
    want = logps(trainer.policy, batch)
    adapter = trainer.save_trained_policy(tok, tmp_path / "adapter", base_model="tiny")
    merged_dir = trainer.save_trained_policy(tok, tmp_path / "merged", merge=True, base_model="tiny")
    assert torch.equal(logps(trainer.policy, batch), want)  # merging a copy left the trainer's model alone
    assert (adapter / "adapter_config.json").exists() and not (adapter / "config.json").exists()
    meta = json.loads((adapter / "rlhf_ref.json").read_text())
    assert (meta["base_model"], meta["lora"]["r"], meta["adapter"]) == ("tiny", 4, "adapter only")
    unmerged, _ = load_policy(adapter)
    merged, _ = load_policy(adapter, merge=True)
    full, _ = load_policy(merged_dir, dtype=torch.float32)  # the tiny model's dtype (on CUDA it would load in bf16)
    assert type(unmerged).__name__.startswith("Peft") and not type(merged).__name__.startswith("Peft")
    for m in (unmerged, merged, full):
        torch.testing.assert_close(logps(m, batch), want, rtol=0, atol=1e-5)
    base, _ = tiny_policy(seed=3)  # the adapter on a different base gives other log-probs: it was really applied
    assert not torch.allclose(logps(merged, batch), logps(base, batch), atol=1e-3)


@pytest.mark.parametrize("lora, match", [({"r": 0}, "lora"), ({"r": 2.5}, "lora"), ({"bogus": 1}, "lora"),
                                         ("r=4", "lora"), ({"r": 4, "lora_dropout": 2.0}, "lora")])
def test_bad_lora_config(lora, match):
    with pytest.raises(ValueError, match=match): TrainConfig(lora=lora)


def run_cli(*argv):
    from rlhf_ref.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: code = main(list(argv))
        except SystemExit as e: code = e.code
    return code, out.getvalue(), err.getvalue()


def test_cli_lora_end_to_end(tmp_path):
    args = ["train", "--algo", "dpo", "--task", "sentiment", "--model", "tiny", "--n-prompts", "8", "--k", "2",
            "--keep-unfinished", "--n-eval-prompts", "4", "--batch-size", "2", "--eval-every", "0", "--steps", "3",
            "--lr", "1e-2", "--out", str(tmp_path / "run")]
    code, _, err = run_cli(*args, "--lora-r", "4")
    assert code == 0, err
    policy = tmp_path / "run" / "policy"
    assert (policy / "adapter_config.json").exists()
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["train"]["lora"] == {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}
    evals = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("split") == "eval"]
    assert evals[0]["eval/kl"] == pytest.approx(0, abs=1e-4) and evals[-1]["eval/kl"] != evals[0]["eval/kl"]
    prompts = tmp_path / "p.jsonl"; prompts.write_text('{"prompt": "I watched it twice, and"}\n{"prompt": "The score"}\n')
    code, out, err = run_cli("eval", "--policy", str(policy), "--task", "sentiment", "--prompts", str(prompts))
    assert code == 0, err
    res = json.loads(out)
    assert (res["ref"], res["count"]) == ("tiny", 2) and math.isfinite(res["kl"]) and res["kl"] != 0
    code, _, err = run_cli(*args[:-1], str(tmp_path / "other"), "--lora-alpha", "8")
    assert code == 1 and "--lora-r" in err
