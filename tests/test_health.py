"""The health-simplification study's report helpers (rlhf_ref.health): pure functions over stored results."""
import math
import pytest
from rlhf_ref.health import _cell, side_by_side, study_table, study_task, N_VAL


def result(seed, sari, fkgl=8.0, outputs=("a", "b")):
    return dict(seed=seed, sari=sari, fkgl=fkgl, outputs=[dict(source=f"src {i}", output=o) for i, o in enumerate(outputs)])


def test_cell_mean_interval_and_missing():
    assert _cell([2.0]) == "2.00"  # one seed: no interval
    assert _cell([1.0, 3.0]).startswith("2.00 ± ") and float(_cell([1.0, 3.0]).split("± ")[1]) > 2  # t(1 df) is wide
    assert _cell([1.0, math.nan]) == "n/a"


def test_study_table_rows_and_columns():
    table = study_table({"sft": [result(0, 40.0), result(1, 42.0)], "ppo (x)": [result(0, 30.0, math.nan)]},
                        columns=("sari", "fkgl"))
    lines = table.splitlines()
    assert lines[0] == "| system | seeds | sari | fkgl |" and lines[1] == "|---|---|---|---|"
    assert lines[2].startswith("| sft | 2 | 41.00 ± ") and lines[3] == "| ppo (x) | 1 | 30.00 | n/a |"


def test_side_by_side_picks_the_seed_and_marks_empty_outputs():
    systems = {"a": [result(1, 0, outputs=("one", "two")), result(0, 0, outputs=("zero", ""))], "b": [result(5, 0)]}
    text = side_by_side(systems, [1], seed=0)
    assert "*source:* src 1" in text and "- *a:* (empty)" in text and "- *b:* b" in text  # b has no seed 0: its first run


@pytest.mark.parametrize("reward", ["neg-fkgl", "classifier-sim"])
def test_study_task_scores_by_the_reward_and_keeps_test_out(reward):
    task = study_task(reward)
    assert task.name == f"simplify[{reward}]" and len(task.eval_prompts) == N_VAL
    test = {m["content"] for p in study_task().eval_prompts for m in p}
    from rlhf_ref.simplify import load_simplify
    assert not any(r["original"] in t for r in load_simplify("test") for t in test)


def test_registry_lookup_survives_a_notebook_copy_of_the_class(monkeypatch):
    "nbdev-test runs notebooks in one process: a notebook's own `SFT` re-registered under 'sft' must not hide the package's."
    import dataclasses
    from rlhf_ref import algos, sft
    from rlhf_ref.pipeline import registered_kind
    algos.algorithms()

    @dataclasses.dataclass
    class SFT(sft.SFT): pass  # what a notebook's cells define and register

    monkeypatch.setitem(algos.ALGOS, "sft", dataclasses.replace(algos.ALGOS["sft"], cls=SFT))
    assert registered_kind(sft.SFT()) == "responses" and registered_kind(SFT()) == "responses"


def _scored(seed, pairs):
    "A `test_outputs`-like result: (source, output, per-output sari reward) triples."
    return dict(seed=seed, outputs=[dict(source=x, output=y, sari=s) for x, y, s in pairs])


def test_length_controls_split_bleu_into_brevity_and_precision():
    from rlhf_ref.health import length_controls
    from rlhf_ref.simplify import simplify_references
    refs = list(simplify_references().items())[:5]
    same = length_controls(_scored(0, [(x, y, 0.0) for x, y in refs]))
    assert same["bleu_bp"] == 1.0 and abs(same["bleu_no_bp"] - 100) < 1e-6 and same["length_ratio_ref"] == 1.0
    short = length_controls(_scored(0, [(x, " ".join(y.split()[:3]), 0.0) for x, y in refs]))
    assert short["bleu_bp"] < 0.3 and short["bleu_no_bp"] > 90  # every word right, most of them missing
    longer = length_controls(_scored(0, [(x, y + " " + y, 0.0) for x, y in refs]))
    assert longer["bleu_bp"] == 1.0 and longer["length_ratio_ref"] == 2.0 and longer["bleu_no_bp"] < 80


def test_length_matched_sari_keeps_only_similar_lengths_and_common_seeds():
    from rlhf_ref.health import length_matched_sari
    a = [_scored(0, [("s1", "a b c d", 0.6), ("s2", "a", 0.9), ("s3", "", 0.0)]), _scored(2, [("s1", "a b", 0.1)] * 3)]
    b = [_scored(0, [("s1", "a b c", 0.2), ("s2", "a b c d e", 0.1), ("s3", "x y", 0.5)]), _scored(1, [("s1", "a", 0.3)] * 3)]
    ra, rb = length_matched_sari(a, b)  # seed 0 only; s2 (1 vs 5 words) and s3 (empty) dropped; 4 vs 3 words is within 25%
    assert [r["seed"] for r in ra] == [0] == [r["seed"] for r in rb] and ra[0]["n_matched"] == 1
    assert abs(ra[0]["sari_matched"] - 60) < 1e-9 and abs(rb[0]["sari_matched"] - 20) < 1e-9
    ra, _ = length_matched_sari(a, b, tol=0.0)
    assert ra[0]["n_matched"] == 0 and math.isnan(ra[0]["sari_matched"])


def test_registry_lookup_prefers_the_class_itself_and_names_an_ambiguous_name(monkeypatch):
    "An exact class wins over a same-named one; two same-named registered classes of different data kinds are an error."
    import dataclasses
    from rlhf_ref import algos, sft
    from rlhf_ref.pipeline import registered_kind
    algos.algorithms()

    @dataclasses.dataclass
    class SFT(sft.SFT): pass

    monkeypatch.setitem(algos.ALGOS, "sft-copy", dataclasses.replace(algos.ALGOS["sft"], name="sft-copy", cls=SFT, data="pairs"))
    assert registered_kind(sft.SFT()) == "responses" and registered_kind(SFT()) == "pairs"  # each finds its own entry

    @dataclasses.dataclass
    class Unregistered(sft.SFT): pass

    Unregistered.__name__ = "SFT"  # same name as two entries with different kinds
    with pytest.raises(ValueError, match="several data kinds"): registered_kind(Unregistered())
