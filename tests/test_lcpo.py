"""LCPO / RE-PO: the E-step, the reliability EMA and the weighted loss against independent formulas; the identities
(w = 1 is DPO, w = 1 - eps is cDPO, eta = 1 gives w = 1, eta = 0.5 gives w = p); every wrapper with eta0 = 1 against
the method it wraps on a real batch; eta through a checkpoint and a resume; `rlhf-ref train --algo lcpo-dpo` end to end."""
import json, math, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from devices import on
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from rlhf_ref.core import read_jsonl
from rlhf_ref.data import PreferenceCollator, precompute_ref_logps, preference_dataset
from rlhf_ref.dpo import DPO, dpo_loss
from rlhf_ref.lcpo import (LCPO, RECPO, REDPO, REIPO, RESimPO, annotator_index, flip_auroc, lcpo_loss, posterior_correct,
                           reliability_ema)
from rlhf_ref.models import frozen_copy, tiny_policy
from rlhf_ref.simpo import CPO, SimPO, simpo_loss
from rlhf_ref.train import TrainConfig, Trainer, latest_checkpoint

f64 = lambda x: torch.tensor(x, dtype=torch.float64)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_posterior_matches_bayes(data):
    n = data.draw(st.integers(1, 12))
    p = data.draw(arrays(np.float64, n, elements=st.floats(1e-6, 1 - 1e-6)))
    eta = data.draw(arrays(np.float64, n, elements=st.floats(1e-6, 1 - 1e-6)))
    w = posterior_correct(f64(np.log(p) - np.log1p(-p)), f64(eta)).numpy()
    np.testing.assert_allclose(w, p * eta / (p * eta + (1 - p) * (1 - eta)), rtol=1e-9, atol=1e-12)
    assert ((w >= 0) & (w <= 1)).all()


def test_eta_one_gives_one_and_eta_half_gives_p():
    logits = torch.randn(20, dtype=torch.float64) * 5
    assert torch.equal(posterior_correct(logits, 1.0), torch.ones(20, dtype=torch.float64))
    torch.testing.assert_close(posterior_correct(logits, 0.5), torch.sigmoid(logits))
    assert torch.equal(posterior_correct(logits, 0.0), torch.zeros(20, dtype=torch.float64))
    x = logits.clone().requires_grad_(True)
    assert not posterior_correct(x, 0.9).requires_grad  # w is a constant for the M-step
    with pytest.raises(ValueError, match="eta must be in"): posterior_correct(logits, 1.01)
    with pytest.raises(ValueError, match="eta must be in"): posterior_correct(logits, float("nan"))


def test_w_one_is_dpo_and_w_one_minus_eps_is_cdpo():
    torch.manual_seed(0)
    pc, pr, rc, rr = (torch.randn(4, 32, dtype=torch.float64) * 10).unbind()
    for beta in (0.05, 0.1, 1.0):
        fwd, swp = dpo_loss(pc, pr, rc, rr, beta=beta)[0], dpo_loss(pr, pc, rr, rc, beta=beta)[0]
        torch.testing.assert_close(lcpo_loss(fwd, swp, torch.ones(32, dtype=torch.float64)), fwd)
        for eps in (0.05, 0.2, 0.45):
            w = torch.full((32,), 1 - eps, dtype=torch.float64)
            cdpo = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps)[0]
            torch.testing.assert_close(lcpo_loss(fwd, swp, w), cdpo)
            torch.testing.assert_close(lcpo_loss(fwd, swp, w, form="mixture"), cdpo)


def test_induced_probabilities_of_ipo_and_simpo():
    "Our derivation (ALGORITHMS.md §4): IPO induces sigma(2h / tau); SimPO sigma(log s(m - g) - log s(-m - g))."
    torch.manual_seed(1)
    pc, pr, rc, rr = torch.randn(4, 16, dtype=torch.float64).unbind()
    h, tau = (pc - rc) - (pr - rr), 0.3
    fwd = dpo_loss(pc, pr, rc, rr, beta=tau, loss_type="ipo")[0]
    swp = dpo_loss(pr, pc, rr, rc, beta=tau, loss_type="ipo")[0]
    torch.testing.assert_close(torch.sigmoid(swp - fwd), torch.sigmoid(2 * h / tau))
    torch.testing.assert_close(lcpo_loss(fwd, swp, torch.ones(16, dtype=torch.float64), form="mixture"), fwd)
    m, g = 2.5 * (pc - pr), 2.5 * 0.4
    fwd, swp = simpo_loss(pc, pr, beta=2.5, gamma_beta_ratio=0.4)[0], simpo_loss(pr, pc, beta=2.5, gamma_beta_ratio=0.4)[0]
    torch.testing.assert_close(swp - fwd, F.logsigmoid(m - g) - F.logsigmoid(-m - g))


def test_loss_gradient_vanishes_at_eta_half_and_points_the_label_way_above():
    pc = torch.zeros(8, requires_grad=True)
    z = torch.zeros(8)
    fwd, swp = dpo_loss(pc, z + 1.0, z, z)[0], dpo_loss(z + 1.0, pc, z, z)[0]
    lcpo_loss(fwd, swp, posterior_correct(swp - fwd, 0.5)).sum().backward()
    torch.testing.assert_close(pc.grad, torch.zeros(8))
    pc.grad = None
    fwd, swp = dpo_loss(pc, z + 1.0, z, z)[0], dpo_loss(z + 1.0, pc, z, z)[0]
    lcpo_loss(fwd, swp, posterior_correct(swp - fwd, 0.9)).sum().backward()
    assert (pc.grad < 0).all()  # descending raises the chosen log-prob


def test_reliability_ema_against_a_loop():
    torch.manual_seed(2)
    for _ in range(30):
        k, n = int(torch.randint(1, 5, ())), int(torch.randint(0, 12, ()))
        eta, w, ann = torch.rand(k, dtype=torch.float64), torch.rand(n, dtype=torch.float64), torch.randint(0, k, (n,))
        rate = float(torch.rand(()))
        want = [(1 - rate) * e + rate * w[ann == i].mean().item() if (ann == i).any() else e for i, e in enumerate(eta.tolist())]
        torch.testing.assert_close(reliability_ema(eta, w, ann, rate=rate), torch.tensor(want, dtype=torch.float64))
    eta = f64([0.9, 0.7])
    assert torch.equal(reliability_ema(eta, f64([0.1, 0.2]), torch.tensor([0, 1]), rate=0.0), eta)
    torch.testing.assert_close(reliability_ema(eta, f64([0.1, 0.3]), torch.tensor([0, 0]), rate=1.0), f64([0.2, 0.7]))
    with pytest.raises(ValueError, match="rate must be"): reliability_ema(eta, f64([0.1]), torch.tensor([0]), rate=-0.1)


def test_flip_auroc_and_annotator_index():
    rng = np.random.default_rng(0)
    w, f = rng.random(40), rng.random(40) < 0.3
    brute = np.mean([(a < b) + 0.5 * (a == b) for a in w[f] for b in w[~f]])
    assert flip_auroc(w, f) == pytest.approx(brute)
    rows = annotator_index([{"annotator_id": "zed"}, {"annotator_id": "amy"}, {}, {"annotator_id": "zed"}])
    assert rows.meta["annotator_names"] == ["amy", "default", "zed"] and [r["annotator"] for r in rows] == [2, 0, 1, 2]


@pytest.fixture(scope="module")
def pair_batch(tiny):
    model, tok = tiny
    rows = [{"prompt": f"Review {i}: the film", "chosen": " was warm and funny." if i % 2 else " moved me deeply.",
             "rejected": " was dull." if i % 3 else " dragged on and on.", "annotator": i % 3} for i in range(6)]
    return on(model, PreferenceCollator(tok.pad_token_id)(list(precompute_ref_logps(preference_dataset(rows, tok), model, tok.pad_token_id))))


def _perturbed(model):
    policy = frozen_copy(model)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for p in policy.parameters(): p.data += 0.02 * torch.randn_like(p)
    return policy


@pytest.mark.parametrize("wrapped,base", [(REDPO(eta0=1.0, beta=0.3), DPO(beta=0.3)),
                                          (REIPO(eta0=1.0, form="mixture"), DPO(loss_type="ipo")),
                                          (RESimPO(eta0=1.0, form="mixture"), SimPO()), (RECPO(eta0=1.0), CPO()),
                                          (RECPO(eta0=1.0, form="mixture", lambda_=0.5), CPO(lambda_=0.5))],
                         ids=["dpo", "ipo-mixture", "simpo-mixture", "cpo", "cpo-mixture"])
def test_eta_one_wrapper_is_the_wrapped_method(wrapped, base, tiny, pair_batch):
    "With eta = 1 every w is 1: the wrapper's loss and shared metrics equal the wrapped method's on the same batch."
    model, _ = tiny
    policy = _perturbed(model)
    got, m = wrapped.loss(pair_batch, policy, model)
    want, mb = base.loss(pair_batch, policy, model)
    torch.testing.assert_close(got, want)
    for key in ("rewards/margins", "logps/chosen") + (("nll_loss",) if "nll_loss" in mb else ()):
        torch.testing.assert_close(m[key], mb[key])
    assert m["lcpo/w_mean"] == 1.0 and m["eta/2"] == 1.0


def test_annotators_get_their_own_eta(tiny, pair_batch):
    model, _ = tiny
    algo, policy = REDPO(eta0=0.8, ema=0.5), _perturbed(model)
    _, m = algo.loss(pair_batch, policy, model)
    assert [m[f"eta/{k}"] for k in range(3)] == [0.8, 0.8, 0.8]  # three annotators seen, each starting at eta0
    _, fwd, swp, _ = algo._pair_losses(pair_batch, policy, model)
    w = posterior_correct(swp - fwd, 0.8)
    algo.after_step()
    ann = pair_batch["annotator"]
    want = [0.5 * 0.8 + 0.5 * w[ann == k].mean().item() for k in range(3)]
    torch.testing.assert_close(algo.eta, torch.tensor(want, dtype=torch.float64))
    assert algo._pending == []


class CrashingREDPO(REDPO):
    "RE-DPO that raises during micro-step `crash_at` (1-based), like a process dying mid-step."
    crash_at = None
    calls = 0
    def loss(self, batch, policy, ref):
        self.calls += 1
        if self.calls == self.crash_at: raise RuntimeError("crash")
        return super().loss(batch, policy, ref)


def _trainer(out, tok, crash_at=None):
    model, _ = tiny_policy(seed=3)
    algo = CrashingREDPO(beta=0.5, ema=0.3)
    algo.crash_at = crash_at
    rows = [{"prompt": f"Review {i}: the film", "chosen": " was warm and funny." if i % 2 else " moved me deeply.",
             "rejected": " was dull." if i % 3 else " dragged on and on.", "annotator": i % 2} for i in range(8)]
    cfg = TrainConfig(out_dir=str(out), max_steps=6, batch_size=4, lr=5e-3, save_every=3, progress=False)
    return Trainer(algo, model, frozen_copy(model), preference_dataset(rows, tok), PreferenceCollator(tok.pad_token_id), cfg)


def test_eta_survives_a_checkpoint_and_resume(tiny, tmp_path):
    _, tok = tiny
    straight = _trainer(tmp_path / "a", tok); straight.train()
    crashed = _trainer(tmp_path / "b", tok, crash_at=5)  # during step 5: the checkpoint of step 3 exists
    with pytest.raises(RuntimeError, match="crash"): crashed.train()
    saved = json.loads((latest_checkpoint(tmp_path / "b") / "trainer_state.json").read_text())["algo_state"]["eta"]
    assert len(saved) == 2 and saved != [0.9, 0.9]  # two annotators, moved from eta0 by three steps
    resumed = _trainer(tmp_path / "b", tok); resumed.train(resume=True)
    assert resumed.algo.eta.tolist() == straight.algo.eta.tolist()
    rows = read_jsonl(tmp_path / "b" / "metrics.jsonl")
    assert [r["eta/1"] for r in rows if "eta/1" in r] == [r["eta/1"] for r in straight.history if "eta/1" in r]


CLI = str(Path(sys.executable).parent / "rlhf-ref")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_cli_trains_lcpo_dpo_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([CLI, "train", "--algo", "lcpo-dpo", "--task", "sentiment", "--model", "tiny", "--n-prompts", "8",
                        "--k", "2", "--batch-size", "2", "--keep-unfinished", "--n-eval-prompts", "4", "--steps", "2",
                        "--eta0", "0.8", "--ema", "0.5", "--out", str(out)], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) == 2 and train[0]["eta/0"] == 0.8 and 0 <= train[0]["lcpo/w_mean"] <= 1
    assert train[1]["eta/0"] == pytest.approx(0.5 * 0.8 + 0.5 * train[0]["lcpo/w_mean"])
    state = json.loads((latest_checkpoint(out) / "trainer_state.json").read_text())
    assert state["algo_state"]["eta"][0] != 0.8
    bad = subprocess.run([CLI, "train", "--algo", "lcpo-dpo", "--task", "sentiment", "--model", "tiny", "--eta0", "0.4"],
                         capture_output=True, text=True, env=ENV, timeout=600, cwd=tmp_path)
    assert bad.returncode == 2 and "eta0 must be" in bad.stderr
