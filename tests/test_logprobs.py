"""Log-prob helpers against naive versions."""
import inspect
import pytest
import torch
from hypothesis import given, settings, strategies as st
from rlhf_ref.logprobs import (selective_logps, seq_logps, response_logps, concatenated_forward, token_kl, kl_estimate,
                               logit_stats, masked_mean)
from rlhf_ref import logprobs
from devices import device_of, on


@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 4), t=st.integers(1, 9), v=st.integers(2, 70), chunk=st.integers(1, 40), seed=st.integers(0, 10**6))
def test_selective_logps_matches_log_softmax(b, t, v, chunk, seed):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(b, t, v, generator=g) * 5).requires_grad_()
    labels = torch.randint(0, v, (b, t), generator=g)
    naive = logits.log_softmax(-1).gather(-1, labels[..., None]).squeeze(-1)
    fast = selective_logps(logits, labels, chunk_size=chunk)
    torch.testing.assert_close(fast, naive, rtol=1e-5, atol=1e-5)
    g1, = torch.autograd.grad(naive.sum(), logits)
    g2, = torch.autograd.grad(fast.sum(), logits)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)


def test_selective_logps_bf16_is_computed_in_fp32():
    logits = torch.randn(2, 3, 50).bfloat16()
    labels = torch.randint(0, 50, (2, 3))
    out = selective_logps(logits, labels)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, logits.float().log_softmax(-1).gather(-1, labels[..., None]).squeeze(-1))


def test_seq_logps_sum_and_mean():
    tl, m = torch.tensor([[-1.0, -3.0, -7.0]]), torch.tensor([[1, 1, 0]])
    assert seq_logps(tl, m).item() == -4.0 and seq_logps(tl, m, average=True).item() == -2.0
    assert masked_mean(tl, torch.zeros_like(m)).item() == 0.0  # empty mask: 0, not nan


@pytest.mark.parametrize("left,right", [(0, 0), (3, 0), (0, 4), (7, 2)])
def test_padding_does_not_change_logps(tiny, left, right):
    model, tok = tiny
    prompt, resp = tok("Once upon a time")["input_ids"], tok(" there was a film.")["input_ids"]
    def lp(left, right):
        ids = on(model, torch.tensor([[tok.pad_token_id] * left + prompt + resp + [tok.pad_token_id] * right]))
        am = on(model, torch.tensor([[0] * left + [1] * (len(prompt) + len(resp)) + [0] * right]))
        return response_logps(model, ids, am, on(model, torch.tensor([[1] * len(resp) + [0] * right])))[0, :len(resp)]
    torch.testing.assert_close(lp(left, right), lp(0, 0), rtol=1e-5, atol=1e-5)


def test_concatenated_forward_equals_separate_forwards(tiny, rows):
    from rlhf_ref.data import preference_dataset, PreferenceCollator, pad_prompt_response
    model, tok = tiny
    ds = list(preference_dataset(rows, tok))
    out = concatenated_forward(model, on(model, PreferenceCollator(tok.pad_token_id)(ds)))
    for side in ("chosen", "rejected"):
        b = on(model, pad_prompt_response([e["prompt_ids"] for e in ds], [e[f"{side}_ids"] for e in ds], tok.pad_token_id))
        sep = seq_logps(response_logps(model, b["input_ids"], b["attention_mask"], b["response_mask"]), b["response_mask"])
        torch.testing.assert_close(out[f"{side}_logps"], sep, rtol=1e-5, atol=1e-4)


def test_response_logps_without_logits_to_keep(tiny):
    "A model whose forward lacks `logits_to_keep` gets the full logits, sliced: same numbers."
    model, tok = tiny
    class NoKeep(torch.nn.Module):
        def __init__(self, m): super().__init__(); self.m = m
        def get_output_embeddings(self): return self.m.get_output_embeddings()
        def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=use_cache)
    ids = on(model, torch.tensor([tok("A short film about a long day.")["input_ids"]]))
    am, rm = torch.ones_like(ids), on(model, torch.tensor([[1, 1, 1, 0]]))
    torch.testing.assert_close(response_logps(NoKeep(model), ids, am, rm), response_logps(model, ids, am, rm))


def test_gathered_head_matches_full_logits_and_gradients(tiny, rows):
    "The head applied to gathered hidden states gives the full-logits values and gradients, padding included."
    from rlhf_ref.data import preference_dataset, PreferenceCollator
    from rlhf_ref.models import frozen_copy
    model, tok = tiny
    a, b = frozen_copy(model).requires_grad_(True), frozen_copy(model).requires_grad_(True)
    batch = on(model, PreferenceCollator(tok.pad_token_id)(list(preference_dataset(rows, tok))))
    mask = batch["response_mask"]; R = mask.shape[1]
    fast = response_logps(a, batch["input_ids"], batch["attention_mask"], mask)
    assert a._rlhf_ref_hidden_ok
    logits = b(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
               position_ids=(batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)).logits[:, -R - 1:-1]
    slow = logits.log_softmax(-1).gather(-1, batch["input_ids"][:, -R:, None]).squeeze(-1) * mask
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    fast.sum().backward(); slow.sum().backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")


@settings(max_examples=40, deadline=None)
@given(v=st.integers(2, 40), chunk=st.integers(1, 10), seed=st.integers(0, 10**6))
def test_token_kl_matches_torch_distributions(v, chunk, seed):
    g = torch.Generator().manual_seed(seed)
    p, q = torch.randn(2, 5, v, generator=g) * 3, torch.randn(2, 5, v, generator=g) * 3
    exact = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=p), torch.distributions.Categorical(logits=q))
    kl = token_kl(p, q, chunk_size=chunk)
    torch.testing.assert_close(kl, exact, rtol=1e-4, atol=1e-5)
    assert (kl >= -1e-6).all()


def test_token_kl_gradient_flows_to_q_only_when_p_is_detached():
    p, q = torch.randn(1, 2, 7), torch.randn(1, 2, 7, requires_grad=True)
    token_kl(p, q).sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_kl_estimators():
    d = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(kl_estimate(d, torch.zeros(13), "k1"), d)
    torch.testing.assert_close(kl_estimate(d, torch.zeros(13), "k2"), 0.5 * d ** 2)
    k3 = kl_estimate(d, torch.zeros(13), "k3")
    torch.testing.assert_close(k3, torch.exp(-d) - 1 + d)
    assert (k3 >= 0).all()
    assert (kl_estimate(d, d, "k3") == 0).all()
    with pytest.raises(ValueError, match="kind"): kl_estimate(d, d, "k5")


def test_logit_stats():
    z = torch.randn(3, 4, 9)
    mean, ent = logit_stats(z, chunk_size=5)
    torch.testing.assert_close(mean, z.mean(-1))
    torch.testing.assert_close(ent, torch.distributions.Categorical(logits=z).entropy())


def _calls(model):
    "Record the input shape of every forward call of `model`; returns (list, hook handle)."
    shapes = []
    return shapes, model.register_forward_pre_hook(lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)


@pytest.fixture
def uneven_batch(tiny):
    "Prompts of different lengths (left padding), responses of different lengths (right padding)."
    from rlhf_ref.data import preference_dataset, PreferenceCollator
    model, tok = tiny
    rows = [dict(prompt="Review " + "very " * i + "short:", chosen=" good" * (1 + i % 3), rejected=" bad film" * (2 - i % 2))
            for i in range(5)]
    return on(model, PreferenceCollator(tok.pad_token_id)(list(preference_dataset(rows, tok))))


def test_shared_prompt_forward_equals_stacked_forward(tiny, uneven_batch):
    "Running each prompt once gives the stacked forward's log-probs, logits and parameter gradients."
    from rlhf_ref.models import frozen_copy
    model, _ = tiny
    a, b = frozen_copy(model).requires_grad_(True), frozen_copy(model).requires_grad_(True)
    R = uneven_batch["response_mask"].shape[1]; P = uneven_batch["input_ids"].shape[1] - R
    assert (uneven_batch["attention_mask"][:, 0] == 0).any()  # some prompts are left-padded
    shapes, hook = _calls(a)
    shared = concatenated_forward(a, uneven_batch, return_logits=True, share_prompt=True)
    hook.remove()
    assert shapes == [(5, P), (10, R)]  # the shared path was taken
    plain = concatenated_forward(b, uneven_batch, return_logits=True, share_prompt=False)
    for k in ("chosen_logps", "rejected_logps", "token_logps", "logits"):
        torch.testing.assert_close(shared[k], plain[k], rtol=1e-5, atol=1e-5, msg=k)
    loss = lambda o: (o["chosen_logps"] - 2 * o["rejected_logps"]).sum()
    loss(shared).backward(); loss(plain).backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):  # fp32 sums in another order: compare relative to the norm
        err = ((p.grad - q.grad).norm() / q.grad.norm()).item()
        assert q.grad.norm() > 0 and err < 1e-5, f"{n}: relative gradient error {err:.2e}"


def test_shared_prompt_finds_the_rows_that_share_a_prompt(tiny, uneven_batch):
    "Rows sharing a prompt in any order (not only row i and n+i) run it once; every row its own prompt: one stacked forward."
    model, _ = tiny
    L, R = uneven_batch["input_ids"].shape[1], uneven_batch["response_mask"].shape[1]
    want = concatenated_forward(model, uneven_batch, share_prompt=False)
    swapped = dict(uneven_batch)  # rejected rows reversed: row i's prompt is now in row 2n-1-i
    for k in ("input_ids", "attention_mask", "response_mask"):
        swapped[k] = torch.cat([uneven_batch[k][:5], uneven_batch[k][5:].flip(0)])
    first, inverse = logprobs._prompt_rows(swapped["input_ids"], swapped["attention_mask"], L - R)
    assert first.tolist() == [0, 1, 2, 3, 4] and inverse.tolist() == [0, 1, 2, 3, 4, 4, 3, 2, 1, 0]
    shapes, hook = _calls(model)
    out = concatenated_forward(model, swapped, share_prompt=True)
    hook.remove()
    assert shapes == [(5, L - R), (10, R)]
    torch.testing.assert_close(out["chosen_logps"], want["chosen_logps"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["rejected_logps"], want["rejected_logps"].flip(0), rtol=1e-5, atol=1e-5)
    distinct = {k: v[:5] for k, v in uneven_batch.items() if torch.is_tensor(v)}  # the chosen rows alone: 5 prompts
    assert logprobs._prompt_rows(distinct["input_ids"], distinct["attention_mask"], L - R) is None
    shapes, hook = _calls(model)
    out = logprobs.response_logps(model, distinct["input_ids"], distinct["attention_mask"], distinct["response_mask"],
                                  share_prompt=True)
    hook.remove()
    assert shapes == [(5, L)]
    torch.testing.assert_close(out, want["token_logps"][:5])


def test_shared_prompt_falls_back_when_it_cannot_share(tiny, uneven_batch):
    "Activation checkpointing, or a DDP-style wrapper: one stacked forward, same numbers."
    from rlhf_ref.models import frozen_copy
    model, _ = tiny
    L = uneven_batch["input_ids"].shape[1]
    want = concatenated_forward(model, uneven_batch, share_prompt=False)

    ckpt = frozen_copy(model).requires_grad_(True)
    ckpt.activation_checkpointing_enable(); ckpt.train()
    shapes, hook = _calls(ckpt)
    out = concatenated_forward(ckpt, uneven_batch, share_prompt=True)
    hook.remove()
    assert shapes == [(10, L)]
    torch.testing.assert_close(out["token_logps"], want["token_logps"], rtol=1e-5, atol=1e-5)

    class Wrapped(torch.nn.Module):  # what DistributedDataParallel looks like from outside: `.module` and a forward
        def __init__(self, m): super().__init__(); self.module = m
        def forward(self, **kw): return self.module(**kw)
    shapes, hook = _calls(model)
    out = concatenated_forward(Wrapped(model), uneven_batch, share_prompt=True)
    hook.remove()
    assert shapes == [(10, L)]
    torch.testing.assert_close(out["token_logps"], want["token_logps"])


def test_shared_prompt_with_either_cache_spelling(tiny, uneven_batch):
    "The shared path is taken whether the model calls its cache `cache` (transformers >= 5.24) or `past_key_values`."
    from rlhf_ref.logprobs import _cache_arg
    from transformers.modeling_outputs import CausalLMOutputWithPast
    model, _ = tiny
    native = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    assert _cache_arg(model) == native
    other = "past_key_values" if native == "cache" else "cache"

    class OtherSpelling(torch.nn.Module):  # the same model behind the other spelling, argument and output alike
        def __init__(self, m): super().__init__(); self.inner = m
        def get_output_embeddings(self): return self.inner.get_output_embeddings()
        def forward(self, input_ids=None, attention_mask=None, position_ids=None, use_cache=None, logits_to_keep=0,
                    output_hidden_states=None, **kw):
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=use_cache, logits_to_keep=logits_to_keep, output_hidden_states=output_hidden_states,
                             **{native: kw.pop(other, None)}, **kw)
            return {"logits": out.logits, "hidden_states": out.hidden_states, other: getattr(out, native)}
    sig = inspect.signature(OtherSpelling.forward)  # give forward an explicit parameter named like the other spelling
    OtherSpelling.forward.__signature__ = sig.replace(parameters=[*list(sig.parameters.values())[:-1],
        inspect.Parameter(other, inspect.Parameter.KEYWORD_ONLY, default=None), list(sig.parameters.values())[-1]])
    wrapped = OtherSpelling(model)
    assert _cache_arg(wrapped) == other
    R = uneven_batch["response_mask"].shape[1]; P = uneven_batch["input_ids"].shape[1] - R
    shapes, hook = _calls(model)
    out = concatenated_forward(_Obj(wrapped), uneven_batch, share_prompt=True)
    hook.remove()
    assert shapes == [(5, P), (10, R)]  # the prompts ran once
    want = concatenated_forward(model, uneven_batch, share_prompt=False)
    torch.testing.assert_close(out["token_logps"], want["token_logps"], rtol=1e-5, atol=1e-5)


def test_auto_shares_the_prompt_by_device_rule(tiny, uneven_batch, monkeypatch):
    "`share_prompt=\"auto\"` (the default) shares when prompt columns >= ratio x response columns for the batch's device."
    model, _ = tiny
    R = uneven_batch["response_mask"].shape[1]; P = uneven_batch["input_ids"].shape[1] - R
    dev = uneven_batch["input_ids"].device.type
    # the shipped rule, on prompts shorter and longer than the responses: the CPU always shares, other devices need P >= R
    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert logprobs._worth_sharing(cpu, 10, 100) and logprobs._worth_sharing(cpu, 100, 10)
    assert not logprobs._worth_sharing(gpu, 10, 100) and logprobs._worth_sharing(gpu, 100, 100)
    for ratio, shared in ((0.0, True), (P / R, True), (P / R + 0.01, False)):  # the threshold, through a real forward
        monkeypatch.setitem(logprobs.SHARE_PROMPT_MIN_RATIO, dev, ratio)
        shapes, hook = _calls(model)
        concatenated_forward(model, uneven_batch)
        hook.remove()
        assert (shapes == [(5, P), (10, R)]) == shared and len(shapes) == (2 if shared else 1), (ratio, shapes)
    monkeypatch.setitem(logprobs.SHARE_PROMPT_MIN_RATIO, dev, 0.0)
    shapes, hook = _calls(model)
    concatenated_forward(model, uneven_batch, share_prompt=False)  # False is never overridden
    hook.remove()
    assert shapes == [(10, P + R)]


def test_head_is_checked_once_per_model(tiny, uneven_batch):
    "The check that head(hidden) gives the model's logits runs on the first call only (it waits for the device)."
    from rlhf_ref.models import frozen_copy
    model = frozen_copy(tiny[0])
    if hasattr(model, "_rlhf_ref_hidden_ok"): del model._rlhf_ref_hidden_ok  # copied from a model already checked
    calls = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, o: calls.append(a[0].shape))
    first = concatenated_forward(model, uneven_batch, share_prompt=False)
    n_first = len(calls)
    second = concatenated_forward(model, uneven_batch, share_prompt=False)
    hook.remove()
    assert model._rlhf_ref_hidden_ok is True
    assert n_first == 2 and len(calls) == 3  # the model's own last-position logits and the check; then the logits only
    torch.testing.assert_close(first["token_logps"], second["token_logps"])


class _Obj:
    "Calls `m`, returning an object whose fields are the dict's keys (as a ModelOutput would)."
    def __init__(self, m): self.m = m
    def __getattr__(self, name): return getattr(self.m, name)
    def __call__(self, **kw):
        from types import SimpleNamespace
        return SimpleNamespace(**self.m(**kw))


@pytest.mark.parametrize("flag", [[], ["find_unused"]])
def test_shared_prompt_under_ddp_matches_one_process(flag, tmp_path):
    "Two gloo processes, DDP, prompt run once in each: the synchronised gradients equal one process's on the whole batch."
    import json, socket, subprocess, sys
    from pathlib import Path
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    script = Path(__file__).with_name("ddp_shared_prompt.py")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                          "--master_port", str(port), str(script), *flag], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
    assert res.returncode == 0 and lines, res.stderr[-3000:]
    out = json.loads(lines[-1])
    P_R = out["calls"]
    assert P_R[0][0] == 2 and P_R[1][0] == 4, P_R  # 2 prompts, then 4 responses: the shared path ran under DDP
    assert out["max_grad"] > 1e-3 and out["max_grad_err"] < 1e-4 * out["max_grad"], out


# --- log-probs from the hidden states through the head, in chunks (custom backward) ---
from rlhf_ref.logprobs import head_logps, head_token_kl, preference_metrics


def _rel(a, b):
    "Relative error of `a` against `b` by norms (fp32 sums in another order differ elementwise near zero)."
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), d=st.integers(1, 12), v=st.integers(2, 60), chunk=st.integers(1, 40), bias=st.booleans(),
       seed=st.integers(0, 10**6))
def test_head_logps_matches_plain_head(n, d, v, chunk, bias, seed):
    "Values, and gradients for the hidden states, the weight and the bias, equal the plain logits -> log_softmax path."
    torch.manual_seed(seed)
    head = torch.nn.Linear(d, v, bias=bias)
    with torch.no_grad(): head.weight.mul_(5)
    h, y, w = torch.randn(n, d, requires_grad=True), torch.randint(0, v, (n,)), torch.randn(n)
    plain = head(h).log_softmax(-1).gather(-1, y[:, None]).squeeze(-1)
    params = [h, head.weight] + ([head.bias] if bias else [])
    want = torch.autograd.grad((plain * w).sum(), params)
    lp, mean, ent = head_logps(h, head, y, chunk_size=chunk, stats=True)
    torch.testing.assert_close(lp, plain, rtol=1e-5, atol=1e-5)
    got = torch.autograd.grad((lp * w).sum(), params)
    for name, a, b in zip(["hidden", "weight", "bias"], got, want):
        # saturated softmaxes (weights x5) make 1 - p cancel in fp32: both paths round it, differently
        assert _rel(a, b) < 1e-4 or (a - b).abs().max() < 1e-6, f"{name}: relative gradient error {_rel(a, b):.2e}"
    z = head(h).detach()
    torch.testing.assert_close(mean, z.mean(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent, torch.distributions.Categorical(logits=z).entropy(), rtol=1e-4, atol=1e-4)
    assert not mean.requires_grad and not ent.requires_grad


def test_head_logps_bf16_and_autocast():
    "bf16 weights: fp32 results close to the bf16 plain path; under CPU autocast the head runs in bf16 in both passes."
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False)
    h, y = torch.randn(20, 16, requires_grad=True), torch.randint(0, 300, (20,))
    hb, headb = h.detach().bfloat16().requires_grad_(), torch.nn.Linear(16, 300, bias=False).bfloat16()
    with torch.no_grad(): headb.weight.copy_(head.weight)
    plain = headb(hb).float().log_softmax(-1).gather(-1, y[:, None]).squeeze(-1)
    lp = head_logps(hb, headb, y, chunk_size=7)
    assert lp.dtype == torch.float32
    torch.testing.assert_close(lp, plain, rtol=1e-4, atol=1e-4)
    g_plain = torch.autograd.grad(plain.sum(), [hb, headb.weight]); g = torch.autograd.grad(lp.sum(), [hb, headb.weight])
    assert g[0].dtype == g[1].dtype == torch.bfloat16
    assert _rel(g[0].float(), g_plain[0].float()) < 2e-2 and _rel(g[1].float(), g_plain[1].float()) < 2e-2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_ac = head(h).float().log_softmax(-1).gather(-1, y[:, None]).squeeze(-1)
        lp_ac = head_logps(h, head, y, chunk_size=7)
    torch.testing.assert_close(lp_ac, plain_ac, rtol=1e-4, atol=1e-4)
    gw_ac, = torch.autograd.grad(lp_ac.sum(), head.weight); gw_plain, = torch.autograd.grad(plain_ac.sum(), head.weight)
    assert gw_ac.dtype == torch.float32 and _rel(gw_ac, gw_plain) < 2e-2


@pytest.mark.parametrize("share_prompt", [True, False])
def test_chunked_path_equals_plain_path_on_a_model(tiny, uneven_batch, share_prompt):
    "The default (hidden states -> chunked head) and the plain logits path: same log-probs, statistics and parameter gradients."
    from rlhf_ref.models import frozen_copy
    model, _ = tiny
    a, b = frozen_copy(model).requires_grad_(True), frozen_copy(model).requires_grad_(True)
    assert a.get_output_embeddings().weight is a.get_input_embeddings().weight  # tied embeddings
    chunked = concatenated_forward(a, uneven_batch, share_prompt=share_prompt, return_stats=True)
    plain = concatenated_forward(b, uneven_batch, share_prompt=share_prompt, return_logits=True, return_stats=True)
    assert "logits" not in chunked and plain["logits"].shape[-1] == b.config.vocab_size
    for k in ("chosen_logps", "rejected_logps", "token_logps", "mean_logit", "entropy"):
        torch.testing.assert_close(chunked[k], plain[k], rtol=1e-5, atol=1e-4, msg=k)
    loss = lambda o: (o["chosen_logps"] - 2 * o["rejected_logps"]).sum()
    loss(chunked).backward(); loss(plain).backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert q.grad.norm() > 0 and _rel(p.grad, q.grad) < 1e-5, f"{n}: relative gradient error {_rel(p.grad, q.grad):.2e}"
    r = torch.ones(5)
    m_chunked = preference_metrics(chunked, r, r)  # statistics from the chunks
    m_plain = preference_metrics({k: v for k, v in plain.items() if k not in ("mean_logit", "entropy")}, r, r)  # from logits
    for k in ("logits/chosen", "logits/rejected", "entropy"):
        torch.testing.assert_close(m_chunked[k], m_plain[k], rtol=1e-5, atol=1e-5, msg=k)


def test_chunked_path_keeps_no_vocabulary_sized_tensor(tiny, uneven_batch):
    "No tensor saved for the backward has the vocabulary as a dimension, except the head's weight, unless logits are asked for."
    model, _ = tiny
    V, weight = model.config.vocab_size, model.get_output_embeddings().weight
    def saved_vocab_sized(**kw):
        found = []
        def pack(t):
            if V in t.shape and t.untyped_storage().data_ptr() != weight.untyped_storage().data_ptr(): found.append(tuple(t.shape))
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t): concatenated_forward(model, uneven_batch, **kw)
        return found
    assert saved_vocab_sized(return_stats=True) == []
    assert saved_vocab_sized(return_logits=True)  # the control: the plain path keeps (N, V) tensors


def test_head_token_kl_matches_token_kl(tiny):
    "KL from hidden states, chunked with recomputation: the values and gradients of `token_kl` on full logits."
    from rlhf_ref.models import frozen_copy
    model, _ = tiny
    policy = frozen_copy(model).requires_grad_(True)
    ref_head, head = frozen_copy(model).get_output_embeddings(), policy.get_output_embeddings()
    torch.manual_seed(0)
    dev = device_of(policy)
    hp, hq = torch.randn(23, head.in_features, device=dev), torch.randn(23, head.in_features, device=dev, requires_grad=True)
    want = token_kl(ref_head(hp), head(hq))
    got = head_token_kl(hp, ref_head, hq, head, chunk_size=5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.autograd.grad(got.sum(), [hq, head.weight]), torch.autograd.grad(want.sum(), [hq, head.weight])):
        assert _rel(a, b) < 1e-5
    out = concatenated_forward(policy, {"input_ids": torch.tensor([[5, 6, 7, 8]]).repeat(2, 1),
                                        "attention_mask": torch.ones(2, 4, dtype=torch.long),
                                        "response_mask": torch.tensor([[1, 1], [1, 0]])}, return_hidden=True)
    assert out["hidden"].shape == (3, head.in_features) and out["head"] is head
