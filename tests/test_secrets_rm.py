"""Secrets of RLHF II (rlhf_ref.secrets_rm): the identities of ALGORITHMS.md §15, the loss against a formula, the
strength statistics, flipping, the contrastive term, and recovery of injected flips on a world where it must work."""
import math
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from rlhf_ref.reward_model import BradleyTerry, LinearHead, MLPHead, bt_loss
from rlhf_ref.secrets_rm import (SecretsRM, ensemble_strength, flip_pairs, info_nce, lowest_strength, preference_strength,
                                 secrets_loss, with_strength)

t64 = lambda x: torch.tensor(x, dtype=torch.float64)
vec = lambda n, lo=-30, hi=30: arrays(np.float64, n, elements=st.floats(lo, hi))


@settings(max_examples=100, deadline=None)
@given(data=st.data(), alpha=st.floats(0, 0.49), margin=st.floats(-3, 3))
def test_secrets_loss_against_the_formula_and_its_limits(data, alpha, margin):
    n = data.draw(st.integers(1, 10))
    rc, rr = t64(data.draw(vec(n))), t64(data.draw(vec(n)))
    d = (rc - rr - margin).numpy()
    expected = (1 - alpha) * np.logaddexp(0, -d) + alpha * np.logaddexp(0, d)  # -log sigmoid(x) = log(1 + e^-x)
    np.testing.assert_allclose(secrets_loss(rc, rr, margin=margin, label_smoothing=alpha).numpy(), expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(secrets_loss(rc, rr), bt_loss(rc, rr))  # alpha = 0, no margin: Bradley-Terry
    torch.testing.assert_close(secrets_loss(rc, rr, margin=0.0, label_smoothing=0.0), bt_loss(rc, rr))  # margin 0 too
    torch.testing.assert_close(secrets_loss(rc, rr, margin=margin), bt_loss(rc, rr, margin=margin))
    torch.testing.assert_close(secrets_loss(rc, rc, label_smoothing=alpha), torch.full((n,), math.log(2), dtype=torch.float64))


@settings(max_examples=50, deadline=None)
@given(alpha=st.floats(0.01, 0.49))
def test_smoothed_loss_is_smallest_at_the_smoothed_target(alpha):
    "With smoothing alpha the loss in d = r_c - r_r is minimised where sigmoid(d) = 1 - alpha, not at d -> infinity."
    d = torch.linspace(-12, 12, 24001, dtype=torch.float64)
    best = d[secrets_loss(d, torch.zeros_like(d), label_smoothing=alpha).argmin()].item()
    assert abs(best - math.log((1 - alpha) / alpha)) < 2e-3


def test_per_pair_smoothing_and_margin():
    rc, rr = t64([2.0, -1.0, 0.5]), t64([0.0, 1.0, 0.5])
    alpha, margin = t64([0.0, 0.2, 0.4]), t64([0.5, -0.5, 1.0])
    got = secrets_loss(rc, rr, margin=margin, label_smoothing=alpha)
    for i in range(3):
        torch.testing.assert_close(got[i:i + 1], secrets_loss(rc[i:i + 1], rr[i:i + 1], margin=margin[i].item(),
                                                              label_smoothing=alpha[i].item()))


@pytest.mark.parametrize("alpha", [0.5, -0.1, float("nan"), torch.tensor([0.1, 0.6])])
def test_bad_smoothing_is_refused(alpha):
    with pytest.raises(ValueError, match="label_smoothing"): secrets_loss(torch.zeros(2), torch.zeros(2), label_smoothing=alpha)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), shift=st.floats(-5, 5))
def test_preference_strength_is_the_population_mean_and_sd(data, shift):
    M, N = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 8))
    diffs = t64(data.draw(arrays(np.float64, (M, N), elements=st.floats(-10, 10))))
    mu, sigma = preference_strength(diffs)
    np.testing.assert_allclose(mu.numpy(), diffs.numpy().mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(sigma.numpy(), diffs.numpy().std(0, ddof=0), rtol=1e-7, atol=1e-7)
    mu2, sigma2 = preference_strength(diffs + shift)  # a common shift moves the mean only
    torch.testing.assert_close(mu2, mu + shift); torch.testing.assert_close(sigma2, sigma, atol=1e-7, rtol=1e-7)
    if M == 1: assert (sigma == 0).all() and torch.equal(mu, diffs[0])  # one model: no spread


def test_out_of_bag_strength_uses_only_the_allowed_models():
    diffs = t64([[1.0, 2.0, 3.0], [5.0, -2.0, 0.0], [9.0, 4.0, -3.0]])
    w = t64([[1, 0, 0], [1, 1, 0], [0, 1, 0]])
    mu, sigma = preference_strength(diffs, w)
    torch.testing.assert_close(mu, t64([3.0, 1.0, 0.0]))  # pair 2: no model may judge it -> strength 0
    torch.testing.assert_close(sigma, t64([2.0, 3.0, 0.0]))
    with pytest.raises(ValueError): preference_strength(torch.zeros(5))


def test_lowest_strength_picks_exactly_the_weakest():
    s = t64([0.3, -1.0, 2.0, -1.0, 0.0, 5.0, -0.2, 1.0, 0.1, -3.0])
    m = lowest_strength(s, 0.2)
    assert m.sum() == 2 and set(m.nonzero().flatten().tolist()) == {9, 1}  # tie at -1.0: the earlier position wins
    assert s[m].max() <= s[~m].min()
    assert lowest_strength(s, 0.0).sum() == 0 and lowest_strength(s, 1.0).all() and lowest_strength(s, 0.25).sum() == 2
    with pytest.raises(ValueError): lowest_strength(s, 1.5)


def test_flip_is_an_involution_that_swaps_every_side_field():
    rows = [dict(prompt=f"p{i}", chosen=f"good {i}", rejected=f"bad {i}", chosen_reward=float(i), rejected_reward=-float(i),
                 chosen_features=torch.full((2,), float(i)), rejected_features=torch.zeros(2), strength=0.5 + i) for i in range(5)]
    flags = [True, False, True, True, False]
    once = flip_pairs(rows, flags)
    assert once[0]["chosen"] == "bad 0" and once[0]["rejected"] == "good 0" and once[0]["chosen_reward"] == -0.0
    assert once[2]["strength"] == -2.5 and once[1] == rows[1] and torch.equal(once[3]["rejected_features"], rows[3]["chosen_features"])
    assert list(once[0]) == list(rows[0])  # key order kept
    twice = flip_pairs(once, flags)
    for a, b in zip(twice, rows):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)
    assert rows[0]["chosen"] == "good 0"  # the input is not modified
    with pytest.raises(ValueError): flip_pairs(rows, flags[:3])


def test_info_nce_against_cross_entropy_and_its_extremes():
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    sim = torch.nn.functional.normalize(z1, dim=-1) @ torch.nn.functional.normalize(z2, dim=-1).T / 0.1
    torch.testing.assert_close(info_nce(z1, z2, temperature=0.1), -sim.log_softmax(-1).diagonal())
    eye = torch.eye(4, dtype=torch.float64)  # orthogonal rows, identical views: each row finds itself
    assert (info_nce(eye, eye, temperature=0.05) < 1e-6).all()
    assert (info_nce(eye, eye.roll(1, 0), temperature=0.05) > 19).all()  # every row matched with the wrong one
    with pytest.raises(ValueError): info_nce(z1, z2, temperature=0.0)


def _batch(B=8, H=5, seed=0, strength=True):
    g = torch.Generator().manual_seed(seed)
    b = {"features": torch.randn(2 * B, H, generator=g)}
    if strength: b["strength"] = torch.randn(B, generator=g)
    return b


def test_secrets_rm_reduces_to_bradley_terry_and_smooths_only_negative_pairs():
    torch.manual_seed(0)
    head, batch = LinearHead(5), _batch()
    bt, _ = BradleyTerry().loss(batch, head)
    torch.testing.assert_close(SecretsRM().loss(batch, head)[0], bt)  # no margin, no smoothing: plain BT
    c, r = head(batch["features"][:8]), head(batch["features"][8:])
    s = batch["strength"]
    got, _ = SecretsRM(margin_coef=0.5, label_smoothing=0.1).loss(batch, head)  # Soft-label+Margin
    torch.testing.assert_close(got, secrets_loss(c, r, margin=0.5 * s, label_smoothing=0.1 * (s < 0).float()).mean())
    got, _ = SecretsRM(label_smoothing=0.1, smooth="all").loss(_batch(strength=False), head)  # needs no strength
    with pytest.raises(ValueError, match="strength"): SecretsRM(margin_coef=1.0).loss(_batch(strength=False), head)
    with pytest.raises(ValueError, match="embed"): SecretsRM(contrastive_coef=0.1).loss(batch, head)  # linear head has no hidden layer
    with pytest.raises(ValueError): SecretsRM(label_smoothing=0.5)


def test_contrastive_term_is_added_and_positive():
    torch.manual_seed(0)
    head, batch = MLPHead(5, width=16, dropout=0.1), _batch()
    head.train()
    loss, metrics = SecretsRM(contrastive_coef=0.1).loss(batch, head)
    assert metrics["contrastive"] > 0 and torch.isfinite(loss)


def _linear_world(n=300, H=8, seed=0):
    "Pairs whose gold reward is a fixed linear function of their features, the chosen side always the better one."
    g = torch.Generator().manual_seed(seed)
    w, rows = torch.randn(H, generator=g), []
    for _ in range(n):
        a, b = torch.randn(H, generator=g), torch.randn(H, generator=g)
        (c, r) = (a, b) if a @ w > b @ w else (b, a)
        rows.append(dict(chosen_features=c, rejected_features=r, chosen_reward=float(c @ w), rejected_reward=float(r @ w)))
    return rows


def test_ensemble_strength_finds_injected_flips():
    "The ensemble's mu_hat < 0 picks out flipped pairs far above their base rate, and M = 1 gives sigma_hat = 0."
    rows = _linear_world()
    flags = (np.random.default_rng(0).random(len(rows)) < 0.2).tolist()
    noisy = flip_pairs(rows, flags)
    make = lambda seed: (torch.manual_seed(seed), LinearHead(8))[1]
    kw = dict(steps=150, batch_size=32, lr=5e-2)
    mu, sigma = ensemble_strength(noisy, make, n_models=3, **kw)
    flagged, truth = (mu < 0).numpy(), np.array(flags)
    precision, recall = truth[flagged].mean(), flagged[truth].mean()
    assert precision > 0.6 and recall > 0.5, (precision, recall)  # base rate 0.2
    _, sigma1 = ensemble_strength(noisy, make, n_models=1, **kw)
    assert (sigma1 == 0).all() and (sigma > 0).any()
    out = with_strength(noisy, mu, sigma)
    assert out[0]["strength"] == pytest.approx(float(mu[0])) and "strength" not in noisy[0]
    with pytest.raises(ValueError): with_strength(noisy, mu[:3], sigma)
