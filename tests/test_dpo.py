"""dpo_loss against an independent implementation, its identities as properties, and DPO against TRL's DPOTrainer."""
import math
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
import numpy as np
from rlhf_ref.dpo import DPO, dpo_loss
from devices import device_of, on

logps = arrays(np.float64, st.integers(1, 16), elements=st.floats(-200, 0, allow_nan=False))


def reference_loss(pc, pr, rc, rr, beta, loss_type, eps):
    "An independent float64 implementation written from the papers' formulas, one pair at a time."
    out = []
    for a, b, c, d in zip(pc, pr, rc, rr):
        h = (a - c) - (b - d)
        log_sig = lambda x: -np.logaddexp(0.0, -x)
        out.append({"sigmoid": -(1 - eps) * log_sig(beta * h) - eps * log_sig(-beta * h),
                    "robust": (-(1 - eps) * log_sig(beta * h) + eps * log_sig(-beta * h)) / (1 - 2 * eps),
                    "ipo": (h - 1 / (2 * beta)) ** 2,
                    "hinge": max(0.0, 1 - beta * h)}[loss_type])
    return np.array(out)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), beta=st.floats(0.01, 5.0), loss_type=st.sampled_from(["sigmoid", "robust", "ipo", "hinge"]),
       eps=st.floats(0.0, 0.49))
def test_matches_independent_implementation(data, beta, loss_type, eps):
    n = data.draw(st.integers(1, 16))
    pc, pr, rc, rr = (data.draw(arrays(np.float64, n, elements=st.floats(-200, 0))) for _ in range(4))
    eps = eps if loss_type in ("sigmoid", "robust") else 0.0
    t = lambda x: torch.tensor(x, dtype=torch.float64)
    losses, cr, rrw = dpo_loss(t(pc), t(pr), t(rc), t(rr), beta=beta, loss_type=loss_type, label_smoothing=eps)
    np.testing.assert_allclose(losses.numpy(), reference_loss(pc, pr, rc, rr, beta, loss_type, eps), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cr.numpy(), beta * (pc - rc), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rrw.numpy(), beta * (pr - rr), rtol=1e-12, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(h=st.floats(-300, 300), beta=st.floats(0.01, 2.0), eps=st.floats(0.0, 0.49))
def test_robust_dpo_is_unbiased(h, beta, eps):
    "(1-eps) L(h) + eps L(-h) = -log sigmoid(beta h) exactly, for every margin."
    z = torch.zeros(1, dtype=torch.float64)
    L = lambda m: dpo_loss(torch.tensor([m], dtype=torch.float64), z, z, z, beta=beta, loss_type="robust", label_smoothing=eps)[0]
    torch.testing.assert_close((1 - eps) * L(h) + eps * L(-h), -F.logsigmoid(torch.tensor([beta * h], dtype=torch.float64)))


@given(shift=st.floats(-50, 50), beta=st.floats(0.01, 2.0))
def test_depends_only_on_margin(shift, beta):
    pc, pr, rc, rr = torch.randn(4, 5, dtype=torch.float64).unbind()
    a = dpo_loss(pc, pr, rc, rr, beta=beta)[0]
    torch.testing.assert_close(dpo_loss(pc + shift, pr + shift, rc, rr, beta=beta)[0], a)
    torch.testing.assert_close(dpo_loss(pc, pr, rc + shift, rr + shift, beta=beta)[0], a)


def test_gradient_at_reference_is_beta_over_two():
    beta = 0.3
    pc, pr = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    dpo_loss(pc, pr, torch.zeros(3), torch.zeros(3), beta=beta)[0].sum().backward()
    torch.testing.assert_close(pc.grad, torch.full((3,), -beta / 2))
    torch.testing.assert_close(pr.grad, torch.full((3,), beta / 2))


def test_rewards_are_detached():
    pc = torch.zeros(2, requires_grad=True)
    _, cr, rr = dpo_loss(pc, torch.zeros(2), torch.zeros(2), torch.zeros(2))
    assert not cr.requires_grad and not rr.requires_grad


@pytest.mark.parametrize("kw,msg", [(dict(beta=0), "beta"), (dict(beta=float("inf")), "beta"),
                                    (dict(loss_type="dpo"), "loss_type"), (dict(label_smoothing=-0.1), "label_smoothing"),
                                    (dict(loss_type="robust", label_smoothing=0.5), "label_smoothing"),
                                    (dict(loss_type="hinge", label_smoothing=0.1), "not 'hinge'")])
def test_bad_hyperparameters(kw, msg):
    z = torch.zeros(2)
    with pytest.raises(ValueError, match=msg): dpo_loss(z, z, z, z, **kw)
    with pytest.raises(ValueError, match=msg): DPO(**kw)


def test_shape_mismatch_is_caught():
    with pytest.raises(AssertionError, match="matching"):
        dpo_loss(torch.zeros(3), torch.zeros(2), torch.zeros(3), torch.zeros(2))


def test_needs_a_reference(tiny, rows):
    from rlhf_ref.data import preference_dataset, PreferenceCollator
    model, tok = tiny
    batch = on(model, PreferenceCollator(tok.pad_token_id)(list(preference_dataset(rows[:2], tok))))
    with pytest.raises(ValueError, match="reference"): DPO().loss(batch, model, None)


def test_precomputed_reference_equals_live_reference(tiny, rows):
    "The loss with precomputed reference log-probs equals the loss with a reference forward (sums and means)."
    from rlhf_ref.data import preference_dataset, PreferenceCollator, precompute_ref_logps
    from rlhf_ref.models import frozen_copy
    model, tok = tiny
    ref = frozen_copy(model)
    with torch.no_grad():
        for p in model.parameters(): p.add_(0.01 * torch.randn_like(p))
    ds = preference_dataset(rows, tok)
    live = on(model, PreferenceCollator(tok.pad_token_id)(list(ds)))
    pre = on(model, PreferenceCollator(tok.pad_token_id)(list(precompute_ref_logps(ds, ref, tok.pad_token_id, batch_size=3))))
    for algo in (DPO(), DPO(loss_type="ipo"), DPO(average=True)):
        a, _ = algo.loss(live, model, ref)
        b, _ = algo.loss(pre, model, None)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge", "robust"])
def test_agrees_with_trl_dpo_trainer(tiny, rows, loss_type, tmp_path):
    """The whole path (tokenization, log-probs, loss) against TRL's DPOTrainer on the same model and rows.

    TRL is an independent implementation: its own tokenization of standard-format rows (EOS appended), its own
    fused log-prob kernel and its own loss branches. TRL 1.x ignores label_smoothing in `sigmoid`, so the robust
    branch is the one checked with a non-zero epsilon.
    """
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from rlhf_ref.data import preference_dataset, PreferenceCollator
    from rlhf_ref.models import frozen_copy
    model, tok = tiny
    policy, ref = frozen_copy(model).requires_grad_(True).train(), frozen_copy(model)
    with torch.no_grad():
        for p in policy.parameters(): p.add_(0.05 * torch.randn_like(p))
    eps = 0.2 if loss_type == "robust" else 0.0
    args = trl.DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=len(rows), beta=0.2, loss_type=[loss_type],
                         label_smoothing=eps, bf16=False, use_cpu=device_of(model).type == "cpu", report_to=[], activation_checkpointing=False)
    trainer = trl.DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad(): trl_loss = trainer.compute_loss(trainer.model, batch)
    ours = on(trainer.model, PreferenceCollator(tok.pad_token_id)(list(preference_dataset(rows, tok))))
    with torch.no_grad(): our_loss, _ = DPO(beta=0.2, loss_type=loss_type, label_smoothing=eps).loss(ours, trainer.model, ref)
    torch.testing.assert_close(our_loss, trl_loss.to(our_loss.dtype), rtol=2e-4, atol=2e-5)
