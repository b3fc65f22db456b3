"""MPO (rlhf_ref.mpo): the split is a deterministic partition (property test), the DPO stage at easy_fraction=1 is the
project's DPO pipeline parameter for parameter, a resumed run reloads its DPO stage, and the CLI reaches it."""
import json, tempfile
import pytest
import torch
from hypothesis import given, settings, strategies as st
from rlhf_ref.dpo import DPO
from rlhf_ref.models import load_policy, tiny_policy
from rlhf_ref.mpo import MPO, mpo_split
from rlhf_ref.online import online_run
from rlhf_ref.pipeline import preference_run
from rlhf_ref.core import read_jsonl
from rlhf_ref.tasks import get_task

TINY = dict(dpo_steps=3, dpo_lr=1e-3, dpo_batch_size=4, rm_steps=20, pair_k=2, pair_require_finished=False)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=40), st.floats(0, 1))
def test_split_is_a_deterministic_partition_by_gap(gaps, frac):
    easy, hard = mpo_split(gaps, frac)
    assert sorted(easy + hard) == list(range(len(gaps))) and not set(easy) & set(hard)
    assert len(easy) == round(frac * len(gaps))
    if easy and hard: assert min(gaps[i] for i in easy) >= max(gaps[i] for i in hard)
    assert mpo_split(list(gaps), frac) == (easy, hard)
    # a permutation of equal gaps keeps the same multiset of gaps in each set
    rev = mpo_split(gaps[::-1], frac)
    assert sorted(gaps[::-1][i] for i in rev[0]) == sorted(gaps[i] for i in easy)


def test_dpo_stage_on_all_pairs_is_the_dpo_pipeline():
    "easy_fraction=1 sends every pair to a DPO stage that trains exactly what preference_run(DPO) trains."
    torch.set_num_threads(1)
    task, algo = get_task("sentiment"), MPO(easy_fraction=1.0, **TINY)
    policy, tok = tiny_policy()
    rows = algo.preference_rows(policy, tok, task, task.train_prompts[:12], seed=0, quiet=True)
    _, gaps = algo.reward_gaps(policy, tok, rows, seed=0)
    easy, hard = mpo_split(gaps, algo.easy_fraction)
    assert hard == [] and len(easy) == len(rows)
    mpo_policy, _ = algo.dpo_stage(policy, tok, [rows[i] for i in easy], out_dir=tempfile.mkdtemp(), seed=0, quiet=True)
    res = preference_run(DPO(beta=0.1), task, "tiny", tempfile.mkdtemp(), steps=3, batch_size=4, lr=1e-3, warmup_steps=0,
                         k=2, n_prompts=12, require_finished=False, eval_every=0, eval_prompts=task.eval_prompts[:2], quiet=True)
    dpo_policy, _ = load_policy(str(res["policy_dir"]), dtype=mpo_policy.dtype)  # (on CUDA it would load in bf16)
    base, _ = tiny_policy()
    diff = max((a - b).abs().max().item() for a, b in zip(mpo_policy.state_dict().values(), dpo_policy.state_dict().values()))
    moved = max((a - b).abs().max().item() for a, b in zip(mpo_policy.state_dict().values(), base.state_dict().values()))
    assert diff == 0.0 and moved > 1e-4


def test_resume_reloads_the_dpo_stage(tmp_path):
    torch.set_num_threads(1)
    task = get_task("sentiment")
    first = MPO(**TINY).prepare(tiny_policy()[0], tiny_policy()[1], task, task.train_prompts[:12], out_dir=tmp_path, seed=0, quiet=True)
    again = MPO(**TINY).prepare(tiny_policy()[0], tiny_policy()[1], task, task.train_prompts[:12], out_dir=tmp_path, seed=0,
                                resume=True, quiet=True)
    for a, b in zip(first["policy"].state_dict().values(), again["policy"].state_dict().values()): assert torch.equal(a, b)
    assert first["prompts"] == again["prompts"]
    trained = [r for r in read_jsonl(tmp_path / "dpo" / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in trained] == [1, 2, 3]  # trained once, not again on resume
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["easy"] + split["difficult"] == split["pairs"] == 12


def test_online_run_resumes_an_mpo_run(tmp_path):
    torch.set_num_threads(1)
    task = get_task("sentiment")
    kw = dict(batch_size=2, lr=1e-4, n_prompts=12, max_new_tokens=6, eval_every=0, eval_prompts=task.eval_prompts[:2], quiet=True)
    online_run(MPO(**TINY), task, "tiny", tmp_path, steps=1, **kw)
    res = online_run(MPO(**TINY), task, "tiny", tmp_path, steps=2, resume=True, **kw)
    assert [r["step"] for r in res["history"] if r["split"] == "train"] == [1, 2]


def test_custom_prompts_are_refused():
    task, (policy, tok) = get_task("sentiment"), tiny_policy()
    with pytest.raises(ValueError, match="first train prompts"):
        MPO(**TINY).prepare(policy, tok, task, ["a prompt of my own"], out_dir=tempfile.mkdtemp(), seed=0, quiet=True)
