"The SmolLM2 experiment scripts of tools/ (A-LoL, LCPO, the online family), run end to end on the tiny model: rows, controls, resume."
import json, runpy
from pathlib import Path
import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def script(name: str) -> dict:
    return runpy.run_path(str(TOOLS / name))


def no_model(exp: dict, monkeypatch):
    "Make the script's model loading fail loudly, so a call that should read only stored rows proves it."
    def load_policy(*a, **k): raise RuntimeError("model loaded")
    for fn in (exp["run"], exp.get("pending")):  # `pending` (tools/online_smol.py) loads each seed's initial model
        if fn is not None: monkeypatch.setitem(fn.__globals__, "load_policy", load_policy)


def test_alol_smol_control_trains_only_on_positive_advantages(tmp_path, monkeypatch):
    exp, out = script("alol_smol.py"), tmp_path / "runs" / "alol.json"
    res = exp["run"](["a-lol", "nll", "nll-kept"], [0], steps=2, n_eval=2, eval_every=1, out=out, model="tiny")
    rows = {r["arm"]: r for r in res["runs"]}
    assert set(rows) == {"a-lol", "nll", "nll-kept"} and all(r["seed"] == 0 for r in rows.values())
    info = rows["nll"]["data"]
    assert 0 < info["dropped"] < 1 and len(info["deciles"]) == 9 and info["deciles"] == sorted(info["deciles"])
    # the control trains on the rows with A > 0 only
    assert rows["nll-kept"]["rows"] == round(rows["nll"]["rows"] * (1 - info["dropped"]))
    assert rows["a-lol"]["rows"] == 2 * 4  # priority draws: steps x batch size
    evals = [h for h in rows["nll"]["history"] if h.get("split") == "eval"]
    assert [e["step"] for e in evals] == [0, 1, 2]
    untimed = lambda h: {k: v for k, v in h.items() if k != "time"}
    first_alol = [h for h in rows["a-lol"]["history"] if h.get("split") == "eval"][0]
    assert untimed(evals[0]) == untimed(first_alol)  # one step-0 evaluation a seed, shared by the arms
    no_model(exp, monkeypatch)
    again = exp["run"](["a-lol", "nll"], [0], steps=2, n_eval=2, eval_every=1, out=out, model="tiny")
    assert again["runs"] == res["runs"]
    with pytest.raises(ValueError, match="another configuration"):
        exp["run"](["nll"], [0], steps=3, n_eval=2, eval_every=1, out=out, model="tiny")


def test_lcpo_smol_records_eta_and_flip_detection(tmp_path, monkeypatch):
    exp, out = script("lcpo_smol.py"), tmp_path / "lcpo.json"
    res = exp["run"]([0.0, 0.4], [0], steps=2, n_eval=2, out=out, model="tiny")
    rows = {(r["arm"], r["rate"]): r for r in res["runs"]}
    assert set(rows) == {(a, r) for a in ("re-dpo", "dpo") for r in (0.0, 0.4)}
    noisy = rows["re-dpo", 0.4]
    assert noisy["flips"] == round(0.4 * noisy["pairs"]) and rows["re-dpo", 0.0]["flips"] == 0
    assert 0 <= noisy["auroc"] <= 1 and 0.5 < noisy["eta"] <= 1 and 0 <= noisy["below_half_flipped"] <= 1
    assert "auroc" not in rows["re-dpo", 0.0]  # no flips: nothing to detect
    assert "eta" not in rows["dpo", 0.4]  # DPO has no reliabilities
    untimed = lambda h: {k: v for k, v in h.items() if k != "time"}
    assert untimed(rows["dpo", 0.0]["first"]) == untimed(rows["dpo", 0.4]["first"])  # one step-0 evaluation a seed
    no_model(exp, monkeypatch)
    assert exp["run"]([0.4], [0], steps=2, n_eval=2, out=out, model="tiny")["runs"] == res["runs"]



def test_online_smol_arms_share_the_start_and_record_the_breakdown(tmp_path, monkeypatch):
    exp, out = script("online_smol.py"), tmp_path / "online.json"
    res = exp["run"](["ppo", "ppo-kl0", "grpo"], [0], steps=2, n_eval=2, eval_every=1, out=out, model="tiny")
    rows = {r["arm"]: r for r in res["runs"]}
    assert set(rows) == {"ppo", "ppo-kl0", "grpo"}
    trains = {a: [h for h in r["history"] if h.get("split") == "train"] for a, r in rows.items()}
    assert all(len(t) == 2 and all(h["time/update"] > 0 for h in t) for t in trains.values())
    assert all(h["episode"] == 8 * h["step"] for t in trains.values() for h in t)  # 8 responses an iteration, every arm
    assert {h["objective/kl_coef"] for h in trains["ppo-kl0"]} == {0.0} and trains["ppo"][0]["objective/kl_coef"] == 0.05
    untimed = lambda h: {k: v for k, v in h.items() if k != "time"}
    first = [untimed(next(h for h in r["history"] if h.get("split") == "eval")) for r in rows.values()]
    assert first[0]["step"] == 0 and all(f == first[0] for f in first)  # one step-0 evaluation a seed, shared by the arms
    no_model(exp, monkeypatch)
    assert exp["run"](["ppo", "grpo"], [0], steps=2, n_eval=2, eval_every=1, out=out, model="tiny")["runs"] == res["runs"]
    with pytest.raises(ValueError, match="another configuration"):
        exp["run"](["ppo"], [0], steps=3, n_eval=2, eval_every=1, out=out, model="tiny")


def _lexicon_pairs(task, n: int = 16) -> list[dict]:
    "Preference rows of one-word verdicts on the first train prompts, the higher VADER score chosen (ties skipped)."
    import random
    rng, words, rows = random.Random(0), ["great", "awful", "fine", "dull", "lovely", "bad", "boring", "superb"], []
    for p in task.train_prompts[:n]:
        a, b = (f"It was {w}." for w in rng.sample(words, 2))
        ra, rb = task.reward([p, p], [a, b])
        if ra == rb: continue
        (c, rc), (r, rr) = sorted([(a, ra), (b, rb)], key=lambda t: -t[1])
        rows.append(dict(prompt=p, chosen=[{"role": "assistant", "content": c}], rejected=[{"role": "assistant", "content": r}],
                         chosen_reward=rc, rejected_reward=rr))
    return rows


def test_online_smol_overopt_records_proxy_and_gold_in_both_arms(tmp_path, monkeypatch):
    from rlhf_ref.tasks import get_task
    exp, out = script("online_smol.py"), tmp_path / "rm.json"
    rows = _lexicon_pairs(get_task("sentiment"))
    res = exp["run_overopt"](["ppo-rm", "ppo-gold"], [0], steps=2, n_eval=2, eval_every=1, out=out, model="tiny", rm_rows=rows)
    runs = {r["arm"]: r for r in res["runs"]}
    assert set(runs) == {"ppo-rm", "ppo-gold"}
    rep = runs["ppo-rm"]["proxy"]
    assert rep == runs["ppo-gold"]["proxy"] and rep["pairs"] == len(rows) and 0 < rep["heldout_pairs"] < len(rows)
    assert rep["train_gold_accuracy"] > 0.5  # the fitted head orders its own (separable, one-word) pairs mostly right
    for r in runs.values():
        train = [h for h in r["history"] if h.get("split") == "train"]
        evals = [h for h in r["history"] if h.get("split") == "eval"]
        assert len(train) == 2 and all("objective/proxy" in h and "objective/gold" in h for h in train)
        assert "objective/scores" not in train[0] and [e["step"] for e in evals] == [0, 1, 2]
        assert all(isinstance(e["eval/proxy"], float) and -1 <= e["eval/reward"] <= 1 for e in evals)
        assert {h["objective/kl_coef"] for h in train} == {0.0}
    # the proxy is not the gold reward: on the same rollouts the two differ
    assert any(h["objective/proxy"] != h["objective/gold"] for h in runs["ppo-rm"]["history"] if h.get("split") == "train")
    # two more seeds in one call: every seed fits the same proxy the same way (the kind is not overwritten by a seed)
    more = exp["run_overopt"](["ppo-rm"], [1, 2], steps=2, n_eval=2, eval_every=1, out=out, model="tiny", rm_rows=rows)
    assert sorted(r["seed"] for r in more["runs"] if r["arm"] == "ppo-rm") == [0, 1, 2]
    assert all(r["proxy"] == rep for r in more["runs"])
    no_model(exp, monkeypatch)
    assert exp["run_overopt"](["ppo-rm"], [0, 1, 2], steps=2, n_eval=2, eval_every=1, out=out, model="tiny", rm_rows=rows)["runs"] == more["runs"]
    with pytest.raises(ValueError, match="at least 8"):
        exp["proxy_reward_model"](None, None, rows=rows[:3])
    with pytest.raises(ValueError, match=r"proxy must be one of \['block15', 'last'\], got 'best'"):
        exp["run_overopt"](["ppo-rm"], [0], out=out, model="tiny", proxy="best")


def test_salsa_smol_soups_and_arms_start_where_they_should(tmp_path, monkeypatch):
    exp, out = script("salsa_smol.py"), tmp_path / "salsa.json"
    res = exp["run"](["salsa", "sft1"], [0], steps=1, n_eval=2, eval_every=1, sft_steps=1, sft_prompts=4, out=out, model="tiny")
    runs = {r["arm"]: r for r in res["runs"]}
    assert set(runs) == {"soups", "salsa", "sft1"}
    soups = runs["soups"]["evals"]
    assert list(soups) == ["0.0", "0.25", "0.5", "0.75", "1.0"] and runs["soups"]["sft_seconds"] > 0
    untimed = lambda e: {k[5:]: v for k, v in e.items() if k.startswith("eval/")}
    for arm, alpha in (("salsa", "0.5"), ("sft1", "1.0")):
        hist = runs[arm]["history"]
        first_eval = next(h for h in hist if h.get("split") == "eval")
        assert first_eval["step"] == 0 and untimed(first_eval) == soups[alpha]  # RL starts from that soup
        first = next(h for h in hist if h.get("split") == "train")
        assert first["objective/kl"] == 0.0  # the first rollout's policy is its own reference
        assert "objective/kl_sft1" in first and "objective/kl_sft2" in first
    assert next(h for h in runs["sft1"]["history"] if h.get("split") == "train")["objective/kl_sft1"] == 0.0  # ref = SFT1
    no_model(exp, monkeypatch)
    again = exp["run"](["salsa", "sft1"], [0], steps=1, n_eval=2, eval_every=1, sft_steps=1, sft_prompts=4, out=out, model="tiny")
    assert again["runs"] == res["runs"]
    with pytest.raises(ValueError, match="another configuration"):
        exp["run"](["salsa"], [0], steps=2, n_eval=2, eval_every=1, sft_steps=1, sft_prompts=4, out=out, model="tiny")


def test_mpo_smol_arms_share_the_pairs_and_start_where_they_should(tmp_path, monkeypatch):
    exp, out = script("mpo_smol.py"), tmp_path / "mpo.json"
    kw = dict(steps=1, n_eval=2, eval_every=1, n_prompts=12, out=out, model="tiny")
    res = exp["run"](list(exp["ARMS"]), [0], **kw)
    runs = {r["arm"]: r for r in res["runs"]}
    assert set(runs) == set(exp["ARMS"])
    n = runs["mpo"]["split"]["pairs"]
    assert runs["dpo"]["pairs"] == runs["dpo-noise"]["pairs"] == runs["ppo"]["split"]["pairs"] == n  # the same pairs
    assert runs["dpo"]["swapped"] == 0 and runs["dpo-noise"]["swapped"] == round(0.3 * n)
    noisy = runs["mpo-noise"]["split"]
    assert noisy["swapped_easy"] + noisy["swapped_difficult"] == round(0.3 * n)
    for arm in ("mpo", "mpo-noise", "ppo"):
        split, hist = runs[arm]["split"], runs[arm]["history"]
        assert split["easy"] + split["difficult"] == n == len(split["gaps"])
        assert split["easy"] == (0 if arm == "ppo" else round(0.7 * n))
        first = next(h for h in hist if h.get("split") == "train")
        assert first["objective/kl"] == 0.0  # PPO's first rollout comes from its own reference (pi_DPO; SmolLM2 for ppo)
        assert "objective/proxy" in first and "objective/gold" in first  # trained on the reward model, gold beside it
        assert runs[arm]["prepare_seconds"] > 0
    assert next(h for h in runs["ppo"]["history"] if h.get("split") == "eval")["eval/kl"] == 0.0  # PPO alone: from SmolLM2
    assert next(h for h in runs["mpo"]["history"] if h.get("split") == "eval")["eval/kl"] != 0.0  # MPO: from the DPO policy
    no_model(exp, monkeypatch)
    assert exp["run"](list(exp["ARMS"]), [0], **kw)["runs"] == res["runs"]
    with pytest.raises(ValueError, match="another configuration"):
        exp["run"](["dpo"], [0], **{**kw, "steps": 2})


def test_pf_ppo_smol_filters_keep_what_they_say_and_record_both_rewards(tmp_path, monkeypatch):
    import torch
    from rlhf_ref.pf_ppo import filter_r2
    from rlhf_ref.tasks import get_task
    exp, out = script("pf_ppo_smol.py"), tmp_path / "pf.json"
    rows = _lexicon_pairs(get_task("sentiment"))
    kw = dict(steps=1, n_eval=2, eval_every=1, r2_prompts=6, rm_layer=1, out=out, model="tiny", rm_rows=rows)
    res = exp["run"](list(exp["ARMS"]), [0], **kw)
    runs = {r["arm"]: r for r in res["runs"]}
    assert set(runs) == {"r2", *exp["ARMS"]}
    r2 = runs["r2"]
    assert len(r2["proxy_scores"]) == len(r2["gold"]) == len(r2["length"]) == 6 * 4
    assert set(r2["r2"]) == set(exp["ARMS"]) and all(0 <= v <= 1 for v in r2["r2"].values())
    # the stored scores reproduce the stored R^2 of the deterministic filters (BR's pick is random)
    again = filter_r2(torch.tensor(r2["proxy_scores"]), torch.tensor(r2["gold"]), 4, ("none", "bon", "bw"))
    assert all(abs(again[f] - r2["r2"][f]) < 1e-3 for f in again)
    assert r2["proxy_report"]["pairs"] == len(rows) and "mean-pooled states of block 1" in res["config"]["proxy"]
    kept = {"none": 1.0, "bon": 0.25, "br": 0.5, "bw": 0.5}
    for arm, frac in kept.items():
        hist = runs[arm]["history"]
        first = next(h for h in hist if h.get("split") == "train")
        assert first["pf/kept_fraction"] == frac and first["episode"] == 8 * frac  # 2 prompts x 4 samples, filtered
        assert "objective/proxy" in first and "objective/gold" in first and "objective/scores" not in first
        assert first["objective/kl_coef"] == 0.0
        evals = [h for h in hist if h.get("split") == "eval"]
        assert [e["step"] for e in evals] == [0, 1] and all(isinstance(e["eval/proxy"], float) for e in evals)
    no_model(exp, monkeypatch)
    assert exp["run"](list(exp["ARMS"]), [0], **kw)["runs"] == res["runs"]
    with pytest.raises(ValueError, match="another configuration"):
        exp["run"](["bon"], [0], **{**kw, "steps": 2})


@pytest.mark.parametrize("name,args,flag", [("online_smol.py", ["--steps", "0"], "--steps"), ("mpo_smol.py", ["--steps", "-1"], "--steps"),
                                            ("salsa_smol.py", ["--steps", "0"], "--steps"), ("pf_ppo_smol.py", ["--r2-prompts", "0"], "--r2-prompts"),
                                            ("pf_ppo_smol.py", ["--arms", "top"], "--arms"),
                                            ("online_smol.py", ["--proxy", "block15"], "--proxy"),  # only with --rm
                                            ("online_smol.py", ["--rm", "--proxy", "best"], "--proxy")])
def test_online_scripts_refuse_bad_arguments_before_loading_anything(name, args, flag):
    import subprocess, sys
    r = subprocess.run([sys.executable, str(TOOLS / name), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and flag in r.stderr and "Traceback" not in r.stderr
