"""The rlhf-ref command line, end to end on the tiny model, as a user runs it."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest

CLI = str(Path(sys.executable).parent / "rlhf-ref")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TRAIN = ["train", "--algo", "dpo", "--task", "sentiment", "--model", "tiny", "--n-prompts", "8", "--k", "2", "--batch-size", "2", "--keep-unfinished", "--n-eval-prompts", "4"]


def cli(*args, timeout=600, cwd=None):
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=ENV, timeout=timeout, cwd=cwd)


@pytest.mark.parametrize("args", [[], ["train"], ["train", "--algo", "nope", "--task", "sentiment"],
                                  ["train", "--algo", "dpo", "--task", "sentiment", "--steps", "many"],
                                  ["train", "--algo", "dpo", "--task", "sentiment", "--steps", "-3"],
                                  ["train", "--algo", "dpo", "--task", "sentiment", "--lr", "0"],
                                  ["train", "--algo", "dpo", "--task", "sentiment", "--beta", "nan"],
                                  ["train", "--algo", "dpo", "--task", "sentiment", "--k", "1"],
                                  ["eval", "--policy", "x", "--task", "sentiment", "--samples", "0"],
                                  ["train", "--algo", "dpo", "--task", "sentiment", "--label-noise", "1.5"],
                                  ["eval", "--policy", "x", "--task", "sentiment", "--length-edges", "32,16"],
                                  ["eval", "--task", "sentiment"], ["eval", "--policy", "x", "--task", "poetry"], ["frobnicate"]])
def test_wrong_arguments_print_usage_and_exit_2(args):
    r = cli(*args)
    assert r.returncode == 2 and "usage: rlhf-ref" in r.stderr


@pytest.mark.parametrize("args,msg", [
    (["--label-smoothing", "0.7"], "label_smoothing must be"),
    (["--loss-type", "ipo", "--label-smoothing", "0.2"], "not 'ipo'"),
    (["--loss-type", "sigmoidd"], "loss_type must be one of"),
    (["--average", "maybe"], "average must be true or false"),
])
def test_invalid_hyperparameters_are_usage_errors_naming_them(args, msg, tmp_path):
    "Checked by the algorithm's class after parsing, still before any model is loaded: usage, the reason, exit 2."
    r = cli("train", "--algo", "dpo", "--task", "sentiment", "--model", "./missing-model", *args, cwd=tmp_path)
    assert r.returncode == 2 and "usage: rlhf-ref" in r.stderr and msg in r.stderr and "does not exist" not in r.stderr, r.stderr


def test_algos_lists_the_registry():
    import json
    r = cli("algos", "--json")
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert r.returncode == 0 and rows["dpo"]["paper"].startswith("2305.18290") and rows["dpo"]["precompute_ref"] is True
    assert rows["dpo"]["hyperparameters"]["beta"] == 0.1
    table = cli("algos").stdout
    assert table.startswith("| `--algo` |") and "| `dpo` |" in table


@pytest.mark.parametrize("args,msg", [
    (["eval", "--policy", "/no/such/dir", "--task", "sentiment"], "does not exist"),
    (["train", "--algo", "dpo", "--task", "sentiment", "--model", "./missing-model"], "does not exist"),
    (["report", "/no/such/run"], "has no metrics.jsonl"),
])
def test_bad_input_is_one_clear_line(args, msg, tmp_path):
    r = cli(*args, cwd=tmp_path)  # in an empty folder: a run the user keeps in ./runs must not change the answer
    assert r.returncode == 1 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_train_eval_report_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = cli(*TRAIN, "--steps", "4", "--eval-every", "2", "--out", str(out), "--heldout-pairs", "2", "--label-noise", "0.5")
    assert r.returncode == 0, r.stderr
    assert "(2 more held out), 50% of their labels swapped" in r.stdout
    assert "Report:" in r.stdout and (out / "report.html").exists() and (out / "policy" / "model.safetensors").exists()
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "eval"] == [0, 2, 4]
    assert all(r["eval/pair_count"] == 2 for r in rows if r["split"] == "eval") and rows[0]["eval/pair_accuracy"] == 0.5
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "I saw it at a drive-in, and"}\n{"prompt": "The third act"}\n{"prompt": "Its director"}\n')
    r = cli("eval", "--policy", str(out / "policy"), "--task", "sentiment", "--prompts", str(prompts), "--by-length", "--length-edges", "4,8")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert [b["bucket"] for b in res["by_length"]] == ["0-3", "4-7", "8+"] and sum(b["n_policy"] for b in res["by_length"]) == 3
    assert sum(b["n_ref"] for b in res["by_length"]) == 3 and "gain" in res["length_matched_gain"]
    assert res["count"] == 3 and res["ref"] == "tiny" and {"reward", "kl", "win_rate", "kl_k3"} <= res.keys()
    assert 0 <= res["win_rate"] <= 1 and res["kl_k3"] >= 0
    r = cli("report", str(out)); assert r.returncode == 0 and r.stdout.strip().endswith("report.html")
    r = cli(*TRAIN, "--steps", "4", "--out", str(out))  # a second run into the same folder is refused
    assert r.returncode == 1 and "--resume" in r.stderr and "--overwrite" in r.stderr


def test_ctrl_c_saves_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen([CLI, *TRAIN, "--steps", "400", "--eval-every", "0", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    metrics, deadline = out / "metrics.jsonl", time.time() + 300
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 4): time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130 and "checkpoint saved to" in err, err
    ckpts = sorted((out / "checkpoints").glob("step-*"))
    assert ckpts and (ckpts[-1] / "trainer_state.json").exists()
    stopped = int(ckpts[-1].name.split("-")[1])
    r = cli(*TRAIN, "--steps", str(stopped + 2), "--eval-every", "0", "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    steps = [json.loads(l)["step"] for l in metrics.read_text().splitlines() if '"train"' in l]
    assert steps == list(range(1, stopped + 3))  # no step lost, none repeated


OFFLINE = ["--task", "sentiment", "--model", "tiny", "--n-prompts", "8", "--k", "2", "--batch-size", "2", "--keep-unfinished",
           "--n-eval-prompts", "4", "--steps", "2", "--eval-every", "0"]


@pytest.mark.parametrize("algo,extra", [("sft", []), ("alol", []), ("alol", ["--variant", "wbc"])])
def test_sft_and_alol_train_end_to_end(algo, extra, tmp_path):
    "SFT learns from demonstrations, A-LoL from the scored set: both through the same pipeline as the pair algorithms."
    out = tmp_path / "run"
    r = cli("train", "--algo", algo, *OFFLINE, *extra, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "policy" / "model.safetensors").exists() and (out / "report.html").exists()
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2] and [r["step"] for r in rows if r["split"] == "eval"] == [0, 2]
    config = json.loads((out / "config.json").read_text())
    if algo == "sft":  # the sentiment task has no written responses: the best of k samples, and the config says so
        assert config["data"] == "responses" and config["responses"] == "best of 2" and "best of 2" in r.stdout
    else:
        assert config["data"] == "scored" and config["value_prompts"] == 2 and 0 <= config["dropped"] <= 1
        assert config["sources"]["sample"] == 12 and set(config["dropped_by_source"]) <= {"sample", "shuffled", "repetition"}
        assert ("draws in proportion to A" in r.stdout) == (extra == [])


@pytest.mark.parametrize("args,msg", [
    (["--algo", "sft", "--responses", "references"], "has no written responses"),
    (["--algo", "alol", "--responses", "best"], "--responses is for SFT"),
])
def test_combinations_without_data_are_one_clear_line(args, msg, tmp_path):
    r = cli("train", *args, *OFFLINE[:2], "--model", "./missing-model", cwd=tmp_path) if "alol" in args else \
        cli("train", *args, *OFFLINE, "--out", str(tmp_path / "run"))
    assert r.returncode == 1 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_data_kind_without_builder_is_refused_before_loading(monkeypatch, tmp_path, capsys):
    "An algorithm whose data the pipeline cannot build (here a toy one on K ranked samples) fails with one line, status 1."
    from dataclasses import dataclass
    from rlhf_ref import algos
    from rlhf_ref.cli import main
    @dataclass
    class Ranked(algos.Algorithm):
        def loss(self, batch, policy, ref): raise AssertionError("never trained")
    algos.algorithms()
    monkeypatch.setitem(algos.ALGOS, "toy-ranked", algos.AlgoInfo("toy-ranked", Ranked, "toy", "0000.00000", "ranked",
                                                                  needs_ref=False, needs_reward_model=False, online=False, notebook="x"))
    code = main(["train", "--algo", "toy-ranked", "--task", "sentiment", "--model", "./missing-model", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 1 and "K ranked samples a prompt" in err and "cannot build" in err and "does not exist" not in err, err


def test_train_help_names_the_offline_data():
    r = cli("train", "--help")
    assert r.returncode == 0 and "--responses" in r.stdout and "--data-seed" in r.stdout and "scored set" in r.stdout


@pytest.mark.parametrize("args,msg", [
    (["--algo", "grpo", "--reward", "length"], "has no reward 'length'; it has ['gold', 'classifier', 'classifier-sim', 'neg-fkgl', 'sari']"),
    (["--algo", "alol", "--reward", "fkgl"], "has no reward 'fkgl'"),
])
def test_a_training_reward_is_checked_before_loading(args, msg, tmp_path):
    r = cli("train", *args, "--task", "simplify", "--model", "./missing-model", "--out", str(tmp_path / "run"))
    assert r.returncode == 1 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_simplify_trains_on_a_label_free_reward_online_and_offline(tmp_path):
    "PPO's rollouts and A-LoL's scored set both use --reward; the gold reward and the task's metrics judge the evaluations."
    common = ["--task", "simplify", "--model", "tiny", "--n-prompts", "6", "--batch-size", "2", "--steps", "1",
              "--n-eval-prompts", "2", "--reward", "classifier-sim"]
    r = cli("train", "--algo", "ppo", *common, "--out", str(tmp_path / "ppo"))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(l) for l in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    train, ev = [x for x in rows if x["split"] == "train"], [x for x in rows if x["split"] == "eval"]
    assert train and "objective/gold" in train[0] and {"eval/sari", "eval/p_simple", "eval/empty_rate"} <= ev[-1].keys()
    from rlhf_ref.simplify import load_simplify
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": r["original"]}) + "\n" for r in load_simplify("test")[:2]))
    r = cli("eval", "--task", "simplify", "--policy", str(tmp_path / "ppo" / "policy"), "--prompts", str(tmp_path / "p.jsonl"))
    res = json.loads(r.stdout)
    assert r.returncode == 0 and res["ref"] == "tiny" and res["count"] == 2, r.stderr[-2000:]
    assert {"sari", "bleu", "fkgl", "similarity", "copy_rate", "length_ratio", "p_simple", "empty_rate"} <= res.keys(), res
    r = cli("train", "--algo", "alol", *common, "--k", "2", "--out", str(tmp_path / "alol"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "simplify[classifier-sim]" in r.stdout, r.stdout
    cfg = json.loads((tmp_path / "alol" / "config.json").read_text())
    assert json.dumps(cfg).count('"data_reward": "classifier-sim"') == 1, cfg


@pytest.mark.parametrize("algo,extra,key", [("tdpo", ["--alpha", "0.5"], "kl/margin"), ("cpl", ["--lambda", "0.5"], "cpl_loss"),
                                            ("simpo", [], "rewards/margins"), ("cpo", [], "nll_loss")])
def test_offline_pair_family_trains_end_to_end(algo, extra, key, tmp_path):
    "`rlhf-ref train --algo tdpo|cpl|simpo|cpo --task sentiment`: each trains, logs its own metric, saves a policy and a report."
    out = tmp_path / "run"
    r = cli("train", "--algo", algo, *OFFLINE, *extra, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "policy" / "model.safetensors").exists() and (out / "report.html").exists()
    train = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
    assert [r["step"] for r in train] == [1, 2] and all(key in r and r["loss"] == r["loss"] for r in train)
    assert json.loads((out / "config.json").read_text())["algo"].lower() == algo  # the class name: TDPO, CPL, SimPO, CPO
