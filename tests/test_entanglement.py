"""Gradient-entanglement diagnostics: per-pair gradients against plain autograd one sequence at a time, the condition's
identities (identical responses, the reference code's denominator), the parameter subset, the logging hook, and the
mitigation helpers."""
import math, tempfile
import numpy as np
import pytest
import torch
from devices import device_of, on
from hypothesis import given, settings, strategies as st
from rlhf_ref.data import PreferenceCollator, preference_dataset, precompute_ref_logps
from rlhf_ref.entanglement import (EntanglementLog, differing_tokens, entanglement_condition, entanglement_metrics,
                                   entanglement_params, first_order_moves, gradient_stats, normalized_pair_loss,
                                   pair_gradients, transitions)

ROWS = [{"prompt": "The film was", "chosen": " warm and funny.", "rejected": " warm and funny."},
        {"prompt": "Honestly, I think the film was", "chosen": " wonderful, and I loved it.", "rejected": " terrible, and I loved it."},
        {"prompt": "Plot:", "chosen": " sparkles.", "rejected": " drags on until the credits roll, then drags on."}]


@pytest.fixture(scope="module")
def setup(tiny):
    policy, tok = tiny
    examples = list(preference_dataset(ROWS, tok))
    return policy, tok, examples, on(policy, PreferenceCollator(tok.pad_token_id)(examples))


def autograd_reference(model, prompt_ids, response_ids, params):
    "Gradient of log pi(response | prompt) by .backward() on one unpadded sequence, full logits, no shared prompt pass."
    model.zero_grad(set_to_none=True)
    ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=device_of(model))
    logp = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].double().log_softmax(-1)
    logp.gather(-1, torch.tensor(response_ids, device=ids.device)[:, None]).sum().backward()
    g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params.values()])
    model.zero_grad(set_to_none=True)
    return g


@pytest.mark.parametrize("select", [dict(), dict(last_blocks=2, head=False), dict(last_blocks=0)])
def test_gradients_match_autograd_one_sequence_at_a_time(setup, select):
    policy, _, examples, batch = setup
    params = entanglement_params(policy, **select)
    for i, e in enumerate(examples):  # padded batch of pairs of different lengths
        g_w, g_l, lw, ll = pair_gradients(policy, batch, params, i)
        torch.testing.assert_close(g_w, autograd_reference(policy, e["prompt_ids"], e["chosen_ids"], params).float(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(g_l, autograd_reference(policy, e["prompt_ids"], e["rejected_ids"], params).float(), rtol=1e-4, atol=1e-5)
    stats = gradient_stats(policy, batch, params)
    g = [pair_gradients(policy, batch, params, i)[:2] for i in range(len(examples))]
    torch.testing.assert_close(stats["inner"], torch.stack([(a.double() @ b.double()).float() for a, b in g]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats["sq_norm_l"], torch.stack([(b.double() @ b.double()).float() for _, b in g]), rtol=1e-5, atol=1e-6)


def test_identical_responses_give_condition_one(setup):
    policy, _, _, batch = setup
    stats = gradient_stats(policy, batch, entanglement_params(policy))
    for form in ("min", "reference"):
        c = entanglement_condition(stats["inner"], stats["sq_norm_w"], stats["sq_norm_l"], form)
        assert abs(c[0].item() - 1) < 1e-6 and abs(c[2].item() - 1) > 0.1  # the distinct pair is not at the threshold
    d_w, d_l = first_order_moves(stats["inner"][:1], stats["sq_norm_w"][:1], stats["sq_norm_l"][:1])
    assert abs(d_w.item()) < 1e-3 * stats["sq_norm_w"][0].item() and abs(d_l.item()) < 1e-3 * stats["sq_norm_w"][0].item()


vec = st.lists(st.floats(-5, 5, allow_nan=False), min_size=3, max_size=3)


@settings(max_examples=300, deadline=None)
@given(a=vec, b=vec)
def test_reference_form_differs_from_min_form_exactly_as_derived(a, b):
    g_w, g_l = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    nw, nl, inner = (g_w @ g_w)[None], (g_l @ g_l)[None], (g_w @ g_l)[None]
    if nw < 1e-3 or nl < 1e-3: return
    c_min, c_ref = entanglement_condition(inner, nw, nl), entanglement_condition(inner, nw, nl, "reference")
    torch.testing.assert_close(c_ref, c_min * torch.minimum(nw, nl) / nw)  # Step 3
    if nw <= nl: torch.testing.assert_close(c_ref, c_min)
    d_w, d_l = first_order_moves(inner, nw, nl)
    if abs(c_ref.item() - 1) > 1e-9: assert (c_ref.item() >= 1) == (d_w.item() < 0)  # reference form: the chosen falls
    if abs(c_min.item() - 1) > 1e-9:
        assert (c_min.item() < 1) == (d_w.item() > 0 and d_l.item() < 0)  # min form: the pair moves apart
        assert not (d_w.item() < 0 and d_l.item() > 0)  # Cauchy-Schwarz: never chosen down and rejected up


def test_constructed_case():
    inner, nw, nl = torch.tensor([3.0]), torch.tensor([4.0]), torch.tensor([2.5])  # g_w = (2, 0), g_l = (1.5, 0.5)
    assert entanglement_condition(inner, nw, nl).item() == pytest.approx(1.2)
    assert entanglement_condition(inner, nw, nl, "reference").item() == pytest.approx(0.75)
    assert [v.item() for v in first_order_moves(inner, nw, nl)] == [1.0, 0.5]  # both rise: only the min form flags it
    m = entanglement_metrics({"inner": inner, "sq_norm_w": nw, "sq_norm_l": nl, "chosen_logps": torch.tensor([-3.0]),
                              "rejected_logps": torch.tensor([-4.0])})
    assert m["grad/violation_frac"] == 1.0 and m["grad/violation_frac_ref"] == 0.0
    assert m["grad/cos"] == pytest.approx(3 / math.sqrt(10)) and m["grad/norm_l"] == pytest.approx(math.sqrt(2.5))


def test_subset_selection_picks_the_stated_parameters(tiny):
    policy, _ = tiny
    p = entanglement_params(policy)
    block = {f"model.layers.1.{n}" for n, _ in policy.model.layers[1].named_parameters()}
    assert set(p) == block | {"model.norm.weight", "lm_head.weight"}
    assert p["lm_head.weight"] is policy.get_output_embeddings().weight is policy.model.embed_tokens.weight  # tied: once
    assert set(entanglement_params(policy, last_blocks=2, head=False)) == {n for n, _ in policy.model.layers.named_parameters(prefix="model.layers")} | {"model.norm.weight"}
    assert list(entanglement_params(policy, last_blocks=0)) == ["lm_head.weight"]
    for kw, msg in [(dict(last_blocks=3), "last_blocks must be in"), (dict(last_blocks=-1), "last_blocks must be in"),
                    (dict(last_blocks=0, head=False), "selection is empty"), (dict(lora=True), "no parameters named lora_")]:
        with pytest.raises(ValueError, match=msg): entanglement_params(policy, **kw)
    with pytest.raises(ValueError, match="form must be one of"): entanglement_condition(torch.ones(1), torch.ones(1), torch.ones(1), "max")


def test_lora_subset_and_its_gradients(setup):
    from peft import LoraConfig, get_peft_model
    from rlhf_ref.models import tiny_policy
    _, _, examples, batch = setup
    model = get_peft_model(tiny_policy()[0], LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    params = entanglement_params(model, lora=True)
    assert len(params) == 8 and all("lora_" in n for n in params)
    g_w, *_ = pair_gradients(model, batch, params, 2)
    torch.testing.assert_close(g_w, autograd_reference(model, examples[2]["prompt_ids"], examples[2]["chosen_ids"], params).float(), rtol=1e-4, atol=1e-5)


def test_logged_along_a_dpo_run(tiny):
    from rlhf_ref.dpo import DPO
    from rlhf_ref.models import frozen_copy, tiny_policy
    from rlhf_ref.train import Trainer, TrainConfig
    policy, tok = tiny_policy(seed=1)
    ref, collate = frozen_copy(policy), PreferenceCollator(tok.pad_token_id)
    ds = preference_dataset(ROWS[1:], tok)
    log = EntanglementLog(collate(list(ds)), also=lambda m: {"extra": 1.0})
    cfg = TrainConfig(out_dir=tempfile.mkdtemp(), max_steps=4, batch_size=2, lr=1e-2, eval_every=2, progress=False)
    history = Trainer(DPO(), policy, ref, precompute_ref_logps(ds, ref, tok.pad_token_id), collate, cfg, eval_fn=log).train()
    evals = [r for r in history if r.get("split") == "eval"]
    assert [r["step"] for r in evals] == [0, 2, 4] and len(log.records) == 3
    assert all(math.isfinite(r["eval/grad/condition"]) and r["eval/extra"] == 1.0 for r in evals)
    assert evals[0]["eval/grad/condition"] != evals[-1]["eval/grad/condition"]  # computed on the trained weights
    assert not any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())  # the hook leaves no .grad
    t = transitions(log.records[0], log.records[1])
    torch.testing.assert_close(t["d_chosen"], log.records[1]["chosen_logps"] - log.records[0]["chosen_logps"])
    flagged = entanglement_condition(log.records[0]["inner"], log.records[0]["sq_norm_w"], log.records[0]["sq_norm_l"], "reference") >= 1
    assert torch.equal(t["predicted_both_fall"], flagged)  # Step 3: the reference form flags exactly the "both fall" pairs


def test_normalized_pair_loss_gradient():
    torch.manual_seed(0)
    theta = torch.randn(4, requires_grad=True)
    A = torch.randn(6, 4)
    lp = torch.log_softmax(A @ theta, -1)
    g_w, g_l = (torch.autograd.grad(lp[k], theta, retain_graph=True)[0] for k in (0, 1))
    loss = normalized_pair_loss(lp[:1], lp[1:2], g_w.norm()[None], g_l.norm()[None], weight=torch.tensor([0.3])).sum()
    (got,) = torch.autograd.grad(loss, theta)
    torch.testing.assert_close(got, -0.3 * (g_w / g_w.norm() - g_l / g_l.norm()))
    d = g_w / g_w.norm() - g_l / g_l.norm()
    assert g_w @ d >= 0 >= g_l @ d


@pytest.mark.parametrize("a, b, ka, kb", [([1, 2, 3, 4], [1, 9, 3, 4], [0, 1, 0, 0], [0, 1, 0, 0]),
                                          ([1, 2, 3], [1, 2, 3], [0, 0, 0], [0, 0, 0]),
                                          ([1, 2], [1, 2, 3], [0, 0], [0, 0, 1]),
                                          ([5, 6], [7, 8, 9], [1, 1], [1, 1, 1]),
                                          ([1, 2, 2], [1, 2], [0, 0, 1], [0, 0])])
def test_differing_tokens(a, b, ka, kb):
    assert differing_tokens(a, b) == (ka, kb)
