"""The evaluator (rlhf_ref.evaluate): its KL to the reference computed the long way, on a policy that differs from the
reference, checked against an independent computation; the identical-weights shortcut checked against the long way."""
import statistics
import pytest
import torch
from devices import device_of
import rlhf_ref.evaluate as evmod
from rlhf_ref.evaluate import Evaluator
from rlhf_ref.models import frozen_copy
from rlhf_ref.tasks import sentiment_task


def by_hand(model, samples):
    "Per sample: log-probs of the completion tokens, from one plain forward pass of prompt + completion, (T,) each."
    out = []
    with torch.no_grad():
        for s in samples:
            ids = torch.tensor([s["prompt_ids"] + s["completion_ids"]], device=device_of(model))
            logps = model(ids).logits[0].float().log_softmax(-1)  # (L, V)
            P, T = len(s["prompt_ids"]), len(s["completion_ids"])
            out.append(logps[P - 1:P - 1 + T].gather(-1, torch.tensor(s["completion_ids"], device=ids.device)[:, None])[:, 0])
    return out


def full_kl(policy, ref, samples):
    "Per sample: sum over its completion positions of the exact KL(policy || ref) of the next-token distributions."
    out = []
    with torch.no_grad():
        for s in samples:
            ids = torch.tensor([s["prompt_ids"] + s["completion_ids"]], device=device_of(policy))
            P, T = len(s["prompt_ids"]), len(s["completion_ids"])
            lp, lq = (m(ids).logits[0, P - 1:P - 1 + T].float().log_softmax(-1) for m in (policy, ref))
            out.append(float((lp.exp() * (lp - lq)).sum()))
    return out


@pytest.fixture(scope="module")
def setup(tiny):
    model, tok = tiny
    policy = frozen_copy(model)
    g = torch.Generator().manual_seed(1)  # on the CPU: the same perturbation on any device
    with torch.no_grad():
        for p in policy.parameters(): p.add_(0.03 * torch.randn(p.shape, generator=g).to(p))
    task = sentiment_task()
    ev = Evaluator(task, tok, ref=frozen_copy(model), prompts=task.eval_prompts[:32], n_samples=4, max_new_tokens=10)
    return policy, frozen_copy(model), ev, ev.evaluate(policy, return_samples=True)


def test_kl_of_a_different_policy_matches_an_independent_computation(setup):
    policy, ref, ev, res = setup
    samples = res["samples"]
    lp, lq = by_hand(policy, samples), by_hand(ref, samples)
    d = [a - b for a, b in zip(lp, lq)]
    k1 = statistics.fmean(float(x.sum()) for x in d)
    k3 = statistics.fmean(float((torch.expm1(-x) + x).sum()) for x in d)
    assert res["kl"] == pytest.approx(k1, abs=1e-4) and res["kl_k3"] == pytest.approx(k3, abs=1e-4)
    assert res["kl"] > 0.05 and res["kl_k3"] > 0.05  # the policy really differs: the estimate is far from 0
    # both are estimates of the sequence KL; the exact per-token KL summed along the same samples estimates it too,
    # with less noise: they must agree within three standard errors of the k1 mean
    exact = full_kl(policy, ref, samples)
    se = statistics.stdev(float(x.sum()) for x in d) / len(d) ** 0.5
    assert abs(res["kl"] - statistics.fmean(exact)) < 3 * se + 1e-3, (res["kl"], statistics.fmean(exact), se)
    assert abs(res["kl_k3"] - statistics.fmean(exact)) < 3 * se + 1e-3


def test_policy_samples_are_its_own(setup):
    "The evaluator scores the policy's samples, not the reference's: the k1 estimate is the mean log-ratio of them."
    policy, ref, ev, res = setup
    assert res["count"] == 128 and 0 <= res["win_rate"] <= 1
    ref_res = Evaluator(ev.task, ev.tok, prompts=ev.prompts, n_samples=4, max_new_tokens=10)(ref)
    assert res["reward_ref"] == pytest.approx(ref_res["reward"])  # reference sampled with the same seed


def test_identical_weights_shortcut_agrees_with_the_long_way(setup, monkeypatch):
    "With the fingerprint check defeated, a copy of the reference goes the long way and must still get KL 0, win rate 1/2."
    policy, ref, ev, _ = setup
    fresh = Evaluator(ev.task, ev.tok, ref=ref, prompts=ev.prompts[:8], n_samples=2, max_new_tokens=10)
    short = fresh(frozen_copy(ref))
    counter = iter(range(10 ** 6))
    monkeypatch.setattr(evmod, "fingerprint", lambda m: next(counter))  # never equal: no shortcut
    long = Evaluator(ev.task, ev.tok, ref=ref, prompts=ev.prompts[:8], n_samples=2, max_new_tokens=10)(frozen_copy(ref))
    assert short["kl"] == short["kl_k3"] == 0.0
    assert abs(long["kl"]) < 1e-5 and abs(long["kl_k3"]) < 1e-5 and long["win_rate"] == 0.5
    assert long["reward"] == pytest.approx(short["reward"]) and long["reward_ref"] == pytest.approx(short["reward_ref"])


def test_task_metrics_join_every_evaluation(tiny):
    "A task's `metrics` are computed on the evaluation's own samples and added to its numbers; a name clash is refused."
    import dataclasses
    policy, tok = tiny
    seen = {}
    def metrics(prompts, completions):
        seen["n"] = len(completions)
        return {"mean_chars": statistics.fmean(len(c) for c in completions)}
    task = dataclasses.replace(sentiment_task(), metrics=metrics)
    ev = Evaluator(task, tok, prompts=task.eval_prompts[:3], max_new_tokens=4)
    res = ev(policy)
    assert seen["n"] == 3 and res["mean_chars"] == statistics.fmean(len(s["completion"]) for s in ev.last_samples)
    clash = dataclasses.replace(task, metrics=lambda p, c: {"reward": 0.0})
    with pytest.raises(ValueError, match="clash"): Evaluator(clash, tok, prompts=task.eval_prompts[:3], max_new_tokens=4)(policy)
