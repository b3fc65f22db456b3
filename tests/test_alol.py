"A-LoL: the specification's identities, an independent naive implementation on random inputs, sampling, the object."
import math
import pytest
import torch
from devices import on
from rlhf_ref.alol import (ALoL, VARIANTS, advantage_stats, alol_loss, alol_seq_loss, fit_value_head, priority_indices,
                           precompute_response_ref_logps, prompt_hidden)
from rlhf_ref.logprobs import seq_logps


def naive_alol(p, r, a, clip):
    "One example at a time, in floats, from the formula -A+ * clip(pi/pi_ref) * log pi."
    out = []
    for pi, ri, ai in zip(p.tolist(), r.tolist(), a.tolist()):
        rho = min(max(math.exp(pi - ri), 1 - clip), 1 + clip)
        out.append(-ai * rho * pi if ai > 0 else 0.0)
    return torch.tensor(out)


def random_tokens(seed, B=8, T=6):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(B, T, generator=g) > 0.25).float()
    mask[:, 0] = 1
    return -torch.rand(B, T, generator=g) * 4 * mask, -torch.rand(B, T, generator=g) * 4 * mask, mask, g


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("clip", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_matches_naive_implementation(seed, clip):
    g = torch.Generator().manual_seed(seed)
    p, r, a = -torch.rand(50, generator=g) * 30, -torch.rand(50, generator=g) * 30, torch.randn(50, generator=g)
    torch.testing.assert_close(alol_loss(p, r, a, clip=clip), naive_alol(p, r, a, clip), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_at_initialisation_alol_equals_ref_free_and_seq(seed):
    tok, _, mask, g = random_tokens(seed)
    p, A = seq_logps(tok, mask), torch.rand(8, generator=g) + 0.01
    torch.testing.assert_close(alol_loss(p, p, A), alol_loss(p, p, A, clip=0.0))
    torch.testing.assert_close(alol_seq_loss(tok, tok, mask, A), alol_loss(p, p, A))


@pytest.mark.parametrize("seed", range(5))
def test_ref_free_with_unit_advantage_is_nll(seed):
    tok, ref_tok, mask, _ = random_tokens(seed)
    p, r = seq_logps(tok, mask), seq_logps(ref_tok, mask)
    torch.testing.assert_close(alol_loss(p, r, torch.ones(8), clip=0.0), -p)
    algo_losses = ALoL("a-lol-ref-free").per_example_losses(p, r, torch.ones(8), torch.zeros(8))
    torch.testing.assert_close(algo_losses, ALoL("nll").per_example_losses(p, r, torch.ones(8), torch.zeros(8)))


@pytest.mark.parametrize("variant", ["a-lol", "a-lol-seq", "a-lol-ref-free", "a-lol-kl"])
def test_negative_advantages_contribute_nothing(variant):
    tok, ref_tok, mask, g = random_tokens(3)
    A = torch.tensor([-1.0, 0.0, -0.2, 0.5, -3.0, 0.1, -0.01, 0.0])
    x = tok.clone().requires_grad_(True)
    p = seq_logps(x, mask)
    losses = ALoL(variant, kl_beta=0.3).per_example_losses(p, seq_logps(ref_tok, mask), A, torch.ones(8), x, ref_tok, mask)
    assert (losses[A <= 0] == 0).all() and (losses[A > 0] != 0).all()
    losses.sum().backward()
    assert (x.grad[A <= 0] == 0).all() and (x.grad[A > 0].abs().sum(-1) > 0).all()


def test_weight_carries_no_gradient():
    "d loss / d log pi = -A * rho exactly: with rho differentiated it would be -A * rho * (1 + log pi) inside the clip."
    p = torch.tensor([-2.0, -2.0, -2.0, -2.0], requires_grad=True)
    r = torch.tensor([-2.3, -1.8, -6.0, 3.0])  # ratios inside, inside, above and below the clip range
    A = torch.tensor([0.7, 1.3, 0.2, 0.4])
    alol_loss(p, r, A).sum().backward()
    rho = torch.exp(p.detach() - r).clamp(0.1, 1.9)
    torch.testing.assert_close(p.grad, -A * rho)
    tp = p.detach().clone().view(4, 1).requires_grad_(True)
    alol_seq_loss(tp, r.view(4, 1), torch.ones(4, 1), A).sum().backward()
    torch.testing.assert_close(tp.grad.view(4), -A * rho)


def test_priority_sampling_never_draws_negatives_and_is_proportional():
    A = torch.tensor([0.5, -0.1, 0.0, 0.25, -2.0, 0.25])
    idx = torch.tensor(priority_indices(A, 100_000, seed=1))
    counts = torch.bincount(idx, minlength=6).double()
    assert counts[[1, 2, 4]].sum() == 0
    torch.testing.assert_close(counts / counts.sum(), A.clamp(min=0).double() / A.clamp(min=0).sum(), atol=5e-3, rtol=0)
    assert priority_indices(A, 50, seed=3) == priority_indices(A, 50, seed=3)
    with pytest.raises(ValueError, match="positive advantage"): priority_indices([-1.0, 0.0], 4)
    st = advantage_stats(A)
    assert st["dropped"] == pytest.approx(0.5) and len(st["deciles"]) == 9


@pytest.mark.parametrize("bad", [-0.01, 1.01, math.nan, math.inf])
def test_bad_clip_raises(bad):
    z = torch.zeros(3)
    with pytest.raises(ValueError, match="clip"): alol_loss(z, z, z, clip=bad)
    with pytest.raises(ValueError, match="clip"): ALoL(clip=bad)


def test_value_head_fits_per_prompt_means_and_keeps_best_epoch(tiny):
    model, tok = tiny
    prompts = [tok(p)["input_ids"] for p in ("Pick a colour:", "Name a number between one and ten:")]
    hidden, mask = prompt_hidden(model, prompts * 20, tok.pad_token_id)
    target = torch.tensor([0.8, 0.2] * 20)
    head, hist = fit_value_head(hidden, mask, target, epochs=300, lr=5e-2)
    v = head(hidden[:2], mask[:2])
    torch.testing.assert_close(v, torch.tensor([0.8, 0.2]), atol=0.05, rtol=0)
    best = min(h["val_mse"] for h in hist)
    assert torch.nn.functional.mse_loss(head(hidden, mask), target).item() == pytest.approx(best, abs=1e-4)
    with pytest.raises(ValueError, match="within"): fit_value_head(hidden, mask, target + 1.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_object_loss_finite_with_gradients(tiny, variant):
    from rlhf_ref.models import frozen_copy
    from rlhf_ref.sft import ResponseCollator, response_dataset
    model, tok = tiny
    rows = [dict(prompt=f"Review {i}: the film", response=" was warm." if i % 2 else " dragged on.", reward=0.2 * i,
                 advantage=0.3 * (i - 1)) for i in range(4)]
    ds = precompute_response_ref_logps(response_dataset(rows, tok), model, tok.pad_token_id)
    batch = on(model, ResponseCollator(tok.pad_token_id)(list(ds)))
    policy, ref = frozen_copy(model).requires_grad_(True), frozen_copy(model)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for p in policy.parameters(): p.data += 0.01 * torch.randn_like(p)
    loss, metrics = ALoL(variant, kl_beta=0.1).loss(batch, policy, ref)
    assert loss.dim() == 0 and torch.isfinite(loss) and all(math.isfinite(float(v)) for v in metrics.values())
    loss.backward()
    assert sum(p.grad.norm() for p in policy.parameters() if p.grad is not None) > 0
    no_ref = {k: v for k, v in batch.items() if k != "ref_logps"}
    if variant in ("a-lol", "a-lol-seq", "r-lol", "a-lol-kl"):
        with pytest.raises(ValueError, match="reference"): ALoL(variant).loss(no_ref, policy, None)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    from rlhf_ref.core import cache_dir
    models = cache_dir("models")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "models").symlink_to(models, target_is_directory=True)
    monkeypatch.setenv("RLHF_REF_CACHE", str(tmp_path / "cache"))


def hashed_task(n):
    "Six sentiment prompts, a gold reward that never ties and reads the prompt (a hash of both)."
    import json, zlib
    from rlhf_ref.tasks import Task, sentiment_task
    return Task("toy-alol", "hash", sentiment_task().train_prompts[:n], [],
                lambda p, c: [zlib.crc32((json.dumps(a) + b).encode()) / 2**32 for a, b in zip(p, c)], max_new_tokens=8)


def test_alol_data_holds_out_value_prompts_and_draws_positive_rows(tiny, fresh_cache):
    from rlhf_ref.alol import alol_data
    model, tok = tiny
    task = hashed_task(6)
    ds, collate, info = alol_data(ALoL(), model, tok, task, k=3, draws=40, progress=False)
    base, _, _ = alol_data(ALoL("nll"), model, tok, task, k=3, draws=40, progress=False)
    seq, _, _ = alol_data(ALoL("a-lol-seq"), model, tok, task, k=3, draws=40, progress=False)
    assert len(ds) == 40 and all(a > 0 for a in ds["advantage"]) and "ref_logps" in ds.column_names
    assert "ref_logps" not in seq.column_names and "ref_logps" not in base.column_names  # nll and seq never read the sums
    assert not {4, 5} & set(base["prompt_index"]) and set(base["prompt_index"]) == {0, 1, 2, 3}  # last 2 of 6 fit V
    assert len(base) == info["rows"] == sum(info["sources"].values())
    value = {}  # one V per prompt: reward - advantage is the same for every row of a prompt
    for r, a, i in zip(base["reward"], base["advantage"], base["prompt_index"]): value.setdefault(i, set()).add(round(r - a, 5))
    assert all(len(v) == 1 for v in value.values())
    assert info["dropped"] == pytest.approx(sum(a <= 0 for a in base["advantage"]) / len(base))
    expected = precompute_response_ref_logps(ds.remove_columns("ref_logps"), model, tok.pad_token_id)["ref_logps"]
    assert ds["ref_logps"] == pytest.approx(expected, abs=1e-4)
    again, _, _ = alol_data(ALoL(), model, tok, task, k=3, draws=40, progress=False)
    other, _, _ = alol_data(ALoL(), model, tok, task, k=3, draws=40, train_seed=1, progress=False)
    assert again["advantage"] == ds["advantage"] and other["advantage"] != ds["advantage"]


def test_alol_data_bad_settings(tiny, fresh_cache):
    from rlhf_ref.alol import alol_data
    model, tok = tiny
    with pytest.raises(ValueError, match="value_share must be"): alol_data(ALoL(), model, tok, hashed_task(6), value_share=0.0, progress=False)
    with pytest.raises(ValueError, match="too few"): alol_data(ALoL(), model, tok, hashed_task(2), k=2, progress=False)
