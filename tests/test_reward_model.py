"""Reward models (rlhf_ref.reward_model): the Bradley-Terry identities, pooling, the cached-feature path, evaluation, training."""
import copy, math, tempfile
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import spearmanr
import rlhf_ref.reward_model as rmod
from rlhf_ref.data import PreferenceCollator, preference_dataset
from devices import device_of, on
from rlhf_ref.reward_model import (BradleyTerry, FeatureCollator, LinearHead, MLPHead, RewardModel, as_reward_fn, batch_rewards,
                                   bt_loss, feature_pairs, gold_accuracy, last_token_index, pair_accuracy, pair_rewards,
                                   response_features, reward_metrics, score, spearman, train_head)

rewards = arrays(np.float64, st.integers(1, 12), elements=st.floats(-50, 50, allow_nan=False))
t64 = lambda x: torch.tensor(x, dtype=torch.float64)


@settings(max_examples=100, deadline=None)
@given(r=rewards)
def test_equal_rewards_give_log2(r):
    torch.testing.assert_close(bt_loss(t64(r), t64(r)), torch.full((len(r),), math.log(2), dtype=torch.float64))


@settings(max_examples=100, deadline=None)
@given(data=st.data(), shift=st.floats(-100, 100), margin=st.floats(-3, 3), c=st.floats(0, 1))
def test_against_independent_formula_and_shift_invariance(data, shift, margin, c):
    n = data.draw(st.integers(1, 12))
    rc, rr = (data.draw(arrays(np.float64, n, elements=st.floats(-30, 30))) for _ in range(2))
    ref = np.logaddexp(0.0, -(rc - rr - margin)) + c * (rc + rr) ** 2  # -log sigmoid(x) = log(1 + e^-x)
    np.testing.assert_allclose(bt_loss(t64(rc), t64(rr), margin=margin, center_coef=c).numpy(), ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(bt_loss(t64(rc + shift), t64(rr + shift), margin=margin), bt_loss(t64(rc), t64(rr), margin=margin))
    torch.testing.assert_close(bt_loss(t64(rc), t64(rr), margin=0.0), bt_loss(t64(rc), t64(rr)))
    torch.testing.assert_close(bt_loss(t64(rc), t64(rr), margin=t64(np.zeros(n))), bt_loss(t64(rc), t64(rr)))


def test_centring_breaks_shift_invariance_and_prefers_zero_mean():
    rc, rr = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.5])
    assert not torch.allclose(bt_loss(rc + 5, rr + 5, center_coef=0.1), bt_loss(rc, rr, center_coef=0.1))
    shifts = torch.linspace(-3, 3, 601)
    total = torch.stack([bt_loss(rc + s, rr + s, center_coef=0.1).mean() for s in shifts])
    best = shifts[total.argmin()]
    assert abs(float((rc + best + rr + best).mean())) < 0.02  # the minimising shift centres the rewards


def test_accuracy_counts_ties_wrong_and_metric_names():
    m = reward_metrics(torch.tensor([1.0, 2.0, 3.0, 0.0]), torch.tensor([1.0, 1.0, 4.0, -1.0]))
    assert set(m) == {"accuracy", "margin", "min_reward", "mean_reward", "max_reward"}
    assert m["accuracy"].item() == 0.5 and m["min_reward"].item() == -1.0 and m["max_reward"].item() == 4.0
    assert gold_accuracy([1.0, 1.0], [1.0, 0.0], [2.0, 2.0], [0.0, 0.0]) == 0.5  # the model's tie is wrong


def test_gold_accuracy_ignores_labels_and_gold_ties():
    # the second pair is labelled the wrong way round (its chosen has the lower gold reward): the model is right to disagree
    assert gold_accuracy([2.0, 0.0, 5.0], [1.0, 3.0, 0.0], [1.0, -1.0, 0.3], [0.0, 2.0, 0.3]) == 1.0
    with pytest.raises(ValueError, match="tied in the gold reward"): gold_accuracy([1.0], [0.0], [0.5], [0.5])


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_spearman_matches_scipy(data):
    n = data.draw(st.integers(2, 30))
    x = data.draw(arrays(np.float64, n, elements=st.integers(-5, 5).map(float)))  # many ties
    y = data.draw(arrays(np.float64, n, elements=st.floats(-10, 10)))
    ours, theirs = spearman(x, y), spearmanr(x, y).statistic
    if np.isnan(theirs): assert np.isnan(ours)
    else: assert ours == pytest.approx(theirs, abs=1e-9)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="center_coef must be"): BradleyTerry(center_coef=-0.5)
    with pytest.raises(ValueError, match="center_coef must be"): bt_loss(torch.zeros(2), torch.zeros(2), center_coef=float("inf"))
    with pytest.raises(ValueError, match="dropout must be"): MLPHead(4, dropout=1.0)
    with pytest.raises(ValueError, match="equal length"): spearman([1, 2, 3], [1, 2])
    with pytest.raises(FileNotFoundError, match="no reward model"): RewardModel.from_pretrained(tempfile.mkdtemp())


@pytest.fixture(scope="module")
def rm_and_tok(tiny):
    policy, tok = tiny
    return RewardModel.from_policy(policy, seed=3), tok


PAIRS = [{"prompt": "The film was", "chosen": " wonderful and warm, a delight to watch.", "rejected": " dull."},
         {"prompt": "I saw a very long film yesterday and the ending", "chosen": " moved me.", "rejected": " was a joke."},
         {"prompt": [{"role": "user", "content": "Finish: the plot"}], "chosen": [{"role": "assistant", "content": "works."}],
          "rejected": [{"role": "assistant", "content": "is thin and it never recovers from it."}]}]


def token_batch(rows, tok):
    "Collate rows one dataset at a time: PAIRS mixes standard and conversational rows, which one `datasets.Dataset` cannot hold."
    return PreferenceCollator(tok.pad_token_id)([preference_dataset([r], tok)[0] for r in rows])

def test_last_token_index_matches_the_layout_formula(rm_and_tok):
    _, tok = rm_and_tok
    b = PreferenceCollator(tok.pad_token_id)(list(preference_dataset(PAIRS[:2], tok)))
    L, R = b["input_ids"].shape[1], b["response_mask"].shape[1]
    assert torch.equal(last_token_index(b["attention_mask"]), L - R + b["response_mask"].sum(1) - 1)


@pytest.mark.parametrize("side", ["left", "right"])
def test_pooling_is_invariant_to_padding(rm_and_tok, side):
    rm, tok = rm_and_tok
    seqs = [ex["prompt_ids"] + ex["chosen_ids"] for ex in preference_dataset(PAIRS[:2], tok)]
    L = max(map(len, seqs)) + 3
    pad = lambda s: [tok.pad_token_id] * (L - len(s)) + s if side == "left" else s + [tok.pad_token_id] * (L - len(s))
    mask = lambda s: [0] * (L - len(s)) + [1] * len(s) if side == "left" else [1] * len(s) + [0] * (L - len(s))
    with torch.no_grad():
        padded = rm(on(rm, torch.tensor([pad(s) for s in seqs])), on(rm, torch.tensor([mask(s) for s in seqs])))
        alone = torch.cat([rm(on(rm, torch.tensor([s])), on(rm, torch.ones(1, len(s), dtype=torch.long))) for s in seqs])
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)


def test_mean_pooling_and_middle_layers_from_one_pass(tiny, tmp_path, monkeypatch):
    "Mean pooling averages exactly the response's states of the chosen layer; one pass gives every kind; save/load keeps them."
    policy, tok = tiny
    n = policy.config.num_hidden_layers
    rm = RewardModel.from_policy(policy, seed=3, pooling="mean", layer=1).eval()
    b = token_batch(PAIRS, tok)
    with torch.no_grad():
        states = rm.backbone(input_ids=on(rm, b["input_ids"]), attention_mask=on(rm, b["attention_mask"]),
                             position_ids=on(rm, (b["attention_mask"].cumsum(-1) - 1).clamp(min=0)), output_hidden_states=True).hidden_states
        L, R = b["input_ids"].shape[1], b["response_mask"].shape[1]
        for row in range(b["input_ids"].shape[0]):  # from the formula, row by row
            k = int(b["response_mask"][row].sum())
            want = states[1][row, L - R:L - R + k].mean(0)
            torch.testing.assert_close(rm.features(b["input_ids"][row:row + 1], b["attention_mask"][row:row + 1],
                                                   b["response_mask"][row:row + 1])[0], want, rtol=1e-5, atol=1e-5)
        kinds = [("last", -1), ("mean", -1), ("last", 1), ("mean", 1), ("last", n)]
        sets = rm.feature_sets(b["input_ids"], b["attention_mask"], b["response_mask"], kinds)
        for (p, l), f in zip(kinds, sets):
            one = RewardModel(rm.backbone, rm.head, pooling=p, layer=l)
            torch.testing.assert_close(f, one.features(b["input_ids"], b["attention_mask"], b["response_mask"]))
        torch.testing.assert_close(sets[4], sets[0])  # hidden_states[n] is the final, normed state
        assert not torch.allclose(sets[0], sets[1]) and not torch.allclose(sets[1], sets[3])
        # the token path and the cached-feature path agree for mean pooling too
        monkeypatch.setenv("RLHF_REF_CACHE", str(tmp_path))
        fp = feature_pairs(rm, tok, [dict(r, chosen_reward=1.0, rejected_reward=0.0) for r in PAIRS])
        torch.testing.assert_close(torch.cat(batch_rewards(rm, FeatureCollator()(fp))), torch.cat(batch_rewards(rm, b)), rtol=1e-5, atol=1e-5)
        last = response_features(rm, tok, [PAIRS[0]["prompt"]], [PAIRS[0]["chosen"]], pooling="last", layer=-1)
        torch.testing.assert_close(last[0], sets[0][0], rtol=1e-5, atol=1e-5)
    back = RewardModel.from_pretrained(rm.save_pretrained(tmp_path / "rm"), device=device_of(rm)).eval()
    assert (back.pooling, back.layer) == ("mean", 1)
    with torch.no_grad(): torch.testing.assert_close(back(b["input_ids"], b["attention_mask"], b["response_mask"]),
                                                     rm(b["input_ids"], b["attention_mask"], b["response_mask"]))
    with pytest.raises(ValueError, match="response_mask"): rm(b["input_ids"], b["attention_mask"])
    with pytest.raises(ValueError, match="pooling"): RewardModel(rm.backbone, rm.head, pooling="max")
    with pytest.raises(ValueError, match="layer"): RewardModel(rm.backbone, rm.head, layer=n + 1)


def test_matches_transformers_sequence_classification_on_chat_rows(rm_and_tok):
    from transformers import LlamaForSequenceClassification
    rm, tok = rm_and_tok
    cfg = copy.deepcopy(rm.config); cfg.num_labels = 1
    hf = LlamaForSequenceClassification(cfg).eval().to(device_of(rm))
    hf.model.load_state_dict(rm.backbone.state_dict()); hf.score.weight.data.copy_(rm.head.linear.weight.data)
    ex = preference_dataset(PAIRS[2:], tok)[0]
    for ids in (ex["prompt_ids"] + ex["chosen_ids"], ex["prompt_ids"] + ex["rejected_ids"]):
        x = on(rm, torch.tensor([ids]))
        with torch.no_grad(): assert rm(x, torch.ones_like(x)).item() == pytest.approx(hf(x, attention_mask=torch.ones_like(x)).logits.item(), abs=1e-5)


def test_from_policy_copies_and_freezes(tiny):
    policy, _ = tiny
    rm = RewardModel.from_policy(policy, frozen=True)
    assert not any(p.requires_grad for p in rm.backbone.parameters()) and all(p.requires_grad for p in rm.head.parameters())
    assert {p.data_ptr() for p in rm.parameters()}.isdisjoint(p.data_ptr() for p in policy.parameters())
    shared = RewardModel.from_policy(policy, copy_weights=False)
    assert shared.backbone is policy.base_model


def test_save_load_roundtrip_with_an_mlp_head(tiny, tmp_path):
    policy, tok = tiny
    torch.manual_seed(0)
    rm = RewardModel.from_policy(policy, head=MLPHead(policy.config.hidden_size, width=8, dropout=0.2)).eval()
    b = on(rm, token_batch(PAIRS, tok))
    back = RewardModel.from_pretrained(rm.save_pretrained(tmp_path / "rm"), device=device_of(rm)).eval()
    assert isinstance(back.head, MLPHead) and back.head.kwargs == rm.head.kwargs
    with torch.no_grad(): torch.testing.assert_close(back(b["input_ids"], b["attention_mask"]), rm(b["input_ids"], b["attention_mask"]))


def test_feature_path_equals_token_path_and_is_cached(rm_and_tok, monkeypatch, tmp_path):
    rm, tok = rm_and_tok
    monkeypatch.setenv("RLHF_REF_CACHE", str(tmp_path))
    rows = [dict(r, chosen_reward=1.0, rejected_reward=0.0, flipped=False) for r in PAIRS]
    fp = feature_pairs(rm, tok, rows)
    assert [p["pair_index"] for p in fp] == [0, 1, 2] and fp[0]["flipped"] is False
    batch = FeatureCollator()(fp)
    assert "flipped" not in batch and batch["chosen_reward"].tolist() == [1.0, 1.0, 1.0]
    tokens = token_batch(PAIRS, tok)
    with torch.no_grad():
        torch.testing.assert_close(torch.cat(batch_rewards(rm, batch)), torch.cat(batch_rewards(rm, tokens)), rtol=1e-5, atol=1e-5)
    def boom(*a, **k): raise AssertionError("features were recomputed")
    monkeypatch.setattr(rmod, "encoded_features", boom)
    again = feature_pairs(rm, tok, list(reversed(rows)))  # another dataset made of the same responses: read from the cache
    torch.testing.assert_close(again[0]["chosen_features"], fp[2]["chosen_features"])
    with pytest.raises(AssertionError, match="recomputed"): response_features(rm, tok, ["new prompt"], [" new response"])


def test_concurrent_writers_keep_each_others_features(rm_and_tok, monkeypatch, tmp_path):
    "A store written by another process while this one computes keeps both processes' entries (no lost update)."
    rm, tok = rm_and_tok
    monkeypatch.setenv("RLHF_REF_CACHE", str(tmp_path))
    real = rmod.encoded_features
    def meanwhile(*a, **k):  # after this call has read the (empty) store, another writer fills the same file
        monkeypatch.setattr(rmod, "encoded_features", real)
        response_features(rm, tok, ["other prompt"], [" other response"])
        return real(*a, **k)
    monkeypatch.setattr(rmod, "encoded_features", meanwhile)
    mine = response_features(rm, tok, ["my prompt"], [" my response"])
    stores = list((tmp_path / "features").glob("*.pt"))
    assert len(stores) == 1 and len(torch.load(stores[0])) == 2  # a load-update-save would have kept 1
    def boom(*a, **k): raise AssertionError("features were recomputed")
    monkeypatch.setattr(rmod, "encoded_features", boom)
    torch.testing.assert_close(response_features(rm, tok, ["my prompt"], [" my response"]), mine)
    response_features(rm, tok, ["other prompt"], [" other response"])  # both read back from the cache


def test_as_reward_fn_equals_score_and_needs_reduce_for_several_heads(rm_and_tok):
    rm, tok = rm_and_tok
    prompts = [[{"role": "user", "content": "Finish: the film"}], "plain prompt"]
    fn = as_reward_fn(rm, tok)
    out = fn(prompts, ["was great.", " was bad."])
    expected = score(rm, tok, prompts, [[{"role": "assistant", "content": "was great."}], " was bad."])
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-6, atol=1e-6)
    multi = RewardModel(rm.backbone, LinearHead(rm.config.hidden_size, n_out=3))
    with pytest.raises(ValueError, match="pass `reduce`"): as_reward_fn(multi, tok)(prompts, ["a", "b"])
    assert len(as_reward_fn(multi, tok, reduce=lambda o: o.mean(-1))(prompts, ["a", "b"])) == 2


def linear_world(n, d=16, seed=0, w_seed=1):
    w = torch.randn(d, generator=torch.Generator().manual_seed(w_seed))
    g = torch.Generator().manual_seed(seed)
    rows = []
    for a, b in zip(torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)):
        (c, rc), (r, rr) = sorted([(a, float(a @ w)), (b, float(b @ w))], key=lambda s: -s[1])
        rows.append(dict(chosen_features=c, rejected_features=r, chosen_reward=rc, rejected_reward=rr, pair_index=len(rows)))
    return rows


def test_training_a_head_lowers_held_out_loss():
    train, test = linear_world(300, seed=0), linear_world(500, seed=1)
    torch.manual_seed(0)
    head = LinearHead(16)
    def heldout(model):
        c, r = pair_rewards(model, test)
        return {"loss": bt_loss(c, r).mean().item(), "accuracy": pair_accuracy(model, test)}
    hist = train_head(BradleyTerry(), head, train, steps=150, batch_size=32, lr=3e-2, eval_fn=heldout)
    evals = [h for h in hist if h.get("split") == "eval"]
    assert evals[-1]["eval/loss"] < 0.5 * evals[0]["eval/loss"] and evals[-1]["eval/accuracy"] > 0.9
    train_rows = [h for h in hist if h.get("split") == "train"]
    assert {"accuracy", "margin", "min_reward", "mean_reward", "max_reward", "loss"} <= set(train_rows[-1])


def test_margin_column_is_used_when_present():
    rows = linear_world(8)
    head = LinearHead(16)
    b = FeatureCollator()([dict(r, margin=2.0) for r in rows])
    with torch.no_grad():
        c, r = batch_rewards(head, b)
        assert BradleyTerry().loss(b, head)[0].item() == pytest.approx(bt_loss(c, r, margin=2.0).mean().item())
        assert BradleyTerry(use_margin=False).loss(b, head)[0].item() == pytest.approx(bt_loss(c, r).mean().item())


def test_full_reward_model_learns_a_lexicon(tiny):
    "The whole tiny model, fine-tuned for a few steps on word-level preferences, ranks unseen combinations."
    policy, tok = tiny
    good, bad = ["great", "lovely", "superb"], ["awful", "dull", "bad"]
    mk = lambda p, c, r: {"prompt": p, "chosen": f" It was {c}.", "rejected": f" It was {r}."}
    train = [mk(f"Review {i}:", good[i % 3], bad[(i // 3) % 3]) for i in range(18)]
    test = [mk(f"Another review {i}:", f"{good[i % 3]} and {good[(i + 1) % 3]}", f"{bad[i % 3]} and {bad[(i + 2) % 3]}") for i in range(6)]
    collate = PreferenceCollator(tok.pad_token_id)
    test_batch = collate(list(preference_dataset(test, tok)))
    torch.manual_seed(0)
    rm = RewardModel.from_policy(policy)
    def heldout(model):
        c, r = batch_rewards(model, test_batch)
        return {"loss": bt_loss(c, r).mean().item()}
    from rlhf_ref.train import Trainer, TrainConfig
    cfg = TrainConfig(out_dir=tempfile.mkdtemp(), max_steps=25, batch_size=6, lr=3e-3, progress=False)
    hist = Trainer(BradleyTerry(), rm, None, preference_dataset(train, tok), collate, cfg, eval_fn=heldout).train()
    evals = [h["eval/loss"] for h in hist if h.get("split") == "eval"]
    assert evals[-1] < evals[0] - 0.2


def test_prompt_split_keeps_prompts_apart_and_candidates_are_distinct():
    from rlhf_ref.reward_model import prompt_candidates, prompt_split, standardize
    rows = [dict(prompt=[{"role": "user", "content": f"p{i}"}], chosen=f"a{j}", rejected=f"b{j % 2}", chosen_reward=1.0 + j,
                 rejected_reward=float(j % 2)) for i in range(20) for j in range(3)]
    tr, te = prompt_split(rows, 0.3, seed=1)
    assert len(tr) + len(te) == len(rows) and len(te) == 3 * 6
    assert not {r["prompt"][0]["content"] for r in tr} & {r["prompt"][0]["content"] for r in te}
    assert prompt_split(rows, 0.3, seed=1) == (tr, te) and prompt_split(rows, 0.3, seed=2) != (tr, te)
    with pytest.raises(ValueError, match="test_fraction"): prompt_split(rows, 1.0)
    feats = {s: torch.randn(4) for s in ("a0", "a1", "a2", "b0", "b1")}
    pairs = [dict(chosen_features=feats[r["chosen"]], rejected_features=feats[r["rejected"]]) for r in te]
    cands = prompt_candidates(te, pairs)
    assert len(cands) == 6 and all(f.shape == (5, 4) and sorted(g.tolist()) == [0.0, 1.0, 1.0, 2.0, 3.0] for f, g in cands)
    with pytest.raises(ValueError, match="feature rows"): prompt_candidates(te, pairs[:-1])
    scaled_tr, scaled_te = standardize(pairs, pairs[:2])
    x = torch.stack([r[k] for r in scaled_tr for k in ("chosen_features", "rejected_features")])
    torch.testing.assert_close(x.mean(0), torch.zeros(4), atol=1e-5, rtol=0); torch.testing.assert_close(x.std(0), torch.ones(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(scaled_te[1]["chosen_features"], scaled_tr[1]["chosen_features"])


def test_head_initialisation_scale():
    "Weights N(0, 1/(H+1)) (std 1/sqrt(H+1), lm-human-preferences' `fc_layer`): standardized features give rewards of sd ~1."
    torch.manual_seed(0)
    H = 576
    heads = [LinearHead(H) for _ in range(64)]
    w = torch.cat([h.linear.weight.flatten() for h in heads])
    assert abs(w.std().item() * math.sqrt(H + 1) - 1) < 0.01
    x = torch.randn(256, H)
    with torch.no_grad(): r = torch.stack([h(x) for h in heads])
    assert 0.9 < r.std().item() < 1.1


def test_fit_linear_bt_is_the_penalised_minimiser_newton_agrees():
    "An independent solver (Newton's method in numpy on the same penalised loss) finds the same weights; a warm start too."
    rng = np.random.default_rng(0)
    d = rng.normal(size=(300, 6))
    w_true = np.array([1.5, -1.0, 0.5, 0.0, 0.0, 2.0])
    sign = np.where(rng.random(300) < 1 / (1 + np.exp(-d @ w_true)), 1.0, -1.0)  # Bradley-Terry labels
    d = d * sign[:, None]  # rows oriented chosen - rejected
    pairs = [dict(chosen_features=torch.tensor(x, dtype=torch.float32), rejected_features=torch.zeros(6)) for x in d]
    lam, w = 0.05, np.zeros(6)
    for _ in range(50):  # Newton on mean(log(1 + exp(-d w))) + lam/2 |w|^2
        p = 1 / (1 + np.exp(d @ w))
        grad = -(d * p[:, None]).mean(0) + lam * w
        hess = (d * (p * (1 - p))[:, None]).T @ d / len(d) + lam * np.eye(6)
        w = w - np.linalg.solve(hess, grad)
    got = rmod.fit_linear_bt(pairs, lam).linear.weight.detach()[0].double().numpy()
    np.testing.assert_allclose(got, w, atol=1e-5)
    warm = rmod.fit_linear_bt(pairs, lam, init=rmod.fit_linear_bt(pairs, 1.0)).linear.weight.detach()[0].double().numpy()
    np.testing.assert_allclose(warm, w, atol=1e-5)
    assert np.linalg.norm(rmod.fit_linear_bt(pairs, 1.0).linear.weight.detach().numpy()) < np.linalg.norm(w)
    with pytest.raises(ValueError, match="weight_decay"): rmod.fit_linear_bt(pairs, -0.1)
    with pytest.raises(ValueError, match="no pairs"): rmod.fit_linear_bt([], 0.1)


def test_accuracy_by_gap_partitions_pairs_and_bag_of_words_counts():
    head = LinearHead(1).requires_grad_(False)
    head.linear.weight.fill_(1.0)
    # model reward = the feature; gold gaps 0.5, 0.5, 2, 2, 5; the model gets pairs 0, 2, 3 and 4 right
    feats = [(1.0, 0.0), (0.0, 1.0), (3.0, 1.0), (2.0, 0.0), (1.0, 0.5)]
    gaps = [0.5, 0.5, 2.0, 2.0, 5.0]
    pairs = [dict(chosen_features=torch.tensor([c]), rejected_features=torch.tensor([r]), chosen_reward=g, rejected_reward=0.0)
             for (c, r), g in zip(feats, gaps)]
    out = rmod.accuracy_by_gap(head, pairs, [0.0, 1.0, 3.0, 10.0, 20.0])
    assert [b["n"] for b in out] == [2, 2, 1, 0] and [b["accuracy"] for b in out[:3]] == [0.5, 1.0, 1.0] and math.isnan(out[3]["accuracy"])
    x, vocab = rmod.bag_of_words(["Great, GREAT fun!", "not great", "isn't it fun"], min_count=2)
    assert vocab == {"fun": 0, "great": 1} and x.tolist() == [[1.0, 2.0], [0.0, 1.0], [1.0, 0.0]]
    x2, _ = rmod.bag_of_words(["isn't it fun"], min_count=1)
    assert x2.shape == (1, 3)  # "isn't" stays one word
    rows, v = rmod.bow_pairs([dict(prompt="p", chosen="great fun", rejected=[{"role": "assistant", "content": "dull"}], chosen_reward=1.0,
                                   rejected_reward=0.0)], vocab)
    assert v is vocab and rows[0]["chosen_features"].tolist() == [1.0, 1.0] and rows[0]["rejected_features"].tolist() == [0.0, 0.0]

