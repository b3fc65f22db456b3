"SALSA: the soup's identities, the prepare stage (two cached SFTs, soup as policy and reference) and bad hyperparameters."
import math
import pytest
import torch
from rlhf_ref.models import tiny_policy
from rlhf_ref.rollout import attach_value, rollout
from rlhf_ref.salsa import SALSA, soup, soup_state
from rlhf_ref.tasks import get_task


def _same(m1, m2) -> bool:
    return all(torch.equal(p, q) for p, q in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_soup_is_linear_and_its_ends_are_the_models():
    a, _ = tiny_policy(seed=0); b, _ = tiny_policy(seed=1)
    mid = soup_state(a.state_dict(), b.state_dict(), 0.5)
    for k, v in mid.items(): torch.testing.assert_close(v, (a.state_dict()[k] + b.state_dict()[k]) / 2)
    q = soup(a, b, 0.25).state_dict()
    for k, v in q.items(): torch.testing.assert_close(v, 0.25 * a.state_dict()[k] + 0.75 * b.state_dict()[k])
    assert _same(soup(a, b, 1.0), a) and _same(soup(a, b, 0.0), b) and _same(soup(a, a, 0.5), a)
    assert not _same(soup(a, b, 0.5), a)


def test_soup_rejects_mismatches():
    a, tok = tiny_policy(seed=0)
    wide, _ = tiny_policy(seed=0, hidden_size=32, intermediate_size=64)
    with pytest.raises(ValueError, match="architectures"): soup(a, wide)
    with pytest.raises(ValueError, match="alpha"): soup(a, a, -0.1)
    class OtherTok:
        def get_vocab(self): return {"a": 0}
    with pytest.raises(ValueError, match="tokenizers"): soup(a, a, 0.5, tok, OtherTok())


@pytest.mark.parametrize("bad", [dict(alpha=1.5), dict(alpha=math.nan), dict(sft_lr=-1.0), dict(sft_steps=0),
                                 dict(sft_batch_size=0), dict(sft_split="thirds"), dict(cliprange=0.0)])
def test_bad_hyperparameters(bad):
    with pytest.raises(ValueError, match=next(iter(bad))): SALSA(**bad)


def _prepare(alpha, out, resume=False):
    policy, tok = tiny_policy(seed=0)
    algo = SALSA(alpha=alpha, sft_steps=2, sft_batch_size=2, sft_k=2, sft_keep_unfinished=True, sft_lr=1e-3)
    task = get_task("sentiment")
    prep = algo.prepare(policy, tok, task, task.train_prompts[:4], out_dir=out, seed=0, resume=resume, quiet=True)
    return algo, policy, tok, prep


def test_prepare_soups_two_cached_sfts_and_kl_is_zero_at_step_zero(tmp_path):
    torch.set_num_threads(1)
    algo, base, tok, prep = _prepare(0.5, tmp_path)
    sft1, sft2 = algo.sfts
    assert not _same(sft1, sft2) and not _same(sft1, base)  # two different fine-tunes
    assert _same(prep["policy"], soup(sft1, sft2, 0.5)) and _same(prep["ref"], prep["policy"])
    assert not any(p.requires_grad for p in prep["ref"].parameters())
    attach_value(prep["policy"])
    ro = rollout(prep["policy"], tok, ["The film was", "I think"], lambda p, c: [0.0] * len(c), ref=prep["ref"], max_new_tokens=6)
    m = algo.make_experience(ro)  # the first rollout's objective/kl: policy = reference
    assert float(m["objective/kl"]) == 0.0 and abs(float(m["objective/kl_sft1"])) > 0
    # alpha = 1: PPO from SFT1 with SFT1 as reference; resuming, the SFTs come from the cache, unchanged
    algo1, _, _, prep1 = _prepare(1.0, tmp_path, resume=True)
    assert _same(algo1.sfts[0], sft1) and _same(prep1["policy"], sft1) and _same(prep1["ref"], sft1)


def test_kl_to_each_sft_is_taken_at_the_sampling_temperature(tmp_path):
    "A rollout sampled at T != 1 records T; the KL to each SFT divides the SFT's logits by that T too."
    from rlhf_ref.rollout import policy_forward
    torch.set_num_threads(1)
    algo, _, tok, prep = _prepare(0.5, tmp_path)
    attach_value(prep["policy"])
    ro = rollout(prep["policy"], tok, ["The film was", "I think"], lambda p, c: [0.0] * len(c), ref=prep["ref"],
                 max_new_tokens=6, temperature=0.5)
    assert ro["temperature"] == 0.5 and ro["top_p"] == 1.0
    mask, R = ro["response_mask"].float(), ro["response_mask"].shape[1]
    kl_at = lambda t: ((ro["logps"] - policy_forward(algo.sfts[0], ro["input_ids"], ro["attention_mask"], R,
                                                     temperature=t)["logps"].cpu()) * mask).sum(1).mean()
    with torch.no_grad(): at_half, at_one = kl_at(0.5), kl_at(1.0)
    m = algo.make_experience(ro)
    torch.testing.assert_close(m["objective/kl_sft1"], at_half)
    assert abs(float(at_half - at_one)) > 1e-3  # the temperature matters, so the test could fail
