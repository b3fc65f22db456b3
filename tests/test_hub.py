"""Hub loaders on fixture files of the hubs' schemas (tests/fixtures/), with no network: formats, values, bad rows."""
import json, os, socket, warnings
from pathlib import Path
import pytest
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
from datasets import Dataset
import rlhf_ref.hub as hub
from rlhf_ref.data import DataError, check_row, preference_dataset
from rlhf_ref.hub import (convert_rows, load_hh_rlhf, load_imdb, load_raw, load_tldr_preferences, load_ultrafeedback_binarized,
                          parse_hh, review_opening, split_hh_pair, tldr_prompt)

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    "Any attempt to open a connection fails the test."
    def refuse(*a, **kw): raise AssertionError("a loader tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def raw_rows(name):
    return [json.loads(l) for l in open(FIX / name)]


def write(tmp_path, rows, name="bad.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def msgs(*turns):
    return [{"role": role, "content": c} for role, c in turns]


# --- fixtures load into TRL's formats ------------------------------------------------------------------------------

def test_hh_rlhf_fixture_is_conversational():
    ds = load_hh_rlhf(path=FIX / "hh_rlhf.jsonl")
    assert len(ds) == 6 and ds.column_names == ["prompt", "chosen", "rejected"]
    first = ds[0]
    assert first["prompt"] == msgs(("user", "How do I keep basil alive on a windowsill?"))
    assert first["chosen"][0]["content"].startswith("Give it at least six hours") and first["rejected"] == msgs(("assistant", "Basil is a plant that grows in soil."))
    assert ds[1]["prompt"] == msgs(("user", "What's a good name for a grey cat?"), ("assistant", "Some people like Smokey, Ash or Pebble."),
                                   ("user", "Something less common?"))
    for i, row in enumerate(ds):  # every row is valid and rebuilds its transcripts
        check_row(row, i)
        raw = raw_rows("hh_rlhf.jsonl")[i]
        to_text = lambda ms: "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in ms)
        assert to_text(row["prompt"] + row["chosen"]) == raw["chosen"] and to_text(row["prompt"] + row["rejected"]) == raw["rejected"]


def test_ultrafeedback_fixture_is_conversational_with_scores():
    ds = load_ultrafeedback_binarized(path=FIX / "ultrafeedback_binarized.jsonl")
    raw = raw_rows("ultrafeedback_binarized.jsonl")
    assert len(ds) == 6 and set(ds.column_names) == {"prompt", "chosen", "rejected", "score_chosen", "score_rejected", "prompt_id"}
    for row, r in zip(ds, raw):
        assert row["prompt"] == r["chosen"][:-1] and row["chosen"] == r["chosen"][-1:] and row["rejected"] == r["rejected"][-1:]
        assert (row["score_chosen"], row["score_rejected"], row["prompt_id"]) == (r["score_chosen"], r["score_rejected"], r["prompt_id"])


def test_imdb_fixture_gives_openings_and_labels():
    ds = load_imdb(path=FIX / "imdb.jsonl", prompt_words=5)
    raw = raw_rows("imdb.jsonl")
    assert len(ds) == 8 and ds.column_names == ["prompt", "completion", "label"]
    assert ds["label"] == [bool(r["label"]) for r in raw]
    for row, r in zip(ds, raw):
        assert len(row["prompt"].split()) == 5 and "<br" not in row["prompt"] + row["completion"]
        assert (row["prompt"] + row["completion"]).split() == r["text"].replace("<br />", " ").split()
    assert ds[0]["prompt"] == "I went in expecting a"


def test_tldr_from_openai_comparisons():
    ds = load_tldr_preferences(path=FIX / "summarize_from_feedback.jsonl")
    raw = raw_rows("summarize_from_feedback.jsonl")
    assert len(ds) == 6
    for row, r in zip(ds, raw):
        assert row["chosen"] == r["summaries"][r["choice"]]["text"] and row["rejected"] == r["summaries"][1 - r["choice"]]["text"]
        assert row["annotator_id"] == r["worker"] and row["confidence"] == r["extra"]["confidence"] and row["batch"] == r["batch"]
        assert isinstance(row["prompt"], str) and row["prompt"].endswith("\n\nTL;DR:")
    info = raw[0]["info"]
    assert ds[0]["prompt"] == (f"SUBREDDIT: r/{info['subreddit']}\n\nTITLE: {info['title']}\n\nPOST: "
                               f"{info['post'].replace(chr(10) * 2, chr(10))}\n\nTL;DR:")
    assert ds[4]["prompt"].startswith("TITLE: Town opens library in former railway station\n\nA town has turned")  # the news article


def test_tldr_from_trl_copy():
    ds = load_tldr_preferences(path=FIX / "tldr_preference.jsonl")
    assert ds.to_list() == raw_rows("tldr_preference.jsonl")


def test_formats_are_trls():
    trl_utils = pytest.importorskip("trl.data_utils")
    for ds, conversational in [(load_hh_rlhf(path=FIX / "hh_rlhf.jsonl"), True),
                               (load_ultrafeedback_binarized(path=FIX / "ultrafeedback_binarized.jsonl"), True),
                               (load_tldr_preferences(path=FIX / "summarize_from_feedback.jsonl"), False),
                               (load_imdb(path=FIX / "imdb.jsonl"), False)]:
        assert all(trl_utils.is_conversational(row) == conversational for row in ds)


def test_loaded_pairs_tokenize(tiny):
    _, tok = tiny
    for ds in (load_hh_rlhf(path=FIX / "hh_rlhf.jsonl"), load_ultrafeedback_binarized(path=FIX / "ultrafeedback_binarized.jsonl"),
               load_tldr_preferences(path=FIX / "summarize_from_feedback.jsonl")):
        tokd = preference_dataset(ds, tok, max_length=256, max_prompt_length=192)
        assert len(tokd) == len(ds) and all(tokd["chosen_ids"]) and all(tokd["rejected_ids"])


def test_parquet_and_limit(tmp_path):
    Dataset.from_list(raw_rows("ultrafeedback_binarized.jsonl")).to_parquet(tmp_path / "uf.parquet")
    a = load_ultrafeedback_binarized(path=tmp_path / "uf.parquet")
    assert a.to_list() == load_ultrafeedback_binarized(path=FIX / "ultrafeedback_binarized.jsonl").to_list()
    assert len(load_hh_rlhf(path=FIX / "hh_rlhf.jsonl", limit=2)) == 2


def test_hub_ids_and_splits_reach_load_dataset(monkeypatch):
    calls = []
    def fake(hub_id, split=None, **kw):
        calls.append((hub_id, split, kw))
        name = {"Anthropic/hh-rlhf": "hh_rlhf", "HuggingFaceH4/ultrafeedback_binarized": "ultrafeedback_binarized",
                "stanfordnlp/imdb": "imdb", "openai/summarize_from_feedback": "summarize_from_feedback"}[hub_id]
        return Dataset.from_list(raw_rows(f"{name}.jsonl"))
    monkeypatch.setattr(hub, "load_dataset", fake)
    assert len(load_hh_rlhf("test", subset="harmless-base")) == 6
    assert len(load_ultrafeedback_binarized()) == 6 and len(load_imdb("unsupervised")) == 8
    assert len(load_tldr_preferences("validation", hub_id="openai/summarize_from_feedback", name="comparisons")) == 6
    assert calls == [("Anthropic/hh-rlhf", "test", {"data_dir": "harmless-base"}), ("HuggingFaceH4/ultrafeedback_binarized", "train_prefs", {}),
                     ("stanfordnlp/imdb", "unsupervised", {}), ("openai/summarize_from_feedback", "validation", {"name": "comparisons"})]


# --- bad rows ------------------------------------------------------------------------------------------------------

HH_OK = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello there.", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."}


@pytest.mark.parametrize("row,msg", [
    ({"chosen": "Human: Hi\n\nAssistant: A", "rejected": "\n\nHuman: Hi\n\nAssistant: B"}, "row 1: 'chosen' does not start with"),
    ({"chosen": "\n\nAssistant: A", "rejected": "\n\nAssistant: B"}, "row 1: 'chosen' does not start with"),
    ({"chosen": HH_OK["chosen"], "rejected": HH_OK["chosen"]}, "row 1: the chosen and rejected transcripts are the same"),
    ({"chosen": "\n\nHuman: Hi\n\nAssistant: A", "rejected": "\n\nHuman: Hey\n\nAssistant: B"}, "row 1: the chosen and rejected transcripts differ"),
    ({"chosen": "\n\nHuman: Hi\n\nAssistant: A\n\nHuman: Ok", "rejected": "\n\nHuman: Hi\n\nAssistant: A\n\nHuman: No"}, "do not end with an Assistant turn"),
    ({"chosen": HH_OK["chosen"], "rejected": "\n\nHuman: Hi\n\nAssistant: "}, "row 1: 'rejected' ends with an empty message"),
    ({"chosen": HH_OK["chosen"], "rejected": None}, "row 1: 'rejected' must be a transcript string, got NoneType"),
])
def test_hh_bad_rows_are_named(tmp_path, row, msg):
    path = write(tmp_path, [HH_OK, row, HH_OK])
    with pytest.raises(DataError, match=f"bad.jsonl: {msg}" if msg.startswith("row") else msg): load_hh_rlhf(path=path)
    with pytest.warns(UserWarning, match="skipped 1 bad row"):
        assert len(load_hh_rlhf(path=path, on_error="skip")) == 2


def test_ultrafeedback_bad_rows(tmp_path):
    good = raw_rows("ultrafeedback_binarized.jsonl")[0]
    other_prompt = {**good, "rejected": [{"role": "user", "content": "Another question"}, good["rejected"][1]]}
    empty = {**good, "chosen": [good["chosen"][0], {"role": "assistant", "content": "  "}]}
    user_last = {**good, "chosen": good["chosen"][:1], "rejected": good["rejected"][:1]}
    for bad, msg in [(other_prompt, "row 1: the chosen and rejected conversations differ"), (empty, "row 1: 'chosen' ends with an empty message"),
                     (user_last, "row 1: the conversations do not end with an assistant message")]:
        with pytest.raises(DataError, match=msg): load_ultrafeedback_binarized(path=write(tmp_path, [good, bad]))


def test_imdb_bad_rows(tmp_path):
    good = {"text": "one two three four five six seven eight nine ten", "label": 1}
    for bad, msg in [({"text": "too short", "label": 0}, "row 1: the review has 2 words; more than 8 are needed"),
                     ({"text": good["text"], "label": 7}, "row 1: 'label' must be 0, 1 or -1"),
                     ({"text": None, "label": 0}, "row 1: 'text' must be a string, got NoneType")]:
        with pytest.raises(DataError, match=msg): load_imdb(path=write(tmp_path, [good, bad]))
    assert load_imdb(path=write(tmp_path, [good, {"text": good["text"], "label": -1}]))["label"] == [True, None]
    assert review_opening("a  b<br/>c <br />d", 2) == ("a b", " c d")


def test_tldr_bad_rows(tmp_path):
    good = raw_rows("summarize_from_feedback.jsonl")[0]
    no_text = {**good, "info": {**good["info"], "post": None, "article": None}}
    for bad, msg in [({**good, "choice": 2}, "row 1: 'choice' must be 0 or 1, got 2"), (no_text, "row 1: 'info' has neither"),
                     ({**good, "summaries": good["summaries"][:1]}, "row 1: 'summaries' must hold 2 summaries"),
                     ({**good, "summaries": [{**good["summaries"][0], "text": ""}, good["summaries"][1]]}, "row 1: 'chosen' is empty")]:
        with pytest.raises(DataError, match=msg): load_tldr_preferences(path=write(tmp_path, [good, bad]))
    with pytest.raises(DataError, match="row 0: 'rejected' is empty"):
        load_tldr_preferences(path=write(tmp_path, [{"prompt": "p", "chosen": " c", "rejected": " "}]))


def test_skip_counts_every_bad_row(tmp_path):
    rows = [HH_OK, {**HH_OK, "rejected": HH_OK["chosen"]}, HH_OK, {**HH_OK, "chosen": "oops"}, {**HH_OK, "chosen": "x"}, {**HH_OK, "chosen": "y"}]
    with pytest.warns(UserWarning, match=r"skipped 4 bad row\(s\) of 6: row 1: .*; row 3: .*; row 4: .*; \.\.\."):
        assert len(load_hh_rlhf(path=write(tmp_path, rows), on_error="skip")) == 2
    with pytest.raises(DataError, match="no valid rows"), pytest.warns(UserWarning, match="skipped 1 bad row"):
        load_hh_rlhf(path=write(tmp_path, rows[1:2]), on_error="skip")
    with pytest.raises(ValueError, match="on_error must be one of"): load_hh_rlhf(path=FIX / "hh_rlhf.jsonl", on_error="ignore")


def test_missing_columns_files_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match=r"missing column\(s\) \['chosen', 'rejected'\]"): load_hh_rlhf(path=FIX / "imdb.jsonl")
    with pytest.raises(DataError, match=r"missing column\(s\) \['text', 'label'\]"): load_imdb(path=FIX / "hh_rlhf.jsonl")
    with pytest.raises(FileNotFoundError, match="does not exist"): load_imdb(path=tmp_path / "nope.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"chosen": "a", "rejected": \n')
    with pytest.raises(DataError, match="broken.jsonl: not readable as json"): load_hh_rlhf(path=tmp_path / "broken.jsonl")


def test_pieces():
    assert parse_hh("\n\nHuman: a\n\nAssistant: b\n\nHuman: c") == msgs(("user", "a"), ("assistant", "b"), ("user", "c"))
    assert split_hh_pair("\n\nHuman: q\n\nAssistant: yes", "\n\nHuman: q\n\nAssistant: no") == \
        {"prompt": msgs(("user", "q")), "chosen": msgs(("assistant", "yes")), "rejected": msgs(("assistant", "no"))}
    assert tldr_prompt({"post": "a\n\nb", "subreddit": "x", "title": "t"}) == "SUBREDDIT: r/x\n\nTITLE: t\n\nPOST: a\nb\n\nTL;DR:"
    out = convert_rows([{"v": 1}, {"v": 2}], lambda r, i: {"w": r["v"] * 10}, source="s", check=None)
    assert out.to_list() == [{"w": 10}, {"w": 20}]
    assert load_raw("unused", "train_prefs", FIX / "tldr_preference.jsonl").num_rows == 5
