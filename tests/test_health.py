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
