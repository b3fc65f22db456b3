"""Online RL pieces (rlhf_ref.ppo, rlhf_ref.grpo, rlhf_ref.rollout): against naive independent versions on random
inputs, their identities, and the online loop (resume bit-identical, non-finite stop, metrics, saved policy)."""
import json, math
import pytest
import torch
from devices import on
from hypothesis import given, settings, strategies as st
from rlhf_ref.core import NonFiniteLossError, read_jsonl, set_seed
from rlhf_ref.grpo import GRPO, RLOO, group_advantages, rloo_advantages
from rlhf_ref.logprobs import kl_estimate
from rlhf_ref.models import frozen_copy, tiny_policy
from rlhf_ref.ppo import (PPO, AdaptiveKLController, clipped_policy_loss, clipped_value_loss, gae, masked_whiten,
                          token_rewards)
from rlhf_ref.rollout import (INVALID_LOGPROB, VALUE_ATTR, OnlineConfig, OnlineTrainer, attach_value, policy_forward,
                              rollout)
from rlhf_ref.train import latest_checkpoint


def random_batch(seed, B=5, T=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    return g, mask, lengths


# --- naive references, written from the equations, one element at a time -----------------------------------------
def naive_gae(r, v, lengths, gamma, lam):
    out, ret = torch.zeros_like(r), torch.zeros_like(r)
    for b, n in enumerate(lengths.tolist()):
        for t in range(n):  # the definition: A_t = sum_l (gamma lam)^l delta_{t+l}
            a = 0.0
            for l in range(n - t):
                nxt = v[b, t + l + 1].item() if t + l + 1 < n else 0.0
                a += (gamma * lam) ** l * (r[b, t + l].item() + gamma * nxt - v[b, t + l].item())
            out[b, t], ret[b, t] = a, a + v[b, t].item()
    return out, ret


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_gae_matches_the_sum_definition(seed, gamma, lam):
    g, mask, lengths = random_batch(seed)
    r, v = torch.randn(mask.shape, generator=g, dtype=torch.float64), torch.randn(mask.shape, generator=g, dtype=torch.float64)
    adv, ret = gae(r, v, mask, gamma=gamma, lam=lam)
    ref_adv, ref_ret = naive_gae(r, v, lengths, gamma, lam)
    torch.testing.assert_close(adv, ref_adv); torch.testing.assert_close(ret, ref_ret)


def test_gae_lambda_gamma_one_gives_reward_to_go():
    g, mask, lengths = random_batch(1, B=8, T=9)
    r, v = torch.randn(mask.shape, generator=g), torch.randn(mask.shape, generator=g)
    adv, _ = gae(r, v, mask, gamma=1.0, lam=1.0)
    to_go = torch.stack([torch.tensor([float((r[b, t:n]).sum()) if t < n else 0.0 for t in range(9)])
                         for b, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(adv + v * mask, to_go, atol=1e-5, rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.01, 0.5))
def test_clipped_losses_match_naive(seed, eps):
    g = torch.Generator().manual_seed(seed)
    lp, old, adv, ret = (torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(4))
    old = lp + 0.3 * old
    loss, clipped = clipped_policy_loss(lp, old, adv, cliprange=eps)
    vloss, vclipped = clipped_value_loss(lp, old, ret, cliprange_value=eps)
    for i in range(4):
        for j in range(6):
            rho, a = math.exp(lp[i, j] - old[i, j]), adv[i, j].item()
            expect = max(-a * rho, -a * min(max(rho, 1 - eps), 1 + eps))
            assert loss[i, j].item() == pytest.approx(expect, rel=1e-9, abs=1e-12)
            assert bool(clipped[i, j]) == ((rho > 1 + eps and a > 0) or (rho < 1 - eps and a < 0))
            v, vo, R = lp[i, j].item(), old[i, j].item(), ret[i, j].item()
            vc = vo + min(max(v - vo, -eps), eps)
            assert vloss[i, j].item() == pytest.approx(0.5 * max((v - R) ** 2, (vc - R) ** 2), rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_k3_is_non_negative_and_zero_at_equality(seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(50, generator=g) * 5, torch.randn(50, generator=g) * 5
    assert (kl_estimate(a, b, "k3") >= 0).all()
    assert kl_estimate(a, a, "k3").abs().max() == 0 and kl_estimate(a, a, "k1").abs().max() == 0


def test_masked_whiten_zero_mean_unit_variance():
    g, mask, _ = random_batch(3, B=6, T=8)
    x = torch.randn(mask.shape, generator=g) * 4 + 2
    w = masked_whiten(x, mask)
    vals = w[mask.bool()]
    assert abs(vals.mean().item()) < 1e-5 and abs(vals.std().item() - 1) < 1e-4 and w[~mask.bool()].abs().sum() == 0


def test_token_rewards_score_at_last_token_and_kl_elsewhere():
    g, mask, lengths = random_batch(4)
    lp, ref = -torch.rand(mask.shape, generator=g), -torch.rand(mask.shape, generator=g)
    scores, finished = torch.randn(5, generator=g), torch.tensor([True, False, True, False, True])
    rewards, kl = token_rewards(scores, lp, ref, mask, kl_coef=0.2, finished=finished, missing_eos_penalty=3.0)
    for b, n in enumerate(lengths.tolist()):
        for t in range(mask.shape[1]):
            expect = -0.2 * (lp[b, t] - ref[b, t]).item() if t < n else 0.0
            if t == n - 1: expect += scores[b].item() - (0.0 if finished[b] else 3.0)
            assert rewards[b, t].item() == pytest.approx(expect, abs=1e-6)


def test_group_and_leave_one_out_advantages():
    s = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    torch.testing.assert_close(rloo_advantages(s, 3), torch.tensor([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(group_advantages(s, 3), torch.tensor([-1 / 1.0001, 0.0, 1 / 1.0001, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError): rloo_advantages(s, 4)
    with pytest.raises(ValueError): rloo_advantages(s, 1)


def test_adaptive_kl_controller_moves_towards_target():
    c = AdaptiveKLController(0.1, target=4.0, horizon=1000)
    assert c.update(8.0, 100) > 0.1
    c = AdaptiveKLController(0.1, target=4.0, horizon=1000)
    assert c.update(1.0, 100) < 0.1


# --- rollouts and the online loop ------------------------------------------------------------------------------------
def length_reward(prompts, completions): return [len(c) / 20 for c in completions]


def test_rollout_cuts_at_eos_and_scores_consistently(tiny):
    policy, tok = tiny_policy(seed=1)
    attach_value(policy)
    set_seed(0)
    ro = rollout(policy, tok, ["Hello", "The film was"], length_reward, ref=frozen_copy(policy), n=4, max_new_tokens=12,
                 temperature=0.8, gold_fn=lambda p, c: [0.0] * len(c))
    mask = ro["response_mask"].bool()
    lengths = mask.sum(1)
    for b in range(8):  # the EOS, where present, is the last response token and only there
        ids = ro["input_ids"][b, -mask.shape[1]:][: lengths[b]].tolist()
        assert (tok.eos_token_id in ids) == bool(ro["finished"][b])
        if ro["finished"][b]: assert ids.index(tok.eos_token_id) == len(ids) - 1
    assert (ro["logps"][~mask] == INVALID_LOGPROB).all()
    again = {k: v.cpu() for k, v in policy_forward(policy, ro["input_ids"], ro["attention_mask"], mask.shape[1],
                                                    temperature=0.8, values=True).items()}  # rollouts live on the CPU
    torch.testing.assert_close(again["logps"][mask], ro["logps"][mask])
    torch.testing.assert_close(again["values"], ro["values"])
    assert ro["scores"].tolist() == pytest.approx(length_reward(None, ro["completions"])) and "gold" in ro


@pytest.mark.parametrize("kind", ["head", "model"])
def test_policy_forward_runs_each_group_prompt_once(kind):
    "Rows sharing a prompt (groups, in any order) run it once; log-probs, values, entropy and gradients are the plain pass's."
    from rlhf_ref.data import pad_prompt_response
    from rlhf_ref.rollout import _value_of
    policy, tok = tiny_policy(seed=3)
    attach_value(policy, kind)
    torch.nn.init.normal_(_value_of(policy).head.weight)  # nonzero values
    a, b = (on(policy, frozen_copy(policy).requires_grad_(True)) for _ in range(2))
    prompts = [[5, 6, 7], [8, 9], [5, 6, 7], [8, 9], [5, 6, 7], [3, 4, 5, 6]]  # two groups, interleaved, and a single
    batch = on(a, pad_prompt_response(prompts, [[10, 11], [12, 13, 14], [15], [16, 17, 18, 19], [20], [21, 22]],
                                      tok.pad_token_id))
    R = batch["response_mask"].shape[1]
    P, mask = batch["input_ids"].shape[1] - R, batch["response_mask"].bool()
    shapes = []
    hook = a.register_forward_pre_hook(lambda m, args, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    shared = policy_forward(a, batch["input_ids"], batch["attention_mask"], R, values=True, entropy=True, share_prompt=True)
    hook.remove()
    assert shapes == [(3, P), (6, R)]  # three distinct prompts once, then the six responses
    plain = policy_forward(b, batch["input_ids"], batch["attention_mask"], R, values=True, entropy=True, share_prompt=False)
    for k in ("logps", "values", "entropy"):
        assert shared[k].abs()[mask].max() > 0
        torch.testing.assert_close(shared[k][mask], plain[k][mask], rtol=1e-5, atol=1e-5, msg=k)
    loss = lambda o: (o["logps"][mask] - 0.5 * o["values"][mask]).sum()
    loss(shared).backward(); loss(plain).backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert (p.grad is None) == (q.grad is None), n
        if q.grad is not None and q.grad.norm() > 0:
            assert ((p.grad - q.grad).norm() / q.grad.norm()).item() < 1e-5, n


def make_trainer(out, algo, steps=4, save_every=2, reward=length_reward, **kw):
    policy, tok = tiny_policy(seed=2)
    cfg = OnlineConfig(**{**dict(out_dir=str(out), max_steps=steps, batch_size=2, lr=1e-3, max_new_tokens=5, num_epochs=2,
                                 num_mini_batches=2, save_every=save_every, eval_every=2, progress=False), **kw})
    prompts = ["Hello", "The film was", "I think", "Once upon a time"]
    ev = lambda model: {"mean_logit": float(model(on(model, torch.tensor([[1, 2, 3]]))).logits.mean())}
    return OnlineTrainer(algo, policy, frozen_copy(policy), tok, prompts, reward, cfg, eval_fn=ev)


class Crash(RuntimeError): pass


@pytest.mark.parametrize("make_algo", [lambda: PPO(kl_target=1.0), lambda: GRPO(num_generations=2, beta=0.1), lambda: RLOO()],
                         ids=["ppo", "grpo", "rloo"])
def test_online_resume_is_bit_identical(tiny, tmp_path, make_algo):
    straight = make_trainer(tmp_path / "a", make_algo(), eval_every=0); straight.train()
    crashed = make_trainer(tmp_path / "b", make_algo(), eval_every=0)
    sample = crashed._make_rollout
    def dies_in_step_3():  # like a process killed while sampling step 3 (checkpoint at step 2)
        if crashed.step == 2: raise Crash
        return sample()
    crashed._make_rollout = dies_in_step_3
    with pytest.raises(Crash): crashed.train()
    assert latest_checkpoint(tmp_path / "b").name == "step-000002"
    resumed = make_trainer(tmp_path / "b", make_algo(), eval_every=0); resumed.train(resume=True)
    for (n, p), (_, q) in zip(straight.policy.named_parameters(), resumed.policy.named_parameters()):
        assert torch.equal(p, q), n
    rows_a, rows_b = read_jsonl(tmp_path / "a" / "metrics.jsonl"), read_jsonl(tmp_path / "b" / "metrics.jsonl")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time" and not k.startswith("time/")} for r in rows]
    assert strip(rows_a) == strip(rows_b)
    if isinstance(straight.algo, PPO): assert straight.algo.kl_ctl.value == resumed.algo.kl_ctl.value != 0.05


def test_evaluation_does_not_change_what_training_samples(tiny, tmp_path):
    quiet = make_trainer(tmp_path / "a", RLOO(), eval_every=0); quiet.train()  # the trainer seeds the RNG when built
    evaluated = make_trainer(tmp_path / "b", RLOO(), eval_every=1)
    evaluated.eval_fn = lambda model: {"draw": float(torch.rand(()))}  # an evaluator that consumes the RNG
    evaluated.train()
    for p, q in zip(quiet.policy.parameters(), evaluated.policy.parameters()): assert torch.equal(p, q)


def test_online_metrics_use_trl_names_and_policy_saves_without_value_head(tiny, tmp_path):
    t = make_trainer(tmp_path / "a", PPO(), steps=2, save_every=0)
    hist = t.train()
    train = [r for r in hist if r["split"] == "train"]
    for key in ("objective/kl", "objective/scores", "objective/entropy", "objective/non_score_reward", "objective/rlhf_reward",
                "policy/clipfrac_avg", "policy/approxkl_avg", "loss/policy_avg", "loss/value_avg", "val/clipfrac_avg",
                "val/num_eos_tokens", "episode", "lr"):
        assert key in train[0], key
    path = t.save_trained_policy(t.tok)
    weights = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"] if (path / "model.safetensors.index.json").exists() else None
    from safetensors.torch import load_file
    keys = set(weights) if weights else set(load_file(path / "model.safetensors"))
    assert not any(VALUE_ATTR in k for k in keys) and hasattr(t.policy, VALUE_ATTR)


def test_non_finite_reward_stops_before_updating(tiny, tmp_path):
    t = make_trainer(tmp_path / "a", PPO(), steps=2, reward=lambda p, c: [math.nan] * len(c))
    before = [p.detach().clone() for p in t.policy.parameters()]
    with pytest.raises(NonFiniteLossError): t.train()
    assert all(torch.equal(a, b) for a, b in zip(before, t.policy.parameters()))


def test_separate_value_model_trains(tiny, tmp_path):
    policy, tok = tiny_policy(seed=2)
    cfg = OnlineConfig(out_dir=str(tmp_path), max_steps=1, batch_size=2, lr=1e-3, max_new_tokens=4, progress=False)
    t = OnlineTrainer(PPO(), policy, frozen_copy(policy), tok, ["Hi", "The"], length_reward, cfg, value_model="model")
    v0 = [p.detach().clone() for p in getattr(policy, VALUE_ATTR).backbone.parameters()]
    t.train()
    assert any(not torch.equal(a, b) for a, b in zip(v0, getattr(policy, VALUE_ATTR).backbone.parameters()))


def test_bad_online_config_and_algorithms_raise():
    with pytest.raises(ValueError, match="temperature"): OnlineConfig(temperature=0.0)
    with pytest.raises(ValueError, match="grad_accum"): OnlineConfig(grad_accum=2)
    with pytest.raises(ValueError, match="num_generations"): GRPO(num_generations=1)
    with pytest.raises(ValueError, match="value_model"): attach_value(tiny_policy()[0], "mlp")


def test_cli_trains_ppo_online_then_evaluates(tmp_path):
    import os, subprocess, sys
    from pathlib import Path
    cli = str(Path(sys.executable).parent / "rlhf-ref")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = tmp_path / "run"
    r = subprocess.run([cli, "train", "--algo", "ppo", "--task", "sentiment", "--model", "tiny", "--steps", "2", "--batch-size", "2",
                        "--n-prompts", "4", "--n-eval-prompts", "2", "--eval-every", "0", "--lr", "1e-4", "--kl-coef", "0.1",
                        "--out", str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(out / "metrics.jsonl")
    assert [x["step"] for x in rows if x["split"] == "train"] == [1, 2] and "objective/kl" in rows[1]
    assert json.loads((out / "config.json").read_text())["algo_config"]["kl_coef"] == 0.1
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "A film nobody asked for, and"}\n{"prompt": "The soundtrack"}\n')
    r = subprocess.run([cli, "eval", "--policy", str(out / "policy"), "--task", "sentiment", "--prompts", str(prompts)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["count"] == 2


def test_reinforce_pp_advantages_are_the_whitened_reward_to_go():
    "REINFORCE++ against a naive version: per-token k1-shaped rewards, reward-to-go by hand, whitened over all tokens."
    from rlhf_ref.grpo import ReinforcePP
    g = torch.Generator().manual_seed(3)
    B, T, G = 6, 5, 3
    lengths = torch.tensor([5, 3, 1, 4, 2, 5])
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    ro = dict(response_mask=mask, scores=torch.randn(B, generator=g), logps=-torch.rand(B, T, generator=g),
              ref_logps=-torch.rand(B, T, generator=g), finished=torch.ones(B, dtype=torch.bool))
    algo = ReinforcePP(kl_coef=0.3, num_generations=G, baseline="group", gamma=0.9)
    algo.make_experience(ro)
    vals = []
    for b in range(B):
        n = int(lengths[b])
        score = ro["scores"][b].item() - ro["scores"][b // G * G:(b // G + 1) * G].mean().item()
        r = [-0.3 * (ro["logps"][b, t].item() - ro["ref_logps"][b, t].item()) + (score if t == n - 1 else 0.0) for t in range(n)]
        vals += [sum(0.9 ** (s - t) * r[s] for s in range(t, n)) for t in range(n)]
    v = torch.tensor(vals, dtype=torch.float64)
    expected = (v - v.mean()) / v.std()
    assert torch.allclose(ro["advantages"][mask.bool()].double(), expected, atol=1e-4)


def test_single_update_grpo_skips_the_policy_pass_and_trains_the_same(tiny, tmp_path, monkeypatch):
    "With one update an iteration GRPO takes the sampling log-probs from the update's own forward, as TRL does."
    import rlhf_ref.rollout as R
    calls, score = [], R._score
    monkeypatch.setattr(R, "_score", lambda model, *a, **k: calls.append(model) or score(model, *a, **k))
    runs = {}
    for skip in (True, False):
        algo = GRPO(num_generations=2, beta=0.1)
        if not skip: algo.needs_sampling_logps = True  # force the scoring pass: the reference behaviour
        t = make_trainer(tmp_path / str(skip), algo, steps=2, num_epochs=1, num_mini_batches=1, eval_every=0, save_every=0)
        calls.clear()
        hist = [r for r in t.train() if r["split"] == "train"]
        assert len(calls) == (2 if skip else 4)  # the reference only, or the policy and the reference, each iteration
        runs[skip] = (hist, {k: v.detach().clone() for k, v in t.policy.state_dict().items()})
    (h1, p1), (h0, p0) = runs[True], runs[False]
    for k in p0: torch.testing.assert_close(p1[k], p0[k], atol=1e-6, rtol=1e-5)
    for a, b in zip(h1, h0):
        assert set(a) == set(b)  # the same metric names, entropy and KL included
        for key in ("objective/kl", "objective/kl_k3", "objective/entropy", "loss"): assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6)
    # more than one update an iteration needs the sampling policy's log-probs: the pass stays
    calls.clear(); make_trainer(tmp_path / "two", GRPO(num_generations=2), steps=1, num_epochs=2, eval_every=0, save_every=0).train()
    assert len(calls) == 2
