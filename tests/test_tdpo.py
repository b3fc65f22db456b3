"""tdpo_loss against an independent implementation, its identities (TDPO2 with alpha=0 is DPO; log 2 at initialisation;
no gradient through the chosen KL in TDPO2), gradient directions, bad inputs, and the position KL against
torch.distributions."""
import math
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from torch.distributions import Categorical, kl_divergence
from devices import on
from rlhf_ref.dpo import DPO, dpo_loss
from rlhf_ref.tdpo import TDPO, position_kl, tdpo_loss


def reference_loss(cm, rm, ck, rk, beta, alpha, tdpo2):
    "Float64, one pair at a time, from the paper's formulas: -log sigma(beta (h - w (D_l - D_w)))."
    w = alpha if tdpo2 else 1.0
    return np.array([np.logaddexp(0.0, -beta * ((a - b) - w * (d - c))) for a, b, c, d in zip(cm, rm, ck, rk)])


@settings(max_examples=200, deadline=None)
@given(data=st.data(), beta=st.floats(0.01, 5.0), alpha=st.floats(0.0, 3.0), tdpo2=st.booleans())
def test_matches_independent_implementation(data, beta, alpha, tdpo2):
    n = data.draw(st.integers(1, 16))
    cm, rm = (data.draw(arrays(np.float64, n, elements=st.floats(-100, 100))) for _ in range(2))
    ck, rk = (data.draw(arrays(np.float64, n, elements=st.floats(0, 100))) for _ in range(2))
    t = lambda x: torch.tensor(x, dtype=torch.float64)
    losses, cr, rr = tdpo_loss(t(cm), t(rm), t(ck), t(rk), beta=beta, alpha=alpha, if_tdpo2=tdpo2)
    np.testing.assert_allclose(losses.numpy(), reference_loss(cm, rm, ck, rk, beta, alpha, tdpo2), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cr.numpy(), beta * (cm + ck), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rr.numpy(), beta * (rm + rk), rtol=1e-12, atol=1e-12)


def _grads(fn, *xs):
    xs = [x.clone().double().requires_grad_() for x in xs]
    loss = fn(*xs).sum()
    loss.backward()
    return loss.detach(), [x.grad if x.grad is not None else torch.zeros_like(x) for x in xs]


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10**6), beta=st.floats(0.01, 2.0))
def test_tdpo2_with_alpha_zero_is_dpo(seed, beta):
    "Value and gradient (w.r.t. the policy log-probs and the KLs) equal DPO's, whatever the KLs."
    g = torch.Generator().manual_seed(seed)
    pc, pr, rc, rr = (torch.randn(4, 8, generator=g) * 20).unbind()
    kw, kl = torch.rand(8, generator=g) * 10, torch.rand(8, generator=g) * 10
    v1, g1 = _grads(lambda a, b, c, d: tdpo_loss(a - rc, b - rr, c, d, beta=beta, alpha=0.0)[0], pc, pr, kw, kl)
    v2, g2 = _grads(lambda a, b, c, d: dpo_loss(a, b, rc.double(), rr.double(), beta=beta)[0] + 0 * (c + d), pc, pr, kw, kl)
    torch.testing.assert_close(v1, v2)
    for a, b in zip(g1, g2): torch.testing.assert_close(a, b)


@pytest.mark.parametrize("tdpo2", [True, False])
def test_log2_at_initialisation(tdpo2):
    z = torch.zeros(5)
    torch.testing.assert_close(tdpo_loss(z, z, z, z, if_tdpo2=tdpo2, alpha=0.7)[0], torch.full((5,), math.log(2)))


def test_no_gradient_through_chosen_kl_in_tdpo2():
    g = torch.Generator().manual_seed(0)
    cm, rm, ck, rk = (torch.rand(4, 6, generator=g) * 5).unbind()
    _, (gcm, grm, gck, grk) = _grads(lambda *x: tdpo_loss(*x, alpha=0.5)[0], cm, rm, ck, rk)
    assert gck.abs().sum() == 0 and (grk > 0).all()
    _, (_, _, gck1, grk1) = _grads(lambda *x: tdpo_loss(*x, if_tdpo2=False)[0], cm, rm, ck, rk)
    assert (gck1 < 0).all() and (grk1 > 0).all()  # TDPO1 pushes the chosen KL up
    # TDPO1 equals TDPO2 with alpha = 1 in value
    torch.testing.assert_close(tdpo_loss(cm, rm, ck, rk, if_tdpo2=False)[0], tdpo_loss(cm, rm, ck, rk, alpha=1.0)[0])


@pytest.mark.parametrize("tdpo2", [True, False])
def test_gradient_directions_and_weights(tdpo2):
    "Loss falls as the chosen margin rises, the rejected margin falls, the rejected KL falls; weight beta sigma(-logit)."
    g = torch.Generator().manual_seed(1)
    cm, rm, ck, rk = (torch.randn(4, 6, generator=g) * 3).unbind()
    ck, rk, beta, alpha = ck.abs(), rk.abs(), 0.3, 0.5
    _, (gcm, grm, _, grk) = _grads(lambda *x: tdpo_loss(*x, beta=beta, alpha=alpha, if_tdpo2=tdpo2)[0], cm, rm, ck, rk)
    w = alpha if tdpo2 else 1.0
    logit = beta * ((cm - rm) - w * (rk - ck))
    torch.testing.assert_close(gcm, -beta * torch.sigmoid(-logit).double())
    torch.testing.assert_close(grm, beta * torch.sigmoid(-logit).double())
    torch.testing.assert_close(grk, w * grm)


def test_limits():
    "Large positive logit: loss -> 0; large negative: loss ~ -logit (linear)."
    big = torch.tensor([1e4]); z = torch.zeros(1)
    assert tdpo_loss(big, z, z, z)[0].item() < 1e-30
    torch.testing.assert_close(tdpo_loss(-big, z, z, z, beta=0.1)[0], torch.tensor([1e3]))
    # a rejected KL large enough cancels the margin
    torch.testing.assert_close(tdpo_loss(torch.tensor([2.0]), z, z, torch.tensor([4.0]), alpha=0.5)[0], torch.tensor([math.log(2)]))


@pytest.mark.parametrize("kw, msg", [(dict(beta=0.0), "beta"), (dict(beta=-0.1), "beta"), (dict(beta=float("nan")), "beta"),
                                     (dict(alpha=-1.0), "alpha"), (dict(alpha=float("inf")), "alpha"),
                                     (dict(alpha=float("nan")), "alpha")])
def test_bad_hyperparameters(kw, msg):
    z = torch.zeros(2)
    with pytest.raises(ValueError, match=msg): tdpo_loss(z, z, z, z, **kw)
    with pytest.raises(ValueError, match=msg): TDPO(**kw)


def test_shape_mismatch_is_caught():
    with pytest.raises(AssertionError): tdpo_loss(torch.zeros(3), torch.zeros(3), torch.zeros(2), torch.zeros(3))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 40), v=st.integers(2, 300), chunk=st.integers(1, 64),
       scale=st.floats(0.1, 10.0))
def test_position_kl_against_torch_distributions(seed, n, v, chunk, scale):
    g = torch.Generator().manual_seed(seed)
    ref_logits = torch.randn(n, v, generator=g) * scale
    logits = (torch.randn(n, v, generator=g) * scale).requires_grad_()
    ours = position_kl(ref_logits, logits, chunk_size=chunk)
    theirs = kl_divergence(Categorical(logits=ref_logits), Categorical(logits=logits))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert (ours >= -1e-6).all()
    w = torch.randn(n, generator=g)
    g1, = torch.autograd.grad((ours * w).sum(), logits)
    g2, = torch.autograd.grad((theirs * w).sum(), logits)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)


def test_position_kl_is_zero_for_equal_distributions():
    x = torch.randn(7, 30) * 4
    torch.testing.assert_close(position_kl(x, x + 3.0), torch.zeros(7), atol=1e-5, rtol=0)  # softmax is shift-invariant


def test_algorithm_object_on_tiny_model(tiny, rows):
    "Sequential KLs against an independent full-vocabulary computation; init log 2; alpha=0 gradient equals DPO's."
    from rlhf_ref.data import preference_dataset, PreferenceCollator
    from rlhf_ref.logprobs import concatenated_forward
    from rlhf_ref.models import frozen_copy
    model, tok = tiny
    ref = frozen_copy(model)
    batch = on(model, PreferenceCollator(tok.pad_token_id)(list(preference_dataset(rows, tok))))
    loss0, m0 = TDPO().loss(batch, model, ref)
    assert abs(loss0.item() - math.log(2)) < 1e-5
    policy = frozen_copy(model).requires_grad_(True).train()
    with torch.no_grad():
        for p in policy.parameters(): p.add_(0.02 * torch.randn_like(p))
    loss, m = TDPO(alpha=0.5).loss(batch, policy, ref)
    # independent: full (2B, R, V) logits of both models, softmaxes, kl_divergence per position, masked sums
    with torch.no_grad():
        R, mask = batch["response_mask"].shape[1], batch["response_mask"]
        pos = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        lg = lambda mdl: mdl(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=pos).logits[:, -R - 1:-1]
        kl = kl_divergence(Categorical(logits=lg(ref)), Categorical(logits=lg(policy))) * mask
        n = mask.shape[0] // 2
    torch.testing.assert_close(m["kl/chosen"], kl.sum(-1)[:n].mean(), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(m["kl/rejected"], kl.sum(-1)[n:].mean(), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(m["kl/margin"], (kl.sum(-1)[:n] - kl.sum(-1)[n:]).mean(), rtol=1e-3, atol=1e-5)
    assert m["kl/chosen"] > 0 and m["kl/rejected"] > 0
    grad = lambda algo: torch.cat([g.flatten() for g in torch.autograd.grad(algo.loss(batch, policy, ref)[0], list(policy.parameters()))])
    ga, gd = grad(TDPO(alpha=0.0)), grad(DPO(logit_stats=False))
    assert (ga - gd).norm() <= 1e-4 * gd.norm() + 1e-8
    assert (grad(TDPO(alpha=0.5)) - gd).norm() > 1e-3 * gd.norm()  # the KL term does change the gradient


def test_needs_the_reference_model(tiny, rows):
    from rlhf_ref.data import preference_dataset, PreferenceCollator
    model, tok = tiny
    batch = PreferenceCollator(tok.pad_token_id)(list(preference_dataset(rows[:2], tok)))
    with pytest.raises(ValueError, match="reference"): TDPO().loss(batch, model, None)


def test_registered():
    from rlhf_ref.algos import get_algo
    info = get_algo("tdpo")
    assert info.cls is TDPO and info.data == "pairs" and info.needs_ref and not info.precompute_ref
