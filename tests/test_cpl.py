"""cpl_loss and cpl_dense_loss against independent implementations written from the reference code's formulas
(jhejna/cpl `biased_bce_with_logits`, `biased_bce_with_scores`), the identities with DPO, gradients and bad inputs."""
import itertools, math
import numpy as np
import pytest
import torch
from devices import on
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from rlhf_ref.cpl import CPL, CPLKL, cpl_dense_loss, cpl_loss
from rlhf_ref.dpo import DPO, dpo_loss

f64 = lambda x: torch.tensor(x, dtype=torch.float64)
softplus = lambda x: np.logaddexp(0.0, x)


def biased_bce(adv1, adv2, y, bias):
    "The reference code's pair loss per example: y = 1 when segment 2 is preferred."
    return y * softplus(-(adv2 - bias * adv1)) + (1 - y) * softplus(-(adv1 - bias * adv2))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), alpha=st.floats(0.01, 2.0), lam=st.floats(0.01, 1.0))
def test_matches_reference_pair_formula(data, alpha, lam):
    n = data.draw(st.integers(1, 12))
    pc, pr = (data.draw(arrays(np.float64, n, elements=st.floats(-300, 0))) for _ in range(2))
    y = data.draw(arrays(np.float64, n, elements=st.sampled_from([0.0, 0.5, 1.0])))
    # ours: labels = P(chosen preferred); reference: segment 1 = rejected, segment 2 = chosen, y = P(segment 2 preferred)
    np.testing.assert_allclose(cpl_loss(f64(pc), f64(pr), alpha=alpha, lambda_=lam, labels=f64(y)).numpy(),
                               biased_bce(alpha * pr, alpha * pc, y, lam), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cpl_loss(f64(pc), f64(pr), alpha=alpha, lambda_=lam).numpy(),
                               biased_bce(alpha * pr, alpha * pc, 1.0, lam), rtol=1e-9, atol=1e-9)


def biased_bce_with_scores(adv, scores, bias):
    "The reference code's dense loss on one group with distinct scores: sort ascending, upper triangle, mean."
    adv = adv[np.argsort(scores)]
    losses = [softplus(-(adv[j] - bias * adv[i])) for i, j in itertools.combinations(range(len(adv)), 2)]
    return float(np.mean(losses))


@settings(max_examples=100, deadline=None)
@given(data=st.data(), alpha=st.floats(0.01, 1.0), lam=st.floats(0.05, 1.0))
def test_dense_matches_reference_on_one_group(data, alpha, lam):
    k = data.draw(st.integers(2, 7))
    logps = data.draw(arrays(np.float64, k, elements=st.floats(-200, 0)))
    scores = np.random.default_rng(data.draw(st.integers(0, 1000))).permutation(k).astype(float)  # distinct
    loss, n = cpl_dense_loss(f64(logps)[None], f64(scores)[None], alpha=alpha, lambda_=lam)
    assert n.item() == k * (k - 1) / 2
    np.testing.assert_allclose((loss / n).item(), biased_bce_with_scores(alpha * logps, scores, lam), rtol=1e-9)


def test_identities_with_dpo():
    torch.manual_seed(0)
    pc, pr, rc, rr = (-torch.rand(4, 16, dtype=torch.float64) * 50).unbind()
    z = torch.zeros(16, dtype=torch.float64)
    torch.testing.assert_close(cpl_loss(pc, pr, alpha=0.3, lambda_=1.0), dpo_loss(pc, pr, z, z, beta=0.3)[0])
    torch.testing.assert_close(cpl_loss(pc - rc, pr - rr, alpha=0.3, lambda_=1.0), dpo_loss(pc, pr, rc, rr, beta=0.3)[0])


def test_ties_and_labels():
    torch.manual_seed(1)
    a, b = (-torch.rand(2, 8, dtype=torch.float64) * 30).unbind()
    half = torch.full((8,), 0.5, dtype=torch.float64)
    torch.testing.assert_close(cpl_loss(a, b, labels=half), cpl_loss(b, a, labels=half))
    torch.testing.assert_close(cpl_loss(a, b, labels=torch.ones(8, dtype=torch.float64)), cpl_loss(a, b))
    torch.testing.assert_close(cpl_loss(a, b, labels=torch.zeros(8, dtype=torch.float64)), cpl_loss(b, a))
    two = torch.stack([b, a], 1)
    torch.testing.assert_close(cpl_dense_loss(two, torch.tensor([[0.0, 1.0]]).expand(8, 2).double())[0], cpl_loss(a, b))
    torch.testing.assert_close(cpl_dense_loss(two, torch.zeros(8, 2, dtype=torch.float64))[0], cpl_loss(a, b, labels=half))
    assert (cpl_dense_loss(two, torch.zeros(8, 2), ties=False)[1] == 0).all()


def test_dense_respects_valid_mask():
    logps, scores = -torch.rand(1, 4) * 10, torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    full, n = cpl_dense_loss(logps[:, :3], scores[:, :3])
    masked, m = cpl_dense_loss(logps, scores, valid=torch.tensor([[True, True, True, False]]))
    torch.testing.assert_close(masked, full); assert n.item() == m.item() == 3


@pytest.mark.parametrize("lam", [0.3, 0.5, 1.0])
def test_conservative_gradient(lam):
    "d loss / d(both scores up) = -(1 - lambda) sigma(.): negative for lambda < 1, zero for lambda = 1."
    pc, pr = torch.full((3,), -5.0, requires_grad=True), torch.full((3,), -7.0, requires_grad=True)
    cpl_loss(pc, pr, alpha=0.5, lambda_=lam).sum().backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()
    sig = torch.sigmoid(torch.tensor(0.5 * lam * -7.0 + 0.5 * 5.0))
    torch.testing.assert_close(pc.grad + pr.grad, torch.full((3,), -(1 - lam) * 0.5 * sig.item()))


@pytest.mark.parametrize("kw,msg", [(dict(alpha=0), "alpha"), (dict(alpha=float("inf")), "alpha"), (dict(lambda_=0), "lambda_"),
                                    (dict(lambda_=1.01), "lambda_"), (dict(lambda_=float("nan")), "lambda_")])
def test_bad_hyperparameters(kw, msg):
    z = torch.zeros(2)
    with pytest.raises(ValueError, match=msg): cpl_loss(z, z, **kw)
    with pytest.raises(ValueError, match=msg): cpl_dense_loss(z[None], z[None], **kw)
    with pytest.raises(ValueError, match=msg): CPL(**kw)
    with pytest.raises(ValueError, match=msg): CPLKL(**kw)


def test_bad_inputs():
    z = torch.zeros(2)
    with pytest.raises(ValueError, match="labels"): cpl_loss(z, z, labels=torch.tensor([0.5, -0.1]))
    with pytest.raises(ValueError, match="bc_coef"): CPL(bc_coef=-1.0)
    with pytest.raises(AssertionError, match="matching"): cpl_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(AssertionError, match="matching"): cpl_dense_loss(torch.zeros(2, 3), torch.zeros(2, 2))


def test_objects_against_dpo_and_cpo(tiny, rows):
    "Through the algorithm objects: CPL-KL(lambda 1) = DPO (live and precomputed reference); CPL(BC, lambda 1) = CPO."
    from rlhf_ref.data import PreferenceCollator, precompute_ref_logps, preference_dataset
    from rlhf_ref.models import frozen_copy
    from rlhf_ref.simpo import CPO
    model, tok = tiny
    policy, ref = frozen_copy(model), frozen_copy(model)
    with torch.no_grad():
        for p in policy.parameters(): p.add_(0.02 * torch.randn_like(p))
    ds = preference_dataset(rows, tok)
    live = on(policy, PreferenceCollator(tok.pad_token_id)(list(ds)))
    pre = on(policy, PreferenceCollator(tok.pad_token_id)(list(precompute_ref_logps(ds, ref, tok.pad_token_id))))
    with torch.no_grad():
        dpo, _ = DPO(beta=0.2).loss(live, policy, ref)
        torch.testing.assert_close(CPLKL(alpha=0.2, lambda_=1.0).loss(live, policy, ref)[0], dpo)
        torch.testing.assert_close(CPLKL(alpha=0.2, lambda_=1.0).loss(pre, policy, None)[0], dpo, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(CPL(alpha=0.2, lambda_=1.0, bc_coef=0.7).loss(live, policy, None)[0],
                                   CPO(beta=0.2, lambda_=0.7).loss(live, policy, None)[0])
        loss, m = CPL(bc_coef=0.5).loss(live, policy, None)
        torch.testing.assert_close(loss, m["cpl_loss"] + 0.5 * m["bc_loss"])
    with pytest.raises(ValueError, match="reference"): CPLKL().loss(live, policy, None)
