"""Preference-data builders: pairing counts, Bradley-Terry labels, exact label noise, tree-structured pairs and their
chain baseline, determinism, caching with provenance, and the shipped file found by the default call."""
import itertools, json, math, zlib
from collections import Counter
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from rlhf_ref.core import cache_dir, data_dir
from rlhf_ref.tasks import Task, sentiment_task
import rlhf_ref.prefdata as pd
from rlhf_ref.prefdata import (Rows, bt_labels, chain_preferences, inject_noise, load_rows, match_budget, onpolicy_preferences,
                               pair_indices, sample_tree, save_rows, scored_samples, tree_preferences, with_annotators)

SHIPPED = "sentiment-b8a6f23e6c98"
SHIPPED_SCORED = "sentiment-70b80a14491c"
MODELS = cache_dir("models")  # the real cache's models, before any test points the cache elsewhere


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    "Every test samples into its own empty cache (sharing the real cache's de-quantised models)."
    root = tmp_path / "cache"
    root.mkdir()
    (root / "models").symlink_to(MODELS, target_is_directory=True)
    monkeypatch.setenv("RLHF_REF_CACHE", str(root))


@pytest.fixture(scope="module")
def prompts():
    return sentiment_task().train_prompts[:3]


def hashed_task(prompts, max_new_tokens=10):
    "A gold reward that never ties (a hash of the text), so that pair counts are exact."
    return Task("toy-hash", "hash reward", prompts, [], lambda p, c: [zlib.crc32(x.encode()) / 2**32 for x in c],
                max_new_tokens=max_new_tokens)


def coarse_task(prompts, max_new_tokens=8):
    "A gold reward with many ties: the completion's length in characters, bucketed by 10."
    return Task("toy-coarse", "coarse reward", prompts, [], lambda p, c: [len(x) // 10 for x in c], max_new_tokens=max_new_tokens)


def flat(leaf):
    return [t for seg in leaf["segments"] for t in seg]


# --- pairing -------------------------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-3, 3), max_size=9))
def test_all_pairs_count_is_k_choose_2_minus_ties(rewards):
    pairs = pair_indices(rewards, "all")
    ties = sum(a == b for a, b in itertools.combinations(rewards, 2))
    assert len(pairs) == math.comb(len(rewards), 2) - ties
    assert len(set(map(frozenset, pairs))) == len(pairs) and all(rewards[i] > rewards[j] for i, j in pairs)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-3, 3), max_size=9), st.integers(1, 10), st.integers(0, 2**31))
def test_random_pairs_are_a_seeded_subset_of_all_pairs(rewards, n, seed):
    every, some = pair_indices(rewards, "all"), pair_indices(rewards, "random", n_pairs=n, rng=np.random.default_rng(seed))
    assert set(some) <= set(every) and len(some) == min(n, len(every)) and len(set(some)) == len(some)
    assert some == pair_indices(rewards, "random", n_pairs=n, rng=np.random.default_rng(seed))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), max_size=9))
def test_best_worst_is_first_max_against_first_min(rewards):
    got = pair_indices(rewards, "best_worst")
    if len(rewards) < 2 or max(rewards) == min(rewards): assert got == []
    else: assert got == [(rewards.index(max(rewards)), rewards.index(min(rewards)))]


def test_bad_pairing_and_temperature_are_named(tiny):
    policy, tok = tiny
    task = hashed_task(["p"])
    with pytest.raises(ValueError, match="pairing must be one of"): onpolicy_preferences(policy, tok, task, pairing="pairs")
    with pytest.raises(ValueError, match="label_temperature must be"): onpolicy_preferences(policy, tok, task, label_temperature=-1.0)


def test_onpolicy_all_pairs_count_and_orientation(tiny, prompts):
    policy, tok = tiny
    task = coarse_task(prompts)
    samples = scored_samples(policy, tok, task, k=5, progress=False)
    rows = onpolicy_preferences(policy, tok, task, k=5, pairing="all", require_finished=False, progress=False)
    expected = 0
    for i in range(len(prompts)):
        r = [s["reward"] for s in samples if s["prompt_index"] == i]
        expected += math.comb(5, 2) - sum(a == b for a, b in itertools.combinations(r, 2))
    assert 0 < len(rows) == expected < len(prompts) * 10  # the coarse reward does tie
    assert all(r["chosen_reward"] > r["rejected_reward"] for r in rows)
    assert rows.meta["pairing"] == "all" and rows.meta["pairs"] == len(rows)


def test_require_finished_pairs_only_finished_samples(tiny, prompts, monkeypatch):
    policy, tok = tiny
    task = hashed_task(prompts)
    real = pd.generate
    def half_finished(*a, **kw):  # the tiny random model almost never samples EOS: mark every other sample finished
        return [{**s, "finished": t % 2 == 0} for t, s in enumerate(real(*a, **kw))]
    monkeypatch.setattr(pd, "generate", half_finished)
    samples = scored_samples(policy, tok, task, k=4, progress=False)
    finished = {json.dumps(s["response"]) for s in samples if s["finished"]}
    rows = onpolicy_preferences(policy, tok, task, k=4, pairing="all", progress=False)
    assert len(rows) == len(prompts)  # 2 finished samples of 4 per prompt, rewards never tie: C(2, 2) = 1 pair each
    assert all(json.dumps(r[side]) in finished for r in rows for side in ("chosen", "rejected"))
    assert len(rows) < len(onpolicy_preferences(policy, tok, task, k=4, pairing="all", require_finished=False, progress=False))


# --- Bradley-Terry labels ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("margin,T", [(0.05, 1.0), (0.2, 0.5), (1.0, 1.0), (1.0, 0.3), (3.0, 2.0)])
def test_bt_label_frequency_matches_sigmoid(margin, T):
    n = 40_000
    p = 1 / (1 + math.exp(-margin / T))
    freq = bt_labels(np.full(n, margin), T, np.random.default_rng(7)).mean()
    assert abs(freq - p) < 4.5 * math.sqrt(p * (1 - p) / n)


def test_bt_labels_on_rows_match_sigmoid_and_keep_rewards_with_responses():
    rng = np.random.default_rng(0)
    margins = rng.uniform(0, 2, 5000)
    cands = [("p", {"": f"good{t}", "_reward": m}, {"": f"bad{t}", "_reward": 0.0}, {"k": t}) for t, m in enumerate(margins)]
    rows = pd._label(cands, 0.7, seed=3)
    kept = np.array([r["chosen"].startswith("good") for r in rows])
    assert all((r["chosen_reward"] > r["rejected_reward"]) == k for r, k in zip(rows, kept))
    assert [r["k"] for r in rows] == list(range(5000))
    p = 1 / (1 + np.exp(-margins / 0.7))
    assert abs(kept.sum() - p.sum()) < 4.5 * math.sqrt((p * (1 - p)).sum())


def test_bt_temperature_to_zero_is_the_gold_order(tiny, prompts):
    policy, tok = tiny
    task = hashed_task(prompts)
    kw = dict(k=4, pairing="all", require_finished=False, progress=False)
    gold = onpolicy_preferences(policy, tok, task, **kw)
    cold = onpolicy_preferences(policy, tok, task, label_temperature=1e-12, **kw)
    hot = onpolicy_preferences(policy, tok, task, label_temperature=10.0, **kw)
    assert gold and list(cold) == list(gold) and "label_temperature" not in gold.meta and cold.meta["label_temperature"] == 1e-12
    assert list(hot) != list(gold) and any(r["chosen_reward"] < r["rejected_reward"] for r in hot)
    assert {frozenset((json.dumps(r["chosen"]), json.dumps(r["rejected"]))) for r in hot} == \
           {frozenset((json.dumps(r["chosen"]), json.dumps(r["rejected"]))) for r in gold}  # same pairs, other labels


# --- determinism and caching ---------------------------------------------------------------------------------------

def test_deterministic_given_the_seed(tiny, prompts):
    policy, tok = tiny
    task = hashed_task(prompts)
    kw = dict(k=4, pairing="random", pairs_per_prompt=2, label_temperature=0.5, require_finished=False, progress=False, cache=False)
    a, b = onpolicy_preferences(policy, tok, task, seed=3, **kw), onpolicy_preferences(policy, tok, task, seed=3, **kw)
    assert list(a) == list(b) and len(a) == 2 * len(prompts)
    assert list(onpolicy_preferences(policy, tok, task, seed=4, **kw)) != list(a)


def test_cache_round_trip_keeps_the_provenance(tiny, prompts):
    policy, tok = tiny
    task = hashed_task(prompts)
    first = onpolicy_preferences(policy, tok, task, k=3, require_finished=False, progress=False)
    pd_generate, pd.generate = pd.generate, None  # from here on, sampling fails
    try:
        again = onpolicy_preferences(policy, tok, task, k=3, require_finished=False, progress=False)
        other = onpolicy_preferences(policy, tok, task, k=3, require_finished=False, pairing="all", progress=False)  # cached samples
    finally: pd.generate = pd_generate
    assert list(again) == list(first) and again.meta == first.meta
    assert other.meta["pairing"] == "all" and len(other) == 3 * len(prompts)


def test_rows_save_and_load(tmp_path):
    rows = Rows([{"prompt": "p", "chosen": "a", "rejected": "b", "x": [1, 2]}], {"seed": 1})
    back = load_rows(save_rows(rows, tmp_path / "r.jsonl"))
    assert isinstance(back, Rows) and back == rows and back.meta == {"seed": 1}
    (tmp_path / "r.json").unlink()
    assert load_rows(tmp_path / "r.jsonl").meta == {}


def test_default_provenance_key_is_unchanged():
    meta = json.loads((data_dir() / "preferences" / f"{SHIPPED}.json").read_text())
    core = {k: v for k, v in meta.items() if k not in ("pairs", "made_by")}
    assert pd._provenance_key(core) == SHIPPED.split("-")[1]
    assert set(core) == {"task", "prompts", "model", "k", "seed", "temperature", "top_p", "max_new_tokens", "require_finished",
                         "pairing", "batch_size"}


def test_shipped_pairs_are_found_by_the_default_call_without_sampling(monkeypatch):
    from rlhf_ref.models import embedded_model_dir, load_policy
    if (embedded_model_dir() / "RANDOM_WEIGHTS").exists(): pytest.skip("the embedded model is a random-weight stand-in")
    policy, tok = load_policy(device="cpu")  # fp32, as the pairs were made: a bf16 copy on CUDA has another fingerprint
    def no_sampling(*a, **kw): raise AssertionError("the default call sampled")
    monkeypatch.setattr(pd, "generate", no_sampling)
    rows = onpolicy_preferences(policy, tok, sentiment_task(), progress=False)
    assert len(rows) == 221 and rows.meta["pairs"] == 221 and "made_by" in rows.meta
    assert list(rows) == load_rows(data_dir() / "preferences" / f"{SHIPPED}.jsonl")


# --- label noise ---------------------------------------------------------------------------------------------------

def pairs_of(n):
    return Rows([{"prompt": f"p{i}", "chosen": f"good{i}", "rejected": f"bad{i}", "chosen_reward": 1.0, "rejected_reward": 0.0}
                 for i in range(n)], {"source": "test"})


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300), st.floats(0, 1), st.integers(0, 1000))
def test_noise_rate_is_honoured_exactly_and_recorded(n, rate, seed):
    clean = pairs_of(n)
    noisy = inject_noise(clean, rate, seed=seed)
    flipped = [r["flipped"] for r in noisy]
    assert sum(flipped) == round(rate * n) == noisy.meta["flips"]
    assert noisy.meta["noise_rate"] == rate and noisy.meta["noise_seed"] == seed and noisy.meta["source"] == "test"
    for c, r, f in zip(clean, noisy, flipped):
        assert (r["chosen"], r["rejected"], r["chosen_reward"]) == ((c["rejected"], c["chosen"], 0.0) if f else (c["chosen"], c["rejected"], 1.0))
        assert r["prompt"] == c["prompt"]
    assert "flipped" not in clean[0] if n else True  # the clean rows are not modified


def test_noise_is_seeded_and_refuses_to_stack():
    clean = pairs_of(100)
    assert inject_noise(clean, 0.3, seed=1) == inject_noise(clean, 0.3, seed=1)
    assert inject_noise(clean, 0.3, seed=1) != inject_noise(clean, 0.3, seed=2)
    with pytest.raises(ValueError, match="already carry injected noise"): inject_noise(inject_noise(clean, 0.1), 0.1)
    with pytest.raises(ValueError, match="rate must be"): inject_noise(clean, -0.1)
    assert {r["annotator_id"] for r in inject_noise(clean, 0.2, annotator_id="a1")} == {"a1"}


def test_swap_moves_every_field_of_a_response():
    row = {"prompt": "p", "chosen": "a", "rejected": "b", "chosen_reward": 1, "rejected_reward": 0, "chosen_path": [0, 1],
           "rejected_path": [1, 0], "tree_id": 3}
    swapped = pd._swap(row)
    assert swapped == {"prompt": "p", "chosen": "b", "rejected": "a", "chosen_reward": 0, "rejected_reward": 1,
                       "chosen_path": [1, 0], "rejected_path": [0, 1], "tree_id": 3}
    assert list(swapped) == list(row) and pd._swap(swapped) == row


@pytest.mark.parametrize("n", [0, 1, 7, 221])
def test_annotators_flip_their_share_at_their_rate(n):
    out = with_annotators(pairs_of(n), {"clean": 0.0, "noisy": 0.4, "worst": 0.9}, seed=2)
    info = out.meta["annotators"]
    assert sorted(info[a]["rows"] for a in info) in ([n // 3, n // 3, n // 3], sorted([n // 3 + (i < n % 3) for i in range(3)]))
    for name, rate in {"clean": 0.0, "noisy": 0.4, "worst": 0.9}.items():
        mine = [r for r in out if r["annotator_id"] == name]
        assert len(mine) == info[name]["rows"] and sum(r["flipped"] for r in mine) == round(rate * len(mine)) == info[name]["flips"]
    assert [r["prompt"] for r in out] == [f"p{i}" for i in range(n)] and out.meta["flips"] == sum(r["flipped"] for r in out)
    with pytest.raises(ValueError, match="at least one annotator"): with_annotators(pairs_of(3), {})


# --- trees and chains ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth,branching", [(2, 2), (1, 3), (3, 2)])
def test_tree_has_b_to_the_d_leaves_and_shares_exactly_the_prefix_to_the_lca(tiny, prompts, depth, branching):
    policy, tok = tiny
    seg = 3
    leaves = sample_tree(policy, tok, prompts[:2], branching=(branching,) * depth, segment_tokens=seg, max_new_tokens=seg * depth + 2)
    for i in range(2):
        mine = [l for l in leaves if l["prompt_index"] == i]
        assert len(mine) == branching ** depth
        assert sorted(tuple(l["path"]) for l in mine) == list(itertools.product(range(branching), repeat=depth))
        assert all(len(s) == seg for l in mine for s in l["segments"][:-1]) and all(1 <= len(l["segments"][-1]) <= seg + 2 for l in mine)
        for a, b in itertools.combinations(mine, 2):
            d = pd._lca_depth(a["path"], b["path"])
            assert a["segments"][:d] == b["segments"][:d] and a["segments"][d] != b["segments"][d]
            first_diff = next(t for t, (x, y) in enumerate(zip(flat(a), flat(b))) if x != y)
            assert first_diff == seg * d


def test_tree_rows_are_the_leaves_with_their_lca(tiny, prompts):
    policy, tok = tiny
    task = hashed_task(prompts, max_new_tokens=10)
    rows = tree_preferences(policy, tok, task, segment_tokens=4)
    leaves = sample_tree(policy, tok, prompts, branching=(2, 2), segment_tokens=4, max_new_tokens=10)  # the same draws
    by = {(l["prompt_index"], tuple(l["path"])): l for l in leaves}
    assert Counter(r["tree_id"] for r in rows) == {i: math.comb(4, 2) for i in range(len(prompts))}
    assert Counter(r["lca_depth"] for r in rows) == {0: 4 * len(prompts), 1: 2 * len(prompts)}
    for r in rows:
        c, j = by[r["tree_id"], tuple(r["chosen_path"])], by[r["tree_id"], tuple(r["rejected_path"])]
        assert r["chosen"][0]["content"] == c["completion"] and r["rejected"][0]["content"] == j["completion"]
        assert r["lca_depth"] == pd._lca_depth(c["path"], j["path"]) and c["segments"][:r["lca_depth"]] == j["segments"][:r["lca_depth"]]
        assert r["chosen_reward"] > r["rejected_reward"]
    assert rows.meta["builder"] == "tree" and rows.meta["branching"] == [2, 2] and rows.meta["pairs"] == len(rows)


def test_chain_pairs_are_independent(tiny, prompts):
    policy, tok = tiny
    rows = chain_preferences(policy, tok, hashed_task(prompts), segment_tokens=4, pairs_per_prompt=3)
    assert len(rows) == 3 * len(prompts) and {r["lca_depth"] for r in rows} == {0}
    used = [(r["tree_id"], tuple(r[f"{side}_path"])) for r in rows for side in ("chosen", "rejected")]
    assert len(used) == len(set(used))  # every response is in one pair only
    assert rows.meta["builder"] == "chain" and rows.meta["branching"] == [6, 1]


def test_equal_pair_budgets_between_tree_and_chain(tiny, prompts):
    policy, tok = tiny
    task = coarse_task(prompts, max_new_tokens=10)  # ties: the two builders keep different numbers of pairs
    tree = tree_preferences(policy, tok, task, segment_tokens=4)
    chain = chain_preferences(policy, tok, task, segment_tokens=4)
    a, b = match_budget(tree, chain, seed=1)
    count = lambda rows: Counter(r["tree_id"] for r in rows)
    assert count(a) == count(b) and len(a) == len(b) > 0
    assert all(count(a)[t] == min(count(tree)[t], count(chain)[t]) for t in count(a))
    assert all(r in tree for r in a) and all(r in chain for r in b) and a.meta["budget_matched"]
    assert match_budget(tree, chain, seed=1) == (a, b)
    # a budget set directly: m pairs per tree against m independent pairs per prompt, with a reward that never ties
    t2 = tree_preferences(policy, tok, hashed_task(prompts), segment_tokens=4, pairs_per_tree=2)
    c2 = chain_preferences(policy, tok, hashed_task(prompts), segment_tokens=4, pairs_per_prompt=2)
    assert count(t2) == count(c2) == {i: 2 for i in range(len(prompts))}


def test_tree_is_deterministic_and_cached(tiny, prompts):
    policy, tok = tiny
    task = hashed_task(prompts)
    a = tree_preferences(policy, tok, task, segment_tokens=4, cache=False)
    assert list(tree_preferences(policy, tok, task, segment_tokens=4, cache=False)) == list(a)
    assert list(tree_preferences(policy, tok, task, segment_tokens=4, seed=1, cache=False)) != list(a)
    cached = tree_preferences(policy, tok, task, segment_tokens=4)
    pd_sample, pd.sample_tree = pd.sample_tree, None  # the leaves are cached: other pair rules must not sample
    try: sub = tree_preferences(policy, tok, task, segment_tokens=4, pairs_per_tree=1, label_temperature=0.3)
    finally: pd.sample_tree = pd_sample
    assert list(cached) == list(a) and len(sub) == len(prompts) and sub.meta["label_temperature"] == 0.3


def test_tree_rejects_impossible_shapes(tiny, prompts):
    policy, tok = tiny
    with pytest.raises(ValueError, match="leaves no tokens"): sample_tree(policy, tok, prompts, branching=(2, 2, 2), segment_tokens=8, max_new_tokens=16)
    with pytest.raises(ValueError, match="temperature must be"): sample_tree(policy, tok, prompts, temperature=0.0)


# --- the scored offline set (samples + deliberately bad responses) -------------------------------------------------

def prompt_aware_task(prompts, max_new_tokens=10):
    "A gold reward that reads the prompt too (a hash of prompt + completion): a shuffled response scores differently."
    return Task("toy-aware", "hash of prompt and completion", prompts, [],
                lambda p, c: [zlib.crc32((json.dumps(a) + b).encode()) / 2**32 for a, b in zip(p, c)], max_new_tokens=max_new_tokens)


@pytest.mark.parametrize("shuffled,repetition", [(0.1, 0.1), (0.0, 0.25), (0.3, 0.0), (0.2, 0.4), (0.0, 0.0)])
def test_scored_shares_and_sources(tiny, shuffled, repetition):
    policy, tok = tiny
    task = prompt_aware_task(sentiment_task().train_prompts[:5])
    rows = pd.scored_responses(policy, tok, task, k=4, shuffled=shuffled, repetition=repetition, progress=False)
    counts = Counter(r["source"] for r in rows)
    bad = shuffled + repetition
    assert counts["sample"] == 20 and counts["shuffled"] == round(shuffled * 20 / (1 - bad))
    assert counts["repetition"] == round(repetition * 20 / (1 - bad)) and set(counts) <= set(pd.SOURCES)
    assert rows.meta["sources"] == {s: counts[s] for s in pd.SOURCES} and rows.meta["rows"] == len(rows)
    for s, share in (("shuffled", shuffled), ("repetition", repetition)):
        assert abs(counts[s] / len(rows) - share) <= 1.5 / len(rows)
    assert [r["prompt_index"] for r in rows] == sorted(r["prompt_index"] for r in rows)


def test_scored_bad_rows_are_what_they_say(tiny):
    policy, tok = tiny
    task = prompt_aware_task(sentiment_task().train_prompts[:4])
    samples = scored_samples(policy, tok, task, k=3, progress=False)
    rows = pd.scored_responses(policy, tok, task, k=3, shuffled=0.25, repetition=0.25, repeat_tokens=2, progress=False)
    assert [dict(s, source="sample") for s in samples] == [r for r in rows if r["source"] == "sample"]
    text = lambda r: r["response"][-1]["content"]
    for r in rows:
        assert r["reward"] == task.reward([r["prompt"]], [text(r)])[0]  # scored on the prompt it is attached to
        assert r["prompt"] == task.train_prompts[r["prompt_index"]]
        if r["source"] == "shuffled":
            donors = [s for s in samples if text(s) == text(r)]
            assert donors and all(s["prompt_index"] != r["prompt_index"] for s in donors)
        if r["source"] == "repetition":
            own = [tok(text(s), add_special_tokens=False)["input_ids"][:2] for s in samples if s["prompt_index"] == r["prompt_index"]]
            assert not r["finished"] and any(text(r) == tok.decode((o * 10)[:10]) for o in own)  # 10: the task's budget
    shuffled = [r for r in rows if r["source"] == "shuffled"]
    assert len({r["prompt_index"] for r in shuffled}) == min(len(shuffled), 4)  # each prompt once while prompts suffice


def test_repetition_text_repeats_the_first_tokens(tiny):
    _, tok = tiny
    ids = tok(" the film was good", add_special_tokens=False)["input_ids"]
    out = pd.repetition_text(tok, " the film was good", 2, 7)
    assert tok(out, add_special_tokens=False)["input_ids"] == (ids[:2] * 4)[:7]
    with pytest.raises(ValueError, match="no tokens"): pd.repetition_text(tok, "", 2, 7)


def test_scored_is_deterministic_cached_and_reuses_samples(tiny, monkeypatch):
    policy, tok = tiny
    task = prompt_aware_task(sentiment_task().train_prompts[:4])
    a = pd.scored_responses(policy, tok, task, k=3, seed=2, cache=False, progress=False)
    assert list(pd.scored_responses(policy, tok, task, k=3, seed=2, cache=False, progress=False)) == list(a)
    assert list(pd.scored_responses(policy, tok, task, k=3, seed=3, cache=False, progress=False)) != list(a)
    scored_samples(policy, tok, task, k=3, seed=2, progress=False)  # cache the samples only
    monkeypatch.setattr(pd, "generate", None)  # from here on, sampling fails
    first = pd.scored_responses(policy, tok, task, k=3, seed=2, progress=False)
    other = pd.scored_responses(policy, tok, task, k=3, seed=2, shuffled=0.3, progress=False)  # new bad rows, same samples
    again = pd.scored_responses(policy, tok, task, k=3, seed=2, progress=False)
    assert list(first) == list(a) and list(again) == list(first) and again.meta == first.meta
    assert other.meta["sources"]["shuffled"] > first.meta["sources"]["shuffled"]
    assert set(first.meta) == {"task", "prompts", "model", "k", "seed", "temperature", "top_p", "batch_size", "max_new_tokens",
                               "shuffled", "repetition", "repeat_tokens", "sources", "rows"}
    assert list((cache_dir("scored")).glob("toy-aware-*.jsonl"))


@pytest.mark.parametrize("kw,msg", [(dict(shuffled=-0.1), "shuffled must be"), (dict(repetition=float("nan")), "repetition must be"),
                                    (dict(shuffled=1.0, repetition=0.0), "below 1"), (dict(shuffled=0.5, repetition=0.5), "below 1"),
                                    (dict(repeat_tokens=0), "repeat_tokens must be"), (dict(repeat_tokens=1.5), "repeat_tokens must be"),
                                    (dict(repeat_tokens=True), "repeat_tokens must be")])
def test_scored_bad_settings_are_named(tiny, kw, msg):
    policy, tok = tiny
    with pytest.raises(ValueError, match=msg): pd.scored_responses(policy, tok, hashed_task(["p", "q"]), progress=False, **kw)


def test_shuffled_needs_two_prompts(tiny):
    policy, tok = tiny
    with pytest.raises(ValueError, match="at least 2 prompts"):
        pd.scored_responses(policy, tok, hashed_task(["p"]), k=4, shuffled=0.3, progress=False)
    rows = pd.scored_responses(policy, tok, hashed_task(["p"]), k=4, shuffled=0.0, repetition=0.3, progress=False)
    assert Counter(r["source"] for r in rows) == {"sample": 4, "repetition": 2}  # round(0.3 * 4 / 0.7)


def test_shipped_scored_set_is_found_without_sampling(monkeypatch):
    from rlhf_ref.models import embedded_model_dir, load_policy
    rows = load_rows(data_dir() / "scored" / f"{SHIPPED_SCORED}.jsonl")
    core = {k: v for k, v in rows.meta.items() if k not in ("rows", "sources", "made_by")}
    assert pd._provenance_key(core) == SHIPPED_SCORED.split("-")[1] and rows.meta["rows"] == len(rows) == 320
    assert rows.meta["sources"] == dict(Counter(r["source"] for r in rows)) == {"sample": 256, "shuffled": 32, "repetition": 32}
    if (embedded_model_dir() / "RANDOM_WEIGHTS").exists(): pytest.skip("the embedded model is a random-weight stand-in")
    policy, tok = load_policy(device="cpu")
    def no_sampling(*a, **kw): raise AssertionError("the default call sampled")
    monkeypatch.setattr(pd, "generate", no_sampling)
    assert list(pd.scored_responses(policy, tok, sentiment_task(), n_prompts=64, progress=False)) == list(rows)
    assert list(scored_samples(policy, tok, sentiment_task(), n_prompts=64, progress=False)) == \
        [{k: v for k, v in r.items() if k != "source"} for r in rows if r["source"] == "sample"]


from rlhf_ref.prefdata import sampled_pairs  # noqa: E402


def test_sampled_pairs_pairs_every_distinct_reward_within_a_prompt():
    samples = [dict(prompt_index=p, prompt=f"p{p}", response=f"r{p}{j}", reward=r, finished=f)
               for p, rs, fs in [(0, [0.5, 0.1, 0.5, 0.9], [True, True, True, False]), (1, [0.2, 0.3, 0.3], [True, True, True])]
               for j, (r, f) in enumerate(zip(rs, fs))]
    rows = sampled_pairs(samples)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("r00", "r01"), ("r02", "r01"), ("r11", "r10"), ("r12", "r10")]
    assert all(r["chosen_reward"] > r["rejected_reward"] and r["prompt"] == f"p{r['chosen'][1]}" for r in rows)
    assert len(sampled_pairs(samples, require_finished=False)) == 5 + 2  # prompt 0: 6 pairs minus the tie; prompt 1: 2
