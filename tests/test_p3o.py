"""P3O (rlhf_ref.p3o): the pairwise identities on random tensors, both clipping variants, the rollout regrouping, a
short training run with resume of the running reward scale."""
import math
import pytest
import torch
from devices import on
from hypothesis import given, settings, strategies as st
from rlhf_ref.core import set_seed
from rlhf_ref.models import frozen_copy, tiny_policy
from rlhf_ref.p3o import P3O, RunningMoments, p3o_loss, p3o_tokenwise_loss
from rlhf_ref.rollout import OnlineConfig, OnlineTrainer, rollout


def pair_tensors(seed, n=4, T=5):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, 2, T, generator=g) > 0.2).float(); mask[..., 0] = 1
    ref = -torch.rand(n, 2, T, generator=g) - 0.1
    old = -torch.rand(n, 2, T, generator=g) - 0.1
    tok = old + 0.5 * torch.randn(n, 2, T, generator=g)  # far enough from old for clips to bind
    return tok, old, ref, mask, torch.randn(n, 2, generator=g)


def grads(tok, old, ref, mask, rewards, tokenwise, kl_coef=0.1):
    tok = tok.clone().requires_grad_(True)
    seq = lambda t: ((t - ref) * mask).sum(-1)
    if tokenwise: per, _ = p3o_tokenwise_loss(tok, old, mask, seq(tok), seq(old), rewards, kl_coef=kl_coef)
    else: per, _ = p3o_loss(seq(tok), seq(old), rewards, kl_coef=kl_coef)
    per.sum().backward()
    return per.sum().detach(), tok.grad


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.floats(-50, 50), tokenwise=st.booleans())
def test_offset_per_prompt_leaves_loss_and_gradient_unchanged(seed, shift, tokenwise):
    tok, old, ref, mask, r = pair_tensors(seed)
    delta = shift * torch.linspace(-1, 1, r.shape[0])[:, None]  # a different constant for every prompt
    l0, g0 = grads(tok, old, ref, mask, r, tokenwise)
    l1, g1 = grads(tok, old, ref, mask, r + delta, tokenwise)
    assert torch.allclose(l0, l1, atol=1e-4) and torch.allclose(g0, g1, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), tokenwise=st.booleans())
def test_swapping_the_two_samples_leaves_the_loss_unchanged(seed, tokenwise):
    tok, old, ref, mask, r = pair_tensors(seed)
    l0, g0 = grads(tok, old, ref, mask, r, tokenwise)
    l1, g1 = grads(tok.flip(1), old.flip(1), ref.flip(1), mask.flip(1), r.flip(1), tokenwise)
    assert torch.allclose(l0, l1, atol=1e-5) and torch.allclose(g0, g1.flip(1), atol=1e-5)


@pytest.mark.parametrize("tokenwise", [False, True])
def test_identical_samples_give_zero_gradient(tokenwise):
    tok, old, ref, mask, r = pair_tensors(0)
    same = lambda x: x[:, :1].expand_as(x).contiguous()
    _, g = grads(same(tok), same(old), same(ref), same(mask), same(r), tokenwise)
    assert g.abs().max() == 0


@pytest.mark.parametrize("tokenwise", [False, True])
def test_gradient_at_theta_old_is_minus_half_q_grad_logratio_gap(tokenwise):
    _, old, ref, mask, r = pair_tensors(3)
    _, g = grads(old, old, ref, mask, r, tokenwise, kl_coef=0.3)
    seq = ((old - ref) * mask).sum(-1)
    q = r[:, 0] - r[:, 1] - 0.3 * (seq[:, 0] - seq[:, 1])
    want = torch.stack([-q / 2, q / 2], 1)[..., None] * mask  # d(log pi(y))/d(token log-prob) = mask
    assert torch.allclose(g, want, atol=1e-6)


def test_joint_clip_binds_and_importance_weight_is_clamped():
    old, r = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])
    lr = torch.tensor([[0.5, -0.5]], requires_grad=True)  # gap 1.0 > 0.2: clipped, no gradient
    per, clipped = p3o_loss(lr, old, r, kl_coef=0.0)
    per.sum().backward()
    assert clipped.all() and lr.grad.abs().max() == 0
    per, _ = p3o_loss(torch.tensor([[5.0, 5.0]]), old, r, kl_coef=0.0, cliprange=100.0, cliprange_ratio=10.0)
    assert math.isclose(float(per), -0.5 * 10.0 * 0.0, abs_tol=1e-6)  # gap 0: weight irrelevant
    per, _ = p3o_loss(torch.tensor([[5.0, 4.0]]), old, r, kl_coef=0.0, cliprange=100.0, cliprange_ratio=10.0)
    assert math.isclose(float(per), -0.5 * 10.0 * 1.0, rel_tol=1e-6)  # e^9 clamped to c = 10


def test_running_moments_match_the_batch_statistics_and_ignore_offsets():
    x = torch.randn(50) * 3 + 1
    a, b = RunningMoments(), RunningMoments()
    for c in x.split(9): a.update(c); b.update(c + 1000)
    assert math.isclose(a.std, float(x.std()), rel_tol=1e-4) and math.isclose(a.std, b.std, rel_tol=1e-3)


@pytest.mark.parametrize("bad", [dict(kl_coef=-0.1), dict(cliprange=0.0), dict(cliprange_ratio=0.9),
                                 dict(cliprange_reward=float("inf")), dict(scale_reward="whiten")])
def test_bad_hyperparameters_name_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))): P3O(**bad)


@pytest.mark.parametrize("tokenwise", [False, True])
def test_rollout_is_regrouped_by_pairs_and_first_minibatch_has_ratio_one(tokenwise):
    set_seed(0)
    policy, tok = tiny_policy(); ref = frozen_copy(policy)
    algo = P3O(clip_tokenwise=tokenwise)
    ro = rollout(policy, tok, ["a", "b", "c"], lambda p, c: [len(x) + 100.0 for x in c], ref=ref, n=2, max_new_tokens=4)
    algo.make_experience(ro)
    assert ro["input_ids"].shape[:2] == (3, 2) and (ro["prompt_index"][:, 0] == ro["prompt_index"][:, 1]).all()
    batch = on(policy, {k: v for k, v in ro.items() if torch.is_tensor(v) and v.dim() > 0})  # rollouts live on the CPU
    loss, m = algo.loss({**batch, "temperature": 1.0}, policy, ref)
    assert torch.isfinite(loss) and abs(float(m["ratio_mean"]) - 1) < 1e-5 and float(m["policy_clipfrac"]) == 0


def test_training_logs_the_metrics_and_the_reward_scale_round_trips(tmp_path):
    set_seed(0)
    policy, tok = tiny_policy(); ref = frozen_copy(policy)
    cfg = OnlineConfig(out_dir=str(tmp_path), max_steps=2, batch_size=2, max_new_tokens=3, num_epochs=1, progress=False,
                       save_every=1, eval_every=0)
    algo = P3O()
    hist = OnlineTrainer(algo, policy, ref, tok, ["x", "y"], lambda p, c: [float(len(s)) for s in c], cfg).train()
    rows = [r for r in hist if r.get("split") != "eval"]
    assert len(rows) == 2 and all(k in rows[-1] for k in ("q_diff_mean", "policy_clipfrac", "objective/kl_k3"))
    fresh = P3O(); fresh.load_state_dict(algo.state_dict())
    assert fresh.moments == algo.moments and algo.moments.count > 1
