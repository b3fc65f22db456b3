"""PF-PPO (rlhf_ref.pf_ppo): the filters against a naive loop, the reweighting's size and its p = 0 limit, R^2 against
numpy, and the rollout cut consistently before PPO's advantages."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from rlhf_ref.models import frozen_copy, tiny_policy
from rlhf_ref.pf_ppo import PFPPO, filter_r2, pf_keep, pf_reweight, r_squared
from rlhf_ref.rollout import attach_value, rollout


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(2, 5), st.integers(0, 10_000))
def test_filters_match_a_naive_loop(groups, n, seed):
    scores = torch.randint(-3, 4, (groups * n,), generator=torch.Generator().manual_seed(seed)).float()
    bon, bw = [], []
    for g in range(groups):  # one prompt at a time, Python floats; argmax/argmin take the first of ties
        s = scores[g * n:(g + 1) * n].tolist()
        best, worst = s.index(max(s)), s.index(min(s))
        if worst == best: worst = (best + 1) % n
        bon.append(g * n + best); bw += [g * n + best, g * n + worst]
    assert pf_keep(scores, n, "bon").tolist() == sorted(bon)
    assert pf_keep(scores, n, "bw").tolist() == sorted(bw)
    br = pf_keep(scores, n, "br").view(-1).tolist()
    assert len(br) == 2 * groups and len(set(br)) == 2 * groups and set(bon) <= set(br)
    assert all(sum(g * n <= i < (g + 1) * n for i in br) == 2 for g in range(groups))


@pytest.mark.parametrize("method", ["pow", "max_min", "max_random"])
def test_reweight_keeps_the_batch_size(method):
    assert pf_reweight(torch.randn(7), method).shape == (7,)


def test_pow_zero_is_uniform():
    torch.manual_seed(0)
    draws = torch.cat([pf_reweight(torch.tensor([5.0, 0.0, -1.0, 2.0]), "pow", 0.0) for _ in range(4000)])
    freq = torch.bincount(draws, minlength=4).double() / draws.numel()
    assert (freq - 0.25).abs().max() < 0.02


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000))
def test_r_squared_is_the_squared_correlation(seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(20, generator=g), torch.randn(20, generator=g)
    y = y + x * (seed % 3)
    assert abs(r_squared(x, y) - np.corrcoef(x.numpy(), y.numpy())[0, 1] ** 2) < 1e-9
    assert filter_r2(x, y, 4)["none"] == pytest.approx(r_squared(x, y))


def test_make_experience_cuts_every_per_response_tensor():
    torch.manual_seed(0); torch.set_num_threads(1)
    policy, tok = tiny_policy(); ref = frozen_copy(policy); attach_value(policy, "head")
    algo = PFPPO(num_samples=4, policy_filter="bw")
    ro = rollout(policy, tok, ["The film was", "I think"], lambda p, c: [float(len(x)) for x in c], ref=ref, n=4,
                 max_new_tokens=5, gold_fn=lambda p, c: [float(len(x) % 3) for x in c])
    before = {k: v.clone() for k, v in ro.items() if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == 8}
    keep = pf_keep(ro["scores"], 4, "bw")
    m = algo.make_experience(ro)
    for k, v in before.items(): assert torch.equal(ro[k], v[keep]), k
    assert ro["advantages"].shape[0] == 4 and m["pf/kept_fraction"] == 0.5 and "pf/r2_kept" in m


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="policy_filter"): PFPPO(policy_filter="best")
    with pytest.raises(ValueError, match="reweight replaces"): PFPPO(reweight="pow")
    with pytest.raises(ValueError, match="num_samples"): PFPPO(num_samples=1, policy_filter="br")
    PFPPO(num_samples=1, policy_filter="bon"); PFPPO(reweight="pow", policy_filter="none")
