"""BRME and the reward-robust reward (rlhf_ref.brme): the identities of ALGORITHMS.md §14 and the loss's properties."""
import math
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from rlhf_ref.brme import BRME, GaussianHeads, brme_loss, head_stats, head_subsets, normalize_heads, robust_reward, robust_reward_fn
from rlhf_ref.reward_model import bt_loss

t64 = lambda x: torch.tensor(x, dtype=torch.float64)


@st.composite
def head_outputs(draw, k=None):
    "(N, k, 2) head outputs: any means, positive sigmas."
    n, k = draw(st.integers(1, 6)), k or draw(st.integers(1, 6))
    mu = draw(arrays(np.float64, (n, k), elements=st.floats(-20, 20)))
    sigma = draw(arrays(np.float64, (n, k), elements=st.floats(1e-4, 5)))
    return torch.stack([t64(mu), t64(sigma)], -1)


def by_hand(out, lam):
    "lam * (mu of the smallest-sigma head) + (1 - lam) * min mu, one sample at a time."
    nominal = lambda o: min(o, key=lambda head: head[1])[0]  # the first of the smallest sigmas, as argmin
    return t64([lam * nominal(o) + (1 - lam) * min(mu for mu, _ in o) for o in out.tolist()])


@settings(max_examples=100, deadline=None)
@given(out=head_outputs(), lam=st.floats(0, 1))
def test_robust_reward_against_a_loop_and_its_limits(out, lam):
    torch.testing.assert_close(robust_reward(out, lam=lam), by_hand(out, lam))
    mu, sigma = out.unbind(-1)
    nominal = mu.gather(-1, sigma.argmin(-1, keepdim=True)).squeeze(-1)
    torch.testing.assert_close(robust_reward(out, lam=1.0), nominal)  # lambda = 1: the nominal reward alone (PPO on r_nom)
    torch.testing.assert_close(robust_reward(out, lam=0.0), mu.min(-1).values)  # lambda = 0: the worst case alone
    r = robust_reward(out, lam=lam)  # linear in lambda, between the worst case and the nominal reward
    torch.testing.assert_close(r, lam * robust_reward(out, lam=1.0) + (1 - lam) * robust_reward(out, lam=0.0))
    assert (r >= mu.min(-1).values - 1e-9).all() and (r <= nominal + 1e-9).all()
    torch.testing.assert_close(robust_reward(out, lam=lam, nominal="mean"), lam * mu.mean(-1) + (1 - lam) * mu.min(-1).values)


@settings(max_examples=50, deadline=None)
@given(out=head_outputs(k=1), lam=st.floats(0, 1))
def test_one_head_nominal_is_the_minimum(out, lam):
    "k = 1: the nominal head is the only head, so every lambda gives its mean."
    torch.testing.assert_close(robust_reward(out, lam=lam), out[:, 0, 0])


@settings(max_examples=50, deadline=None)
@given(out=head_outputs(k=1), k=st.integers(2, 6), lam=st.floats(0, 1))
def test_identical_heads_give_the_nominal_reward(out, k, lam):
    same = out.expand(-1, k, -1)
    torch.testing.assert_close(robust_reward(same, lam=lam), robust_reward(same, lam=1.0))
    torch.testing.assert_close(robust_reward(same, lam=lam), out[:, 0, 0])


def test_sampled_worst_case_tends_to_the_mean_worst_case_as_sigma_vanishes():
    means = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))  # not the global RNG
    out = torch.stack([means, torch.full((50, 4), 1e-12, dtype=torch.float64)], -1)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(robust_reward(out, lam=0.3, worst="sample", generator=g), robust_reward(out, lam=0.3))
    wide = out.clone(); wide[..., 1] = 1.0  # with spread, the minimum of draws sits below the minimum of the means on average
    g = torch.Generator().manual_seed(1)  # (about 1.06 below over 30 seeds, never less than 0.87)
    assert robust_reward(wide, lam=0.0, worst="sample", generator=g).mean() < robust_reward(wide, lam=0.0).mean() - 0.5


@pytest.mark.parametrize("kw, msg", [(dict(lam=1.5), "lam"), (dict(lam=-0.1), "lam"), (dict(nominal="max"), "nominal"),
                                     (dict(worst="max"), "worst")])
def test_robust_reward_rejects_bad_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg): robust_reward(torch.zeros(2, 3, 2), **kw)
    if "lam" in kw:
        with pytest.raises(ValueError, match="lam"): robust_reward_fn(None, None, lam=kw["lam"])


def test_gaussian_heads_shapes_and_positive_sigma():
    torch.manual_seed(0)
    heads = GaussianHeads(8, k=3, min_sigma=1e-4)
    out = heads(torch.randn(5, 8) * 1e3)  # huge features push some pre-softplus values far below zero
    assert out.shape == (5, 3, 2) and (out[..., 1] >= 1e-4).all() and torch.isfinite(out).all()
    with pytest.raises(ValueError): GaussianHeads(8, k=0)
    with pytest.raises(ValueError): GaussianHeads(8, min_sigma=0.0)


def test_gaussian_heads_initialisation_scale():
    "Weights N(0, 1/(H+1)) (the reward head's initialisation, see 11_reward_model); biases zero."
    torch.manual_seed(0)
    H = 575
    w = GaussianHeads(H, k=50).linear.weight
    assert abs(w.std().item() * math.sqrt(H + 1) - 1) < 0.02
    assert (GaussianHeads(H, k=2).linear.bias == 0).all()


def test_head_subsets_are_fixed_per_pair_and_of_the_right_size():
    idx = torch.arange(20000)
    m = head_subsets(idx, 5, 0.7, seed=0)
    assert m.shape == (20000, 5) and m.dtype == torch.bool
    share = m.double().mean(0)  # binomial: sd of a share is sqrt(0.21 / 20000) = 0.0032
    assert ((share - 0.7).abs() < 0.015).all(), share
    # a pair's membership does not depend on which other pairs share its batch, nor on their order
    perm = torch.randperm(20000, generator=torch.Generator().manual_seed(1))[:64]
    assert torch.equal(head_subsets(perm, 5, 0.7, seed=0), m[perm])
    # heads and seeds draw different subsets (agreement near 0.7^2 + 0.3^2 = 0.58, not 1)
    assert (m[:, 0] == m[:, 1]).double().mean() < 0.7
    assert (head_subsets(idx, 5, 0.7, seed=1) == m).double().mean() < 0.7
    assert head_subsets(idx[:100], 3, 1.0).all()
    with pytest.raises(ValueError): head_subsets(idx, 3, 0.0)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_brme_loss_against_an_independent_formula(data):
    B, k, S = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3))
    draw = lambda shape, lo, hi: t64(data.draw(arrays(np.float64, shape, elements=st.floats(lo, hi))))
    c = torch.stack([draw((B, k), -10, 10), draw((B, k), 1e-3, 3)], -1)
    r = torch.stack([draw((B, k), -10, 10), draw((B, k), 1e-3, 3)], -1)
    noise = draw((S, 2, B, k), -3, 3)
    rc, rr = c[..., 0] + c[..., 1] * noise[:, 0], r[..., 0] + r[..., 1] * noise[:, 1]
    expected = np.logaddexp(0, -(rc - rr).numpy()).mean(0)  # -log sigmoid(x) = log(1 + e^-x)
    np.testing.assert_allclose(brme_loss(c, r, noise=noise).numpy(), expected, rtol=1e-9, atol=1e-9)
    tc, tr = draw((B,), -5, 5), draw((B,), -5, 5)
    mse = 0.5 * ((rc - tc[:, None]) ** 2 + (rr - tr[:, None]) ** 2).mean(0)
    torch.testing.assert_close(brme_loss(c, r, noise=noise, loss_type="mse", targets=(tc, tr)), mse)


@settings(max_examples=50, deadline=None)
@given(mu_c=arrays(np.float64, (4, 3), elements=st.floats(-20, 20)), mu_r=arrays(np.float64, (4, 3), elements=st.floats(-20, 20)))
def test_without_noise_the_loss_is_bradley_terry_per_head(mu_c, mu_r):
    "sigma -> 0 (or zero draws): each head's loss is the plain Bradley-Terry loss of its means; equal means give log 2."
    c, r = (torch.stack([t64(m), torch.full((4, 3), 1e-4, dtype=torch.float64)], -1) for m in (mu_c, mu_r))
    zero = torch.zeros(1, 2, 4, 3, dtype=torch.float64)
    got = brme_loss(c, r, noise=zero)
    for i in range(3): torch.testing.assert_close(got[:, i], bt_loss(t64(mu_c[:, i]), t64(mu_r[:, i])))
    torch.testing.assert_close(brme_loss(c, c, noise=zero), torch.full((4, 3), math.log(2), dtype=torch.float64))


def test_expected_loss_grows_with_sigma():
    "Step 3 of 11a: E[-log sigmoid(d + s*z)] increases with s, so without a prior the loss pushes sigma down."
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(200000, 2, 1, 1, generator=g, dtype=torch.float64)
    loss = lambda s: brme_loss(torch.tensor([[[1.0, s]]], dtype=torch.float64), torch.tensor([[[0.0, s]]], dtype=torch.float64),
                               noise=noise).item()
    values = [loss(s) for s in (1e-4, 0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert abs(values[0] - math.log(1 + math.exp(-1))) < 1e-3


def test_kl_term_is_the_gaussian_kl_to_the_prior():
    mu, sigma = t64([[0.3, -1.2]]), t64([[0.5, 2.0]])
    out = torch.stack([mu, sigma], -1)
    zero = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    base = brme_loss(out, out, noise=zero)
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu, sigma), torch.distributions.Normal(0.0, 1.5))
    torch.testing.assert_close(brme_loss(out, out, noise=zero, kl_coef=0.1, prior_std=1.5), base + 0.1 * 2 * kl)
    at_prior = torch.stack([torch.zeros(1, 2, dtype=torch.float64), torch.full((1, 2), 1.5, dtype=torch.float64)], -1)
    torch.testing.assert_close(brme_loss(at_prior, at_prior, noise=zero, kl_coef=1.0, prior_std=1.5),
                               brme_loss(at_prior, at_prior, noise=zero))  # KL is 0 at the prior itself


def test_brme_loss_bad_inputs():
    out = torch.zeros(2, 3, 2)
    with pytest.raises(ValueError, match="targets"): brme_loss(out, out, loss_type="mse")
    with pytest.raises(ValueError, match="loss_type"): brme_loss(out, out, loss_type="hinge")
    with pytest.raises(ValueError, match="kl_coef"): brme_loss(out, out, kl_coef=-1.0)
    with pytest.raises(AssertionError): brme_loss(out, torch.zeros(2, 4, 2))


def test_brme_object_averages_over_each_heads_own_pairs():
    torch.manual_seed(0)
    B, H, k = 16, 6, 3
    heads = GaussianHeads(H, k=k)
    batch = {"features": torch.randn(2 * B, H), "pair_index": torch.arange(100, 100 + B)}
    algo = BRME(subset=0.5, seed=3, n_samples=2)
    torch.manual_seed(1); loss, metrics = algo.loss(batch, heads)
    out = heads(batch["features"]); c, r = out[:B], out[B:]
    torch.manual_seed(1); noise = torch.randn(2, 2, B, k)
    member = head_subsets(batch["pair_index"], k, 0.5, seed=3).float()
    assert 0 < member.sum() < B * k
    torch.testing.assert_close(loss, (brme_loss(c, r, noise=noise) * member).sum() / member.sum())
    torch.testing.assert_close(metrics["accuracy"], (robust_reward(c, lam=1.0) > robust_reward(r, lam=1.0)).float().mean())
    loss.backward()
    assert heads.linear.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="pair_index"): algo.loss({"features": batch["features"]}, heads)
    with pytest.raises(ValueError, match="stage-1"): BRME(loss_type="mse").loss(batch, heads)
    with pytest.raises(ValueError): BRME(subset=0.0)


@settings(max_examples=50, deadline=None)
@given(a=arrays(np.float64, 3, elements=st.floats(0.1, 10)), b=arrays(np.float64, 3, elements=st.floats(-50, 50)),
       lam=st.floats(0, 1))
def test_normalised_affine_copies_of_one_reward_agree_for_every_lambda(a, b, lam):
    r = torch.randn(40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = torch.stack([t64(a) * r[:, None] + t64(b), torch.full((40, 3), 0.5, dtype=torch.float64)], -1)
    z = (r - r.mean()) / r.std()
    torch.testing.assert_close(robust_reward(normalize_heads(out, head_stats(out)), lam=lam), z)


def test_normalize_heads_by_hand_and_its_errors():
    out = torch.stack([torch.tensor([[1.0, 10.0], [3.0, 30.0], [5.0, 20.0]]), torch.tensor([[0.2, 4.0]] * 3)], -1)  # (3, 2, 2)
    mean, std = head_stats(out)
    torch.testing.assert_close(mean, torch.tensor([3.0, 20.0])); torch.testing.assert_close(std, torch.tensor([2.0, 10.0]))
    norm = normalize_heads(out, (mean, std))
    torch.testing.assert_close(norm[..., 0], torch.tensor([[-1.0, -1.0], [0.0, 1.0], [1.0, 0.0]]))
    torch.testing.assert_close(norm[..., 1], torch.tensor([[0.1, 0.4]] * 3))
    with pytest.raises(ValueError, match="at least 2"): head_stats(out[:1])
    with pytest.raises(ValueError, match="stats for"): normalize_heads(out, (torch.zeros(3), torch.ones(3)))
    with pytest.raises(ValueError, match="std 0"): normalize_heads(out, (mean, torch.tensor([1.0, 0.0])))


def test_robust_reward_fn_normalises_the_heads_before_the_reduction():
    from rlhf_ref.models import tiny_policy
    from rlhf_ref.reward_model import RewardModel, score
    policy, tok = tiny_policy()
    rm = RewardModel.from_policy(policy, seed=3, head=GaussianHeads(policy.config.hidden_size, k=3)).eval()
    prompts, completions = ["a b", "c", "d e f"], ["x", "y z", "w"]
    raw = score(rm, tok, prompts, completions)
    stats = (torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 0.5, 3.0]))
    got = robust_reward_fn(rm, tok, lam=0.0, stats=stats)(prompts, completions)
    torch.testing.assert_close(torch.tensor(got), robust_reward(normalize_heads(raw, stats), lam=0.0), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(torch.tensor(got), robust_reward(raw, lam=0.0))
